"""Load a federation_config/ directory: YAML -> `${...}` interpolation -> pydantic models.

Every mistake becomes one `ConfigIssue` naming the file and the dotted key, and all of them are
raised together in one `ConfigError`, so an operator fixes a broken config in one pass.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gateway.config import (
    DEFAULT_VIEW,
    VIEW_NAME,
    FederationConfig,
    GatewaySettings,
    MirrorSettings,
    PolicySettings,
    ViewSettings,
)
from gateway.errors import ConfigError, ConfigIssue

M = TypeVar("M", bound=BaseModel)
_REFERENCE = re.compile(r"\$\{([^}]*)\}")


def dotted(location: tuple[str | int, ...]) -> str:
    """('upstreams', 1, 'url') -> 'upstreams[1].url'."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _interpolate(
    value: Any, file: str, location: tuple[str | int, ...], issues: list[ConfigIssue]
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, file, (*location, str(k)), issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, file, (*location, i), issues) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        reference = match.group(1).strip()
        if reference.startswith("file:"):
            path = Path(reference[5:]).expanduser()
            try:
                return path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                issues.append(
                    ConfigIssue(file, dotted(location), f"cannot read {path}: {exc.strerror}")
                )
                return ""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", reference):
            issues.append(
                ConfigIssue(file, dotted(location), f"${{{reference}}} is not a reference")
            )
            return ""
        if reference not in os.environ:
            issues.append(
                ConfigIssue(file, dotted(location), f"environment variable {reference} is not set")
            )
            return ""
        return os.environ[reference]

    return _REFERENCE.sub(replace, value)


def read_yaml(path: Path, directory: Path, issues: list[ConfigIssue]) -> dict[str, Any] | None:
    """One YAML file as an interpolated mapping, or None with the issue recorded."""
    file = str(path.relative_to(directory))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        issues.append(ConfigIssue(file, "", f"cannot read: {exc.strerror}"))
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        issues.append(ConfigIssue(file, "", f"not valid YAML: {where}{problem}"))
        return None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        issues.append(ConfigIssue(file, "", "must be a YAML mapping of keys to values"))
        return None
    result: dict[str, Any] = _interpolate(raw, file, (), issues)
    return result


def _add_validation_issues(issues: list[ConfigIssue], file: str, error: ValidationError) -> None:
    """Add pydantic's errors, but not at a key already reported: a `${...}` that could not be
    resolved is one mistake, not also an empty value."""
    reported = {(issue.file, issue.key) for issue in issues}
    issues.extend(i for i in validation_issues(file, error) if (i.file, i.key) not in reported)


def validation_issues(file: str, error: ValidationError) -> list[ConfigIssue]:
    """Pydantic's errors as one ConfigIssue each, with the dotted key of the offending value."""
    issues = []
    for item in error.errors(include_url=False):
        location = tuple(part for part in item["loc"] if part not in ("function-after",))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        issues.append(ConfigIssue(file, dotted(location), message))
    return issues


def _duplicate_upstreams(data: dict[str, Any]) -> list[ConfigIssue]:
    upstreams = data.get("upstreams")
    if not isinstance(upstreams, list):
        return []
    issues, seen = [], set()
    for index, upstream in enumerate(upstreams):
        name = upstream.get("name") if isinstance(upstream, dict) else None
        if isinstance(name, str):
            if name in seen:
                message = f"upstream name {name!r} is used twice"
                issues.append(ConfigIssue("gateway.yaml", f"upstreams[{index}].name", message))
            seen.add(name)
    return issues


def _resolve_paths(gateway: GatewaySettings, directory: Path) -> GatewaySettings:
    upstreams = [
        u.model_copy(update={"file": directory / u.file})
        if u.file and not u.file.is_absolute()
        else u
        for u in gateway.upstreams
    ]
    state_dir = gateway.state_dir
    if not state_dir.is_absolute():
        state_dir = directory / state_dir
    return gateway.model_copy(update={"upstreams": upstreams, "state_dir": state_dir})


def _load_model(path: Path, directory: Path, model: type[M], issues: list[ConfigIssue]) -> M | None:
    data = read_yaml(path, directory, issues)
    if data is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        _add_validation_issues(issues, str(path.relative_to(directory)), exc)
        return None


def _load_views(directory: Path, issues: list[ConfigIssue]) -> dict[str, ViewSettings]:
    views: dict[str, ViewSettings] = {}
    folder = directory / "views"
    if not folder.is_dir():
        return views
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".yaml", ".yml") or path.name.startswith("."):
            continue
        file = str(path.relative_to(directory))
        name = path.stem
        if not re.match(VIEW_NAME, name):
            message = (
                f"view name {name!r} cannot be a URL segment: use lowercase letters, digits, "
                "- and _ (at most 63)"
            )
            issues.append(ConfigIssue(file, "", message))
            continue
        if name == DEFAULT_VIEW or name in views:
            reason = "is the root view's name" if name == DEFAULT_VIEW else "is defined twice"
            issues.append(ConfigIssue(file, "", f"view name {name!r} {reason}"))
            continue
        view = _load_model(path, directory, ViewSettings, issues)
        if view is not None:
            views[name] = view
    return views


def load_config(directory: Path | str) -> FederationConfig:
    """Load and validate a config directory; raise ConfigError listing every mistake."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise ConfigError([ConfigIssue(str(directory), "", "is not a directory")])
    path = directory / "gateway.yaml"
    if not path.is_file():
        raise ConfigError([ConfigIssue("gateway.yaml", "", f"missing from {directory}")])
    issues: list[ConfigIssue] = []
    data = read_yaml(path, directory, issues)
    gateway: GatewaySettings | None = None
    if data is not None:
        issues.extend(_duplicate_upstreams(data))
        try:
            gateway = GatewaySettings.model_validate(data)
        except ValidationError as exc:
            _add_validation_issues(issues, "gateway.yaml", exc)
    policy: PolicySettings | None = PolicySettings()
    if (directory / "policy.yaml").is_file():
        policy = _load_model(directory / "policy.yaml", directory, PolicySettings, issues)
    mirrors: MirrorSettings | None = MirrorSettings()
    if (directory / "mirrors.yaml").is_file():
        mirrors = _load_model(directory / "mirrors.yaml", directory, MirrorSettings, issues)
    views = _load_views(directory, issues)
    if issues or gateway is None or policy is None or mirrors is None:
        raise ConfigError(issues)
    return FederationConfig(
        directory=directory,
        gateway=_resolve_paths(gateway, directory),
        policy=policy,
        mirrors=mirrors,
        views=views,
    )

"""Load a federation_config/ directory: YAML -> `${...}` interpolation -> pydantic models.

Every mistake becomes one `ConfigIssue` naming the file and the dotted key, and all of them are
raised together in one `ConfigError`, so an operator fixes a broken config in one pass.

A config file cannot take the gateway down: files (and `${file:...}` values) are read only when
they are regular files of at most `MAX_FILE_BYTES`, and YAML anchors and aliases, which let a
few lines expand to gigabytes, are refused, as is nesting deeper than `MAX_DEPTH`.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from gateway import registries
from gateway.bounded import read_bounded
from gateway.config import (
    DEFAULT_VIEW,
    FederationConfig,
    GatewaySettings,
    MirrorSettings,
    PolicySettings,
    Rules,
    ViewSettings,
)
from gateway.errors import ConfigError, ConfigIssue
from gateway.fields import SLUG
from gateway.signals import SIGNALS
from gateway.trust_config import TrustSettings

M = TypeVar("M", bound=BaseModel)
_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_VIEW_NAME = re.compile(SLUG)
_ENVIRONMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_FILE_BYTES = 1024 * 1024  # a config file, or a `${file:...}` value
MAX_DEPTH = 64  # nested mappings and lists in a config file


class _Loader(yaml.SafeLoader):
    """Safe YAML without anchors and aliases, nested at most MAX_DEPTH deep."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (& and *) are not allowed", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} deep", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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
                return read_bounded(path, MAX_FILE_BYTES).decode("utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                issues.append(ConfigIssue(file, dotted(location), f"cannot read {path}: {reason}"))
                return ""
        if not _ENVIRONMENT_NAME.fullmatch(reference):
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
        raw = yaml.load(read_bounded(path, MAX_FILE_BYTES).decode("utf-8"), Loader=_Loader)
    except OSError as exc:
        issues.append(ConfigIssue(file, "", f"cannot read: {exc.strerror}"))
        return None
    except UnicodeDecodeError:
        issues.append(ConfigIssue(file, "", "not UTF-8 text"))
        return None
    except RecursionError:
        issues.append(ConfigIssue(file, "", "not valid YAML: nested too deep"))
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


def _load_views(
    directory: Path, issues: list[ConfigIssue]
) -> tuple[dict[str, ViewSettings], dict[str, str]]:
    """The views, and the file each came from."""
    views: dict[str, ViewSettings] = {}
    files: dict[str, str] = {}
    folder = directory / "views"
    if not folder.is_dir():
        return views, files
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".yaml", ".yml") or path.name.startswith("."):
            continue
        file = str(path.relative_to(directory))
        name = path.stem
        if not _VIEW_NAME.fullmatch(name):
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
            views[name], files[name] = view, file
    return views, files


def _cross_checks(
    gateway: GatewaySettings | None, policy: PolicySettings, rules: dict[str, Rules]
) -> list[ConfigIssue]:
    """What one file cannot check alone: registry types (policy.yaml declares the extra ones)
    and the upstreams rules name (gateway.yaml lists them). A typo never matches silently."""
    issues = []
    allowed = policy.allowed_registry_types()
    upstreams = [u.name for u in gateway.upstreams] if gateway is not None else []
    for file, settings in rules.items():
        for key, value in settings.values("registry_type"):
            if value not in allowed:
                issues.append(ConfigIssue(file, key, registries.unknown(value, allowed)))
        for key, value in settings.values("upstream") if gateway is not None else ():
            if value not in upstreams:
                listed = ", ".join(upstreams)
                message = f"no upstream is named {value!r} in gateway.yaml (upstreams: {listed})"
                issues.append(ConfigIssue(file, key, message))
    if gateway is not None and gateway.snapshot_store is not None and not _has_s3_client():
        needs = "needs the S3 client: pip install 'mcp-discovery-gateway[s3]'"
        issues.append(ConfigIssue("gateway.yaml", "snapshot_store", needs))
    return issues


def _has_s3_client() -> bool:
    return importlib.util.find_spec("boto3") is not None


def load_config(directory: Path | str) -> FederationConfig:
    """Load and validate a config directory; raise ConfigError listing every mistake."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise ConfigError([ConfigIssue(str(directory), "", "is not a directory")])
    path = directory / "gateway.yaml"
    if not path.exists():
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
    if (directory / "policy.yaml").exists():
        policy = _load_model(directory / "policy.yaml", directory, PolicySettings, issues)
    mirrors: MirrorSettings | None = MirrorSettings()
    if (directory / "mirrors.yaml").exists():
        mirrors = _load_model(directory / "mirrors.yaml", directory, MirrorSettings, issues)
    trust: TrustSettings | None = TrustSettings()
    if (directory / "trust.yaml").exists():
        trust = _load_model(directory / "trust.yaml", directory, TrustSettings, issues)
    views, files = _load_views(directory, issues)
    if policy is not None:
        rules: dict[str, Rules] = {"policy.yaml": policy}
        rules.update((files[name], view) for name, view in views.items())
        issues.extend(_cross_checks(gateway, policy, rules))
        if trust is not None:
            issues.extend(_trust_checks(_resolve_trust(trust, directory), rules))
    if issues or gateway is None or policy is None or mirrors is None or trust is None:
        raise ConfigError(issues)
    return FederationConfig(
        directory=directory,
        gateway=_resolve_paths(gateway, directory),
        policy=policy,
        mirrors=mirrors,
        views=views,
        trust=_resolve_trust(trust, directory),
    )


def _resolve_trust(trust: TrustSettings, directory: Path) -> TrustSettings:
    """trust.yaml's relative paths, from its directory."""
    feeds = [
        feed.model_copy(update={"file": directory / feed.file})
        if feed.file is not None and not feed.file.is_absolute() else feed
        for feed in trust.osv
    ]  # fmt: skip
    roots = {}
    for key in ("npm", "pypi", "oci"):
        section = getattr(trust, key)
        root = section.trusted_root if section is not None else None
        if root is not None and not root.is_absolute():
            section = section.model_copy(update={"trusted_root": directory / root})
        roots[key] = section
    return trust.model_copy(update={"osv": feeds, **roots})


_UNCOLLECTED = {
    "signature": "nothing collects signatures (trust.yaml: npm.keys, npm.mirror_keys or oci)",
    "provenance": "nothing collects provenance (trust.yaml: npm.trusted_root, pypi or oci)",
    "digest": "the mcpb digest join is off (trust.yaml: mcpb: true)",
    "scan": "scan receipts are not read (trust.yaml: scan_receipts: true, with a section that "
    "reads the packages' digests: npm, pypi, oci or mcpb)",
}


def _trust_checks(trust: TrustSettings, rules: dict[str, Rules]) -> list[ConfigIssue]:
    """A rule on trust signals that no feed in trust.yaml could ever answer is an error, not a
    rule that silently never matches."""
    issues = []
    collected = trust.signing().flags  # each of SIGNALS: collected for some type
    for file, settings in rules.items():
        for index, rule in enumerate(settings.rules):
            verb, match = ("allow", rule.allow) if rule.allow is not None else ("deny", rule.deny)
            if match is None:
                continue
            for key in match.trust_keys() if not trust.osv else ():
                message = "no advisory feed is configured (trust.yaml: osv): it would never match"
                issues.append(ConfigIssue(file, f"rules[{index}].{verb}.{key}", message))
            for key in match.signal_keys():
                if not collected[SIGNALS.index(key)]:
                    message = _UNCOLLECTED[key] + ": it would never be verified"
                    issues.append(ConfigIssue(file, f"rules[{index}].{verb}.{key}", message))
    for key in ("npm", "pypi", "oci"):
        section = getattr(trust, key)
        if section is not None and section.trusted_root is not None:
            issues.extend(_trusted_root_issues(section.trusted_root, f"{key}.trusted_root"))
    return issues


def _trusted_root_issues(path: Path, key: str) -> list[ConfigIssue]:
    """A trusted root that Sigstore cannot read is an error now, not at each verification."""
    from gateway.provenance import load_root  # Sigstore: imported only when configured

    try:
        load_root(path)
    except (OSError, ValueError) as exc:
        return [ConfigIssue("trust.yaml", key, f"{path}: {exc}")]
    return []

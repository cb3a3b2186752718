"""What a developer runs to install a served server: each package's command (from where the
served entry says it is: the mirror), and each remote's URL, with the mirror's answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.registries import ECOSYSTEMS
from gateway.registries.base import LOCATION, fits


@dataclass(frozen=True, slots=True)
class Install:
    """How to run one package or reach one remote, as a command an IDE (or a person) runs."""

    kind: str
    command: str | None  # None: no command is safe to show (the location is still named)
    verification: str | None = None  # the mirror's answer, when verification is on
    note: str = ""


def _env_note(package: dict[str, Any]) -> str:
    names = [
        str(variable.get("name"))
        for variable in package.get("environmentVariables") or []
        if isinstance(variable, dict) and variable.get("name")
    ]
    return f"needs {', '.join(names)}" if names else ""


def package_command(package: dict[str, Any]) -> str | None:
    """The command that runs a package from where the served entry says it is (the mirror);
    None for a registry type no tool here knows, or a field (from upstream data) the command
    cannot carry safely (an npm alias, a URL or a path as a "version", a PEP 508 direct
    reference, option-like values would install something other than what was vetted, or
    not from the mirror). Each ecosystem says what its fields may look like."""
    ecosystem = ECOSYSTEMS.get(str(package.get("registryType", "?")))
    return ecosystem.command(package) if ecosystem is not None else None


def installs(server: dict[str, Any], gateway_meta: dict[str, Any]) -> list[Install]:
    """Every package (rewritten to the mirror) and remote of a served server."""
    checks = gateway_meta.get("packages") or []
    found = []
    for index, package in enumerate(server.get("packages") or []):
        if not isinstance(package, dict):
            continue
        check = checks[index] if index < len(checks) and isinstance(checks[index], dict) else {}
        found.append(
            Install(
                str(package.get("registryType", "?")),
                package_command(package),
                check.get("verification"),
                _env_note(package),
            )
        )
    for remote in server.get("remotes") or []:
        if isinstance(remote, dict) and isinstance(remote.get("url"), str):
            url = remote["url"] if fits(LOCATION, remote["url"]) else None
            found.append(Install("remote", url, note=str(remote.get("type") or "")))
    return found

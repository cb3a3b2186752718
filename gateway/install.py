"""What a developer runs to install a served server: each package's command (from where the
served entry says it is: the mirror), and each remote's URL, with the mirror's answer."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

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


def _listed(document: dict[str, Any], key: str) -> list[Any]:
    found = document.get(key)
    return found if isinstance(found, list) else []


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def ide_entry(server: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """What an IDE's mcp.json holds for a served server, and the inputs it prompts for: its
    first package a command runs from the mirror (stdio), else its first remote; None when it
    has neither. Environment variables are asked for (`${input:NAME}`), never filled in."""
    for package in _listed(server, "packages"):
        ecosystem = ECOSYSTEMS.get(str(package.get("registryType"))) if isinstance(
            package, dict) else None  # fmt: skip
        argv = ecosystem.argv_of(package) if ecosystem is not None else None
        if not argv:
            continue
        entry: dict[str, Any] = {"type": "stdio", "command": argv[0], "args": argv[1:]}
        inputs = []
        for variable in _listed(package, "environmentVariables"):
            name = variable.get("name") if isinstance(variable, dict) else None
            if isinstance(name, str) and _ENV_NAME.fullmatch(name):
                entry.setdefault("env", {})[name] = "${input:" + name + "}"
                inputs.append({"id": name, "type": "promptString",
                               "description": str(variable.get("description") or name)[:200],
                               "password": bool(variable.get("isSecret"))})  # fmt: skip
        return entry, inputs
    for remote in _listed(server, "remotes"):
        url = remote.get("url") if isinstance(remote, dict) else None
        if isinstance(url, str) and fits(LOCATION, url):
            kind = "sse" if remote.get("type") == "sse" else "http"
            return {"type": kind, "url": url}, []
    return None


def mcp_json(name: str, entry: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    """A `.vscode/mcp.json` holding this one server."""
    document: dict[str, Any] = {"servers": {name: entry}}
    if inputs:
        document["inputs"] = inputs
    return json.dumps(document, indent=2)


def vscode_link(name: str, entry: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    """VS Code's install link (`vscode:mcp/install?<the server's configuration as JSON>`)."""
    configuration = {"name": name, **entry, **({"inputs": inputs} if inputs else {})}
    return "vscode:mcp/install?" + quote(json.dumps(configuration, separators=(",", ":")))

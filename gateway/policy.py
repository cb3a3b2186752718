"""Allow/deny policy: rules as data, compiled once, decided per entry and view.

`policy.yaml` applies to every view; `views/<view>.yaml` can only narrow it. In each, the first
matching rule decides, else `default`; `min_age` holds young versions back; `packages.types`
removes package entries of other types. A version left with no packages and no remotes is not
served.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import translate
from typing import Any
from urllib.parse import urlsplit

from gateway.config import Match, PolicySettings
from gateway.entry import Entry
from gateway.semver import VersionRange


def _glob(patterns: Sequence[str]) -> Callable[[str], bool]:
    compiled = re.compile("|".join(f"(?:{translate(p)})" for p in patterns))
    return lambda text: compiled.match(text) is not None


def remote_hosts(server: dict[str, Any]) -> list[str]:
    hosts = []
    for remote in server.get("remotes") or ():
        if isinstance(remote, dict) and isinstance(remote.get("url"), str):
            host = urlsplit(remote["url"]).hostname
            if host:
                hosts.append(host)
    return hosts


def _packages(server: dict[str, Any]) -> list[dict[str, Any]]:
    packages = server.get("packages")
    return [p for p in packages if isinstance(p, dict)] if isinstance(packages, list) else []


def _transports(server: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for package in _packages(server):
        transport = package.get("transport")
        if isinstance(transport, dict) and isinstance(transport.get("type"), str):
            found.add(transport["type"])
        found.add("local")
    remotes = server.get("remotes")
    if isinstance(remotes, list) and remotes:
        found.add("remote")
        found.update(r["type"] for r in remotes if isinstance(r, dict) and "type" in r)
    return found


Check = Callable[[str, Entry], bool]


def _compile_match(match: Match) -> list[Check]:
    checks: list[Check] = []
    if match.name:
        name_matches = _glob(match.name)
        checks.append(lambda _, entry: name_matches(entry.name))
    if match.upstream:
        upstreams = frozenset(match.upstream)
        checks.append(lambda upstream, _: upstream in upstreams)
    if match.status:
        statuses = frozenset(match.status)
        checks.append(lambda _, entry: entry.status in statuses)
    if match.version:
        ranges = [VersionRange(text) for text in match.version]
        checks.append(lambda _, entry: any(r.matches(entry.version) for r in ranges))
    if match.registry_type:
        types = frozenset(match.registry_type)
        checks.append(
            lambda _, entry: any(p.get("registryType") in types for p in _packages(entry.server))
        )
    if match.transport:
        wanted = frozenset(match.transport)
        checks.append(lambda _, entry: bool(wanted & _transports(entry.server)))
    if match.remote_host:
        host_matches = _glob(match.remote_host)
        checks.append(lambda _, entry: any(host_matches(h) for h in remote_hosts(entry.server)))
    return checks


@dataclass(frozen=True, slots=True)
class Verdict:
    """One policy file's answer for one entry."""

    allowed: bool
    rule: str  # "policy.yaml rules[3]" or "policy.yaml default"


class Policy:
    """A compiled policy file: rules, cooldown and package types, ready to decide."""

    def __init__(self, settings: PolicySettings, source: str) -> None:
        self.settings = settings
        self.source = source
        self.min_age = timedelta(seconds=settings.min_age) if settings.min_age is not None else None
        self.types = frozenset(settings.packages.types) if settings.packages.types else None
        self._rules: list[tuple[bool, list[Check], str]] = []
        for index, rule in enumerate(settings.rules):
            allow = rule.allow is not None
            match = rule.allow if rule.allow is not None else rule.deny
            assert match is not None
            self._rules.append((allow, _compile_match(match), f"{source} rules[{index}]"))
        self._default = Verdict(settings.default == "allow", f"{source} default")

    def verdict(self, upstream: str, entry: Entry) -> Verdict:
        for allow, checks, label in self._rules:
            if all(check(upstream, entry) for check in checks):
                return Verdict(allow, label)
        return self._default

    def held_until(self, entry: Entry) -> datetime | None:
        if self.min_age is None:
            return None
        return entry.published_at + self.min_age

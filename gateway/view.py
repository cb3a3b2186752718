"""A view's decision for one entry: policy.yaml, then the view's own file, which only narrows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.config import DEFAULT_VIEW as DEFAULT_VIEW
from gateway.config import PolicySettings
from gateway.entry import Entry
from gateway.policy import Policy


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a view serves an entry, why, and the server object as it would be served."""

    served: bool
    reason: str  # served | denied | cooldown | not installable
    rules: tuple[str, ...]  # the deciding rule of each policy file consulted, in order
    held_until: datetime | None = None
    removed_types: tuple[str, ...] = ()
    server: dict[str, Any] | None = None


def _registry_type(package: object) -> str:
    return str(package.get("registryType")) if isinstance(package, dict) else "?"


class ViewPolicy:
    """The policies one view applies: policy.yaml for every view, plus the view's own file."""

    def __init__(self, name: str, policies: list[Policy]) -> None:
        self.name = name
        self.policies = policies
        types = [p.types for p in policies if p.types is not None]
        self.types: frozenset[str] | None = frozenset.intersection(*types) if types else None

    @classmethod
    def of(cls, name: str, base: PolicySettings, own: PolicySettings | None) -> ViewPolicy:
        policies = [Policy(base, "policy.yaml")]
        if own is not None:
            policies.append(Policy(own, f"views/{name}.yaml"))
        return cls(name, policies)

    def decide(self, upstream: str, entry: Entry, now: datetime) -> Decision:
        rules: list[str] = []
        for policy in self.policies:
            verdict = policy.verdict(upstream, entry)
            rules.append(verdict.rule)
            if not verdict.allowed:
                return Decision(False, "denied", tuple(rules))
        holds = [h for h in (p.held_until(entry) for p in self.policies) if h is not None]
        held_until = max(holds) if holds else None
        if held_until is not None and held_until > now:
            return Decision(False, "cooldown", tuple(rules), held_until)
        server = entry.server
        packages = server.get("packages")
        removed: tuple[str, ...] = ()
        if self.types is not None and isinstance(packages, list):
            kept = [p for p in packages if _registry_type(p) in self.types]
            if len(kept) != len(packages):
                removed = tuple(_registry_type(p) for p in packages if p not in kept)
                server = {**server, "packages": kept}
                packages = kept
        if not packages and not server.get("remotes"):
            return Decision(False, "not installable", tuple(rules), None, removed)
        return Decision(True, "served", tuple(rules), None, removed, server)

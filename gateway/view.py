"""A view's decision for one entry: policy.yaml, then the view's own file, which only narrows;
then the view's mirrors rewrite package locations, and verification results apply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.config import DEFAULT_VIEW as DEFAULT_VIEW
from gateway.config import MirrorSettings, PolicySettings, ViewSettings
from gateway.entry import Entry, format_timestamp
from gateway.mirrors import Mirrors, rewrite_packages
from gateway.policy import Policy
from gateway.verify import Check, Verdict, check_for

Lookup = Callable[[Check], Verdict | None]


def no_lookup(_: Check) -> Verdict | None:
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a view serves an entry, why, and the server object as it would be served."""

    served: bool
    reason: str  # served | denied | cooldown | unmirrored | missing from mirror | not installable
    rules: tuple[str, ...]  # the deciding rule of each policy file consulted, in order
    held_until: datetime | None = None
    removed_types: tuple[str, ...] = ()  # by packages.types, unmirrored or enforce
    server: dict[str, Any] | None = None
    packages: list[dict[str, Any]] = field(default_factory=list)  # gateway _meta per package
    pending: tuple[Check, ...] = ()  # mirror checks not known yet, or out of date


def _registry_type(package: object) -> str:
    return str(package.get("registryType")) if isinstance(package, dict) else "?"


class ViewPolicy:
    """What one view applies: policy.yaml, the view's own file, and the view's mirrors."""

    def __init__(
        self, name: str, policies: list[Policy], mirrors: MirrorSettings | None = None
    ) -> None:
        self.name = name
        self.policies = policies
        types = [p.types for p in policies if p.types is not None]
        self.types: frozenset[str] | None = frozenset.intersection(*types) if types else None
        self.mirrors = Mirrors(mirrors or MirrorSettings())
        self.verify_mode = self.mirrors.settings.verify.mode

    @classmethod
    def of(
        cls,
        name: str,
        base: PolicySettings,
        own: ViewSettings | None,
        mirrors: MirrorSettings | None = None,
    ) -> ViewPolicy:
        policies = [Policy(base, "policy.yaml")]
        if own is not None:
            policies.append(Policy(own, f"views/{name}.yaml"))
        view_mirrors = own.mirrors if own is not None else None
        return cls(name, policies, (mirrors or MirrorSettings()).overridden_by(view_mirrors))

    def decide(
        self, upstream: str, entry: Entry, now: datetime, lookup: Lookup = no_lookup
    ) -> Decision:
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
        removed: list[str] = []
        if self.types is not None and isinstance(packages, list):
            kept = [p for p in packages if _registry_type(p) in self.types]
            removed = [_registry_type(p) for p in packages if _registry_type(p) not in self.types]
            packages = kept
        metas: list[dict[str, Any]] = []
        pending: list[Check] = []
        enforced = False  # a package was removed because its mirror does not have it
        if isinstance(packages, list) and packages and self.mirrors.configured:
            rewrite = rewrite_packages(self.mirrors, packages)
            if rewrite.drop_server:
                return Decision(False, "unmirrored", tuple(rules), None, tuple(rewrite.dropped))
            removed.extend(rewrite.dropped)
            packages = []
            for package, original in zip(rewrite.packages, rewrite.originals, strict=True):
                meta: dict[str, Any] = {"registryType": _registry_type(package)}
                if original is not None:
                    meta["original"] = original
                if self.verify_mode != "off" and original is not None:
                    check = check_for(package)
                    known = lookup(check) if check is not None else None
                    if check is not None and (known is None or not known.fresh):
                        pending.append(check)
                    meta["verification"] = known.result if known else "unknown"
                    if known is not None:
                        meta["checkedAt"] = format_timestamp(known.checked_at)
                    if self.verify_mode == "enforce" and meta["verification"] == "missing":
                        removed.append(meta["registryType"])
                        enforced = True
                        continue
                packages.append(package)
                metas.append(meta)
        if packages is not server.get("packages"):
            server = {**server, "packages": packages}
        if not packages and not server.get("remotes"):
            reason = "missing from mirror" if enforced else "not installable"
            return Decision(
                False, reason, tuple(rules), None, tuple(removed), None, [], tuple(pending)
            )
        if not any("original" in m for m in metas):
            metas = []
        return Decision(
            True, "served", tuple(rules), None, tuple(removed), server, metas, tuple(pending)
        )

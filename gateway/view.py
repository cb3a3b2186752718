"""A view's decision for one entry: policy.yaml, then the view's own file, which only narrows;
then the view's mirrors rewrite package locations, and verification results apply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from gateway.config import DEFAULT_VIEW as DEFAULT_VIEW
from gateway.config import MirrorSettings, PolicySettings, ViewSettings
from gateway.entry import Entry, compact_json, format_timestamp
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
    server_json: bytes | None = None  # compact JSON of the server object as served
    packages: list[dict[str, Any]] = field(default_factory=list)  # gateway _meta per package
    packages_json: bytes = b"}}}"  # the same, as the end of the gateway's `_meta` JSON
    pending: tuple[Check, ...] = ()  # mirror checks not known yet, or out of date

    @property
    def server(self) -> dict[str, Any] | None:
        if self.server_json is None:
            return None
        value: dict[str, Any] = orjson.loads(self.server_json)
        return value


@dataclass(frozen=True, slots=True)
class Shape:
    """An entry's server object after package types, mirrors and verification: the part of a
    decision that views with the same types and mirrors share."""

    server_json: bytes | None  # None: nothing installable is left
    reason: str
    removed: tuple[str, ...]
    packages: list[dict[str, Any]]
    pending: tuple[Check, ...]
    checked: bool = False  # mirror answers went into it: redo it when they may have changed
    packages_json: bytes = b"}}}"  # ends the gateway `_meta`, `_meta` and the item

    def __post_init__(self) -> None:
        if self.packages:  # computed once, shared by every view with these mirrors
            tail = b',"packages":' + orjson.dumps(self.packages) + b"}}}"
            object.__setattr__(self, "packages_json", tail)


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
        # Views with the same types and mirrors shape an entry the same way: one shared cache.
        self.shapes: dict[int, tuple[Entry, Shape]] = {}
        self.rewrites: dict[bytes, bytes] = {}  # equal rewritten servers share one bytes object
        self.checked: list[int] = []  # shapes that depend on mirror answers
        self.shape_key = (self.types, self.mirrors.settings.model_dump_json())

    @classmethod
    def of(
        cls,
        name: str,
        base: PolicySettings | Policy,
        own: ViewSettings | None,
        mirrors: MirrorSettings | None = None,
    ) -> ViewPolicy:
        policies = [base if isinstance(base, Policy) else Policy(base, "policy.yaml")]
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
        held_until = None
        for policy in self.policies:
            held = policy.held_until(entry)
            if held is not None and (held_until is None or held > held_until):
                held_until = held
        if held_until is not None and held_until > now:
            return Decision(False, "cooldown", tuple(rules), held_until)
        known = self.shapes.get(id(entry))
        if known is not None and known[0] is entry:
            shape = known[1]
        else:
            shape = self._shape(entry, lookup)
            self.shapes[id(entry)] = (entry, shape)
            if shape.checked:
                self.checked.append(id(entry))  # mirror answers change: redo next build
        if shape.server_json is None:
            return Decision(
                False, shape.reason, tuple(rules), removed_types=shape.removed,
                pending=shape.pending,
            )  # fmt: skip
        return Decision(
            True, "served", tuple(rules), removed_types=shape.removed,
            server_json=shape.server_json, packages=shape.packages,
            packages_json=shape.packages_json, pending=shape.pending,
        )  # fmt: skip

    def _shape(self, entry: Entry, lookup: Lookup) -> Shape:
        keep_types = self.types is None or entry.registry_types <= self.types
        if keep_types and not (entry.has_packages and self.mirrors.configured):
            if not entry.has_packages and not entry.has_remotes:
                return Shape(None, "not installable", (), [], ())
            return Shape(entry.server_json, "served", (), [], ())  # as received: no parsing
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
                return Shape(None, "unmirrored", tuple(rewrite.dropped), [], ())
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
        checked = self.verify_mode != "off"
        if not packages and not server.get("remotes"):
            reason = "missing from mirror" if enforced else "not installable"
            return Shape(None, reason, tuple(removed), [], tuple(pending), checked)
        if not any("original" in m for m in metas):
            metas = []
        if packages != server.get("packages"):
            server["packages"] = packages  # a parsed copy: the entry's bytes stay as received
            served = compact_json(server)
            served = self.rewrites.setdefault(served, served)
            return Shape(served, "served", tuple(removed), metas, tuple(pending), checked)
        return Shape(entry.server_json, "served", tuple(removed), metas, tuple(pending), checked)

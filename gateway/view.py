"""A view's decision for one entry: policy.yaml, then the view's own file, which only narrows;
then the view's mirrors rewrite package locations, and verification results apply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from gateway.config import DEFAULT_VIEW as DEFAULT_VIEW
from gateway.config import MirrorSettings, PolicySettings, ViewSettings
from gateway.entry import Entry, ServerJson, format_timestamp, json_bytes, with_packages
from gateway.mirrors import Mirrors, rewrite_packages
from gateway.policy import Policy
from gateway.registries import KNOWN, check_for
from gateway.registries.base import Check, Verdict

Lookup = Callable[[Check], Verdict | None]


def no_lookup(_: Check) -> Verdict | None:
    return None


def _dump(value: object) -> object:
    """Mirror settings as JSON, for telling views' settings apart."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(type(value).__name__)


# Decisions, shapes and items are made hundreds of thousands of times per build: plain slotted
# classes (never mutated) build several times faster than frozen dataclasses.


@dataclass(slots=True)
class Decision:
    """Whether a view serves an entry, why, and the server object as it would be served."""

    served: bool
    reason: str  # served | denied | cooldown | unmirrored | missing from mirror | not installable
    rules: tuple[str, ...]  # the deciding rule of each policy file consulted, in order
    held_until: datetime | None = None
    removed_types: tuple[str, ...] = ()  # by packages.types, unmirrored or enforce
    server_json: ServerJson | None = None  # the server object as served
    packages: tuple[dict[str, Any], ...] = ()  # gateway _meta per package
    packages_json: bytes = b"}}}"  # the same, as the end of the gateway's `_meta` JSON
    pending: tuple[Check, ...] = ()  # mirror checks not known yet, or out of date

    @property
    def server(self) -> dict[str, Any] | None:
        if self.server_json is None:
            return None
        value: dict[str, Any] = orjson.loads(json_bytes(self.server_json))
        return value


@dataclass(slots=True)
class Shape:
    """An entry's server object after package types, mirrors and verification: the part of a
    decision that views shaping the entry alike share."""

    server_json: ServerJson | None  # None: nothing installable is left; b"": the entry's own
    reason: str
    removed: tuple[str, ...]
    packages: tuple[dict[str, Any], ...]
    pending: tuple[Check, ...]
    packages_json: bytes = b"}}}"  # ends the gateway `_meta`, `_meta` and the item

    def __post_init__(self) -> None:
        if self.packages:  # computed once, shared by every view with these mirrors
            self.packages_json = b',"packages":' + orjson.dumps(self.packages) + b"}}}"


_AS_RECEIVED = Shape(b"", "served", (), (), ())
_NOT_INSTALLABLE = Shape(None, "not installable", (), (), ())


class Reshaped:
    """An entry's server object as a view's package types and mirrors serve it, made the first
    time it is written (a page, an export) and then kept.

    Where nothing but the rewrite itself depends on it (mirror checks off, unmirrored packages
    kept), a build needs to know only that the entry is served: which entries a view serves
    follows from the entry's facts. Rewriting every package of a catalog is most of a cold
    build; most items are never asked for before the next build keeps them.
    """

    __slots__ = ("_entry", "_made", "_policy")

    def __init__(self, entry: Entry, policy: ViewPolicy) -> None:
        self._entry = entry
        self._policy: ViewPolicy | None = policy
        self._made: tuple[ServerJson, bytes] | None = None

    def made(self) -> tuple[ServerJson, bytes]:
        """The server JSON as served, and the end of the gateway's `_meta` (its `packages`)."""
        made = self._made
        if made is None:  # two threads may both make it: the results are equal
            assert self._policy is not None
            shape = self._policy._shape(self._entry, no_lookup)
            assert shape.server_json is not None  # installable: decided by the build
            made = self._made = (shape.server_json or self._entry.server_json, shape.packages_json)
            self._policy = None
        return made

    def __bytes__(self) -> bytes:
        return json_bytes(self.made()[0])


# What a view serves of an entry: the server JSON (packages possibly filtered or rewritten, or to
# be rewritten when first written), the rules that admitted it, and the end of the gateway's
# `_meta`: `}}}`, or its `packages` (the original locations and mirror checks) then `}}}`.
Admission = tuple[ServerJson | Reshaped, tuple[str, ...], bytes]


def _registry_type(package: object) -> str:
    return str(package.get("registryType")) if isinstance(package, dict) else "?"


_MIRRORED_KINDS = frozenset(KNOWN)  # the keys of mirrors.yaml by type


class Shapes:
    """The shapes of the entry being decided, shared by every view that shapes it alike: the
    same package types, and the same mirror settings for the registry types it has. A view
    with its own npm mirror still shares the shapes of PyPI-only and remote-only entries.

    A build decides each entry in every view in turn, so only the current entry's shapes are
    kept: nothing per entry outlives its decision (an unchanged server keeps its items).
    """

    def __init__(self) -> None:
        self._entry: Entry | None = None
        self._found: dict[object, Shape] = {}
        self._later: dict[object, Reshaped] = {}

    def of(self, entry: Entry) -> dict[object, Shape]:
        """The shapes found so far for this entry, by shaping key."""
        self._current(entry)
        return self._found

    def later(self, entry: Entry) -> dict[object, Reshaped]:
        """The shapes to be to make when written found so far for this entry, by shaping key."""
        self._current(entry)
        return self._later

    def _current(self, entry: Entry) -> None:
        if entry is not self._entry:
            self._entry = entry
            self._found = {}
            self._later = {}


class ViewPolicy:
    """What one view applies: policy.yaml, the view's own file, and the view's mirrors."""

    def __init__(
        self, name: str, policies: list[Policy], mirrors: MirrorSettings | None = None
    ) -> None:
        self.name = name
        self.policies = policies
        self._aging = [p for p in policies if p.min_age is not None]
        types = [p.types for p in policies if p.types is not None]
        self.types: frozenset[str] | None = frozenset.intersection(*types) if types else None
        self.mirrors = Mirrors(mirrors or MirrorSettings())
        self._mirrored = self.mirrors.configured
        self.verify_mode = self.mirrors.settings.verify.mode
        # Whether an entry's rewrite can wait until it is written (see Reshaped): nothing a
        # build counts or hides depends on it.
        self._defers = self.verify_mode == "off" and self.mirrors.settings.unmirrored == "keep"
        self.shapes = Shapes()  # replaced by one store shared by every view of a config
        self._keys: dict[frozenset[str], object] = {}  # registry types -> shaping key

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

    def share(self, shapes: Shapes) -> None:
        """Keep shapes in a store shared with the config's other views."""
        self.shapes = shapes

    def _key(self, registry_types: frozenset[str]) -> object:
        """What shapes an entry with these registry types in this view: equal keys, equal
        shapes, whichever view asks."""
        key = self._keys.get(registry_types)
        if key is None:
            settings = self.mirrors.settings
            relevant = tuple(
                (kind, orjson.dumps(getattr(settings, kind), default=_dump))
                for kind in sorted(registry_types & _MIRRORED_KINDS)
            )
            key = self._keys[registry_types] = (
                self.types, settings.unmirrored, settings.verify.model_dump_json(), relevant
            )  # fmt: skip
        return key

    def _rules(self, upstream: str, entry: Entry, now: datetime) -> tuple[str, ...] | Decision:
        """What the policy files say: the rules that admit the entry, or why it is hidden."""
        rules: tuple[str, ...] = ()
        for policy in self.policies:
            verdict = policy.verdict(upstream, entry)
            rules += verdict.rules
            if not verdict.allowed:
                return Decision(False, "denied", rules)
        if self._aging:
            held_until = max(p.held_until(entry) or now for p in self._aging)
            if held_until > now:
                return Decision(False, "cooldown", rules, held_until)
        return rules

    def decide(
        self, upstream: str, entry: Entry, now: datetime, lookup: Lookup = no_lookup
    ) -> Decision:
        rules = self._rules(upstream, entry, now)
        if isinstance(rules, Decision):
            return rules
        shape = self.shape(entry, lookup)
        if shape.server_json is None:
            return Decision(
                False, shape.reason, rules, None, shape.removed, None, (), b"}}}", shape.pending
            )
        return Decision(
            True, "served", rules, None, shape.removed, shape.server_json or entry.server_json,
            shape.packages, shape.packages_json, shape.pending,
        )  # fmt: skip

    def admit(
        self, upstream: str, entry: Entry, now: datetime, lookup: Lookup = no_lookup
    ) -> Admission | Decision:
        """What a build needs: a served entry's admission where its rewrite can wait (see
        Reshaped), else the whole decision."""
        if not self._defers:
            return self.decide(upstream, entry, now, lookup)
        rules = self._rules(upstream, entry, now)
        if isinstance(rules, Decision):
            return rules
        if not (entry.has_packages or entry.has_remotes):
            return Decision(False, "not installable", rules)
        types = self.types
        if (types is None or entry.registry_types <= types) and not (
            entry.has_packages and self._mirrored
        ):
            return entry.server_json, rules, b"}}}"
        if types is not None and not entry.has_remotes and types.isdisjoint(entry.registry_types):
            return Decision(False, "not installable", rules)  # no package of its types is left
        later = self.shapes.later(entry)
        key = self._key(entry.registry_types)
        reshaped = later.get(key)
        if reshaped is None:
            reshaped = later[key] = Reshaped(entry, self)
        return reshaped, rules, b""

    def shape(self, entry: Entry, lookup: Lookup = no_lookup) -> Shape:
        """What this view serves of an entry's server object, whatever its policy says."""
        types = self.types
        if (types is None or entry.registry_types <= types) and not (
            entry.has_packages and self._mirrored
        ):  # served as received: no parsing, nothing to remember
            return _AS_RECEIVED if entry.has_packages or entry.has_remotes else _NOT_INSTALLABLE
        found = self.shapes.of(entry)
        key = self._key(entry.registry_types)
        shape = found.get(key)
        if shape is None:
            shape = found[key] = self._shape(entry, lookup)
        return shape

    def _shape(self, entry: Entry, lookup: Lookup) -> Shape:
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
                return Shape(None, "unmirrored", tuple(rewrite.dropped), (), ())
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
        if not packages and not server.get("remotes"):
            reason = "missing from mirror" if enforced else "not installable"
            return Shape(None, reason, tuple(removed), (), tuple(pending))
        described = tuple(metas) if any("original" in m for m in metas) else ()
        if packages != server.get("packages"):
            assert isinstance(packages, list)  # filtered or rewritten
            served = with_packages(entry, server, packages)  # the entry's bytes stay as received
            return Shape(served, "served", tuple(removed), described, tuple(pending))
        return Shape(b"", "served", tuple(removed), described, tuple(pending))

"""What a view serves of an entry's server object, whatever its policy says: the view's package
types, its mirrors' rewrite, and what mirror checks found (`Shape`). A `Rewriter` is a value
(a view's types and mirror settings, compiled once): the build decides with it, and where
nothing but the bytes depends on the rewrite, a `served.Deferred` holding the entry and the
rewriter makes them when the item is first written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.entry import Entry, ServerJson, format_timestamp, with_packages
from gateway.mirrors import Mirrors, rewrite_packages
from gateway.receipts import receipts, scanned
from gateway.registries import check_for
from gateway.registries.base import Check, Verdict, unchanged
from gateway.served import CLOSE, packages_end
from gateway.signals import (
    NO_SIGNALS,
    NO_STATES,
    SIGNALS,
    Provenance,
    Signals,
    Signature,
    Signing,
    State,
    best,
    bound,
    combined,
    joined,
    worst,
)

SCAN = SIGNALS.index("scan")

Lookup = Callable[[Check], Verdict | None]
Found = tuple[str, Signals | None]  # a served package's type, and its signals (None: unread)


def no_lookup(_: Check) -> Verdict | None:
    return None


@dataclass(slots=True)
class Shape:
    """An entry's server object after package types, mirrors and verification: the part of a
    decision that views shaping the entry alike share."""

    server_json: ServerJson | None  # None: nothing installable is left; b"": the entry's own
    reason: str
    removed: tuple[str, ...]
    packages: tuple[dict[str, Any], ...]
    pending: tuple[Check, ...]
    packages_json: bytes = CLOSE  # ends the gateway `_meta`, `_meta` and the item
    # each of SIGNALS, the served packages' combined (see `signals`); None: not collected
    signals: tuple[State | None, ...] = NO_STATES

    def __post_init__(self) -> None:
        if self.packages:  # computed once, shared by every view with these mirrors
            self.packages_json = packages_end(self.packages)


AS_RECEIVED = Shape(b"", "served", (), (), ())
NOT_INSTALLABLE = Shape(None, "not installable", (), (), ())


def _state(signals: Signals | None, signal: str) -> State:
    found = signals.state(signal) if signals is not None else None
    return found or "unknown"


def _of_entry(
    found: Signals | None, server: dict[str, Any], package: object, scan: bool
) -> Signals | None:
    """A package version's signals as one entry has them: provenance (and keyless signatures)
    bound to the server's repository, the mirror's digest joined to the package's own, and
    (`scan`) what the entry's scan receipts say of the mirror's bytes."""
    if found is None:
        return None
    signature, provenance, digest = found.signature, found.provenance, found.digest
    repository = server.get("repository")
    if found.answers:  # several: each bound, then the worst (or best) picked
        pick = best if found.best else worst
        signatures = [bound(a, repository) for a in found.answers if isinstance(a, Signature)]
        provenances = [bound(a, repository) for a in found.answers if isinstance(a, Provenance)]
        signature = pick(signatures) or signature
        provenance = pick(provenances) or provenance
    else:
        if signature is not None and signature.identity is not None:  # keyless: bound
            signature = bound(signature, repository)
        if provenance is not None:
            provenance = bound(provenance, repository)
    if digest is not None:
        digest = joined(digest, package)
    checked = scanned(found, receipts(server), datetime.now(UTC)) if scan else None
    same = signature is found.signature and provenance is found.provenance
    if same and digest is found.digest and checked is None:
        return found
    return found.of_entry(signature, provenance, digest, checked)


def registry_type(package: object) -> str:
    return str(package.get("registryType")) if isinstance(package, dict) else "?"


@dataclass(frozen=True, slots=True)
class SignalFacts:
    """What a view's signals say of an entry: combined states, the checks still to ask,
    and the answers they were decided with (what its deferred bytes are then made from)."""

    states: tuple[State | None, ...]
    pending: tuple[Check, ...]
    answers: tuple[tuple[Check, Verdict | None], ...]
    until: float = math.inf  # `time.monotonic()` when the first answer it read turns stale


NO_FACTS = SignalFacts(NO_STATES, (), ())


class Answered:
    """A rewrite whose bytes say the mirror answers its decision was made with (a value, as
    `served.Deferred` wants: later answers wait for the next build)."""

    __slots__ = ("answers", "rewriter")

    def __init__(self, rewriter: Rewriter, answers: tuple[tuple[Check, Verdict | None], ...]):
        self.rewriter = rewriter
        self.answers = answers

    def served(self, entry: Entry) -> tuple[ServerJson, bytes]:
        known = dict(self.answers)
        shape = self.rewriter.shape(entry, known.get)
        assert shape.server_json is not None  # installable: decided by the build
        return shape.server_json or entry.server_json, shape.packages_json


class Rewriter:
    """One view's package types and mirrors: what they make of an entry's server object."""

    __slots__ = ("collected", "mirrored", "mirrors", "signing", "types", "verify_mode")

    def __init__(
        self,
        types: frozenset[str] | None,
        mirrors: Mirrors,
        signing: Signing = NO_SIGNALS,
    ) -> None:
        self.types = types
        self.mirrors = mirrors
        self.mirrored = mirrors.configured
        self.verify_mode = mirrors.settings.verify.mode
        self.signing = signing  # which signals are collected for which package types
        # each collected signal: its index in SIGNALS, name, and the types that collect it
        self.collected: tuple[tuple[int, str, frozenset[str]], ...] = tuple(
            (index, signal, frozenset(k for k, flags in signing.by_type if flags[index]))
            for index, signal in enumerate(SIGNALS)
            if signing.flags[index]
        )

    def as_received(self, entry: Entry) -> bool:
        """Whether the view serves the entry's server object exactly as received."""
        types = self.types
        return (types is None or entry.registry_types <= types) and not (
            entry.has_packages and self.mirrored
        )

    def nothing_left(self, entry: Entry) -> bool:
        """Whether no package of the view's types is left and there is no remote."""
        types = self.types
        return (
            types is not None and not entry.has_remotes and types.isdisjoint(entry.registry_types)
        )

    def served(self, entry: Entry) -> tuple[ServerJson, bytes]:
        """A deferred rewrite made (see `served.Deferred`): no mirror check consulted, so
        only for views that check none."""
        shape = self.shape(entry, no_lookup)
        assert shape.server_json is not None  # installable: decided by the build
        return shape.server_json or entry.server_json, shape.packages_json

    def signal_facts(self, entry: Entry, lookup: Lookup) -> SignalFacts:
        """The signals a view decides an entry with, without shaping it: each signed package's
        mirror location, its answer, and the combined states (what `shape` would find)."""
        server = entry.server
        packages = server.get("packages")
        if not isinstance(packages, list):
            packages = []
        types = self.types
        states: list[Found] = []
        pending: list[Check] = []
        answers: list[tuple[Check, Verdict | None]] = []
        signed = self.signing.types
        for package in packages:
            kind = registry_type(package)
            if kind not in signed or (types is not None and kind not in types):
                continue
            result = self.mirrors.rewrite(package) if self.mirrored else unchanged(package)
            check = check_for(result.package) if result.original is not None else None
            if check is None:
                states.append((kind, None))
                continue
            known = lookup(check)
            answers.append((check, known))
            if known is None or not known.fresh:
                pending.append(check)
            scan = self.signing.of(kind)[SCAN]
            found = _of_entry(known.signals if known is not None else None, server, package, scan)
            states.append((kind, found))
        until = min((v.until if v is not None else 0.0 for _, v in answers), default=math.inf)
        ends = [s.scan.until for _, s in states if s is not None and s.scan is not None]
        if any(ends):  # a receipt that counts stops counting then: decide anew
            first = min(end for end in ends if end is not None)
            left = (first - datetime.now(UTC)).total_seconds()
            until = min(until, time.monotonic() + left)
        return SignalFacts(self._states(states), tuple(pending), tuple(answers), until)

    def shape(self, entry: Entry, lookup: Lookup) -> Shape:
        server = entry.server
        packages = server.get("packages")
        removed: list[str] = []
        if self.types is not None and isinstance(packages, list):
            kept = [p for p in packages if registry_type(p) in self.types]
            removed = [registry_type(p) for p in packages if registry_type(p) not in self.types]
            packages = kept
        metas: list[dict[str, Any]] = []
        pending: list[Check] = []
        signals: list[Found] = []  # of each signed package served
        enforced = False  # a package was removed because its mirror does not have it
        signing = self.signing != NO_SIGNALS
        if isinstance(packages, list) and packages and self.mirrored:
            rewrite = rewrite_packages(self.mirrors, packages)
            if rewrite.drop_server:
                return Shape(None, "unmirrored", tuple(rewrite.dropped), (), ())
            removed.extend(rewrite.dropped)
            packages = []
            for package, original in zip(rewrite.packages, rewrite.originals, strict=True):
                meta: dict[str, Any] = {"registryType": registry_type(package)}
                if original is not None:
                    meta["original"] = original
                signed = signing and meta["registryType"] in self.signing.types
                known = None
                if (self.verify_mode != "off" or signed) and original is not None:
                    check = check_for(package)
                    known = lookup(check) if check is not None else None
                    if check is not None and (known is None or not known.fresh):
                        pending.append(check)
                if self.verify_mode != "off" and original is not None:
                    meta["verification"] = known.result if known else "unknown"
                    if known is not None:
                        meta["checkedAt"] = format_timestamp(known.checked_at)
                    if self.verify_mode == "enforce" and meta["verification"] == "missing":
                        removed.append(meta["registryType"])
                        enforced = True
                        continue
                if signed:
                    scan = self.signing.of(meta["registryType"])[SCAN]
                    found = known.signals if known is not None else None
                    found = _of_entry(found, server, package, scan)
                    kind = meta["registryType"]
                    signals.append((kind, found))
                    meta["signals"] = (
                        found.meta() if found is not None else self._unread(original, kind)
                    )
                packages.append(package)
                metas.append(meta)
        elif signing and isinstance(packages, list):  # nothing mirrored: nothing asked
            signals.extend(
                (registry_type(p), None) for p in packages if registry_type(p) in self.signing.types
            )
        if not packages and not server.get("remotes"):
            reason = "missing from mirror" if enforced else "not installable"
            return Shape(None, reason, tuple(removed), (), tuple(pending))
        described = tuple(metas) if any("original" in m or "signals" in m for m in metas) else ()
        states = self._states(signals) if signing else NO_STATES
        if packages != server.get("packages"):
            assert isinstance(packages, list)  # filtered or rewritten
            served = with_packages(entry, server, packages)  # the entry's bytes stay as received
            return Shape(served, "served", tuple(removed), described, tuple(pending), CLOSE, states)
        return Shape(b"", "served", tuple(removed), described, tuple(pending), CLOSE, states)

    def _unread(self, original: dict[str, Any] | None, kind: str) -> dict[str, Any]:
        why = "not asked yet" if original is not None else "not installed from a configured mirror"
        found: dict[str, Any] = {}
        for signal, collected in zip(SIGNALS, self.signing.of(kind), strict=True):
            if collected:
                found[signal] = {"state": "unknown", "why": why}
        return found

    def _states(self, signals: list[Found]) -> tuple[State | None, ...]:
        """Each collected signal's state for the version: the worst of its packages' whose
        type collects it."""
        states = list(NO_STATES)
        for index, signal, kinds in self.collected:
            states[index] = combined([_state(s, signal) for kind, s in signals if kind in kinds],
                                     signal)  # fmt: skip
        return tuple(states)

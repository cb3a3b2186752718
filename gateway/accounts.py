"""Accounts of how a server fares (`explain`), from the data the gateway holds now: for
`/admin/explain` and for the server pages developers read.

Each account scans every entry of every upstream, so it is worked out in a worker thread.
The views' policies are compiled once per config, not once per account; they remember what
they decided last (a build's shortcut), so accounts are worked out one at a time, never in
two threads at once and never with the build's own policies.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import orjson
from cachetools import LRUCache

from gateway.config import FederationConfig
from gateway.errors import NotReady
from gateway.explain import Explanation, explain
from gateway.merge import Source
from gateway.osv import Advisories
from gateway.refresher import Refresher
from gateway.snapshot import view_policies
from gateway.trust import Trust
from gateway.view import ViewPolicy

REPORT_BYTES = 16 * 1024 * 1024  # server pages' accounts kept at once

# Policies remember the rules matching each name they have seen: compiled afresh after this
# many accounts, so names asked about (any name, on /admin/explain) cannot grow them for good.
RECOMPILE_EVERY = 1024

_lock = threading.Lock()
_compiled: tuple[FederationConfig, Advisories | None, list[ViewPolicy]] | None = None
_uses = 0
# What the policies' trust keys read: the refresher's feed, as the build's (with details).
_trust = Trust(detail=True)


def _policies(config: FederationConfig, advisories: Advisories | None) -> list[ViewPolicy]:
    """The views' policies of this config, compiled on first need and again when the advisory
    feeds change (call with `_lock` held)."""
    global _compiled, _uses
    _uses += 1
    if (
        _compiled is None
        or _compiled[0] is not config
        or _compiled[1] is not advisories
        or _uses > RECOMPILE_EVERY
    ):
        _compiled, _uses = (config, advisories, view_policies(config, _trust)), 1
    _trust.use(advisories)
    return _compiled[2]


def explain_server(
    refresher: Refresher, name: str, view: str | None, version: str | None = None
) -> Explanation:
    """How each version of a server fares in a view (every view when None). Blocking.
    `NotReady` until this process has built from its upstreams' data: a catalog kept by the
    last run is served before, and what the upstreams offer is not loaded yet."""
    if not refresher.build_durations:
        raise NotReady(refresher.awaiting())
    config = refresher.config
    sources = [Source(s.name, list(s.entries.values()), s.settings.owns) for s in refresher.feeds]
    with _lock:
        try:
            return explain(
                config,
                _policies(config, refresher.advisories.current),
                sources,
                name,
                version=version,
                view=view,
                now=datetime.now(UTC),
                lookup=refresher.verifier.lookup,
                trust=_trust,
            )
        finally:
            _trust.prune(set())  # accounts are one name at a time: nothing worth keeping


def _report_size(report: Explanation) -> int:
    return 4 * len(orjson.dumps(report.to_json())) + 1024  # objects take a few times their JSON


class Explained:
    """Server pages' accounts for the current snapshot: only for names some upstream offers,
    and remembered until the catalog changes."""

    def __init__(self) -> None:
        self._built: tuple[int, object] | None = None  # which snapshot (not a reference to it)
        # Bounded by the bytes the reports hold (as JSON, and their keys), not by their number.
        self._reports: LRUCache[tuple[str, str], Explanation] = LRUCache(
            maxsize=REPORT_BYTES, getsizeof=_report_size
        )

    async def report(self, refresher: Refresher, view: str, name: str) -> Explanation | None:
        """None when no upstream offers the name."""
        snapshot = refresher.snapshot
        built = (id(snapshot), snapshot.built_at if snapshot else None)
        if built != self._built:
            self._built = built
            self._reports.clear()
        if refresher.build_durations and not refresher.builder.offers(name):
            return None
        known = self._reports.get((view, name))
        if known is not None:
            return known
        report = await asyncio.to_thread(explain_server, refresher, name, view)
        self._reports[(view, name)] = report
        return report

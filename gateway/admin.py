"""Operator endpoints under /admin, behind the bearer `admin_token` (no token: /admin is off)."""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog
from aiohttp import web
from cachetools import LRUCache

from gateway import __version__, compiled
from gateway.config import DEFAULT_VIEW, FederationConfig, redact_url
from gateway.entry import format_timestamp
from gateway.errors import (
    BadRequest,
    ConfigRefused,
    MethodNotAllowed,
    NotFound,
    NothingHeld,
    Unauthorized,
    UnknownUpstream,
    UnknownView,
)
from gateway.explain import explain
from gateway.merge import Source
from gateway.refresher import Refresher
from gateway.reloader import ConfigLoader, reload_config
from gateway.routes import Route
from gateway.snapshot import Snapshot, view_policies

log = structlog.get_logger("gateway.admin")
HISTORY = timedelta(days=1)  # of syncs, in /admin/status (the operators' page draws it)


def authorize(request: web.BaseRequest, config: FederationConfig) -> None:
    """Constant-time bearer check; an unset token turns /admin off entirely."""
    token = config.gateway.admin_token
    if token is None:
        raise NotFound("Endpoint not found (set admin_token to enable /admin)")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    given = given.strip()
    if scheme.lower() != "bearer" or not given or not hmac.compare_digest(given.encode(), expected):
        raise Unauthorized("a valid bearer token is required for /admin")


def _explain(refresher: Refresher, params: Any) -> dict[str, Any]:
    name = params.get("name")
    if not name:
        raise BadRequest("name is required, e.g. /admin/explain?name=io.github.acme/weather")
    view = params.get("view") or None
    config = refresher.config
    if view is not None and view != DEFAULT_VIEW and view not in config.views:
        raise UnknownView(view)
    return explain_server(refresher, name, view, version=params.get("version") or None)


def explain_server(
    refresher: Refresher, name: str, view: str | None, version: str | None = None
) -> dict[str, Any]:
    """How each version of a server fares in a view (every view when None), from the data
    the gateway holds now."""
    config = refresher.config
    sources = [Source(s.name, list(s.entries.values()), s.settings.owns) for s in refresher.feeds]
    return explain(
        config,
        view_policies(config),
        sources,
        name,
        version=version,
        view=view,
        now=datetime.now(UTC),
        lookup=refresher.verifier.lookup,
    )


REPORT_BYTES = 16 * 1024 * 1024  # server pages' accounts kept at once


def _report_size(report: dict[str, object]) -> int:
    return 4 * len(orjson.dumps(report)) + 1024  # parsed objects take a few times their JSON


def _search_status(snapshot: Snapshot | None) -> dict[str, object]:
    """Whether searches of the served catalog are answered from the index yet (they scan
    until it catches up with a build), and its size."""
    view = snapshot.views.get(DEFAULT_VIEW) if snapshot is not None else None
    if view is None or view.search is None:
        return {"indexed": False}
    return {"indexed": view.search.covers(view.token), **view.search.size()}


class Explained:
    """Server pages' accounts (`explain`) for the current snapshot: each scans every entry,
    so they are worked out in a worker thread, only for names some upstream offers, and
    remembered until the catalog changes."""

    def __init__(self) -> None:
        self._built: tuple[int, object] | None = None  # which snapshot (not a reference to it)
        # Bounded by the bytes the reports hold (as JSON, and their keys), not by their number.
        self._reports: LRUCache[tuple[str, str], dict[str, object]] = LRUCache(
            maxsize=REPORT_BYTES, getsizeof=_report_size
        )

    async def report(self, refresher: Refresher, view: str, name: str) -> dict[str, object] | None:
        """None when no upstream offers the name."""
        snapshot = refresher.snapshot
        built = (id(snapshot), snapshot.built_at if snapshot else None)
        if built != self._built:
            self._built = built
            self._reports.clear()
        if not refresher.builder.offers(name):
            return None
        known = self._reports.get((view, name))
        if known is not None:
            return known
        report: dict[str, object] = await asyncio.to_thread(explain_server, refresher, name, view)
        self._reports[(view, name)] = report
        return report


async def handle_admin(
    request: web.BaseRequest, route: Route, refresher: Refresher, load: ConfigLoader
) -> dict[str, Any]:
    """Answer an /admin request (its route resolved by `routes`) with a JSON document."""
    authorize(request, refresher.config)
    endpoint = route.endpoint
    if endpoint == "explain":
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed("use GET")
        return _explain(refresher, request.query)
    if endpoint == "reload":
        if request.method != "POST":
            raise MethodNotAllowed("use POST")
        refused = await reload_config(refresher, load)
        if refused is not None:
            raise ConfigRefused(refused)
        return {"status": "reloaded", "views": [DEFAULT_VIEW, *refresher.config.views]}
    if endpoint == "status":
        return status(refresher)
    if endpoint in ("sync", "confirm-drop"):
        if request.method != "POST":
            raise MethodNotAllowed("use POST")
        name = route.name
        assert name is not None
        if name not in [feed.name for feed in refresher.feeds]:
            raise UnknownUpstream(name)
        if endpoint == "sync":
            changed = await refresher.sync_now(name)
            feed = refresher.feed(name)
            return {"upstream": name, "changed": changed, "error": feed.last_error}
        if not await refresher.confirm_drop(name):
            raise NothingHeld(name)
        return {"status": "applied", "upstream": name, "entries": len(refresher.feed(name).entries)}
    raise NotFound("Endpoint not found")


def _time(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment else None


def status(refresher: Refresher) -> dict[str, Any]:
    """Everything an operator asks first: is each upstream healthy, what does each view serve."""
    now = datetime.now(UTC)
    upstreams = []
    for feed in refresher.feeds:
        settings = feed.settings
        age = feed.data_age(now)
        held = feed.held
        upstreams.append(
            {
                "name": feed.name,
                "source": redact_url(settings.url) if settings.url else str(settings.file),
                "optional": settings.optional,
                "hasData": feed.has_data,  # from state or a sync: what readiness waits for
                "fullSyncAt": _time(feed.full_synced_at),
                "syncPosition": _time(feed.synced_up_to),  # incremental polls ask from here
                "lastSuccess": _time(feed.last_success),
                "lastError": feed.last_error,
                "lastErrorAt": _time(feed.last_error_at),
                "dataSyncedAt": _time(feed.synced_at),
                "ageSeconds": round(age, 1) if age is not None else None,
                "entries": len(feed.entries),
                "skippedLastSync": feed.skipped,
                "skippedTotal": feed.skipped_total,
                "failuresTotal": feed.failures_total,
                "lastDurationMs": round(feed.last_duration * 1000, 1)
                if feed.last_duration is not None
                else None,
                "breaker": {"state": feed.breaker.state, "failures": feed.breaker.failures},
                "stale": feed.stale(),
                "staleSince": _time(feed.failing_since),
                "beyondMaxStale": feed.beyond_max_stale(now),
                "heldDrop": {"before": held.before, "after": held.after, "since": _time(held.since)}
                if held
                else None,
                # [finished at, milliseconds, succeeded] of each sync in the last day
                "history": [
                    [_time(at), round(seconds * 1000, 1), ok]
                    for at, seconds, ok in feed.history
                    if now - at <= HISTORY
                ],
            }
        )
    snapshot = refresher.snapshot
    views = []
    if snapshot is not None:
        for name, view in snapshot.views.items():
            views.append(
                {"name": name, "entries": len(view), "hidden": snapshot.hidden.get(name, {})}
            )
    return {
        "version": __version__,
        "compiled": compiled(),  # whether the snapshot build runs compiled (setup.py)
        "ready": snapshot is not None,
        "awaiting": refresher.awaited(),  # required upstreams with no data yet
        "snapshotBuiltAt": _time(snapshot.built_at) if snapshot else None,
        "snapshotBuildMs": round(refresher.build_durations[-1] * 1000, 1)
        if refresher.build_durations
        else None,
        "config": {
            "directory": str(refresher.config.directory),
            "reloadError": refresher.reload_error,
        },
        "upstreams": upstreams,
        "views": views,
        "verification": snapshot.verification if snapshot else {},
        "search": _search_status(snapshot),
    }

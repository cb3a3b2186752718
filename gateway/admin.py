"""Operator endpoints under /admin, behind the bearer `admin_token` (no token: /admin is off)."""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiohttp import web
from cachetools import LRUCache

from gateway.config import DEFAULT_VIEW, FederationConfig
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
from gateway.explain import Explanation, explain
from gateway.merge import Source
from gateway.refresher import Refresher
from gateway.reloader import ConfigLoader, reload_config
from gateway.routes import Route
from gateway.snapshot import view_policies

log = structlog.get_logger("gateway.admin")


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


def _explain(refresher: Refresher, params: Any) -> Explanation:
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
) -> Explanation:
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


def _report_size(report: Explanation) -> int:
    return 4 * len(orjson.dumps(report.to_json())) + 1024  # objects take a few times their JSON


class Explained:
    """Server pages' accounts (`explain`) for the current snapshot: each scans every entry,
    so they are worked out in a worker thread, only for names some upstream offers, and
    remembered until the catalog changes."""

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
        if not refresher.builder.offers(name):
            return None
        known = self._reports.get((view, name))
        if known is not None:
            return known
        report = await asyncio.to_thread(explain_server, refresher, name, view)
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
        return _explain(refresher, request.query).to_json()
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


def status(refresher: Refresher) -> dict[str, Any]:
    """Everything an operator asks first (see `status.GatewayStatus`)."""
    return refresher.status().to_json(datetime.now(UTC))

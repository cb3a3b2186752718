"""Operator endpoints under /admin, behind the bearer `admin_token` (no token: /admin is off)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from gateway.accounts import explain_server
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
from gateway.explain import Explanation
from gateway.refresher import Refresher
from gateway.reloader import ConfigLoader, reload_config
from gateway.routes import Route

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

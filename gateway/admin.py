"""Operator endpoints under /admin, behind the bearer `admin_token` (no token: /admin is off)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from gateway.config import DEFAULT_VIEW, FederationConfig
from gateway.errors import BadRequest, ConfigError, MethodNotAllowed, NotFound, Unauthorized
from gateway.explain import explain
from gateway.merge import Source
from gateway.refresher import Refresher
from gateway.snapshot import view_policies

log = structlog.get_logger("gateway.admin")

ConfigLoader = Callable[[], FederationConfig]


def authorize(request: web.Request, config: FederationConfig) -> None:
    """Constant-time bearer check; an unset token turns /admin off entirely."""
    token = config.gateway.admin_token
    if token is None:
        raise NotFound("Endpoint not found (set admin_token to enable /admin)")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("a valid bearer token is required for /admin")


async def reload_config(refresher: Refresher, load: ConfigLoader) -> str | None:
    """Load the config again; apply it if valid. Returns the refusal, or None when applied."""
    try:
        config = await asyncio.to_thread(load)
    except ConfigError as exc:
        refresher.reload_error = str(exc)
        log.error("config_reload_failed", issues=[str(issue) for issue in exc.issues])
        return refresher.reload_error
    await refresher.apply(config)
    refresher.reload_error = None
    log.info("config_reloaded", views=sorted(config.views), upstreams=len(config.gateway.upstreams))
    return None


def _explain(refresher: Refresher, params: Any) -> dict[str, Any]:
    name = params.get("name")
    if not name:
        raise BadRequest("name is required, e.g. /admin/explain?name=io.github.acme/weather")
    view = params.get("view") or None
    config = refresher.config
    if view is not None and view != DEFAULT_VIEW and view not in config.views:
        raise NotFound(f"View not found: {view!r} is not configured")
    sources = [Source(s.name, list(s.entries.values()), s.settings.owns) for s in refresher.feeds]
    return explain(
        config,
        view_policies(config),
        sources,
        name,
        version=params.get("version") or None,
        view=view,
        now=datetime.now(UTC),
        lookup=refresher.verifier.lookup,
    )


async def handle_admin(
    request: web.Request, refresher: Refresher, load: ConfigLoader
) -> dict[str, Any]:
    """Answer an /admin request with a JSON document."""
    authorize(request, refresher.config)
    path = request.path.rstrip("/")
    if path == "/admin/explain":
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed("use GET")
        return _explain(refresher, request.query)
    if path == "/admin/reload":
        if request.method != "POST":
            raise MethodNotAllowed("use POST")
        refused = await reload_config(refresher, load)
        if refused is not None:
            raise BadRequest(f"config refused, the previous one keeps serving:\n{refused}")
        return {"status": "reloaded", "views": [DEFAULT_VIEW, *refresher.config.views]}
    raise NotFound("Endpoint not found")

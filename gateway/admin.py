"""Operator endpoints under /admin, behind the bearer `admin_token` (no token: /admin is off).

Every action (reload, sync, confirm-drop; refused ones too) goes to the audit log under the
caller's token id (`audit`); `/admin/audit` answers the log's newest entries. Explaining reads
only, and is not audited.
"""

from __future__ import annotations

import asyncio
import hmac
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from gateway.accounts import explain_server
from gateway.audit import Actor, Audit, Outcome
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


def authorize(request: web.BaseRequest, config: FederationConfig) -> str:
    """Constant-time bearer check; an unset token turns /admin off entirely. The token given."""
    token = config.gateway.admin_token
    if token is None:
        raise NotFound("Endpoint not found (set admin_token to enable /admin)")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    given = given.strip()
    if scheme.lower() != "bearer" or not given or not hmac.compare_digest(given.encode(), expected):
        raise Unauthorized("a valid bearer token is required for /admin")
    return given


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
    actor = Actor.of_token(authorize(request, refresher.config))
    endpoint = route.endpoint
    if endpoint == "explain":
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed("use GET")
        return _explain(refresher, request.query).to_json()
    if endpoint == "reload":
        if request.method != "POST":
            raise MethodNotAllowed("use POST")
        refused = await reload_config(refresher, load, actor)
        if refused is not None:
            raise ConfigRefused(refused)
        return {"status": "reloaded", "views": [DEFAULT_VIEW, *refresher.config.views]}
    if endpoint == "status":
        return status(refresher)
    if endpoint == "audit":
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed("use GET")
        return await recent_actions(refresher)
    if endpoint in ("sync", "confirm-drop"):
        if request.method != "POST":
            raise MethodNotAllowed("use POST")
        name = route.name
        assert name is not None
        audit = Audit(refresher.config.gateway.state_dir)
        if name not in [feed.name for feed in refresher.feeds]:
            await _record(audit, actor, endpoint, name, "refused", f"no upstream named {name!r}")
            raise UnknownUpstream(name)
        if endpoint == "sync":
            return await _sync(refresher, audit, actor, name)
        return await _confirm_drop(refresher, audit, actor, name)
    raise NotFound("Endpoint not found")


async def _record(
    audit: Audit, actor: Actor, action: str, target: str, outcome: Outcome, detail: str
) -> None:
    await asyncio.to_thread(audit.record, actor, action, outcome, detail, target=target)


async def _sync(refresher: Refresher, audit: Audit, actor: Actor, name: str) -> dict[str, Any]:
    try:
        changed = await refresher.sync_now(name)
    except Exception as exc:
        await _record(audit, actor, "sync", name, "failed", f"crashed: {type(exc).__name__}")
        raise
    feed = refresher.feed(name)
    held = feed.held
    if feed.last_error is not None:
        outcome: Outcome = "failed"
        detail = feed.last_error
    elif held is not None:
        outcome = "ok"
        detail = f"a mass drop is held ({held.before} -> {held.after} entries): confirm it to apply"
    else:
        outcome = "ok"
        detail = f"{'changed' if changed else 'unchanged'}: {len(feed.entries)} entries"
    await _record(audit, actor, "sync", name, outcome, detail)
    return {"upstream": name, "changed": changed, "error": feed.last_error}


async def _confirm_drop(
    refresher: Refresher, audit: Audit, actor: Actor, name: str
) -> dict[str, Any]:
    try:
        confirmed = await refresher.confirm_drop(name)
    except Exception as exc:
        await _record(audit, actor, "confirm-drop", name, "failed", type(exc).__name__)
        raise
    if not confirmed:
        refusal = NothingHeld(name)
        await _record(audit, actor, "confirm-drop", name, "refused", refusal.detail)
        raise refusal
    entries = len(refresher.feed(name).entries)
    await _record(audit, actor, "confirm-drop", name, "ok", f"applied: {entries} entries")
    return {"status": "applied", "upstream": name, "entries": entries}


def status(refresher: Refresher) -> dict[str, Any]:
    """Everything an operator asks first (see `status.GatewayStatus`)."""
    return refresher.status().to_json(datetime.now(UTC))


async def recent_actions(refresher: Refresher) -> dict[str, Any]:
    """`/admin/audit`: the audit log's newest entries, newest first (those of every worker:
    they share the file in `state_dir`)."""
    recent = await asyncio.to_thread(Audit(refresher.config.gateway.state_dir).recent)
    return {"audit": [entry.to_json() for entry in recent]}

"""The aiohttp application: its factory and lifecycle (`create_app`), and the one handler every
request goes through (request ids, problem bodies, CORS, metrics and the access log, around
`dispatch`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from gateway import isolated, logs
from gateway.accounts import Explained
from gateway.admin import handle_admin
from gateway.api import Api, check_method, check_target, etag_matches
from gateway.config import FederationConfig
from gateway.errors import (
    ConfigError,
    FieldError,
    MethodNotAllowed,
    NotReady,
    RequestError,
    Unauthorized,
    UriTooLong,
    ValidationFailed,
)
from gateway.forwarding import REQUEST_ID, Forwarder
from gateway.icons import Icons
from gateway.loader import load_config
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics
from gateway.pages import accepts_gzip, page_response
from gateway.refresher import Refresher
from gateway.reloader import ConfigLoader, watch_config
from gateway.rendered import Rendered
from gateway.replicas import Replica
from gateway.routes import resolve
from gateway.sharing import Shared
from gateway.store import Store

log = structlog.get_logger("gateway.http")

REFRESHER = web.AppKey("refresher", Refresher)
CONFIG_LOADER: web.AppKey[ConfigLoader] = web.AppKey("config_loader")
API = web.AppKey("api", Api)
METRICS = web.AppKey("metrics", Metrics)
EXPLAINED = web.AppKey("explained", Explained)
ICONS = web.AppKey("icons", Icons)  # server icons, when gateway.yaml `icons` allows any
FORWARDER = web.AppKey("forwarder", Forwarder)  # a following worker's (see `forwarding`)
ROUTE = web.RequestKey("route", str)  # the endpoint kind: the metrics route label
MAX_PATH = 2048
MAX_QUERY = 8192

# Lines longer than ours still get a problem body from us, up to aiohttp's own limit.
HANDLER_ARGS: dict[str, Any] = {"max_line_size": 65536, "max_field_size": 16384}
STALE_HEADER = "X-Gateway-Stale-Upstreams"  # upstreams whose last good data is being served
CATALOG_ENDPOINTS = frozenset({"list", "versions", "version"})
LEADER_PAGES = frozenset({"server", "admin"})  # made of what only the building worker knows
OWN_PROBES = frozenset({"/healthz", "/metrics"})  # every worker answers these itself
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": (
        "Content-Type, Content-Length, ETag, X-Request-Id, X-Gateway-Stale-Upstreams"
    ),
}
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def problem(status: int, title: str, detail: str, **extra: object) -> web.Response:
    """An RFC 9457 problem+json response, the registry's one error shape."""
    body = {"title": title, "status": status, "detail": detail, **extra}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/problem+json"
    )


def _field(error: FieldError) -> dict[str, object]:
    return {"message": error.message, "location": error.location, "value": error.value}


def _request_problem(exc: RequestError) -> web.Response:
    extra = {"errors": [_field(e) for e in exc.errors]} if isinstance(exc, ValidationFailed) else {}
    try:
        return problem(exc.status, exc.title, exc.detail, **extra)
    except TypeError:  # a value JSON cannot carry: answer without echoing it
        log.warning("problem_body_unserializable", status=exc.status)
        return problem(exc.status, exc.title, exc.detail)


_PROCESS_ID = ""
_SEQUENCE = itertools.count(1)


def _own_request_ids() -> None:
    """A prefix of this process's own: a forked worker makes its own (else its ids repeat the
    other workers')."""
    global _PROCESS_ID, _SEQUENCE
    _PROCESS_ID, _SEQUENCE = uuid.uuid4().hex[:8], itertools.count(1)


_own_request_ids()
os.register_at_fork(after_in_child=_own_request_ids)


def _request_id(given: str) -> str:
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_PROCESS_ID}{next(_SEQUENCE):08x}"  # unique per process, and cheap


def handler_for(app: web.Application, *, counted: bool = True) -> Handler:
    """The gateway's one request handler, on this app's state. `serve` hands it to aiohttp's
    low-level server: every path is the gateway's own, and the router and the app's handler
    chain (a third of a small answer's cost, measured in bench/) would decide nothing.
    `counted=False`: requests another worker hands on, which that worker counts and logs."""
    return functools.partial(handle, app, counted=counted)


async def handle(
    app: web.Application, request: web.BaseRequest, *, counted: bool = True
) -> web.StreamResponse:
    """Every request: request id, error rendering, the headers every response carries,
    metrics and the access log, around `dispatch`. (One handler, no middleware: this is the
    hot path of every IDE request.)"""
    started = time.perf_counter()
    request_id = _request_id(request.headers.get("X-Request-Id", ""))
    response: web.StreamResponse
    refresher = app.get(REFRESHER)
    if refresher is None:  # listening, the app still starting (restoring state, building)
        return _starting(request, request_id)
    snapshot = refresher.snapshot
    # The fast path: this exact URL was answered from this snapshot already (so it passed
    # every check then); a cached answer needs no parsing at all, and carries every header.
    known = app[API].recall(snapshot, request.raw_path) if request.method == "GET" else None
    if known is not None:
        route, rendered = known
        response = respond(request, rendered)
        if snapshot is not None and snapshot.stale:
            response.headers[STALE_HEADER] = ", ".join(snapshot.stale)
    else:
        route, response = await _answer(app, request, request_id)
        headers = response.headers
        if "X-Content-Type-Options" not in headers:  # answers from the catalog carry both
            headers["X-Content-Type-Options"] = "nosniff"
            headers.add("Vary", "Origin")
    response.headers["X-Request-Id"] = request_id
    if "Origin" in request.headers:
        response.headers.update(CORS_HEADERS)
    if counted:
        seconds = time.perf_counter() - started
        app[METRICS].observe_request(route, response.status, seconds)
        if refresher.config.gateway.access_log:
            logs.log_request(request_id, request.method, request.raw_path, response.status, seconds)
    return response


async def _answer(
    app: web.Application, request: web.BaseRequest, request_id: str
) -> tuple[str, web.StreamResponse]:
    """`dispatch`, with every error rendered; and the route label for metrics."""
    try:
        request[REQUEST_ID] = request_id  # for a request handed to another worker
        response = await dispatch(app, request)
    except RequestError as exc:
        response = _request_problem(exc)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, MethodNotAllowed):
            response.headers["Allow"] = "GET, HEAD, OPTIONS"
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = 'Bearer realm="mcp-discovery-gateway admin"'
    except web.HTTPException as exc:
        response = problem(exc.status, exc.reason, exc.text or exc.reason)
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path[:512])
        response = problem(500, "Internal Server Error", "the gateway failed to answer")
    return request.get(ROUTE, "other"), response


def _starting(request: web.BaseRequest, request_id: str) -> web.Response:
    """Before the app has started: alive, not ready; every other request a 503 to retry."""
    if request.path == "/healthz":
        response = _status({"status": "alive"})
    else:
        response = problem(503, "Service Unavailable", "the gateway is starting: its saved "
                           "catalog is being loaded")  # fmt: skip
        response.headers["Retry-After"] = "1"
    response.headers["X-Request-Id"] = request_id
    return response


def _preflight(request: web.BaseRequest) -> web.Response:
    response = web.Response(status=204)
    response.headers["Allow"] = "GET, HEAD, OPTIONS"
    if "Access-Control-Request-Method" in request.headers:
        requested = request.headers.get("Access-Control-Request-Headers")
        response.headers.update(
            {
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, OPTIONS",
                "Access-Control-Allow-Headers": requested or "Authorization, Content-Type",
                "Access-Control-Max-Age": "86400",
            }
        )
    return response


def respond(request: web.BaseRequest, rendered: Rendered) -> web.Response:
    """Write a rendered body with ETag/304 and gzip negotiation."""
    request_headers = request.headers
    gzip_ok = accepts_gzip(request, rendered.length)
    etag = rendered.gzip_etag if gzip_ok else rendered.etag
    if_none_match = request_headers.get("If-None-Match")
    if if_none_match and etag_matches(if_none_match, (rendered.etag, etag)):
        return web.Response(status=304, headers=rendered.not_modified(etag))
    if gzip_ok:
        return web.Response(body=rendered.gzipped(), headers=rendered.gzip_headers)
    return web.Response(body=rendered.body, headers=rendered.headers)


def _status(document: dict[str, object], status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json")


def _probe(app: web.Application, path: str) -> web.Response:
    if path == "/healthz":
        return _status({"status": "alive"})
    if path == "/metrics":
        return web.Response(
            body=app[METRICS].render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )
    refresher = app[REFRESHER]
    if refresher.snapshot is None:
        waiting = NotReady(refresher.awaiting())
        response = problem(waiting.status, waiting.title, waiting.detail,
                           awaiting=refresher.awaited())  # fmt: skip
        response.headers["Retry-After"] = "5"
        return response
    if refresher.shared is not None and (workers := refresher.shared.not_serving()):
        named = ", ".join(map(str, workers))
        response = problem(503, "Service Unavailable", f"waiting for worker(s) {named} to "
                           "serve the catalog", workers=workers)  # fmt: skip
        response.headers["Retry-After"] = "1"
        return response
    return _status({"status": "ready", "awaiting": refresher.awaited()})


async def dispatch(app: web.Application, request: web.BaseRequest) -> web.StreamResponse:
    """The one handler: the route table (`routes.resolve`) names the area, and each area
    answers: probes, pages, the admin API, the read API of whichever view the path names."""
    raw_path, _, raw_query = request.raw_path.partition("?")
    check_target(request.raw_path)
    if len(raw_path) > MAX_PATH or len(raw_query) > MAX_QUERY:
        raise UriTooLong(MAX_PATH, MAX_QUERY)
    refresher = app[REFRESHER]
    method = request.method
    route = resolve(method, raw_path)
    request[ROUTE] = route.label
    leaders = route.area == "admin" or route.endpoint in LEADER_PAGES
    # Until it serves a catalog of its own, a following worker answers through the other.
    if refresher.follows and raw_path not in OWN_PROBES and (leaders or refresher.snapshot is None):
        return await app[FORWARDER].forward(request)
    if route.area == "probe":
        return _probe(app, raw_path)
    if route.area == "page":
        return await page_response(request, route, refresher, app[EXPLAINED], app[ICONS])
    if route.area == "admin":
        return _status(await handle_admin(request, route, refresher, app[CONFIG_LOADER]))
    snapshot = refresher.snapshot
    endpoint = route.endpoint
    if method == "OPTIONS":
        return _preflight(request)
    check_method(method)
    if snapshot is None and endpoint in CATALOG_ENDPOINTS:
        raise NotReady(refresher.awaiting())
    raw = request.raw_path if method == "GET" else None  # remembered for the fast path
    answer = app[API].answer(snapshot, route, request.query, raw=raw)
    if isinstance(answer, Rendered):
        rendered = answer
    else:
        with refresher.readers.reading(snapshot):  # read in a worker thread: not released
            rendered = await answer.finished()
    response = respond(request, rendered)
    if snapshot is not None and snapshot.stale and endpoint in CATALOG_ENDPOINTS:
        response.headers[STALE_HEADER] = ", ".join(snapshot.stale)
    return response


def replica_for(refresher: Refresher) -> Replica | None:
    """The store's replica part when `snapshot_store` is set (one per replica: its first
    worker's)."""
    settings = refresher.config.gateway.snapshot_store
    if settings is None or refresher.follows:
        return None
    return Replica(refresher, settings, Store(settings))


async def _reread(refresher: Refresher, load: ConfigLoader) -> None:
    """A following worker reads its config again for a catalog built with another (a reload
    asked of the building worker alone); an invalid one leaves it as it was."""
    try:
        config = await asyncio.to_thread(load)
    except ConfigError as exc:
        log.error("config_reread_failed", issues=[str(issue) for issue in exc.issues])
        return
    await refresher.apply(config)
    log.info("config_reread", views=sorted(config.views))


def create_app(
    config: FederationConfig,
    *,
    sync: bool = True,
    load: ConfigLoader | None = None,
    keeps: bool = True,
    shared: Shared | None = None,
) -> web.Application:
    """A pure factory: the session and sync tasks start in cleanup_ctx, inside the running loop.

    With `sync=False` persisted state is loaded but no background sync runs (tests drive
    `Refresher.sync_all()` themselves). With `keeps=False` it does not keep its catalog for
    a restart (of `serve --workers N`, one worker keeps it; every worker serves it at start).
    `shared` is a worker's part of `serve --workers N` (see `sharing`).
    """
    app = web.Application(handler_args=HANDLER_ARGS)
    loader = load or (lambda: load_config(config.directory))
    app[CONFIG_LOADER] = loader
    app[API] = Api()
    app[METRICS] = Metrics()
    app[EXPLAINED] = Explained()
    app[ICONS] = Icons()
    if shared is not None:
        app[FORWARDER] = Forwarder(shared.run.socket)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            headers={"User-Agent": "mcp-discovery-gateway"}, raise_for_status=False
        ) as session:
            refresher = Refresher(config, session, keeps=keeps, shared=shared)
            if refresher.follows:
                refresher.reread = functools.partial(_reread, refresher, loader)
            app[REFRESHER] = refresher
            app[METRICS].watch(refresher)
            # A scrape of any worker answers for all, from the first request counted on.
            tasks = [asyncio.create_task(app[METRICS].share(shared))] if shared else []
            replica = replica_for(refresher)  # of replicas sharing through a store, if set
            try:
                if replica is not None:
                    await replica.start(background=sync)
                else:
                    await refresher.start(background=sync)
            except asyncio.CancelledError:  # stopped while starting: it may be serving
                for task in tasks:
                    task.cancel()
                if replica is not None:
                    await replica.stop()
                await refresher.stop()  # (a kept catalog, or its first build): keep it
                raise
            if sync:
                tasks.append(asyncio.create_task(watch_config(refresher, loader)))
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if replica is not None:
                    await replica.stop()
                await refresher.stop()
                await app[ICONS].close()
                if shared is not None:
                    await app[FORWARDER].close()
                isolated.shutdown()  # a hostile answer still being parsed is abandoned

    async def route(request: web.Request) -> web.StreamResponse:
        return await handle(app, request)

    app.cleanup_ctx.append(lifecycle)
    # Every path is ours, newlines too. (`serve` skips the router: see handler_for.)
    app.router.add_route("*", r"/{tail:[\s\S]*}", route)
    return app

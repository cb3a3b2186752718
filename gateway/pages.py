"""The web pages' answers: a view's catalog, a server's page, the operators' page, `/views`,
the pages' own files and server icons (`icons`), gzip-compressed when the client takes it (as
the API's answers are)."""

from __future__ import annotations

import functools
import gzip

from aiohttp import web

from gateway.accounts import Explained
from gateway.api import elsewhere
from gateway.browse import catalog_page
from gateway.config import DEFAULT_VIEW
from gateway.errors import BadRequest, Busy, NotFound, NotReady, OverAllowance
from gateway.icons import Icons, answer
from gateway.operators import admin_page
from gateway.pacing import ON_LOOP, Allowance
from gateway.refresher import Refresher
from gateway.rendered import GZIP_LEVEL
from gateway.routes import Route
from gateway.snapshot import Snapshot
from gateway.web import (
    ASSETS,
    CSP,
    GZIP_PAGE_HEADERS,
    PAGE_HEADERS,
    message_page,
    server_page,
    views_document,
)

GZIP_MIN_BYTES = 1024


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def accepts_gzip(request: web.BaseRequest, length: int) -> bool:
    """Whether to send a body of this length gzip-compressed."""
    return length >= GZIP_MIN_BYTES and "gzip" in request.headers.get("Accept-Encoding", "")


def _html(request: web.BaseRequest, body: bytes, status: int = 200) -> web.Response:
    """A page, gzip-compressed when the client takes it (as the API's answers are)."""
    if accepts_gzip(request, len(body)):
        squeezed = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        return web.Response(status=status, body=squeezed, headers=GZIP_PAGE_HEADERS)
    return web.Response(status=status, body=body, headers=PAGE_HEADERS)


def _message(
    request: web.BaseRequest, title: str, text: str, views: list[str], status: int
) -> web.Response:
    return _html(request, message_page(title, text, views), status)


async def page_response(
    request: web.BaseRequest,
    page: Route,
    refresher: Refresher,
    explained: Explained,
    icons: Icons,
) -> web.Response:
    """A web page: the catalog of a view, a server's page, the operators' page, an asset, an
    icon."""
    config = refresher.config
    if page.endpoint == "icon":
        return await answer(request.query.getall("src", []), icons, config.gateway.icons)
    views = [DEFAULT_VIEW, *config.views]
    if page.endpoint == "asset":
        asset = ASSETS.get(page.name or "")
        if asset is None:
            raise NotFound("no such file")
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers={"ETag": asset.etag})
        return web.Response(
            body=asset.body,
            headers={"Content-Type": asset.content_type, "ETag": asset.etag,
                     "Cache-Control": "no-cache", "Content-Security-Policy": CSP},
        )  # fmt: skip
    if page.endpoint == "admin":
        if config.gateway.admin_token is None:
            return _message(
                request, "Not found", "The operators' page is off: set admin_token.", views, 404
            )
        return _html(request, admin_page())
    if page.endpoint == "views":
        described = {name: settings.description for name, settings in config.views.items()}
        body = views_document(described, str(request.url.origin()))
        return web.Response(body=body, content_type="application/json")
    if page.endpoint == "redirect":
        query = request.raw_path.partition("?")[2]
        location = f"{page.name}?{query}" if query else f"{page.name}"
        return web.Response(status=308, headers={"Location": location})
    snapshot = refresher.snapshot
    if snapshot is None:
        return _html(
            request,
            message_page("Starting", _sentence(NotReady(refresher.awaiting()).detail), views),
            503,
        )
    with refresher.readers.reading(snapshot):  # across the awaits below: not released
        return await _view_page(request, refresher, page, snapshot, views, explained)


async def _view_page(
    request: web.BaseRequest,
    refresher: Refresher,
    page: Route,
    snapshot: Snapshot,
    views: list[str],
    explained: Explained,
) -> web.Response:
    """A view's catalog page or a server's page, from this snapshot."""
    config = refresher.config
    view = snapshot.views.get(page.view)
    if view is None:
        return _html(
            request, message_page("Not found", f"There is no view named {page.view!r}.", views), 404
        )
    namespace = config.gateway.meta_namespace
    if page.endpoint == "catalog":
        origin = str(request.url.origin())
        own = config.views.get(page.view)
        made = functools.partial(
            catalog_page, view, page.view, request.query, views, namespace, origin,
            description=own.description if own is not None else "",
            icons=config.gateway.icons.prefixes(),
            types=config.policy.allowed_registry_types(),
        )  # fmt: skip
        try:
            try:
                return _html(request, made(Allowance(ON_LOOP)))
            except OverAllowance:  # more work than the loop gives one request: a thread's
                return _html(request, await elsewhere(functools.partial(made, Allowance(None))))
        except BadRequest as exc:  # a hand-made query string: say which part, on a page
            return _message(request, "Bad request", _sentence(exc.detail), views, 400)
        except Busy as exc:
            busy = _message(request, "Busy", _sentence(exc.detail), views, 503)
            busy.headers["Retry-After"] = str(exc.retry_after)
            return busy
    name = page.name or ""  # a server page's route always names one
    try:
        report = await explained.report(refresher, page.view, name)
    except NotReady as exc:  # a kept catalog is served, the first build is under way
        starting = _message(request, "Starting", _sentence(exc.detail), views, 503)
        starting.headers["Retry-After"] = "1"
        return starting
    if report is None or not report.versions:
        return _message(request, "Not found", f"No upstream offers {name!r}.", views, 404)
    icons = config.gateway.icons.prefixes()
    return _html(request, server_page(view, page.view, report, views, namespace, icons))

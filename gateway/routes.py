"""Every path the gateway answers, in one table: `resolve` maps a request's method and raw path
to a `Route`, and `app.dispatch` hands each area to its handler.

Routing reads the raw, still-encoded path, so `%2F` stays inside a server name. Every catalog
is a base URL: the default view at `/`, a business unit's view at `/views/<view>/`; under a
base, the read API answers at `/v0.1`, `/v0` and (an alias some clients use) with no version
prefix. Tried in this order:

    path                                            area   endpoint                 methods
    /healthz  /readyz  /metrics                     probe  healthz readyz metrics   any
    /  /views/<view>/                               page   catalog                  GET HEAD
    /views  /views/                                 page   views (JSON)             GET HEAD
    /views/<view>                                   page   redirect (to .../)       GET HEAD
    [/views/<view>]/server/<name>                   page   server                   GET HEAD
    /admin/                                         page   admin                    GET HEAD
    /_ui/<file>                                     page   asset                    GET HEAD
    /_icons?src=<url>                               page   icon                     GET HEAD
    /admin/status                                   admin  status                   any
    /admin/audit                                    admin  audit                    GET HEAD
    /admin/explain                                  admin  explain                  GET HEAD
    /admin/reload                                   admin  reload                   POST
    /admin/upstreams/<upstream>/(sync|confirm-drop) admin  sync confirm-drop        POST
    [/views/<view>][/v0.1|/v0]/servers              api    list                     GET HEAD OPTIONS
    .../servers/<name>/versions[/<version>]         api    versions version         GET HEAD OPTIONS
    [/views/<view>]/v0.1|/v0/health|ping|version    api    health ping version_info GET HEAD OPTIONS

Anything else under `/admin` is an admin route with no endpoint (answered 404 once the caller
is authorized); anything else at all is a 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from gateway.config import DEFAULT_VIEW
from gateway.errors import NotFound

API_PREFIXES = ("/v0.1", "/v0")
ENDPOINT_NOT_FOUND = "Endpoint not found"
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
PAGE_METHODS = frozenset({"GET", "HEAD"})
_API_INFO = {"/health": "health", "/ping": "ping", "/version": "version_info"}
_UPSTREAM_ACTION = re.compile(r"/admin/upstreams/([a-z0-9_-]+)/(confirm-drop|sync)")


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved request path: its area, its endpoint, and the view and names it carries."""

    view: str
    endpoint: str  # see the table above; "" for an unknown admin path
    name: str | None = None  # a server's name; an asset's file; a redirect's target; an upstream
    version: str | None = None
    area: str = "api"  # probe | page | admin | api

    @property
    def label(self) -> str:
        """What the metrics call this route."""
        if self.area == "probe" or self.area == "api":
            return self.endpoint
        if self.area == "page":
            return self.endpoint if self.endpoint in ("asset", "icon") else "page"
        return "admin"


def resolve(method: str, raw_path: str) -> Route:
    """The route of a request (`raw_path` without its query); NotFound when none."""
    if raw_path in PROBES:
        return Route(DEFAULT_VIEW, raw_path[1:], area="probe")
    if method in PAGE_METHODS:
        page = _page(raw_path)
        if page is not None:
            return page
    if raw_path == "/admin" or raw_path.startswith("/admin/"):
        return _admin(unquote(raw_path).rstrip("/"))
    return _api(raw_path)


def _page(raw_path: str) -> Route | None:
    if raw_path == "/":
        return Route(DEFAULT_VIEW, "catalog", area="page")
    if raw_path == "/admin/":
        return Route(DEFAULT_VIEW, "admin", area="page")
    if raw_path in ("/views", "/views/"):
        return Route(DEFAULT_VIEW, "views", area="page")
    if raw_path == "/_icons":
        return Route(DEFAULT_VIEW, "icon", area="page")
    if raw_path.startswith("/_ui/"):
        return Route(DEFAULT_VIEW, "asset", raw_path[len("/_ui/") :], area="page")
    view, rest = DEFAULT_VIEW, raw_path
    if raw_path.startswith("/views/"):
        segment, slash, rest = raw_path[len("/views/") :].partition("/")
        if not segment:
            return None
        view = unquote(segment)
        if not slash:
            return Route(view, "redirect", f"/views/{segment}/", area="page")
        if rest == "":
            return Route(view, "catalog", area="page")
        rest = "/" + rest
    if rest.startswith("/server/") and len(rest) > len("/server/"):
        return Route(view, "server", unquote(rest[len("/server/") :]), area="page")
    return None


def _admin(path: str) -> Route:
    if path in ("/admin/status", "/admin/explain", "/admin/reload", "/admin/audit"):
        return Route(DEFAULT_VIEW, path[len("/admin/") :], area="admin")
    action = _UPSTREAM_ACTION.fullmatch(path)
    if action:
        return Route(DEFAULT_VIEW, action[2], action[1], area="admin")
    return Route(DEFAULT_VIEW, "", area="admin")


def _decode_name(segment: str) -> str:
    name = unquote(segment)
    if "/" not in name and "%" in name:  # `%252F` resolves too, as on the official registry
        name = unquote(name)
    return name


def _api(raw_path: str) -> Route:
    path = raw_path
    view = DEFAULT_VIEW
    if path.startswith("/views/"):
        view_segment, _, rest = path[len("/views/") :].partition("/")
        if not view_segment:
            raise NotFound(ENDPOINT_NOT_FOUND)
        view, path = unquote(view_segment), "/" + rest
    api = False
    for prefix in API_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            path, api = path[len(prefix) :], True
            break
    if api and path in _API_INFO:
        return Route(view, _API_INFO[path])
    if path in ("/servers", "/servers/"):
        return Route(view, "list")
    if path.startswith("/servers/"):
        segments = path[len("/servers/") :].split("/")
        if len(segments) == 2 and segments[1] == "versions" and segments[0]:
            return Route(view, "versions", _decode_name(segments[0]))
        if len(segments) == 3 and segments[1] == "versions" and segments[0] and segments[2]:
            return Route(view, "version", _decode_name(segments[0]), unquote(segments[2]))
    raise NotFound(ENDPOINT_NOT_FOUND)

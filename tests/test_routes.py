"""The one route table (`gateway.routes`): every path the gateway answers, by area."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import DEFAULT_VIEW
from gateway.errors import NotFound
from gateway.routes import Route, resolve

PAGE = "page"


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("GET", "/healthz", Route("default", "healthz", area="probe")),
        ("POST", "/metrics", Route("default", "metrics", area="probe")),
        ("GET", "/", Route("default", "catalog", area=PAGE)),
        ("HEAD", "/views/payments/", Route("payments", "catalog", area=PAGE)),
        ("GET", "/views/payments", Route("payments", "redirect", "/views/payments/", area=PAGE)),
        ("GET", "/server/io.github.acme/weather",
         Route("default", "server", "io.github.acme/weather", area=PAGE)),
        ("GET", "/views/payments/server/a.b/c", Route("payments", "server", "a.b/c", area=PAGE)),
        ("GET", "/admin/", Route("default", "admin", area=PAGE)),
        ("GET", "/_ui/style.css", Route("default", "asset", "style.css", area=PAGE)),
        ("GET", "/admin/status", Route("default", "status", area="admin")),
        ("GET", "/admin/status/", Route("default", "status", area="admin")),
        ("POST", "/admin/reload", Route("default", "reload", area="admin")),
        ("POST", "/admin/upstreams/official/sync",
         Route("default", "sync", "official", area="admin")),
        ("POST", "/admin/upstreams/official/confirm-drop",
         Route("default", "confirm-drop", "official", area="admin")),
        ("POST", "/admin/", Route("default", "", area="admin")),  # not a page: the admin API
        ("GET", "/admin/nothing", Route("default", "", area="admin")),
        ("GET", "/admin/upstreams/Off/sync", Route("default", "", area="admin")),
        ("GET", "/v0.1/servers", Route("default", "list")),
        ("GET", "/servers", Route("default", "list")),
        ("OPTIONS", "/v0/servers/", Route("default", "list")),
        ("GET", "/views/payments/v0.1/servers", Route("payments", "list")),
        ("GET", "/v0.1/servers/io.github.a%2Fb/versions", Route("default", "versions", "io.github.a/b")),
        ("GET", "/v0.1/servers/io.github.a%252Fb/versions/1.0.0",
         Route("default", "version", "io.github.a/b", "1.0.0")),
        ("GET", "/v0.1/ping", Route("default", "ping")),
        ("GET", "/views/x/v0/version", Route("x", "version_info")),
    ],
)  # fmt: skip
def test_every_area_resolves_from_one_table(method: str, path: str, route: Route) -> None:
    assert resolve(method, path) == route


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/server/"), ("POST", "/"), ("GET", "/ping"),
     ("GET", "/v0.1/servers/a/versions/1/x"), ("GET", "/v0.1/servers//versions"),
     ("GET", "/nothing")],
)  # fmt: skip
def test_anything_else_is_not_found(method: str, path: str) -> None:
    with pytest.raises(NotFound):
        resolve(method, path)


def test_metrics_labels_name_the_area_or_the_endpoint() -> None:
    labels = {
        resolve(m, p).label
        for m, p in [("GET", "/readyz"), ("GET", "/"), ("GET", "/_ui/app.js"),
                     ("GET", "/admin/status"), ("GET", "/v0.1/servers"),
                     ("GET", "/v0/servers/a%2Fb/versions/2")]
    }  # fmt: skip
    assert labels == {"readyz", "page", "asset", "admin", "list", "version"}


_NAME = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)


@given(name=_NAME, version=_NAME, view=st.sampled_from(["", "/views/payments"]))
def test_a_quoted_name_and_version_resolve_to_themselves(
    name: str, version: str, view: str
) -> None:
    """Whatever a server's name and version hold (slashes, percent signs, spaces), quoting
    each as one path segment gives them back exactly (a single `%2F`-free name with a `%`
    is decoded twice, as the official registry does: quoting keeps `%` as `%25`)."""
    path = f"{view}/v0.1/servers/{quote(name, safe='')}/versions/{quote(version, safe='')}"
    route = resolve("GET", path)
    expected = name
    if "/" not in name and "%" in name:
        from urllib.parse import unquote

        expected = unquote(name)
    assert route == Route("payments" if view else "default", "version", expected, version)


@given(path=st.text(max_size=60).map(lambda text: "/" + text))
def test_any_path_resolves_or_is_not_found(path: str) -> None:
    try:
        route = resolve("GET", path)
    except NotFound:
        return
    assert route.area in {"probe", "page", "admin", "api"}


@pytest.mark.parametrize("path", ["/views", "/views/"])
def test_the_list_of_views_is_a_page(path: str) -> None:
    assert resolve("GET", path) == Route(DEFAULT_VIEW, "views", area="page")

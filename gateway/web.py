"""Web pages: the shell every page shares, a server's page and the parts the catalog page
(`browse`) and the operators' page (`operators`) use.

Server-rendered HTML with every value escaped (descriptions come from strangers), a little plain
JavaScript served from `/_ui/` (copy buttons; the operators' page), and a strict
Content-Security-Policy: no inline script or style, images only from the gateway. Server icons
are placeholders (a browser contacts no third party), or, where gateway.yaml `icons` allows
their hosts, served by the gateway from `/_icons` (see `icons`).
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote

import orjson

from gateway.catalog import Item, ViewCatalog
from gateway.config import DEFAULT_VIEW
from gateway.entry import OFFICIAL, format_timestamp
from gateway.explain import Explanation, Verdict
from gateway.icon_config import icon_src
from gateway.install import Install, ide_entry, installs, mcp_json, vscode_link
from gateway.semver import SemverKey, semver_key

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Vary": "Accept-Encoding",
}
GZIP_PAGE_HEADERS = {**PAGE_HEADERS, "Content-Encoding": "gzip"}
_ASSET_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _load_assets() -> dict[str, Asset]:
    assets = {}
    for file in resources.files("gateway").joinpath("ui").iterdir():
        suffix = file.name[file.name.rfind(".") :]
        if suffix in _ASSET_TYPES:
            body = file.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            assets[file.name] = Asset(body, _ASSET_TYPES[suffix], etag)
    return assets


ASSETS = _load_assets()


def view_base(view: str) -> str:
    return "/" if view == DEFAULT_VIEW else f"/views/{quote(view, safe='')}/"


# -- pages --------------------------------------------------------------------------------------


def _https(url: object) -> str | None:
    return url if isinstance(url, str) and url.startswith("https://") else None


def icon_html(server: dict[str, Any], allow: tuple[str, ...] = ()) -> str:
    """The server's icon through the gateway, when `allow` (gateway.yaml `icons.allow`) takes
    it; else a neutral placeholder, the first letter of the server's title: a server's own icon
    is on a third-party host, which every developer's browser would contact (and which is not
    there offline). The Content-Security-Policy allows images from the gateway alone."""
    src = icon_src(server, allow)
    if src is not None:
        return f'<img class="icon" src="{esc(src)}" alt="" width="28" height="28">'
    title = str(server.get("title") or server.get("name") or "?").strip()
    shown = title.rsplit("/", 1)[-1][:1].upper() if title else "?"
    return f'<span class="icon" aria-hidden="true">{esc(shown or "?")}</span>'


def views_document(described: Mapping[str, str], origin: str) -> bytes:
    """`/views`: each view's name, description and the registry URL to give an IDE (the
    default view first)."""
    listed = [{"name": DEFAULT_VIEW, "description": "every server policy.yaml allows",
               "url": origin}]  # fmt: skip
    listed.extend({"name": name, "description": text, "url": origin + view_base(name).rstrip("/")}
                  for name, text in described.items())  # fmt: skip
    return orjson.dumps({"views": listed})


def _view_label(view: str) -> str:
    return "all servers" if view == DEFAULT_VIEW else view


def page(
    title: str,
    body: str,
    views: Iterable[str],
    *,
    script: str = "catalog.js",
    active: str | None = None,
    stylesheet: str | None = None,
) -> bytes:
    links = " ".join(
        f'<a href="{esc(view_base(view))}" aria-current="page" class="active">'
        f"{esc(_view_label(view))}</a>"
        if view == active
        else f'<a href="{esc(view_base(view))}">{esc(_view_label(view))}</a>'
        for view in views
    )
    nav = f"Views: {links}" if views else '<a href="/">The catalog</a>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        '<link rel="icon" href="/_ui/icon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/_ui/style.css">'
        + (f'<link rel="stylesheet" href="/_ui/{esc(stylesheet)}">' if stylesheet else "")
        + "</head><body>"
        f'<header class="top"><h1>{esc(title)}</h1><nav>{nav}</nav></header>'
        f'<main>{body}</main><script src="/_ui/{esc(script)}"></script></body></html>'
    ).encode()


def install_list(found: list[Install]) -> str:
    rows = []
    for install in found:
        verified = (
            f'<span class="verify {esc(install.verification)}">mirror: '
            f"{esc(install.verification)}</span>"
            if install.verification
            else ""
        )
        note = f'<span class="badge">{esc(install.note)}</span>' if install.note else ""
        if install.command is None:
            shown = (
                '<em class="error">no command: a field of this package is not safe to paste</em>'
            )
        else:
            shown = (
                f"<code>{esc(install.command)}</code>"
                f'<button class="copy" type="button" data-copy="{esc(install.command)}">Copy'
                "</button>"
            )
        rows.append(
            f'<li><span class="kind">{esc(install.kind)}</span>{shown}{verified}{note}</li>'
        )
    return f'<ul class="install">{"".join(rows)}</ul>' if rows else "<p>Nothing to install.</p>"


def _for_ides(name: str, server: dict[str, Any]) -> str:
    """VS Code's install link and the mcp.json to paste, both running from the mirror."""
    found = ide_entry(server)
    if found is None:
        return ""
    entry, inputs = found
    snippet = mcp_json(name, entry, inputs)
    return (
        f'<p><a class="vscode" href="{esc(vscode_link(name, entry, inputs))}">Install in VS Code'
        "</a></p><h3>Or add it to <code>.vscode/mcp.json</code></h3>"
        f'<pre class="snippet"><code>{esc(snippet)}</code></pre>'
        f'<button class="copy" type="button" data-copy="{esc(snippet)}">Copy</button>'
    )


Parsed = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


def parsed(view: ViewCatalog, item: Item, namespace: str) -> Parsed:
    """An item as served: its server, the registry's `_meta` and the gateway's."""
    document = orjson.loads(view.body(item))
    meta = document.get("_meta", {})
    official, ours = meta.get(OFFICIAL), meta.get(namespace)
    return (
        document["server"],
        official if isinstance(official, dict) else {},
        ours if isinstance(ours, dict) else {},
    )


def badges(server: dict[str, Any], item: Item, meta: dict[str, Any]) -> str:
    badges = [f'<span class="badge">v{esc(item.version)}</span>']
    status = meta.get("status", "active")
    if item.deleted:
        badges.append('<span class="badge deleted">deleted</span>')
    elif status == "deprecated":
        badges.append('<span class="badge deprecated">deprecated</span>')
    if server.get("remotes"):
        badges.append('<span class="badge">remote</span>')
    if server.get("packages"):
        badges.append('<span class="badge">local</span>')
    return "".join(badges)


def _reason(verdict: Verdict) -> str:
    if verdict.served:
        latest = " (latest)" if verdict.is_latest else ""
        return f'<span class="badge shown">shown{latest}</span>'
    why = esc(verdict.reason)
    extra = []
    if verdict.cooldown_ends_at is not None:
        extra.append(f"until {esc(format_timestamp(verdict.cooldown_ends_at))}")
    if verdict.removed_packages:
        extra.append("removed: " + esc(", ".join(verdict.removed_packages)))
    if verdict.signals:  # a rule on what the advisory feeds say: which advisories
        extra.append(esc(", ".join(verdict.signals)))
    detail = f" ({'; '.join(extra)})" if extra else ""
    return f'<span class="badge hidden">hidden: {why}</span>{detail}'


def server_page(
    view: ViewCatalog,
    view_name: str,
    report: Explanation,
    views: list[str],
    namespace: str,
    icons: tuple[str, ...] = (),
) -> bytes:
    """One server in one view: how to install its latest version, and every version with why
    it is shown or hidden here (the same account as `explain`)."""
    name = report.name
    base = view_base(view_name)
    latest = view.lookup(name, "latest", include_deleted=False)
    parts = [f'<p><a href="{esc(base)}">All servers in this view</a></p>']
    if latest is not None:
        server, official, ours = parsed(view, latest, namespace)
        repository = server.get("repository")
        source = repository.get("url") if isinstance(repository, dict) else None
        links = [
            f'<a href="{esc(url)}" rel="noopener noreferrer">{esc(label)}</a>'
            for label, url in (
                ("website", _https(server.get("websiteUrl"))),
                ("repository", _https(source)),
            )
            if url
        ]
        parts.append(
            f'<div class="heading">{icon_html(server, icons)}'
            f"<h2>{esc(server.get('title') or name)}</h2>"
            f"{badges(server, latest, official)}</div>"
            f'<p class="name"><code>{esc(name)}</code> {" ".join(links)}</p>'
            f'<p class="description">{esc(server.get("description"))}</p>'
            f"<h3>Install version {esc(latest.version)}</h3>{install_list(installs(server, ours))}"
            + _for_ides(name, server)
        )
    else:
        parts.append(f"<p>This view serves no version of <code>{esc(name)}</code>.</p>")
    rows = []

    def newest(version: Any) -> tuple[str, bool, SemverKey | tuple[()], str]:
        """Newest published first; versions published together by semver, then as text."""
        key = semver_key(version.version)
        return (format_timestamp(version.published_at), key is not None, key or (),
                version.version)  # fmt: skip

    newest_first = sorted(report.versions, key=newest, reverse=True)
    for version in newest_first:
        verdict = version.verdict(view_name)
        if verdict is None:
            why_not = version.shadowed.why if version.shadowed is not None else None
            why = f'<span class="badge hidden">hidden</span> {esc(why_not)}'
            rules = ""
        else:
            why = _reason(verdict)
            rules = esc(", ".join(verdict.rules))
        spelled = f"<br><small>as {esc(version.spelled)}</small>" if version.spelled else ""
        rows.append(
            f'<tr><td data-label="Version">{esc(version.version)}{spelled}</td>'
            f'<td data-label="Here">{why}</td><td data-label="Deciding rules">{rules}</td>'
            f'<td data-label="Upstream">{esc(version.upstream)}</td>'
            f'<td data-label="Status">{esc(version.status)}</td>'
            f'<td data-label="Published">{esc(format_timestamp(version.published_at))}</td></tr>'
        )
    parts.append(
        "<h3>Versions, and why each is shown or hidden in this view</h3>"
        '<div class="table-wrap"><table class="versions"><thead><tr><th>Version</th>'
        "<th>Here</th><th>Deciding rules</th><th>Upstream</th><th>Status</th><th>Published</th>"
        "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    return page(name, "".join(parts), views, active=view_name)


def message_page(title: str, text: str, views: list[str]) -> bytes:
    return page(title, f'<p class="summary">{esc(text)}</p>', views)

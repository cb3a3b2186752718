"""A view's catalog page: search, filters, counts, paging both ways and two orders, over the
servers the view serves (their latest versions; see `listing`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from gateway import search as searching
from gateway.catalog import ViewCatalog
from gateway.config import DEFAULT_VIEW
from gateway.install import installs
from gateway.listing import (
    MIRROR,
    SORTS,
    STATUSES,
    TRANSPORTS,
    TRUST,
    Facts,
    Filters,
    Page,
    package_facts,
    select,
    select_all,
    view_checks,
    view_facts,
)
from gateway.pacing import Allowance
from gateway.web import badges, esc, icon_html, install_list, page, parsed, view_base

MIRROR_MEANING = {
    "available": "On the mirror: the organisation's mirror has every package of this version",
    "missing": "Not on the mirror: a package of this version is missing from the mirror",
    "unknown": "Not checked yet: the mirror has not answered for a package of this version",
}
TRUST_MEANING = {
    "signature": "Signed: every signed package's signature over the bytes in the mirror checks out",
    "provenance": "Provenance: every signed package has a verified build attestation from its "
    "source repository",
    "digest": "Digest: for every signed package, the bytes in the mirror are the ones the "
    "publisher listed",
    "scan": "Scanned clean: for every signed package, a fresh scan of the bytes in the mirror "
    "found nothing",
}
_LABELS = {
    "transport": ("Transport", {"remote": "remote (hosted)", "local": "local (package)"}),
    "status": ("Status", {"active": "active only", "deprecated": "deprecated only"}),
    "mirror": ("Mirror", {"available": "on the mirror", "missing": "missing from the mirror",
                          "unknown": "not checked yet"}),
    "trust": ("Trust", {"signature": "signature verified", "provenance": "provenance verified",
                        "digest": "digest matches", "scan": "scanned clean"}),
    "sort": ("Sort by", {"name": "name", "updated": "recently updated"}),
}  # fmt: skip


def _select(key: str, values: tuple[str, ...], chosen: str, *, any_label: str | None) -> str:
    label, shown = _LABELS.get(key, (key.capitalize(), {}))
    options = [] if any_label is None else [f'<option value="">{esc(any_label)}</option>']
    options.extend(
        f'<option value="{esc(value)}"{" selected" if value == chosen else ""}>'
        f"{esc(shown.get(value, value))}</option>"
        for value in values
    )
    return f'<label>{esc(label)} <select name="{esc(key)}">{"".join(options)}</select></label>'


def _form(base: str, filters: Filters, kinds: tuple[str, ...]) -> str:
    return (
        f'<form class="search" method="get" action="{esc(base)}" role="search">'
        f'<input type="search" name="q" value="{esc(filters.search)}" '
        'placeholder="Search name, title, description" '
        'aria-label="Search servers by name, title or description">'
        '<button type="submit">Search</button><div class="filters">'
        + _select("transport", TRANSPORTS, filters.transport, any_label="any")
        + '<label>Package <select name="type"><option value="">any</option>'
        + "".join(
            f'<option value="{esc(k)}"{" selected" if k == filters.type else ""}>{esc(k)}</option>'
            for k in kinds
        )
        + "</select></label>"
        + _select("status", STATUSES, filters.status, any_label="any")
        + _select("mirror", MIRROR, filters.mirror, any_label="any")
        + _select("trust", TRUST, filters.trust, any_label="any")
        + _select("sort", SORTS, filters.sort, any_label=None)
        + '<button type="submit">Apply</button>'
        + (f'<a href="{esc(base)}">Clear</a>' if filters.narrowed else "")
        + "</div></form>"
    )


def _trust_badges(ours: dict[str, Any]) -> str:
    mirror, trust = package_facts(ours.get("packages"))
    found = []
    if mirror is not None:
        found.append(
            f'<span class="badge mirror {esc(mirror)}" tabindex="0" '
            f'title="{esc(MIRROR_MEANING[mirror])}">mirror: {esc(mirror)}</span>'
        )
    found.extend(
        f'<span class="badge trust" tabindex="0" title="{esc(TRUST_MEANING[signal])}">'
        f"{esc(_LABELS['trust'][1][signal])}</span>"
        for signal in TRUST
        if signal in trust
    )
    return "".join(found)


def _card(
    view: ViewCatalog, facts: Facts, base: str, namespace: str, icons: tuple[str, ...]
) -> str:
    item = facts.item
    server, official, ours = parsed(view, item, namespace)
    title = server.get("title") or server.get("name")
    link = f"{base}server/{quote(item.name, safe='/')}"
    return (
        '<article class="server"><div class="heading">'
        f'{icon_html(server, icons)}<h2><a href="{esc(link)}">{esc(title)}</a></h2>'
        f"{badges(server, item, official)}{_trust_badges(ours)}</div>"
        f'<p class="name"><code>{esc(item.name)}</code></p>'
        f'<p class="description">{esc(server.get("description"))}</p>'
        f"{install_list(installs(server, ours))}</article>"
    )


def _pager(base: str, filters: Filters, found: Page) -> str:
    def link(key: str, cursor: str | None, text: str) -> str:
        if cursor is None:
            return "<span></span>"
        href = f"{base}?{urlencode({**filters.query(), key: cursor})}"
        return f'<a href="{esc(href)}" rel="{"prev" if key == "before" else "next"}">{text}</a>'

    if found.previous is None and found.next is None:
        return ""
    return (
        f'<nav class="pager" aria-label="Pages">{link("before", found.previous, "Previous page")}'
        f"{link('after', found.next, 'Next page')}</nav>"
    )


def _setup(origin: str, base: str) -> str:
    registry = origin + base.rstrip("/")
    setting = '"chat.mcp.gallery.serviceUrl": ' + orjson.dumps(registry).decode()
    return (
        "<p>Install commands point at this organisation's package mirrors. "
        f"MCP registry URL for your IDE: <code>{esc(registry)}</code> "
        f'<button class="copy" type="button" data-copy="{esc(registry)}">Copy</button></p>'
        '<details class="ide-setup"><summary>Where to paste it</summary><ul>'
        "<li>VS Code (desktop, web) user settings: "
        f"<code>{esc(setting)}</code> "
        f'<button class="copy" type="button" data-copy="{esc(setting)}">Copy</button></li>'
        "<li>Desktop VS Code, managed by policy: <code>McpGalleryServiceUrl</code> set to the URL"
        "</li><li>GitHub Copilot (organisation or enterprise settings): MCP Registry URL set to "
        "the URL</li></ul></details>"
        '<details class="legend"><summary>What the badges mean</summary><ul>'
        + "".join(
            f"<li><strong>{esc(_LABELS['trust'][1][k])}</strong>: {esc(v)}</li>"
            for k, v in TRUST_MEANING.items()
        )
        + "".join(
            f"<li><strong>mirror: {esc(k)}</strong>: {esc(v)}</li>"
            for k, v in MIRROR_MEANING.items()
        )
        + "</ul></details>"
    )


def catalog_page(
    view: ViewCatalog,
    view_name: str,
    query: Mapping[str, str],
    views: list[str],
    namespace: str,
    origin: str,
    allowance: Allowance,
    description: str = "",
    icons: tuple[str, ...] = (),
    types: tuple[str, ...] = (),
) -> bytes:
    """The servers a view serves (their latest versions), 50 a page, as `query` asks. Steps
    `allowance` as it goes (`OverAllowance` past it: made again off the serving loop).
    `types`: the package types the gateway knows (policy.yaml's extra ones too), offered in
    the form: never a list from upstream data."""
    filters = Filters.of(query, searching.MAX_SEARCH, types)
    if not filters.narrowed and filters.sort == "name":  # no facts needed but the shown's
        result = select_all(view, query)
    else:
        known = view_facts(view, allowance)
        checks = view_checks(view, namespace, allowance) if filters.checks else None
        names = None
        folded = filters.search.casefold()
        if folded and view.search is not None:
            found = view.search.matching(folded, view.token, allowance)
            names = None if found is None else set(found)
        ordered = known.ordered(filters.sort)
        result = select(ordered, filters, names, query, allowance, checks=checks)
    base = view_base(view_name)
    title = "MCP servers" if view_name == DEFAULT_VIEW else f"MCP servers: {view_name}"
    served = len(view.latest.items)
    counted = f"{served:,} server{'' if served == 1 else 's'}"
    counted += f"; {view.hidden:,} hidden in this view"
    if filters.narrowed:
        counted += f". {result.matching:,} match"
        if filters.search:
            counted += f" \u201c{esc(filters.search)}\u201d"
    counts = f'<p class="summary counts" role="status">{counted}.</p>'
    cards = "".join(_card(view, facts, base, namespace, icons) for facts in result.shown)
    if not result.shown:
        cards = '<p class="summary">No server matches.</p>'
    about = f'<p class="view-description">{esc(description)}</p>' if description else ""
    body = about + _form(base, filters, types) + counts + _setup(origin, base)
    return page(title, body + cards + _pager(base, filters, result), views, active=view_name)

"""The operators' page (`/admin/`): a shell the browser fills from the admin API with the bearer
token (gateway/ui/admin.js, styled by gateway/ui/admin.css).

What the admin API does, the page does: explain a server, sync an upstream now, reload the
config, confirm a held mass drop (each change asked for again in an in-page dialog), and it
shows the audit log of those actions.
"""

from __future__ import annotations

from gateway.web import page

_LOGIN = (
    '<p id="status-line" class="summary">Sign in with the gateway\'s admin token. It is kept '
    "in this browser tab only, and sent to the admin API as a bearer token.</p>"
    '<form id="login" class="login"><label>Admin token '
    '<input id="token" type="password" autocomplete="off" required></label>'
    '<button type="submit">Sign in</button>'
    '<p id="login-error" class="error" role="alert" hidden></p></form>'
)
_ALERT = (
    '<div id="config-alert" class="alert" role="alert" hidden><strong>The last config '
    "reload was refused; the gateway serves the config before it. Each mistake:</strong>"
    '<ul id="config-issues"></ul></div>'
)
_ACTIONS = (
    '<div class="toolbar"><button id="reload" type="button">Reload the config</button>'
    '<button id="logout" type="button">Sign out</button></div>'
    '<div id="action-result" class="result" role="status" aria-live="polite" hidden>'
    '<p id="action-title" class="result-title"></p><ul id="action-lines"></ul></div>'
    '<dialog id="confirm" aria-labelledby="confirm-title"><h2 id="confirm-title"></h2>'
    '<p id="confirm-text"></p><div class="toolbar">'
    '<button id="confirm-yes" type="button" class="primary">Confirm</button>'
    '<button id="confirm-no" type="button">Cancel</button></div></dialog>'
)
_UPSTREAMS = (
    "<h2>Upstreams</h2>"
    '<div class="table-wrap"><table class="upstreams"><thead><tr><th>Upstream</th>'
    "<th>Last success</th><th>Data age</th><th>Breaker</th><th>Freshness</th><th>Entries</th>"
    '<th>Skipped</th><th class="last-error">Last error</th><th>Actions</th></tr></thead>'
    '<tbody id="upstreams"></tbody></table></div>'
)
_EXPLAIN = (
    "<h2>Why is a server shown or hidden?</h2>"
    '<form id="explain" class="explain" role="search">'
    '<label class="wide">Server name <input id="explain-name" type="search" required '
    'maxlength="300" placeholder="io.github.acme/weather" autocomplete="off"></label>'
    '<label>View <select id="explain-view"><option value="">every view</option></select></label>'
    '<label>Version <input id="explain-version" maxlength="100" placeholder="any" '
    'autocomplete="off"></label><button type="submit">Explain</button></form>'
    '<div id="explain-result" class="explained" aria-live="polite" hidden></div>'
)
_VIEWS = (
    "<h2>Views</h2>"
    '<div class="table-wrap"><table><thead><tr><th>View</th><th>Entries served</th>'
    "<th>Hidden by policy</th><th>Why hidden</th></tr></thead>"
    '<tbody id="views"></tbody></table></div>'
)
_AUDIT = (
    "<h2>Audit log</h2>"
    '<p class="summary">The last 100 actions, newest first. A caller through the admin API is '
    "named by a token id: the first 8 hex digits of its token's SHA-256.</p>"
    '<div class="table-wrap"><table class="audit"><thead><tr><th>When (UTC)</th><th>Who</th>'
    "<th>Action</th><th>Target</th><th>Outcome</th><th>Detail</th></tr></thead>"
    '<tbody id="audit"></tbody></table></div>'
)


def admin_page() -> bytes:
    """The operators' page: a shell; admin.js asks /admin/status with the token."""
    body = (
        _LOGIN
        + '<section id="dashboard" hidden>'
        + _ALERT
        + _ACTIONS
        + _UPSTREAMS
        + _EXPLAIN
        + _VIEWS
        + '<h2>Syncs over the last day</h2><div id="charts"></div>'
        + _AUDIT
        + "</section>"
    )
    return page("MCP gateway operators", body, [], script="admin.js", stylesheet="admin.css")

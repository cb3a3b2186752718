"""The operators' page (`/admin/`): a shell the browser fills from the admin API with the bearer
token (gateway/ui/admin.js)."""

from __future__ import annotations

from gateway.web import page


def admin_page() -> bytes:
    """The operators' page: a shell; admin.js asks /admin/status with the token."""
    body = (
        '<p id="status-line" class="summary">Sign in with the gateway\'s admin token. It is kept '
        "in this browser tab only, and sent to /admin/status as a bearer token.</p>"
        '<form id="login" class="login"><label>Admin token '
        '<input id="token" type="password" autocomplete="off" required></label>'
        '<button type="submit">Sign in</button>'
        '<p id="login-error" class="error" role="alert" hidden></p></form>'
        '<section id="dashboard" hidden>'
        '<div id="config-alert" class="alert" role="alert" hidden><strong>The last config '
        "reload was refused; the gateway serves the config before it. Each mistake:</strong>"
        '<ul id="config-issues"></ul></div>'
        '<p><button id="logout" type="button">Sign out</button></p>'
        "<h2>Upstreams</h2>"
        '<div class="table-wrap"><table><thead><tr><th>Upstream</th><th>Last success</th>'
        "<th>Data age</th><th>Breaker</th><th>Freshness</th><th>Entries</th><th>Skipped</th>"
        '<th>Last error</th></tr></thead><tbody id="upstreams"></tbody></table></div>'
        "<h2>Views</h2>"
        '<div class="table-wrap"><table><thead><tr><th>View</th><th>Entries served</th>'
        "<th>Hidden by policy</th><th>Why hidden</th></tr></thead>"
        '<tbody id="views"></tbody></table></div>'
        '<h2>Syncs over the last day</h2><div id="charts"></div></section>'
    )
    return page("MCP gateway operators", body, [], script="admin.js")

// The operators' page: asks the admin API with the bearer token, which is kept in this browser
// tab's sessionStorage only (gone when the tab closes), and draws what it answers. Actions that
// change the gateway (sync, reload, confirm a held drop) are asked again in an in-page dialog.
// Every value is set as text (textContent), never as HTML.
"use strict";
const KEY = "mcpGatewayAdminToken";
const HOUR_MS = 3600 * 1000, DAY_MS = 24 * HOUR_MS;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let timer = null, lastStatus = null, busy = false;
let pending = null; // the action the confirmation dialog asks about

function element(name, text, className) {
  const made = document.createElement(name);
  if (text !== undefined) made.textContent = text === null ? "-" : String(text);
  if (className) made.className = className;
  return made;
}

const cell = (row, text, className) =>
  row.appendChild(element("td", text === undefined ? null : text, className));
const when = (iso) => // "2026-01-02T03:04:05.123456Z" -> "2026-01-02 03:04:05"
  typeof iso === "string" && iso.length >= 19 ? `${iso.slice(0, 10)} ${iso.slice(11, 19)}` : "-";

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// -- the admin API ------------------------------------------------------------------------------

// One call with the token: {status, body} (body: the JSON answer, or the problem), or null
// when the token is gone or refused (the sign-in form is shown instead).
async function call(method, path) {
  const token = sessionStorage.getItem(KEY);
  if (!token) return showLogin("");
  let response;
  try {
    response = await fetch(path, { method, headers: { Authorization: `Bearer ${token}` } });
  } catch (error) {
    return { status: 0, body: { detail: "The gateway did not answer." } };
  }
  if (response.status === 401 || (response.status === 404 && path === "/admin/status")) {
    sessionStorage.removeItem(KEY);
    return showLogin(response.status === 401 ? "That token was refused." :
      "The operators' API is off (no admin_token is configured).");
  }
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  return { status: response.status, body: body || {} };
}

// A problem's detail as a title and lines: "config refused, ...:\nmistake\nmistake".
function problemLines(answer, fallback) {
  const detail = typeof answer.body.detail === "string" ? answer.body.detail : "";
  const lines = detail.split("\n").filter((line) => line.trim());
  const status = answer.status ? ` (HTTP ${answer.status})` : "";
  if (lines.length > 1 && lines[0].endsWith(":")) {
    return [lines[0].slice(0, -1) + status, lines.slice(1)];
  }
  return [fallback + status, lines.length ? lines : [answer.body.title || "no detail given"]];
}

function showResult(outcome, title, lines) {
  Object.assign($("action-result"), { className: `result result-${outcome}`, hidden: false });
  $("action-title").textContent = title;
  $("action-lines").replaceChildren(...lines.map((line) => element("li", line)));
}

// Run an action, refresh the status, then show how the action went (`describe`: a success).
async function act(label, method, path, describe) {
  if (busy) return;
  busy = true;
  showResult("running", `${label}…`, []);
  try {
    const answer = await call(method, path);
    if (answer === null) return;
    await load(); // the status after it, which `describe` may read too
    if (answer.status >= 200 && answer.status < 300) showResult(...describe(answer.body));
    else showResult("failed", ...problemLines(answer, `${label} was refused`));
  } finally {
    busy = false;
  }
  $("action-result").scrollIntoView({ block: "nearest" });
}

function ask(title, text, action) {
  if (busy) return;
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  pending = action;
  $("confirm").showModal();
  $("confirm-yes").focus();
}

function sync(name) {
  const path = `/admin/upstreams/${encodeURIComponent(name)}/sync`;
  const describe = (body) => {
    const held = lastStatus?.upstreams.find((upstream) => upstream.name === name)?.heldDrop;
    if (body.error) return ["failed", `The sync of ${name} failed`, [body.error]];
    if (!held) return ["ok", `Synced ${name}: ${body.changed ? "changed" : "no change"}`, []];
    return ["held", `Synced ${name}: a mass drop is held (${held.before} → ${held.after})`,
      ["The data before it is still served. Confirm the drop on the upstream's row to apply " +
       "it, or the next sync with the same answer will."]];
  };
  ask(`Sync ${name} now?`, "The gateway asks this upstream for its catalog now (even while its " +
    "breaker is open) and serves what changed.", () => act(`Syncing ${name}`, "POST", path,
    describe));
}

function confirmDrop(name, held) {
  const path = `/admin/upstreams/${encodeURIComponent(name)}/confirm-drop`;
  ask(`Apply the held drop of ${name}?`, `Its last sync lists ${held.after} entries where ` +
    `${held.before} were: the others leave every view now.`,
    () => act(`Confirming the drop of ${name}`, "POST", path,
      (body) => ["ok", `Applied the held drop of ${name}: ${body.entries} entries now`, []]));
}

function reload() {
  ask("Reload the config?", "The gateway reads its config files again and serves them if they " +
    "are valid; if not, it keeps the config it serves and lists each mistake.",
    () => act("Reloading the config", "POST", "/admin/reload",
      (body) => ["ok", "The config was reloaded", [`Views: ${(body.views || []).join(", ")}`]]));
}

// -- status ---------------------------------------------------------------------------------

function button(text, className, onClick) {
  const made = Object.assign(element("button", text, className), { type: "button" });
  made.addEventListener("click", onClick);
  return made;
}

function renderUpstreams(upstreams) {
  $("upstreams").replaceChildren(...upstreams.map((upstream) => {
    const row = element("tr");
    row.dataset.upstream = upstream.name;
    cell(row, upstream.name);
    cell(row, when(upstream.lastSuccess));
    cell(row, age(upstream.ageSeconds));
    cell(row, upstream.breaker.state, upstream.breaker.state === "closed" ? "ok" : "open");
    cell(row, upstream.stale ? `stale since ${when(upstream.staleSince)}` : "fresh",
      upstream.stale ? "stale" : "ok");
    cell(row, upstream.entries);
    cell(row, `${upstream.skippedLastSync} (${upstream.skippedTotal} in all)`);
    cell(row, upstream.lastError, upstream.lastError ? "last-error error" : "last-error");
    const actions = cell(row, "", "actions");
    actions.appendChild(button("Sync now", "sync", () => sync(upstream.name)));
    const held = upstream.heldDrop;
    if (held) {
      actions.appendChild(button(`Confirm drop (${held.before} → ${held.after})`,
        "confirm-drop danger", () => confirmDrop(upstream.name, held)));
    }
    return row;
  }));
}

function renderViews(views) {
  const select = $("explain-view");
  const chosen = select.value;
  select.replaceChildren(element("option", "every view"));
  select.firstChild.value = "";
  $("views").replaceChildren(...views.map((view) => {
    const row = element("tr");
    cell(row, view.name);
    cell(row, view.entries);
    const hidden = Object.entries(view.hidden || {});
    cell(row, hidden.reduce((sum, [, count]) => sum + count, 0));
    cell(row, hidden.map(([reason, count]) => `${reason}: ${count}`).join(", ") || "none");
    select.appendChild(element("option", view.name)).value = view.name;
    return row;
  }));
  select.value = views.some((view) => view.name === chosen) ? chosen : "";
}

function renderAudit(entries) {
  $("audit").replaceChildren(...entries.map((entry) => {
    const row = element("tr");
    for (const text of [when(entry.at), entry.who, entry.action, entry.target]) cell(row, text);
    cell(row, entry.outcome, `outcome-${entry.outcome}`);
    cell(row, entry.detail || "", "detail");
    return row;
  }));
  if (!entries.length) cell($("audit").appendChild(element("tr")), "No action yet.").colSpan = 6;
}

// A refused config: an alert at the top, each mistake on its own line (the gateway's
// message lists one per line).
function renderConfigAlert(refused) {
  const lines = (refused || "").split("\n").filter((line) => line.trim());
  $("config-issues").replaceChildren(...lines.map((line) => element("li", line)));
  $("config-alert").hidden = !refused;
}

async function load() {
  const [answer, audit] = await Promise.all(["status", "audit"].map((what) =>
    call("GET", `/admin/${what}`)));
  if (answer === null) return;
  if (answer.status !== 200) {
    const said = answer.status ? `answered ${answer.status}` : "did not answer";
    $("status-line").textContent = `The gateway ${said}; retrying.`;
    return;
  }
  const status = lastStatus = answer.body;
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("status-line").textContent = `Version ${status.version}; catalog built ` +
    `${when(status.snapshotBuiltAt)} UTC in ${status.snapshotBuildMs ?? "-"} ms`;
  renderConfigAlert(status.config.reloadError);
  renderUpstreams(status.upstreams);
  renderViews(status.views);
  renderCharts(status.upstreams, Date.now());
  if (audit?.status === 200) renderAudit(audit.body.audit || []);
}

// -- explain ----------------------------------------------------------------------------------

function verdictCell(row, verdict) {
  const td = cell(row, verdict ? "" : null);
  if (!verdict) return;
  const shown = verdict.served;
  td.appendChild(element("span", shown ? `shown${verdict.isLatest ? " (latest)" : ""}` :
    `hidden: ${verdict.reason}`, `badge ${shown ? "shown" : "hidden"}`));
  const notes = [verdict.cooldownEndsAt && `until ${when(verdict.cooldownEndsAt)} UTC`,
    verdict.removedPackages && `removed: ${verdict.removedPackages.join(", ")}`,
    verdict.signals && `advisories: ${verdict.signals.join(", ")}`].filter(Boolean);
  if (notes.length) td.appendChild(element("div", notes.join("; "), "note"));
  const rules = (verdict.rules || []).join(", ") || "none";
  td.appendChild(element("div", `deciding rules: ${rules}`, "rules"));
}

function renderExplain(answer) {
  const box = $("explain-result");
  const facts = [answer.name, answer.owner && `owned by upstream ${answer.owner}`,
    answer.reservedBy && `reserved by ${answer.reservedBy}`,
    answer.lookalikes?.length && `look-alikes: ${answer.lookalikes.join(", ")}`];
  box.replaceChildren(element("p", facts.filter(Boolean).join("; "), "explained-name"));
  const versions = [...(answer.versions || [])].sort((a, b) => // newest first
    (b.publishedAt > a.publishedAt) - (b.publishedAt < a.publishedAt));
  if (!versions.length) {
    box.appendChild(element("p", "No upstream offers a version of this name.", "summary"));
  } else {
    const head = element("tr");
    head.append(...["Version", "Upstream", "Status", "Published",
      ...answer.views.map((view) => `In view ${view}`)].map((title) => element("th", title)));
    const body = element("tbody");
    for (const version of versions) {
      const row = body.appendChild(element("tr"));
      cell(row, version.name ? `${version.version} (as ${version.name})` : version.version);
      cell(row, version.upstream);
      cell(row, version.status);
      cell(row, when(version.publishedAt));
      if (version.shadowedBy) {
        cell(row, `not served: shadowed by ${version.shadowedBy}: ${version.why}`,
          "shadowed").colSpan = Math.max(1, answer.views.length);
      } else {
        for (const view of answer.views) verdictCell(row, (version.views || {})[view]);
      }
    }
    const table = element("table");
    table.append(element("thead"), body);
    table.firstChild.appendChild(head);
    box.appendChild(element("div", undefined, "table-wrap")).appendChild(table);
  }
  const raw = box.appendChild(element("details"));
  raw.append(element("summary", "The answer as JSON"),
    element("pre", JSON.stringify(answer, null, 2), "raw"));
  box.hidden = false;
}

async function explain(event) {
  event.preventDefault();
  const query = new URLSearchParams({ name: $("explain-name").value.trim() });
  if ($("explain-view").value) query.set("view", $("explain-view").value);
  if ($("explain-version").value.trim()) query.set("version", $("explain-version").value.trim());
  const answer = await call("GET", `/admin/explain?${query}`);
  if (answer === null) return;
  if (answer.status === 200) return renderExplain(answer.body);
  const [title, lines] = problemLines(answer, "The gateway could not explain it");
  const shown = [title, ...lines].map((line) => element("p", line, "error"));
  $("explain-result").replaceChildren(...shown);
  $("explain-result").hidden = false;
}

// -- the sync chart -----------------------------------------------------------------------------

function svgElement(name, attributes, text) {
  const made = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) made.setAttribute(key, String(value));
  if (text !== undefined) made.textContent = text;
  return made;
}

const duration = (ms) => ms >= 1000 ? `${+(ms / 1000).toFixed(2)} s` : `${+ms.toFixed(1)} ms`;

// One chart per upstream, as wide as its panel: each sync a bar (its duration; a failure full
// height, in red), durations on the y axis, the last 24 hours on the x axis.
function renderCharts(upstreams, now) {
  const charts = $("charts");
  charts.replaceChildren();
  const width = Math.max(280, Math.floor(charts.clientWidth));
  const height = 180, left = 64, right = 12, top = 10, plotH = 136, plotW = width - left - right;
  const x = (at) => left + ((at - (now - DAY_MS)) / DAY_MS) * plotW;
  for (const upstream of upstreams) {
    const syncs = (upstream.history || []).map(([at, ms, ok]) => ({ at: Date.parse(at), ms, ok }))
      .filter((sync) => now - sync.at <= DAY_MS);
    const failed = syncs.filter((sync) => !sync.ok).length;
    const sorted = syncs.map((sync) => sync.ms).sort((a, b) => a - b);
    const middle = sorted[Math.floor(sorted.length / 2)];
    const median = sorted.length ? `, median ${duration(middle)}` : "";
    const figure = charts.appendChild(element("figure", undefined, "chart"));
    figure.appendChild(element("h3", `${upstream.name}: ${syncs.length} syncs, ${failed} failed` +
      median));
    const svg = figure.appendChild(svgElement("svg", { viewBox: `0 0 ${width} ${height}`, width,
      height, role: "img", "aria-label": `sync durations and failures of ${upstream.name} ` +
      "over the last 24 hours" }));
    // About four y ticks of 1, 2 or 5 times a power of ten, up to the longest sync (a failed
    // one is drawn full height all the same).
    const slowest = Math.max(1, ...syncs.map((sync) => sync.ms));
    const power = 10 ** Math.floor(Math.log10(slowest / 4));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= slowest / 4);
    const longest = step * Math.ceil(slowest / step);
    const y = (ms) => top + plotH - (ms / longest) * plotH;
    for (let tick = 0; tick <= longest + step / 2; tick += step) {
      svg.append(svgElement("line", { class: "grid", x1: left, x2: width - right, y1: y(tick),
        y2: y(tick) }), svgElement("text", { class: "tick y-tick", x: left - 6, y: y(tick) + 3,
        "text-anchor": "end" }, duration(tick)));
    }
    const every = (plotW < 520 ? 6 : 3) * HOUR_MS;
    for (let at = Math.ceil((now - DAY_MS) / every) * every; at <= now; at += every) {
      svg.append(svgElement("line", { class: "tick-mark", x1: x(at), x2: x(at),
        y1: top + plotH, y2: top + plotH + 4 }), svgElement("text", { class: "tick x-tick",
        x: x(at), y: top + plotH + 15, "text-anchor": "middle" },
        new Date(at).toTimeString().slice(0, 5)));
    }
    const centre = top + plotH / 2;
    svg.append(
      svgElement("text", { class: "axis-label", x: 12, y: centre, "text-anchor": "middle",
        transform: `rotate(-90 12 ${centre})` }, "sync duration"),
      svgElement("text", { class: "axis-label", x: left + plotW / 2, y: height - 3,
        "text-anchor": "middle" }, "time of the sync (the last 24 hours, local time)"),
      svgElement("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plotH }),
      svgElement("line", { class: "axis", x1: left, y1: top + plotH, x2: width - right,
        y2: top + plotH }));
    for (const sync of syncs) {
      const h = sync.ok ? Math.max(2, Math.min(plotH, (sync.ms / longest) * plotH)) : plotH;
      const bar = svg.appendChild(svgElement("rect", { x: (x(sync.at) - 1.5).toFixed(1),
        y: (top + plotH - h).toFixed(1), width: 3, height: h.toFixed(1),
        class: sync.ok ? "sync-ok" : "sync-failed" }));
      bar.appendChild(svgElement("title", {}, `${new Date(sync.at).toISOString()}: ` +
        `${duration(sync.ms)}, ${sync.ok ? "succeeded" : "failed"}`));
    }
  }
}

// -- sign-in ----------------------------------------------------------------------------------

function showLogin(message) {
  clearInterval(timer);
  $("dashboard").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-error").hidden = !message;
  return null;
}

function startPolling() {
  clearInterval(timer);
  timer = setInterval(load, 15000);
  load();
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("token").value);
  $("token").value = "";
  startPolling();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  showLogin("");
});
$("reload").addEventListener("click", reload);
$("explain").addEventListener("submit", explain);
$("confirm-yes").addEventListener("click", () => {
  const action = pending;
  $("confirm").close();
  if (action) action();
});
$("confirm-no").addEventListener("click", () => $("confirm").close());
$("confirm").addEventListener("close", () => { pending = null; });
let resizing = null; // the charts are drawn to their panel's width: again when it changes
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => lastStatus && renderCharts(lastStatus.upstreams, Date.now()), 150);
});

if (sessionStorage.getItem(KEY)) startPolling();

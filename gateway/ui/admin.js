// The operators' page: asks /admin/status with the bearer token, which is kept in this browser
// tab's sessionStorage only (gone when the tab closes), and draws what it answers.
// Every value is set as text (textContent), never as HTML.
"use strict";
const KEY = "mcpGatewayAdminToken";
const DAY_MS = 24 * 3600 * 1000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let timer = null;

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function renderUpstreams(upstreams) {
  const body = $("upstreams");
  body.replaceChildren();
  for (const upstream of upstreams) {
    const row = document.createElement("tr");
    cell(row, upstream.name);
    cell(row, upstream.lastSuccess);
    cell(row, age(upstream.ageSeconds));
    cell(row, upstream.breaker.state, upstream.breaker.state === "closed" ? "ok" : "open");
    cell(row, upstream.stale ? `stale since ${upstream.staleSince}` : "fresh",
      upstream.stale ? "stale" : "ok");
    cell(row, upstream.entries);
    cell(row, `${upstream.skippedLastSync} (${upstream.skippedTotal} in all)`);
    cell(row, upstream.lastError, upstream.lastError ? "error" : "");
    body.appendChild(row);
  }
}

function renderViews(views) {
  const body = $("views");
  body.replaceChildren();
  for (const view of views) {
    const row = document.createElement("tr");
    cell(row, view.name);
    cell(row, view.entries);
    const hidden = Object.entries(view.hidden || {});
    const total = hidden.reduce((sum, [, count]) => sum + count, 0);
    cell(row, total);
    cell(row, hidden.map(([reason, count]) => `${reason}: ${count}`).join(", ") || "none");
    body.appendChild(row);
  }
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

function renderCharts(upstreams, now) {
  const charts = $("charts");
  charts.replaceChildren();
  const width = 600, height = 120, top = 8, bottom = 16;
  for (const upstream of upstreams) {
    const syncs = (upstream.history || []).map(([at, ms, ok]) => ({ at: Date.parse(at), ms, ok }))
      .filter((sync) => now - sync.at <= DAY_MS);
    const figure = document.createElement("figure");
    figure.className = "chart";
    const title = document.createElement("h3");
    const failed = syncs.filter((sync) => !sync.ok).length;
    const sorted = syncs.map((sync) => sync.ms).sort((a, b) => a - b);
    const median = sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
    title.textContent = `${upstream.name}: ${syncs.length} syncs, ${failed} failed` +
      (median === null ? "" : `, median ${median} ms`);
    figure.appendChild(title);
    const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `sync durations and failures of ${upstream.name} over the last 24 hours` });
    const longest = Math.max(1, ...syncs.map((sync) => sync.ms));
    svg.appendChild(svgElement("line", { class: "axis", x1: 0, y1: height - bottom,
      x2: width, y2: height - bottom }));
    for (const sync of syncs) {
      const x = ((sync.at - (now - DAY_MS)) / DAY_MS) * (width - 4);
      const full = height - top - bottom;
      const h = sync.ok ? Math.max(2, (sync.ms / longest) * full) : full;
      const bar = svgElement("rect", { x: x.toFixed(1), y: (height - bottom - h).toFixed(1),
        width: 3, height: h.toFixed(1), class: sync.ok ? "sync-ok" : "sync-failed" });
      const tip = svgElement("title", {});
      tip.textContent = `${new Date(sync.at).toISOString()}: ${sync.ms} ms, ` +
        (sync.ok ? "succeeded" : "failed");
      bar.appendChild(tip);
      svg.appendChild(bar);
    }
    for (const [label, x] of [["24 h ago", 2], ["12 h ago", width / 2 - 20], ["now", width - 24]]) {
      const text = svgElement("text", { x, y: height - 4 });
      text.textContent = label;
      svg.appendChild(text);
    }
    figure.appendChild(svg);
    charts.appendChild(figure);
  }
}

async function load() {
  const token = sessionStorage.getItem(KEY);
  if (!token) return showLogin("");
  let response;
  try {
    response = await fetch("/admin/status", { headers: { Authorization: `Bearer ${token}` } });
  } catch (error) {
    $("status-line").textContent = "The gateway did not answer; retrying.";
    return;
  }
  if (response.status === 401 || response.status === 404) {
    sessionStorage.removeItem(KEY);
    return showLogin(response.status === 401 ? "That token was refused." :
      "The operators' API is off (no admin_token is configured).");
  }
  if (!response.ok) {
    $("status-line").textContent = `The gateway answered ${response.status}; retrying.`;
    return;
  }
  const status = await response.json();
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("status-line").textContent = `Version ${status.version}; catalog built ` +
    `${status.snapshotBuiltAt || "not yet"} in ${status.snapshotBuildMs ?? "-"} ms`;
  renderConfigAlert(status.config.reloadError);
  renderUpstreams(status.upstreams);
  renderViews(status.views);
  renderCharts(status.upstreams, Date.now());
}

// A refused config: an alert at the top, each mistake on its own line (the gateway's
// message lists one per line).
function renderConfigAlert(refused) {
  const list = $("config-issues");
  list.replaceChildren();
  for (const line of (refused || "").split("\n").filter((l) => l.trim())) {
    const item = document.createElement("li");
    item.textContent = line;
    list.appendChild(item);
  }
  $("config-alert").hidden = !refused;
}

function showLogin(message) {
  clearInterval(timer);
  $("dashboard").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-error").hidden = !message;
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
function startPolling() {
  clearInterval(timer);
  load();
  timer = setInterval(load, 15000);
}

if (sessionStorage.getItem(KEY)) startPolling();

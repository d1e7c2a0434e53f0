// The dashboard: live view of the scaler's /api/status, fed by server-sent
// events (/api/stream) with polling as the fallback. No library, no build step:
// it has to work offline, served by the scaler itself.
"use strict";

const HISTORY_SECONDS = 15 * 60;
const history = {};          // job type -> [[t, ready, unacked, workers], ...]
let lastStatus = null;
let lastUpdate = 0;
let source = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

const number = (value) => (value === null || value === undefined ? "?" : String(value));
const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString();

function setConnection(text, ok) {
  const node = $("connection");
  node.textContent = text;
  node.className = "connection " + (ok ? "ok" : "bad");
}

// ---- charts --------------------------------------------------------------
function remember(status) {
  const now = Date.now() / 1000;
  for (const [name, item] of Object.entries(status.job_types)) {
    const series = history[name] || (history[name] = []);
    series.push([now, item.ready || 0, item.unacked || 0, item.workers || 0]);
    while (series.length && series[0][0] < now - HISTORY_SECONDS) series.shift();
  }
}

function chart(name, maxWorkers) {
  const series = history[name] || [];
  const width = 300, height = 90, pad = 2;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  const now = Date.now() / 1000;
  const peakDepth = Math.max(1, ...series.map((p) => p[1] + p[2]));
  const peakWorkers = Math.max(1, maxWorkers || 1, ...series.map((p) => p[3]));
  // Up to 15 minutes, but never less than 2: a fresh burst fills the chart instead of hugging its edge.
  const window = Math.min(HISTORY_SECONDS, Math.max(120, series.length ? now - series[0][0] : 0));
  const x = (t) => pad + (width - 2 * pad) * (1 - (now - t) / window);
  const line = (values, peak) =>
    values.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${(height - pad - (height - 2 * pad) * (v / peak)).toFixed(1)}`).join(" ");
  const depth = series.map((p) => [p[0], p[1] + p[2]]);
  const workers = series.map((p) => [p[0], p[3]]);
  const last = series[series.length - 1];
  svg.dataset.window = String(Math.round(window));
  svg.setAttribute("aria-label", `${name}: queue depth and workers over the last ${Math.round(window / 60)} minutes` +
    (last ? `, now ${last[1] + last[2]} messages and ${last[3]} workers` : ""));
  svg.dataset.points = String(series.length);
  for (const [cls, values, peak] of [["depth", depth, peakDepth], ["workers", workers, peakWorkers]]) {
    if (!values.length) continue;
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", line(values, peak));
    path.setAttribute("class", cls);
    svg.append(path);
  }
  return svg;
}

// ---- budget ------------------------------------------------------------------
// One colour per job type, stable across ticks (by name), for the stacked bar and chart.
const PALETTE = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#dc2626"];
const colourOf = (name, names) => PALETTE[names.indexOf(name) % PALETTE.length];

function budgetTotal(budget) {
  if (budget.max_workers !== null && budget.max_workers !== undefined) return budget.max_workers;
  return null;
}

function renderBudget(status) {
  const budget = status.budget || {};
  const total = budgetTotal(budget);
  const resources = Object.entries(budget.resources || {});
  const panel = $("budget-panel");
  panel.hidden = total === null && !resources.length;
  if (panel.hidden) return;
  const names = Object.keys(status.job_types).sort();
  const held = budget.by_type || {};
  const parts = [];
  if (total !== null) parts.push(`${budget.used} / ${total} workers`);
  for (const [name, item] of resources) parts.push(`${name} ${item.used} / ${item.total}`);
  $("budget-text").textContent = parts.join(" · ") + " — " +
    (Object.entries(held).map(([name, count]) => `${name} ${count}`).join(", ") || "nothing held");
  const bar = $("budget-bar");
  const capacity = Math.max(total || 0, budget.used || 0, 1);
  bar.replaceChildren(...names.filter((name) => held[name]).map((name) => {
    const part = el("span", { class: "budget-part", "data-type": name, title: `${name}: ${held[name]}` }, String(held[name]));
    part.style.width = `${(100 * held[name]) / capacity}%`;
    part.style.background = colourOf(name, names);
    return part;
  }));
  bar.setAttribute("aria-label", $("budget-text").textContent);
  bar.dataset.used = String(budget.used);
  bar.dataset.total = String(total);
  $("budget-chart").replaceChildren(stackedChart(names, capacity));
  $("budget-legend").replaceChildren(...names.map((name) => {
    const key = el("span", { class: "swatch" }, name);
    key.style.setProperty("--swatch", colourOf(name, names));
    return key;
  }));
}

function stackedChart(names, capacity) {
  // Workers held per type over time, stacked: how the budget was shared.
  const width = 600, height = 110, pad = 2;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart stacked");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Workers of every job type over time, stacked against the budget");
  const now = Date.now() / 1000;
  const times = [...new Set(names.flatMap((name) => (history[name] || []).map((p) => Math.round(p[0]))))].sort((a, b) => a - b);
  if (!times.length) return svg;
  const window = Math.min(HISTORY_SECONDS, Math.max(120, now - times[0]));
  const x = (t) => pad + (width - 2 * pad) * (1 - (now - t) / window);
  const y = (v) => height - pad - (height - 2 * pad) * (v / capacity);
  const at = (name, t) => {
    let value = 0;
    for (const point of history[name] || []) { if (point[0] <= t + 0.5) value = point[3]; else break; }
    return value;
  };
  let below = times.map(() => 0);
  for (const name of names) {
    const above = times.map((t, i) => below[i] + at(name, t));
    if (above.some((v, i) => v !== below[i])) {
      const top = times.map((t, i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(above[i]).toFixed(1)}`).join(" ");
      const bottom = times.map((t, i) => `L${x(t).toFixed(1)},${y(below[i]).toFixed(1)}`).reverse().join(" ");
      const area = document.createElementNS("http://www.w3.org/2000/svg", "path");
      area.setAttribute("d", `${top} ${bottom} Z`);
      area.setAttribute("class", "area");
      area.dataset.type = name;
      area.style.fill = colourOf(name, names);
      svg.append(area);
    }
    below = above;
  }
  svg.dataset.points = String(times.length);
  return svg;
}

// ---- rendering -------------------------------------------------------------
const CONTROLS = {
  run: [["pause", "Pause"], ["drain", "Drain"]],
  paused: [["resume", "Resume"]],
  drain: [["resume", "Resume"], ["pause", "Pause"]],
};

function controlButtons(name, item) {
  const actions = [...(CONTROLS[item.control] || CONTROLS.run)];
  if (item.state === "failing") actions.push(["retry", "Retry now"]);
  const box = el("div", { class: "controls" });
  if (item.removed) return box;
  for (const [action, label] of actions) {
    const button = el("button", { type: "button", class: `control ${action}`, "data-action": action, "data-type": name }, label);
    button.setAttribute("aria-label", `${label} ${name}`);
    box.append(button);
  }
  return box;
}

async function control(action, name) {
  const answer = $("control-answer");
  const headers = {};
  const token = $("upload-token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const response = await fetch(`/api/job-types/${encodeURIComponent(name)}/${action}`, { method: "POST", headers });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    answer.textContent = response.ok ? `${name}: ${action} accepted.` : `${name}: ${action} refused (${response.status}): ${body.error}`;
    answer.className = "answer " + (response.ok ? "ok" : "error");
  } catch (error) {
    answer.textContent = "The scaler is unreachable; nothing changed.";
    answer.className = "answer error";
  }
}

function renderCards(status) {
  const cards = $("cards");
  cards.replaceChildren();
  for (const [name, item] of Object.entries(status.job_types)) {
    const stat = (label, value, cls = "") => el("div", { class: "stat " + cls }, el("span", { class: "value" }, value), el("span", { class: "label" }, label));
    const [first, ...rest] = String(item.reason).split("\n");
    const share = item.share === null || item.share === undefined ? "" : ` / ${item.share}`;
    const card = el("article", { class: `card state-${item.state}`, "data-type": name, "data-control": item.control },
      el("header", {}, el("h3", {}, name), el("span", { class: "badge" }, item.state)),
      el("p", { class: "reason", "data-field": "reason" }, first),
      el("div", { class: "stats" },
        stat("ready", number(item.ready), "ready"),
        stat("unacked", number(item.unacked), "unacked"),
        stat("consumers", number(item.consumers)),
        stat("workers", `${item.workers}/${item.max_workers}`, "workers"),
        stat(share ? "desired / share" : "desired", `${number(item.desired)}${share}`, "desired"),
        stat("dead letters", number(item.dead), item.dead ? "dead warn" : "dead")),
      chart(name, item.max_workers),
      el("p", { class: "legend" }, el("span", { class: "key depth" }, "queue depth"), " ", el("span", { class: "key workers" }, "workers"),
        ` · threshold ${item.threshold}, burst > ${item.burst_threshold} (+${item.burst_size}), idle ${item.idle_seconds} s, priority ${item.priority}`),
      controlButtons(name, item));
    if (rest.length) card.insertBefore(el("pre", { class: "failure", "data-field": "failure" }, rest.join("\n")), card.querySelector(".stats"));
    if (item.unschedulable) card.append(el("p", { class: "warn" }, "Unschedulable: " + item.unschedulable));
    cards.append(card);
  }
}

function renderWorkers(status) {
  const body = $("workers");
  body.replaceChildren();
  if (!status.workers.length) {
    body.append(el("tr", {}, el("td", { colSpan: 7, class: "empty" }, "No workers: every type is idle.")));
    return;
  }
  for (const worker of status.workers) {
    const button = el("button", { type: "button", class: "log-button" }, "Log");
    button.setAttribute("aria-label", `Show the log of ${worker.id}`);
    button.addEventListener("click", () => showLog(worker.id));
    const state = worker.exit_code !== null && worker.exit_code !== undefined ? `${worker.state} (exit ${worker.exit_code})` : worker.state;
    body.append(el("tr", { "data-worker": worker.id },
      el("td", { class: "mono" }, worker.id), el("td", {}, worker.job_type),
      el("td", { class: `wstate ${worker.state}` }, state + (worker.busy ? " · busy" : "")),
      el("td", {}, clock(worker.started_at)), el("td", {}, worker.processed), el("td", {}, worker.failed),
      el("td", {}, button)));
  }
}

function renderEvents(status) {
  const list = $("events");
  list.replaceChildren();
  if (!status.events.length) list.append(el("li", { class: "empty" }, "No scaling decision yet."));
  for (const event of status.events.slice(0, 30)) {
    list.append(el("li", { class: `event ${event.direction}` }, el("time", {}, clock(event.ts)), " ", el("strong", {}, event.job_type), ": ", event.reason));
  }
}

function renderTypesSelect(status) {
  const select = $("upload-type");
  const names = Object.keys(status.job_types).filter((name) => !status.job_types[name].removed);
  const current = [...select.options].map((o) => o.value).join();
  if (current === names.join()) return;
  const chosen = select.value;
  select.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
  if (names.includes(chosen)) select.value = chosen;
}

function render(status) {
  lastStatus = status;
  lastUpdate = Date.now();
  remember(status);
  const banner = $("banner");
  const problems = [];
  if (!status.broker.reachable) problems.push("RabbitMQ is unreachable: the scaler makes no scaling decision until it is back. " + (status.broker.error || ""));
  if (status.config.error) problems.push("Config error (the last good config stays in force): " + status.config.error);
  if (status.controls && status.controls.error) problems.push("The pause/drain settings cannot be read (the last ones stay in force): " + status.controls.error);
  if (!status.leader) problems.push("This scaler is a standby: another replica holds the leadership and makes the decisions.");
  banner.hidden = !problems.length;
  banner.textContent = problems.join("\n");
  renderBudget(status);
  renderCards(status);
  renderWorkers(status);
  renderEvents(status);
  renderTypesSelect(status);
  setConnection(`live · tick ${status.tick.interval} s · ${status.backend} backend`, true);
}

// ---- data sources ------------------------------------------------------------
async function loadHistory() {
  try {
    const response = await fetch("/api/history");
    if (!response.ok) return;
    const data = await response.json();
    for (const [name, samples] of Object.entries(data)) history[name] = samples.map((s) => [...s]);
  } catch (error) {
    setConnection("scaler unreachable", false);
  }
}

async function poll() {
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    if (response.status === 401) { location.assign("/login"); return; }  // the session ended: log in again
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (error) {
    setConnection("scaler unreachable: retrying…", false);
  }
}

function connect() {
  if (!window.EventSource) {
    setInterval(poll, 1000);
    return;
  }
  source = new EventSource("/api/stream");
  source.addEventListener("status", (event) => render(JSON.parse(event.data)));
  source.onerror = () => setConnection("scaler unreachable: reconnecting…", false);
  // If the stream stalls without an error (a proxy buffering it), fall back to polling.
  setInterval(() => { if (Date.now() - lastUpdate > 3000) poll(); }, 1000);
}

// ---- worker logs ------------------------------------------------------------
// The log view follows the worker's log (like tail -f) while it is open.
let logTimer = null;

async function fetchLog(workerId) {
  try {
    const response = await fetch(`/api/workers/${encodeURIComponent(workerId)}/log?lines=200`);
    $("log-text").textContent = response.ok ? (await response.text()) || "(no output yet)" : `No log: HTTP ${response.status}`;
  } catch (error) {
    $("log-text").textContent = "The scaler is unreachable.";
  }
}

function showLog(workerId) {
  const dialog = $("log-dialog");
  $("log-title").textContent = `Log of ${workerId}`;
  $("log-text").textContent = "loading…";
  if (!dialog.open) dialog.showModal();
  clearInterval(logTimer);
  fetchLog(workerId);
  logTimer = setInterval(() => (dialog.open ? fetchLog(workerId) : clearInterval(logTimer)), 2000);
}

// ---- upload form (submitting it is in uploads.js) ----------------------------------
function setUpDrop() {
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) $("upload-file").files = e.dataTransfer.files;
  });
}

document.addEventListener("DOMContentLoaded", async () => {
  $("log-close").addEventListener("click", () => $("log-dialog").close());
  // The cards are redrawn every tick: one listener on their container serves every button.
  $("cards").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) control(button.dataset.action, button.dataset.type);
  });
  setUpDrop();
  await loadHistory();
  await poll();
  connect();
});

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

// ---- rendering -------------------------------------------------------------
function renderCards(status) {
  const cards = $("cards");
  cards.replaceChildren();
  for (const [name, item] of Object.entries(status.job_types)) {
    const stat = (label, value, cls = "") => el("div", { class: "stat " + cls }, el("span", { class: "value" }, value), el("span", { class: "label" }, label));
    const card = el("article", { class: `card state-${item.state}`, "data-type": name },
      el("header", {}, el("h3", {}, name), el("span", { class: "badge" }, item.state)),
      el("p", { class: "reason", "data-field": "reason" }, item.reason),
      el("div", { class: "stats" },
        stat("ready", number(item.ready), "ready"),
        stat("unacked", number(item.unacked), "unacked"),
        stat("consumers", number(item.consumers)),
        stat("workers", `${item.workers}/${item.max_workers}`, "workers"),
        stat("starting / running", `${item.starting} / ${item.running}`),
        stat("dead letters", number(item.dead), item.dead ? "dead warn" : "dead")),
      chart(name, item.max_workers),
      el("p", { class: "legend" }, el("span", { class: "key depth" }, "queue depth"), " ", el("span", { class: "key workers" }, "workers"),
        ` · threshold ${item.threshold}, burst > ${item.burst_threshold} (+${item.burst_size}), idle ${item.idle_seconds} s`));
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
  if (!status.leader) problems.push("This scaler is a standby: another replica holds the leadership and makes the decisions.");
  banner.hidden = !problems.length;
  banner.textContent = problems.join("\n");
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
  setUpDrop();
  await loadHistory();
  await poll();
  connect();
});

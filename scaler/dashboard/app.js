// The dashboard: live view of the scaler's /api/status, fed by server-sent
// events (/api/stream) with polling as the fallback, and charts of its history
// (charts.js, uPlot). No build step and no CDN: it has to work offline, served
// by the scaler itself.
"use strict";

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

const number = (value) => (value === null || value === undefined ? "?" : Charts.count(value));
const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString();

function setConnection(text, ok) {
  const node = $("connection");
  node.textContent = text;
  node.className = "connection " + (ok ? "ok" : "bad");
}

// ---- charts --------------------------------------------------------------
// The scaler keeps six hours of every type's history (/api/history, scaler/history.py); the charts
// show the chosen window of it and fetch it again as often as its buckets change (every second
// for 5 minutes, every 5 s for longer windows), so they move with the live cards.
let historyWindow = null;      // seconds; the server's shortest window until another is chosen
let historyData = null;        // the last /api/history answer
let historyTimer = null;
const typeCharts = new Map();  // job type -> {box, depth, flow}

const xRange = () => historyData ? [historyData.now - historyData.window, historyData.now] : [0, 1];
const eventsOf = (name) => (historyData ? historyData.events.filter((event) => event.job_type === name) : []);

function typeChartsFor(name) {
  if (typeCharts.has(name)) return typeCharts.get(name);
  const depthHost = el("div", { "data-chart": "depth" });
  const flowHost = el("div", { "data-chart": "flow" });
  const box = el("div", { class: "type-charts", "data-type": name }, depthHost, flowHost);
  const charts = {
    box,
    depth: Charts.create(depthHost, {
      title: `${name}: queue depth and workers`, x: "clock", range: xRange, height: 150,
      axes: [{ label: "rows" }, { label: "workers", whole: true }],
      lines: [
        { label: "queue", colour: Charts.COLOURS.depth },
        { label: "workers", colour: Charts.COLOURS.workers, axis: 2, stepped: true },
        { label: "desired", colour: Charts.COLOURS.desired, axis: 2, stepped: true, dash: [5, 4], width: 1.5 },
      ],
      markers: () => eventsOf(name),
      summary: (data) => `${name}, last ${Charts.duration(historyWindow)}: queue depth ${Charts.extent(data[1])} rows, ` +
        `workers ${Charts.extent(data[2])}, desired ${Charts.extent(data[3])}, ${eventsOf(name).length} scaling events`,
    }),
    flow: Charts.create(flowHost, {
      title: `${name}: throughput and cost`, x: "clock", range: xRange, height: 130,
      axes: [{ label: "rows/s" }, { label: "worker-s" }],
      lines: [
        { label: "rows/s", colour: Charts.COLOURS.rows },
        { label: "worker-s", colour: Charts.COLOURS.cost, axis: 2 },
      ],
      markers: () => eventsOf(name),
      summary: (data) => `${name}, last ${Charts.duration(historyWindow)}: throughput ${Charts.extent(data[1])} rows/s, ` +
        `cost ${Charts.number(data[2][data[2].length - 1] || 0)} worker-seconds`,
    }),
  };
  typeCharts.set(name, charts);
  drawType(name);
  return charts;
}

// Workers report their rows in heartbeats (every 2 s by default), so buckets narrower than that see
// rows in bursts: there, rows/s is the mean over the last RATE_SECONDS instead of the bucket's own.
const RATE_SECONDS = 5;

function rowsPerSecond(series, step) {
  if (step >= RATE_SECONDS) return series.rows_per_second;
  const { t, rows } = series;
  let first = 0, sum = 0;
  return t.map((end, i) => {
    sum += rows[i];
    while (t[first] <= end - RATE_SECONDS) sum -= rows[first++];
    return +(sum / Math.min(RATE_SECONDS, end - t[0] + step)).toFixed(2);
  });
}

function drawType(name) {
  const charts = typeCharts.get(name);
  const found = historyData && historyData.job_types[name];
  const s = found ? found.series : { t: [], ready: [], unacked: [], workers: [], desired: [], rows: [], rows_per_second: [], worker_seconds: [] };
  const depth = s.ready.map((ready, i) => (ready === null || s.unacked[i] === null ? null : ready + s.unacked[i]));
  charts.depth.update([s.t, depth, s.workers, s.desired]);
  charts.flow.update([s.t, rowsPerSecond(s, historyData ? historyData.step : RATE_SECONDS), Charts.cumulative(s.worker_seconds)]);
}

function forgetTypeCharts(names) {
  for (const [name, charts] of typeCharts) {
    if (names.includes(name)) continue;
    charts.depth.destroy();
    charts.flow.destroy();
    typeCharts.delete(name);
  }
}

function renderWindowPicker() {
  const box = $("window-buttons");
  if (box.childElementCount !== historyData.windows.length) {
    box.replaceChildren(...historyData.windows.map((seconds) => {
      const button = el("button", { type: "button", class: "window", "data-window": String(seconds) }, Charts.duration(seconds));
      button.addEventListener("click", () => chooseWindow(seconds));
      return button;
    }));
  }
  for (const button of box.children) button.setAttribute("aria-pressed", String(Number(button.dataset.window) === historyData.window));
}

function chooseWindow(seconds) {
  historyWindow = seconds;
  $("window-status").textContent = `Charts now show the last ${Charts.duration(seconds)}.`;
  loadHistory();
}

// ---- budget ------------------------------------------------------------------
// One colour per job type, stable across ticks (by name), for the stacked bar and chart.
const colourOf = (name, names) => Charts.PALETTE[names.indexOf(name) % Charts.PALETTE.length];

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
  drawBudget(names);  // its legend names each type's colour
}

// Workers held by each type over the window, stacked: how the budget was shared.
let budgetChart = null;
let budgetNames = [];
let budgetStack = [];  // per type (sorted by name): workers of it and the types before it

// The legend shows each type's own workers (the latest off the chart), not the running total its band is drawn to.
const ownWorkers = (k) => (index) => {
  const stack = budgetStack[k] || [];
  const i = index === null ? stack.length - 1 : index;
  return i >= 0 ? String(stack[i] - (k ? budgetStack[k - 1][i] : 0)) : "–";
};

function drawBudget(names) {
  if (!historyData) return;
  if (!budgetChart || names.join() !== budgetNames.join()) {
    budgetNames = names;
    if (budgetChart) budgetChart.destroy();
    budgetChart = Charts.create($("budget-chart"), {
      title: "Workers of every job type, stacked", x: "clock", range: xRange, height: 130,
      axes: [{ label: "workers", whole: true }],
      // Drawn top down, each filled to zero, so each band shows one type's share.
      lines: names.map((name, k) => ({ label: name, colour: colourOf(name, names), fill: colourOf(name, names) + "cc", stepped: true, width: 1, value: ownWorkers(k) })).reverse(),
      summary: (data) => `Workers of ${names.length} job types over the last ${Charts.duration(historyWindow)}, stacked: at most ${Charts.extent(data[1] || [])} together`,
    });
  }
  const times = [...new Set(names.flatMap((name) => (historyData.job_types[name] ? historyData.job_types[name].series.t : [])))].sort((a, b) => a - b);
  let below = times.map(() => 0);
  const stacked = names.map((name) => {
    const found = historyData.job_types[name];
    const held = new Map(found ? found.series.t.map((t, i) => [t, found.series.workers[i]]) : []);
    below = times.map((t, i) => below[i] + (held.get(t) || 0));
    return below;
  });
  budgetStack = stacked;
  budgetChart.update([times, ...stacked.slice().reverse()]);
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
      typeChartsFor(name).box,
      el("p", { class: "legend" },
        `threshold ${item.threshold}, burst > ${item.burst_threshold} (+${item.burst_size}), idle ${item.idle_seconds} s, priority ${item.priority}`),
      controlButtons(name, item));
    if (rest.length) card.insertBefore(el("pre", { class: "failure", "data-field": "failure" }, rest.join("\n")), card.querySelector(".stats"));
    if (item.unschedulable) card.append(el("p", { class: "warn" }, "Unschedulable: " + item.unschedulable));
    cards.append(card);
  }
  forgetTypeCharts(Object.keys(status.job_types));
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
      el("td", {}, clock(worker.started_at)), el("td", {}, number(worker.processed)), el("td", {}, number(worker.failed)),
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
  clearTimeout(historyTimer);
  const asked = historyWindow;
  let pause = 5;
  try {
    const query = asked ? `?window=${asked}` : "";
    const response = await fetch(`/api/history${query}`, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const answer = await response.json();
    if (historyWindow !== asked) return;  // another window was chosen meanwhile: its own request draws and goes on
    historyData = answer;
    historyWindow = answer.window;
    pause = Math.min(Math.max(historyData.step, 1), 5);
    renderWindowPicker();
    for (const name of typeCharts.keys()) drawType(name);
    if (lastStatus) drawBudget(Object.keys(lastStatus.job_types).sort());
  } catch (error) {
    setConnection("scaler unreachable", false);
  }
  historyTimer = setTimeout(loadHistory, pause * 1000);
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

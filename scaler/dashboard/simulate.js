// The Simulate view: the summary.json of `./manage.sh simulate` (version 1 of the format the
// simulator and this view share), opened from disk and read in the browser, drawn with the live view's charts: workers
// and backlog over trace time per policy, each policy's distribution of row waits, the cost table,
// and the Pareto front of cost against p95 wait when the run swept settings. A file that is not such
// a summary is refused with what is wrong and where; the trace's attribution is shown beside every
// figure, as its licence asks.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  class SummaryError extends Error {}

  // ---- checking the file --------------------------------------------------------
  const fail = (where, what) => { throw new SummaryError(`${where} ${what}`); };
  const shown = (value) => (JSON.stringify(value) ?? String(value)).slice(0, 60);
  const isNumber = (value) => typeof value === "number" && Number.isFinite(value);

  function object(value, where) {
    if (value === null || typeof value !== "object" || Array.isArray(value)) fail(where, `must be an object, got ${shown(value)}`);
    return value;
  }

  function figure(value, where, nullable = false) {
    if (!isNumber(value) && !(nullable && value === null)) fail(where, `must be a number, got ${shown(value)}`);
  }

  function numbers(value, where) {
    if (!Array.isArray(value)) fail(where, `must be a list of numbers, got ${shown(value)}`);
    value.forEach((item, i) => figure(item, `${where}[${i}]`));
    return value;
  }

  const TOTALS = ["worker_seconds", "busy_fraction", "peak_workers", "starts", "rows", "uploads"];
  const PERCENTILES = ["wait_seconds", "completion_seconds"];

  function checkTotals(totals, where) {
    object(totals, where);
    for (const key of TOTALS) figure(totals[key], `${where}.${key}`);
    for (const key of PERCENTILES) {
      const spread = object(totals[key], `${where}.${key}`);
      for (const p of ["p50", "p95", "p99"]) figure(spread[p], `${where}.${key}.${p}`, true);  // null: no row
    }
  }

  function checkPolicy(policy, where) {
    object(policy, where);
    checkTotals(policy.total, `${where}.total`);
    for (const [type, totals] of Object.entries(object(policy.job_types ?? {}, `${where}.job_types`))) {
      checkTotals(totals, `${where}.job_types.${type}`);
    }
    const timeline = object(policy.timeline, `${where}.timeline`);
    const t = numbers(timeline.t, `${where}.timeline.t`);
    t.forEach((value, i) => { if (i && value < t[i - 1]) fail(`${where}.timeline.t[${i}]`, `goes back in time (${value} after ${t[i - 1]})`); });
    for (const key of ["workers", "backlog"]) {
      const values = numbers(timeline[key], `${where}.timeline.${key}`);
      if (values.length !== t.length) fail(`${where}.timeline.${key}`, `has ${values.length} points but t has ${t.length}`);
    }
    const histogram = object(policy.wait_histogram, `${where}.wait_histogram`);
    const edges = numbers(histogram.edges, `${where}.wait_histogram.edges`);
    const counts = numbers(histogram.counts, `${where}.wait_histogram.counts`);
    if (edges.length !== counts.length + 1) fail(`${where}.wait_histogram`, `needs one edge more than counts (${edges.length} edges, ${counts.length} counts)`);
  }

  function check(summary) {
    object(summary, "the file");
    if (summary.version !== 1) fail("version", `must be 1 (the version this dashboard reads), got ${shown(summary.version)}`);
    const policies = object(summary.policies, "policies");
    if (!Object.keys(policies).length) fail("policies", "names no policy");
    for (const [name, policy] of Object.entries(policies)) checkPolicy(policy, `policies.${name}`);
    if (summary.pareto !== undefined && summary.pareto !== null) {
      if (!Array.isArray(summary.pareto)) fail("pareto", `must be a list, got ${shown(summary.pareto)}`);
      summary.pareto.forEach((point, i) => {
        object(point, `pareto[${i}]`);
        object(point.params, `pareto[${i}].params`);
        figure(point.worker_seconds, `pareto[${i}].worker_seconds`);
        figure(point.wait_p95, `pareto[${i}].wait_p95`);
      });
    }
    return summary;
  }

  // ---- drawing it -----------------------------------------------------------------
  const el = (tag, text, attrs = {}) => {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    return node;
  };
  const seconds = (value) => (value === null ? "–" : `${Charts.number(value)} s`);
  const colour = (i) => Charts.PALETTE[i % Charts.PALETTE.length];
  const total = (values) => values.reduce((sum, value) => sum + value, 0);
  const charts = [];

  function table(id, head, rows) {
    const node = $(id);
    const header = el("tr");
    for (const name of head) header.append(el("th", name, { scope: "col" }));
    const thead = el("thead");
    thead.append(header);
    const tbody = el("tbody");
    for (const [attrs, cells] of rows) {
      const row = el("tr", undefined, attrs);
      cells.forEach((cell, i) => row.append(el(i ? "td" : "th", cell, i ? {} : { scope: "row" })));
      tbody.append(row);
    }
    node.replaceChildren(thead, tbody);
  }

  const figures = (totals) => [
    Charts.number(totals.worker_seconds), `${Math.round(totals.busy_fraction * 100)}%`,
    seconds(totals.wait_seconds.p50), seconds(totals.wait_seconds.p95), seconds(totals.wait_seconds.p99),
    seconds(totals.completion_seconds.p95), Charts.count(totals.peak_workers), Charts.count(totals.starts), Charts.number(totals.rows),
  ];
  const FIGURE_HEADS = ["worker-seconds", "busy", "wait p50", "wait p95", "wait p99", "completion p95", "peak workers", "cold starts", "rows"];

  function renderTrace(summary) {
    const trace = summary.trace || {};
    const parts = [
      `${trace.format || "unknown format"} trace ${trace.path || ""}`.trim(),
      trace.hours !== undefined ? `${trace.hours} h from ${trace.start_seconds || 0} s` : null,
      trace.speedup && trace.speedup !== 1 ? `speedup ×${trace.speedup}` : null,
      trace.uploads !== undefined ? `${Charts.number(trace.uploads)} uploads, ${Charts.number(trace.rows)} rows, ${trace.job_types} job types` : null,
      summary.generated_at ? `simulated ${summary.generated_at}${summary.commit ? ` at ${String(summary.commit).slice(0, 12)}` : ""}` : null,
    ];
    $("sim-trace").textContent = parts.filter(Boolean).join(" · ");
    $("sim-attribution").textContent = attribution(summary);
    const list = $("sim-assumptions");
    list.replaceChildren();
    for (const [key, value] of Object.entries(summary.assumptions || {})) list.append(el("dt", key), el("dd", typeof value === "object" ? JSON.stringify(value) : String(value)));
    $("sim-config").textContent = JSON.stringify(summary.config || {}, null, 2);
  }

  const attribution = (summary) => (summary.trace && summary.trace.attribution ? `Trace: ${summary.trace.attribution}` : "");

  function renderTables(summary) {
    const policies = Object.entries(summary.policies);
    table("sim-costs", ["policy", ...FIGURE_HEADS], policies.map(([name, policy]) => [{ "data-policy": name }, [name, ...figures(policy.total)]]));
    const rows = [];
    for (const [name, policy] of policies) {
      for (const [type, totals] of Object.entries(policy.job_types || {})) rows.push([{ "data-policy": name, "data-type": type }, [`${type} · ${name}`, ...figures(totals)]]);
    }
    table("sim-types", ["type · policy", ...FIGURE_HEADS], rows);
  }

  // One x axis for every policy's timeline (they may be sampled at different times): their union.
  function joined(policies, key) {
    const tables = policies.map(([, policy]) => [policy.timeline.t, policy.timeline[key]]);
    return uPlot.join(tables);
  }

  function place(id, spec, data, caption) {
    const host = el("div");
    const chart = Charts.create(host, spec);
    $(id).append(host, el("p", caption, { class: "attribution" }));
    chart.update(data);
    charts.push(chart);
    return chart;
  }

  function renderCharts(summary) {
    while (charts.length) charts.pop().destroy();
    for (const id of ["sim-workers", "sim-backlog", "sim-wait", "sim-pareto"]) $(id).replaceChildren();
    const policies = Object.entries(summary.policies);
    const caption = attribution(summary);
    const lines = (stepped) => policies.map(([name], i) => ({ label: name, colour: colour(i), stepped, spanGaps: true }));
    const span = (data) => `${Charts.elapsed(data[0][0] || 0)} to ${Charts.elapsed(data[0][data[0].length - 1] || 0)} of trace time`;
    place("sim-workers", {
      title: "Workers per policy", x: "elapsed", xLabel: "trace time", height: 220, axes: [{ label: "workers", whole: true }], lines: lines(true),
      summary: (data) => `Workers over ${span(data)}: ` + policies.map(([name], i) => `${name} ${Charts.extent(data[i + 1])}`).join(", "),
    }, joined(policies, "workers"), caption);
    place("sim-backlog", {
      title: "Backlog per policy", x: "elapsed", xLabel: "trace time", height: 220, axes: [{ label: "rows waiting" }], lines: lines(false),
      summary: (data) => `Backlog over ${span(data)}: ` + policies.map(([name], i) => `${name} ${Charts.extent(data[i + 1])} rows`).join(", "),
    }, joined(policies, "backlog"), caption);
    policies.forEach(([name, policy], i) => {
      const { edges, counts } = policy.wait_histogram;
      const wrap = el("div", undefined, { class: "sim-histogram", "data-policy": name });
      wrap.append(el("h3", name));
      $("sim-wait").append(wrap);
      const host = el("div");
      wrap.append(host, el("p", caption, { class: "attribution" }));
      const chart = Charts.create(host, {
        title: `Row waits under ${name}`, x: "bins", xLabel: "wait (s)", edges, height: 150,
        axes: [{ label: "rows", whole: true }],
        lines: [{ label: "rows", colour: colour(i), fill: `${colour(i)}99`, bars: true, value: (k) => Charts.number(k === null ? total(counts) : counts[k]) }],
        summary: () => `Row waits under ${name}: ` + counts.map((count, k) => `${Charts.count(count)} rows waited ${edges[k]} to ${edges[k + 1]} s`).join(", "),
      });
      chart.update([counts.map((_, k) => k + 0.5), counts]);
      charts.push(chart);
    });
    renderPareto(summary, caption);
  }

  function renderPareto(summary, caption) {
    const front = (summary.pareto || []).slice().sort((a, b) => a.worker_seconds - b.worker_seconds);
    $("sim-pareto-panel").hidden = !front.length;
    if (!front.length) return;
    const params = (point) => Object.entries(point.params).map(([key, value]) => `${key}=${value}`).join(", ");
    place("sim-pareto", {
      title: "Pareto front", x: "number", xLabel: "worker-seconds", height: 220, axes: [{ label: "p95 wait (s)" }],
      lines: [{
        label: "p95 wait", colour: Charts.COLOURS.cost, points: true,
        value: (i) => (i === null ? `${front.length} settings` : `${seconds(front[i].wait_p95)} with ${params(front[i])}`),
      }],
      summary: () => `Pareto front of ${front.length} settings: ` + front.map((p) => `${params(p)} costs ${Charts.number(p.worker_seconds)} worker-seconds at ${seconds(p.wait_p95)} p95 wait`).join("; "),
    }, [front.map((point) => point.worker_seconds), front.map((point) => point.wait_p95)], caption);
    table("sim-pareto-table", ["settings", "worker-seconds", "wait p95"], front.map((point) => [{}, [params(point), Charts.number(point.worker_seconds), seconds(point.wait_p95)]]));
  }

  function show(summary, fileName) {
    $("sim-result").hidden = false;
    renderTrace(summary);
    renderTables(summary);
    renderCharts(summary);
    const answer = $("sim-answer");
    answer.textContent = `${fileName}: ${Object.keys(summary.policies).length} policies` + (summary.pareto && summary.pareto.length ? `, a Pareto front of ${summary.pareto.length} settings.` : ".");
    answer.className = "answer ok";
  }

  async function open(file) {
    const answer = $("sim-answer");
    try {
      let summary;
      try {
        summary = JSON.parse(await file.text());
      } catch (error) {
        throw new SummaryError(`is not JSON: ${error.message}`);
      }
      show(check(summary), file.name);
    } catch (error) {
      if (!(error instanceof SummaryError)) throw error;
      $("sim-result").hidden = true;
      answer.textContent = `${file.name}: not a simulator summary: ${error.message}`;
      answer.className = "answer error";
    }
  }

  // ---- the Live / Simulate switch (#live, #simulate) ------------------------------------
  function route() {
    const simulate = location.hash === "#simulate";
    $("live-view").hidden = simulate;
    $("simulate-view").hidden = !simulate;
    for (const [link, current] of [["live-link", !simulate], ["simulate-link", simulate]]) {
      if (current) $(link).setAttribute("aria-current", "page");
      else $(link).removeAttribute("aria-current");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sim-file").addEventListener("change", (event) => { if (event.target.files.length) open(event.target.files[0]); });
    window.addEventListener("hashchange", route);
    route();
  });
})();

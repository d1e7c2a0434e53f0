// Every chart of the dashboard and of its Simulate view, drawn by uPlot (vendor/, MIT, no CDN).
// One function builds a chart from a small spec: a clock, trace-time or category x axis, one or two
// value axes starting at zero, a legend that shows the values under the cursor (and the latest
// values while the cursor is elsewhere), optional event markers with their reason on hover, and a
// text summary for screen readers. The tick labels each axis last drew are kept on the chart's
// element (data-x-ticks, data-y-ticks, data-y2-ticks) so that what the canvas shows can be read back.
"use strict";

const Charts = (() => {
  const COLOURS = {
    depth: "#2563eb", workers: "#d97706", desired: "#7c3aed", rows: "#059669", cost: "#db2777",
  };
  const PALETTE = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#dc2626"];
  const MARKERS = { up: ["#2563eb", "▲"], down: ["#d97706", "▼"], error: ["#b42318", "✖"], state: ["#5d6b78", "●"] };
  const HOVER_PIXELS = 6;

  function number(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const size = Math.abs(value);
    if (size >= 1e6) return `${+(value / 1e6).toFixed(1)}M`;
    if (size >= 1e4) return `${+(value / 1e3).toFixed(1)}k`;
    if (size >= 100 || Number.isInteger(value)) return String(Math.round(value));
    return String(+value.toFixed(size >= 10 ? 1 : 2));
  }

  // A count or rate for people, in the reader's locale: whole numbers with group separators (4155.57 -> "4,156"),
  // a tenth kept under 10 so a slow rate does not read 0. Charts' axes use the compact `number` instead.
  function count(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return value.toLocaleString(undefined, { maximumFractionDigits: Math.abs(value) < 10 ? 1 : 0 });
  }

  function clock(seconds, withSeconds) {
    const options = { hour: "2-digit", minute: "2-digit", hour12: false };
    if (withSeconds) options.second = "2-digit";
    return new Date(seconds * 1000).toLocaleTimeString([], options);
  }

  // Trace time: seconds from the start of a simulated trace, as h:mm:ss (or m:ss under an hour).
  function elapsed(seconds) {
    const whole = Math.round(seconds);
    const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
    const pad = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  }

  function duration(seconds) {
    if (seconds % 3600 === 0) return `${seconds / 3600} h`;
    if (seconds % 60 === 0) return `${seconds / 60} min`;
    return `${seconds} s`;
  }

  const lastValue = (values) => {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i];
    return null;
  };

  // Time ticks at whole seconds, minutes and hours (uPlot's own jump from 1 to 5 minutes leaves a
  // narrow chart with a single label).
  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

  // The x axis: how its ticks are labelled and how the legend names the point under the cursor.
  // "clock": seconds since the epoch; "elapsed": trace seconds; "number": a plain quantity;
  // "bins": a histogram whose bin i lies between ticks i and i + 1, labelled by spec.edges.
  function xAxisKind(spec) {
    // `rest`: what the legend says for x while the cursor is off the chart (and the values are the last ones).
    if (spec.x === "clock") {
      return { time: true, label: (v) => clock(v, v % 60 !== 0), hover: (v) => clock(v, true), incrs: TIME_STEPS, space: 40, rest: "latest" };
    }
    if (spec.x === "elapsed") return { time: false, label: elapsed, hover: elapsed, incrs: TIME_STEPS, space: 60, rest: "end" };
    if (spec.x === "number") return { time: false, label: number, hover: number, space: 50, rest: "–" };
    const edges = spec.edges;
    return {
      time: false,
      space: 30,
      rest: "all",
      label: (v) => number(edges[Math.round(v)]),
      hover: (v) => `${number(edges[Math.floor(v)])}–${number(edges[Math.floor(v) + 1])} s`,
      splits: () => edges.map((_, i) => i),
      range: () => [0, edges.length - 1],
    };
  }

  function recordTicks(host, key, labels) {
    host.dataset[key] = labels.filter((label) => label !== "").join("|");
  }

  // Ticks of whole things (workers) at whole numbers only.
  const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
  // At least `space` pixels between x ticks, and at most about eight ticks on a wide chart.
  const xSpace = (space) => (u, axisIndex, min, max, width) => Math.max(space, width / 8);

  function axis(host, key, format, side, label, extra = {}) {
    return {
      space: 24,
      ...extra,
      scale: key === "xTicks" ? "x" : key === "yTicks" ? "y" : "y2",
      side,
      label,
      labelSize: label ? 18 : 0,
      size: side === 2 ? 36 : 44,
      stroke: "#5d6b78",
      grid: { stroke: "#eef2f6", show: side !== 1 },
      ticks: { stroke: "#dde3e8" },
      values: (u, splits) => {
        const labels = splits.map((v) => (v === null ? "" : format(v)));
        recordTicks(host, key, labels);
        return labels;
      },
    };
  }

  function seriesOptions(spec, line) {
    const options = {
      label: line.label,
      scale: line.axis === 2 ? "y2" : "y",
      stroke: line.colour,
      width: line.width || 2,
      dash: line.dash,
      spanGaps: line.spanGaps || false,
      points: { show: line.points || false, size: 7, fill: line.colour },
      value: (u, v, sidx, idx) => {
        if (line.value) return line.value(idx);
        return (line.format || number)(idx === null ? lastValue(u.data[sidx]) : v);
      },
    };
    if (line.fill) options.fill = line.fill;
    if (line.stepped) options.paths = uPlot.paths.stepped({ align: 1 });
    if (line.bars) options.paths = uPlot.paths.bars({ size: [0.8, 80] });
    return options;
  }

  // Vertical lines at each event's time, a symbol by direction; the event's reason shows when hovered.
  function drawMarkers(u, host, spec) {
    const events = spec.markers ? spec.markers() : [];
    const { ctx, bbox } = u;
    let drawn = 0;
    ctx.save();
    ctx.font = `${Math.round(11 * devicePixelRatio)}px sans-serif`;
    ctx.textAlign = "center";
    for (const event of events) {
      const x = u.valToPos(event.ts, "x", true);
      if (x < bbox.left || x > bbox.left + bbox.width) continue;
      const [colour, symbol] = MARKERS[event.direction] || MARKERS.state;
      ctx.strokeStyle = colour;
      ctx.fillStyle = colour;
      ctx.setLineDash([3 * devicePixelRatio, 3 * devicePixelRatio]);
      ctx.beginPath();
      ctx.moveTo(x, bbox.top);
      ctx.lineTo(x, bbox.top + bbox.height);
      ctx.stroke();
      ctx.fillText(symbol, x, bbox.top + 10 * devicePixelRatio);
      drawn += 1;
    }
    ctx.restore();
    host.dataset.markers = String(drawn);
  }

  function noteEvents(u, note, spec) {
    const left = u.cursor.left;
    if (!spec.markers || left === null || left < 0) {
      note.textContent = "";
      return;
    }
    const near = spec.markers().filter((event) => Math.abs(u.valToPos(event.ts, "x") - left) <= HOVER_PIXELS);
    note.textContent = near.map((event) => `${(MARKERS[event.direction] || MARKERS.state)[1]} ${clock(event.ts, true)} ${event.job_type}: ${event.reason}`).join(" · ");
  }

  // Starting at zero, with a little room above the highest value (and at least `floor`).
  const fromZero = (floor) => (u, min, max) => uPlot.rangeNum(0, Math.max(max || 0, floor), 0.1, true);

  /**
   * A chart in `host` (an element that stays in the page; the chart follows its width).
   * spec: {title, x: "clock"|"elapsed"|"number"|"bins", xLabel, edges (bins), range(), height,
   *        axes: [{label, whole}, {label, whole}?] (whole: ticks at whole numbers), lines: [{label, colour, axis, stepped, bars, dash, fill, points, spanGaps, format,
   *        value(index) (the legend's text at a data index, or null off the chart, instead of the value)}],
   *        markers(), summary(data)}
   */
  function create(host, spec) {
    host.classList.add("chart");
    host.replaceChildren();
    const kind = xAxisKind(spec);
    const [left, right] = spec.axes;
    const xExtra = { space: xSpace(kind.space), ...(kind.splits ? { splits: kind.splits } : kind.incrs ? { incrs: kind.incrs } : {}) };
    const yExtra = (scale) => (scale.whole ? { incrs: WHOLE_STEPS } : {});
    const axes = [axis(host, "xTicks", kind.label, 2, spec.xLabel, xExtra), axis(host, "yTicks", number, 3, left.label, yExtra(left))];
    if (right) axes.push(axis(host, "y2Ticks", number, 1, right.label, yExtra(right)));
    const scales = {
      x: { time: kind.time, range: spec.range ? () => spec.range() : kind.range },
      y: { range: fromZero(left.floor || 1) },
    };
    if (right) scales.y2 = { range: fromZero(right.floor || 1) };
    const note = document.createElement("p");
    note.className = "chart-note";
    const options = {
      width: Math.max(host.clientWidth, 200),
      height: spec.height || 140,
      scales,
      axes,
      series: [{ label: spec.xLabel || "time", value: (u, v) => (v === null ? kind.rest : kind.hover(v)) }]
        .concat(spec.lines.map((line) => seriesOptions(spec, line))),
      legend: { live: true },
      cursor: { drag: { x: false, y: false }, points: { size: 7 } },
      hooks: {
        draw: [(u) => drawMarkers(u, host, spec)],
        setCursor: [(u) => noteEvents(u, note, spec)],
      },
    };
    const empty = [[], ...spec.lines.map(() => [])];
    const plot = new uPlot(options, empty, host);
    const canvas = plot.root.querySelector("canvas");
    canvas.setAttribute("role", "img");
    host.append(note);
    host.dataset.points = "0";
    const resizing = new ResizeObserver(() => {
      const width = Math.max(host.clientWidth, 200);
      if (width !== plot.width) plot.setSize({ width, height: plot.height });
    });
    resizing.observe(host);

    return {
      plot,
      host,
      update(data) {
        plot.setData(data);
        host.dataset.points = String(data[0].length);
        canvas.setAttribute("aria-label", spec.summary ? spec.summary(data) : spec.title);
      },
      destroy() {
        resizing.disconnect();
        plot.destroy();
      },
    };
  }

  // Running total of a per-bucket series (worker-seconds spent since the window began).
  function cumulative(values) {
    let sum = 0;
    return values.map((v) => (sum += v || 0));
  }

  const extent = (values) => {
    const known = values.filter((v) => v !== null && v !== undefined);
    return known.length ? `${number(Math.min(...known))}–${number(Math.max(...known))}` : "no data";
  };

  return { create, cumulative, extent, number, count, clock, elapsed, duration, COLOURS, PALETTE };
})();

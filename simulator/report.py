"""`report.html`: one self-contained page (inline SVG, no script, no network) from a summary document.

Charts: workers and backlog over time per policy, the wait distribution per
policy, cost per policy; then the per-type table of the costliest types, every
modelling assumption and the trace's attribution. The SVG is drawn here in a
few small functions (axes with values, one polyline or bar per series) rather
than by a charting library, so the page opens anywhere, offline.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

WIDTH, HEIGHT, LEFT, BOTTOM, TOP, RIGHT = 760, 240, 70, 36, 16, 150
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
#: Job types listed in the report's per-type table (the costliest under the first policy).
TABLE_TYPES = 25


def write(document: dict[str, Any], directory: Path) -> Path:
    path = directory / "report.html"
    path.write_text(render(document), encoding="utf-8")
    return path


def render(document: dict[str, Any]) -> str:
    trace = document["trace"]
    policies = document["policies"]
    attribution = html.escape(trace["attribution"] or "the project's own trace format")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Scaling simulation</title>",
        "<style>body{font:14px sans-serif;margin:24px;max-width:1000px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}"
        "td:first-child,th:first-child{text-align:left}.note{color:#555}</style></head><body>",
        "<h1>Scaling simulation</h1>",
        f"<p>Trace <b>{html.escape(trace['format'])}</b> ({html.escape(trace['path'])}): {trace['uploads']:,} "
        f"uploads, {trace['rows']:,} rows, {trace['job_types']} job types, {trace['hours']:g} h from "
        f"{trace['start_seconds']:g} s, speedup {trace['speedup']:g}.</p>",
        f"<p class='note'>Data: {attribution}</p>",
        "<h2>Totals</h2>",
        _totals_table(policies),
        "<h2>Workers over time</h2>",
        _lines({name: (p["timeline"]["t"], p["timeline"]["workers"]) for name, p in policies.items()}, "workers"),
        "<h2>Backlog (rows not yet started) over time</h2>",
        _lines({name: (p["timeline"]["t"], p["timeline"]["backlog"]) for name, p in policies.items()}, "rows"),
        "<h2>Row wait distribution</h2>",
        _histograms(policies),
        "<h2>Cost</h2>",
        _bars({name: p["total"]["worker_seconds"] for name, p in policies.items()}, "worker-seconds"),
        "<h2>Costliest job types</h2>",
        _types_table(policies),
        "<h2>Model assumptions</h2>",
        _assumptions(document["assumptions"]),
    ]
    if document.get("pareto"):
        parts += ["<h2>Pareto front (cost against p95 wait)</h2>", _pareto(document["pareto"])]
    parts.append(
        f"<p class='note'>Figures derived from: {attribution}. Generated {document['generated_at']}, "
        f"commit {html.escape(str(document['commit']))}.</p></body></html>"
    )
    return "\n".join(parts)


def _totals_table(policies: dict[str, Any]) -> str:
    rows = []
    for name, policy in policies.items():
        t = policy["total"]
        w, c = t["wait_seconds"], t["completion_seconds"]
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{t['worker_seconds']:,.0f}</td><td>{t['busy_fraction']:.1%}</td>"
            f"<td>{w['p50']:.2f}</td><td>{w['p95']:.2f}</td><td>{w['p99']:.2f}</td><td>{c['p50']:.2f}</td>"
            f"<td>{c['p95']:.2f}</td><td>{t['peak_workers']}</td><td>{t['starts']:,}</td>"
            f"<td>{t['unfinished_rows']:,}</td></tr>"
        )
    return (
        "<table><tr><th>policy</th><th>worker-seconds</th><th>busy</th><th>wait p50 s</th><th>wait p95 s</th>"
        "<th>wait p99 s</th><th>completion p50 s</th><th>completion p95 s</th><th>peak workers</th>"
        "<th>cold starts</th><th>unfinished rows</th></tr>" + "".join(rows) + "</table>"
    )


def _types_table(policies: dict[str, Any]) -> str:
    names = list(policies)
    first = policies[names[0]]["job_types"]
    costly = sorted(first, key=lambda t: -first[t]["worker_seconds"])[:TABLE_TYPES]
    head = "".join(f"<th>{html.escape(n)} worker-s</th><th>{html.escape(n)} wait p95 s</th>" for n in names)
    rows = []
    for job_type in costly:
        cells = "".join(
            f"<td>{policies[n]['job_types'][job_type]['worker_seconds']:,.0f}</td>"
            f"<td>{policies[n]['job_types'][job_type]['wait_seconds']['p95']:.2f}</td>"
            for n in names
        )
        rows.append(f"<tr><td>{html.escape(job_type)}</td>{cells}</tr>")
    return f"<table><tr><th>job type</th>{head}</tr>{''.join(rows)}</table>"


def _assumptions(assumptions: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td style='text-align:left'>{html.escape(str(v))}</td></tr>"
        for k, v in assumptions.items()
    )
    return f"<table>{rows}</table>"


def _pareto(points: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(', '.join(f'{k}={v}' for k, v in p['params'].items()))}</td>"
        f"<td>{p['worker_seconds']:,.0f}</td><td>{p['wait_p95']:.2f}</td></tr>"
        for p in points
    )
    return f"<table><tr><th>settings</th><th>worker-seconds</th><th>wait p95 s</th></tr>{rows}</table>"


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    span = high - low if high > low else 1.0
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 2) if first + i * step <= high + 1e-9]


def _label(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _frame(x_max: float, y_max: float, x_title: str, y_title: str, x_values: bool = True) -> tuple[list[str], Any, Any]:
    """The SVG's axes with value labels; returns its parts and the x and y scales."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(value: float) -> float:
        return LEFT + plot_w * value / (x_max or 1)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / (y_max or 1))

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' font-size='11'>"]
    for value in _ticks(0, y_max):
        out.append(f"<line x1='{LEFT}' x2='{LEFT + plot_w}' y1='{y(value):.1f}' y2='{y(value):.1f}' stroke='#eee'/>")
        out.append(f"<text x='{LEFT - 6}' y='{y(value) + 4:.1f}' text-anchor='end'>{_label(value)}</text>")
    for value in _ticks(0, x_max) if x_values else []:
        out.append(f"<text x='{x(value):.1f}' y='{TOP + plot_h + 14}' text-anchor='middle'>{_label(value)}</text>")
    out.append(
        f"<line x1='{LEFT}' y1='{TOP + plot_h}' x2='{LEFT + plot_w}' y2='{TOP + plot_h}' stroke='#333'/>"
        f"<line x1='{LEFT}' y1='{TOP}' x2='{LEFT}' y2='{TOP + plot_h}' stroke='#333'/>"
        f"<text x='{LEFT + plot_w / 2}' y='{HEIGHT - 4}' text-anchor='middle'>{html.escape(x_title)}</text>"
        f"<text x='14' y='{TOP + plot_h / 2}' transform='rotate(-90 14 {TOP + plot_h / 2})' "
        f"text-anchor='middle'>{html.escape(y_title)}</text>"
    )
    return out, x, y


def _legend(out: list[str], names: list[str]) -> None:
    for i, name in enumerate(names):
        colour = COLOURS[i % len(COLOURS)]
        y = TOP + 14 * i + 6
        out.append(
            f"<rect x='{WIDTH - RIGHT + 10}' y='{y - 8}' width='10' height='10' fill='{colour}'/>"
            f"<text x='{WIDTH - RIGHT + 24}' y='{y + 1}'>{html.escape(name)}</text>"
        )


def _lines(series: dict[str, tuple[list[float], list[float]]], y_title: str) -> str:
    x_max = max((max(t, default=0) for t, _ in series.values()), default=1) or 1
    y_max = max((max(v, default=0) for _, v in series.values()), default=1) or 1
    out, x, y = _frame(x_max, y_max * 1.05, "trace time (s)", y_title)
    for i, (name, (t, v)) in enumerate(series.items()):
        points = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(t, v, strict=True))
        out.append(
            f"<polyline fill='none' stroke='{COLOURS[i % len(COLOURS)]}' stroke-width='1.3' points='{points}'>"
            f"<title>{html.escape(name)}</title></polyline>"
        )
    _legend(out, list(series))
    out.append("</svg>")
    return "".join(out)


def _bars(values: dict[str, float], y_title: str) -> str:
    names = list(values)
    y_max = max(values.values(), default=1) or 1
    out, _, y = _frame(len(names), y_max * 1.1, "policy", y_title, x_values=False)
    plot_w = WIDTH - LEFT - RIGHT
    width = plot_w / max(len(names), 1)
    for i, name in enumerate(names):
        top = y(values[name])
        out.append(
            f"<rect x='{LEFT + i * width + width * 0.2:.1f}' y='{top:.1f}' width='{width * 0.6:.1f}' "
            f"height='{HEIGHT - BOTTOM - top:.1f}' fill='{COLOURS[i % len(COLOURS)]}'>"
            f"<title>{html.escape(name)}: {values[name]:,.0f}</title></rect>"
            f"<text x='{LEFT + (i + 0.5) * width:.1f}' y='{top - 4:.1f}' text-anchor='middle'>"
            f"{_label(round(values[name]))}</text>"
        )
    _legend(out, names)
    out.append("</svg>")
    return "".join(out)


def _histograms(policies: dict[str, Any]) -> str:
    names = list(policies)
    edges = policies[names[0]]["wait_histogram"]["edges"]
    bins = len(edges) - 1
    shares = {}
    for name in names:
        counts = policies[name]["wait_histogram"]["counts"]
        total = sum(counts) or 1
        shares[name] = [100 * c / total for c in counts]
    out, _, y = _frame(bins, 105, "row wait (s)", "% of rows", x_values=False)
    plot_w = WIDTH - LEFT - RIGHT
    group = plot_w / bins
    width = group * 0.8 / len(names)
    for b in range(bins):
        label = f"{_label(edges[b])}-{_label(edges[b + 1])}" if b < bins - 1 else f">{_label(edges[b])}"
        out.append(
            f"<text x='{LEFT + (b + 0.5) * group:.1f}' y='{HEIGHT - BOTTOM + 14}' text-anchor='middle'>{label}</text>"
        )
        for i, name in enumerate(names):
            top = y(shares[name][b])
            out.append(
                f"<rect x='{LEFT + b * group + group * 0.1 + i * width:.1f}' y='{top:.1f}' width='{width:.1f}' "
                f"height='{HEIGHT - BOTTOM - top:.1f}' fill='{COLOURS[i % len(COLOURS)]}'>"
                f"<title>{html.escape(name)}: {shares[name][b]:.1f} %</title></rect>"
            )
    _legend(out, names)
    out.append("</svg>")
    return "".join(out)

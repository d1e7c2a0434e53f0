"""`python -m simulator.readme DIR... [--write README.md]`: the README's results table, from summary.json files.

Each DIR holds one run's summary.json (`./manage.sh simulate ... --out DIR`);
the table lists every policy of every run with its cost, waits and cold
starts, states the backend and the trace's attribution under each, and says
for every run whether the recommended settings (`project-tuned`) are cheaper
than the KEDA model at an equal or lower p95 wait. With `--write`, the block
between a README's `simulation-results` markers is replaced. The project's own
README block is made from the runs committed under bench/results by
`./manage.sh readme` (bench/readme.py, with `results_block`), so it never holds
a figure a command did not produce.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- simulation-results -->", "<!-- /simulation-results -->"


def markdown(summaries: list[dict[str, Any]]) -> str:
    lines = [
        "| trace (window) | policy | worker-seconds | row wait p50 / p95 / p99 (s) | upload done p95 (s) | "
        "peak workers | cold starts | unfinished rows |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    notes = []
    for summary in summaries:
        trace = summary["trace"]
        label = (
            f"{trace['format']} ({trace['hours']:.3g} h from {trace['start_seconds']:,.0f} s, "
            f"{trace['job_types']} types)"
        )
        for name, policy in summary["policies"].items():
            t = policy["total"]
            w = t["wait_seconds"]
            lines.append(
                f"| {label} | {name} | {t['worker_seconds']:,.0f} | {w['p50']:,.1f} / {w['p95']:,.1f} / "
                f"{w['p99']:,.1f} | {t['completion_seconds']['p95']:,.1f} | {t['peak_workers']:,} | "
                f"{t['starts']:,} | {t.get('unfinished_rows', 0):,} |"
            )
        notes.append(
            f"- {trace['format']}: {verdict(summary)} Backend model: {summary['assumptions']['backend']} "
            f"(worker start {summary['assumptions']['worker_start_seconds']:g} s). Data: {trace['attribution']}"
        )
    return "\n".join(lines + [""] + notes)


def verdict(summary: dict[str, Any]) -> str:
    """Whether the tuned project policy beats the KEDA model on cost at an equal or lower p95 wait."""
    policies = summary["policies"]
    tuned, keda = policies.get("project-tuned"), policies.get("keda")
    if tuned is None or keda is None:
        return "no tuned run or no KEDA run to compare."
    keda_cost = keda["total"]["worker_seconds"]
    cost = tuned["total"]["worker_seconds"] / keda_cost
    tuned_p95, keda_p95 = tuned["total"]["wait_seconds"]["p95"], keda["total"]["wait_seconds"]["p95"]
    if cost < 1 and tuned_p95 <= keda_p95:
        text = (
            f"tuned policy costs {cost:.2f}x the KEDA model at p95 wait {tuned_p95:,.1f} s against {keda_p95:,.1f} s."
        )
    else:
        text = (
            f"NOT better than the KEDA model: tuned policy costs {cost:.2f}x at p95 wait {tuned_p95:,.1f} s "
            f"against {keda_p95:,.1f} s."
        )
    matching = [p for p in summary.get("pareto") or [] if p["wait_p95"] <= keda_p95]
    if matching:
        best = min(matching, key=lambda p: p["worker_seconds"])
        text += (
            f" At KEDA's p95 or better, the cheapest setting tried ({_params(best['params'])}, every type) costs "
            f"{best['worker_seconds'] / keda_cost:.2f}x the KEDA model (p95 {best['wait_p95']:,.1f} s)."
        )
    return text


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in params.items())


def replay_markdown(path: Path) -> str:
    """The real-against-simulated table a replay test or command wrote (bench/results/replay.json)."""
    data = json.loads(path.read_text())
    real, simulated = data["real"], data["simulated"]
    rows = [("worker-seconds", real["worker_seconds"], simulated["worker_seconds"])]
    rows += [
        (f"row wait {q} (s)", real["wait_seconds"][q], simulated["wait_seconds"][q]) for q in ("p50", "p95", "p99")
    ]
    rows.append(("upload done p95 (s)", real["completion_seconds"]["p95"], simulated["completion_seconds"]["p95"]))
    lines = [
        "",
        f"Real stack against the simulator, {data['trace']} (settings {json.dumps(data['settings'])}; worker start "
        f"{real['worker_start_seconds']} s and per-row overhead {real['row_overhead_seconds']} s measured in the "
        "same run):",
        "",
        "| figure | real | simulated | difference |",
        "| --- | --- | --- | --- |",
    ]
    for name, a, b in rows:
        lines.append(f"| {name} | {a:,.2f} | {b:,.2f} | {(b / a - 1) if a else 0:+.0%} |")
    lines.append(f"\nData: {data['attribution']}")
    return "\n".join(lines)


def bench_markdown(path: Path) -> str:
    """One line per policy of `./manage.sh bench simulate` (bench/results/simulate.json)."""
    data = json.loads(path.read_text())
    lines = [
        f"\n`./manage.sh bench simulate`, the full trace ({data['rows']:,} rows, {data['uploads']:,} uploads, "
        f"{data['job_types']} types) on this {data['cpus']}-core machine:"
    ]
    for name, run in data["policies"].items():
        lines.append(
            f"- {name}: {run['cpu_seconds']:g} s CPU ({'within' if run['cpu_seconds'] <= data['bound_seconds'] else 'ABOVE'}"
            f" the {data['bound_seconds']:g} s bound), {run['wall_seconds']:g} s wall at load average "
            f"{run['load_average_1m']:g}, {run['events']:,} events"
        )
    lines.append(f"\nData: {data['attribution']}")
    return "\n".join(lines)


def results_block(runs: list[Path], replay: Path | None = None, bench: Path | None = None) -> str:
    """The README's block: the table of the runs' summary.json, then the replay comparison and the timing."""
    block = markdown([json.loads((run / "summary.json").read_text()) for run in runs])
    if replay is not None:
        block += "\n" + replay_markdown(replay)
    if bench is not None:
        block += "\n" + bench_markdown(bench)
    return block


def replace_block(text: str, block: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"the README has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.readme", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="result directories (each with a summary.json)")
    parser.add_argument("--replay", help="also the comparison a replay wrote (bench/results/replay.json)")
    parser.add_argument(
        "--bench", help="also the timing `./manage.sh bench simulate` wrote (bench/results/simulate.json)"
    )
    parser.add_argument("--write", help="replace the results block of this README")
    args = parser.parse_args(argv)
    try:
        block = results_block(
            [Path(run) for run in args.runs],
            Path(args.replay) if args.replay else None,
            Path(args.bench) if args.bench else None,
        )
    except (OSError, ValueError, KeyError) as error:
        print(f"simulator.readme: {error}", file=sys.stderr)
        return 2
    if args.write:
        path = Path(args.write)
        try:
            path.write_text(replace_block(path.read_text(), block))
        except ValueError as error:
            print(f"simulator.readme: {path}: {error}", file=sys.stderr)
            return 2
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())

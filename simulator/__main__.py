"""`python -m simulator TRACE... [options]` (what `./manage.sh simulate` runs): replay, compare, tune, report.

Writes DIR/summary.json and DIR/report.html, prints the totals table; with
`--sweep` also the Pareto front, with `--target-p95-wait` the recommended
jobs.config.json fragment (and DIR/recommended.config.json). Exit status 2 on
bad input, with a message saying what and where.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from common.config import ConfigError
from scaler.budget import Budget
from scaler.settings import SettingsError, resource_budgets
from simulator import config as sim_config
from simulator import report, results, tuning
from simulator.engine import Assumptions, Outcome, parse_fixed, run_policy
from simulator.traces import Format, Trace, TraceError, load

DEFAULT_POLICIES = "project,keda,fixed:1"
#: Name of the replay of the settings `--target-p95-wait` recommends.
TUNED = "project-tuned"


class Progress:
    """A progress bar on stderr for runs longer than a second (a line per 10 % when stderr is no terminal)."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        self.label = label
        self.quiet = quiet
        self.started = time.monotonic()
        self.shown = -1
        self.tty = sys.stderr.isatty()

    def __call__(self, fraction: float) -> None:
        elapsed = time.monotonic() - self.started
        if self.quiet or elapsed < 1.0:
            return
        step = int(fraction * (50 if self.tty else 10))
        if step == self.shown:
            return
        self.shown = step
        if self.tty:
            bar = "#" * int(fraction * 30)
            sys.stderr.write(f"\r{self.label:<24} [{bar:<30}] {fraction:4.0%} {elapsed:5.1f} s")
            if fraction >= 1:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(f"{self.label}: {fraction:.0%} after {elapsed:.1f} s\n")
        sys.stderr.flush()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="./manage.sh simulate", description=__doc__.splitlines()[0])
    p.add_argument("trace", nargs="+", help="trace file(s) of one format (several are merged)")
    p.add_argument("--format", choices=[f.value for f in Format], help="default: detected from the header")
    p.add_argument("--config", help="jobs.config.json (or part of it; a '*' entry applies to every type)")
    p.add_argument("--speedup", type=float, default=1.0, help="divide arrival and handler times by K")
    p.add_argument("--start", type=float, default=0.0, help="seconds into the trace where the window starts")
    p.add_argument("--hours", type=float, help="window length in hours of trace time (default: all)")
    p.add_argument("--backend", choices=["local", "kubernetes"], default="local")
    p.add_argument("--policies", default=DEFAULT_POLICIES, help=f"comma-separated (default {DEFAULT_POLICIES})")
    p.add_argument("--out", help="result directory (default sim-results/<trace name>)")
    p.add_argument("--sweep", nargs="+", default=[], metavar="NAME=V1,V2", help="grid of settings to evaluate")
    p.add_argument("--target-p95-wait", type=float, help="recommend the cheapest settings meeting this p95 wait (s)")
    p.add_argument("--worker-start-seconds", type=float, help="request to consuming (default per backend)")
    p.add_argument("--worker-stop-seconds", type=float, help="stop request to exit (default per backend)")
    p.add_argument("--tick-seconds", type=float, help="the scaler's tick interval (default 1)")
    p.add_argument("--no-wake-ups", action="store_true", help="scale on the tick interval only")
    p.add_argument("--max-total-workers", type=int, help="a shared worker budget (SCALER_MAX_TOTAL_WORKERS)")
    p.add_argument("--resource-budgets", help='shared resource budgets, as SCALER_RESOURCE_BUDGETS: {"cpu": "8"}')
    p.add_argument("--drain-limit-seconds", type=float, help="how long after the window rows may still finish")
    p.add_argument("--keda-polling-seconds", type=float, help="KEDA pollingInterval (default 30)")
    p.add_argument("--keda-target", type=int, help="KEDA RabbitMQ target queue length per Job (default 20)")
    p.add_argument("--keda-max-replicas", type=int, help="KEDA maxReplicaCount (default 100)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def assumptions_from(args: argparse.Namespace) -> Assumptions:
    resources = resource_budgets(args.resource_budgets or "")
    limited = args.max_total_workers is not None or resources
    budget = Budget(max_workers=args.max_total_workers, resources=resources) if limited else None
    return Assumptions.for_backend(
        args.backend,
        worker_start_seconds=args.worker_start_seconds,
        worker_stop_seconds=args.worker_stop_seconds,
        tick_seconds=args.tick_seconds,
        wake_ups=False if args.no_wake_ups else None,
        budget=budget,
        drain_limit_seconds=args.drain_limit_seconds,
        keda_polling_seconds=args.keda_polling_seconds,
        keda_target_queue_length=args.keda_target,
        keda_max_replicas=args.keda_max_replicas,
    )


def policies_from(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name.startswith("fixed:"):
            parse_fixed(name)
        elif name not in ("project", "keda"):
            raise ValueError(f"--policies: unknown policy {name!r}; use project, keda or fixed:N")
    if not names:
        raise ValueError("--policies: give at least one of project, keda, fixed:N")
    return names


def replay(trace: Trace, config: dict, assumptions: Assumptions, policy: str, quiet: bool) -> Outcome:
    return run_policy(policy, trace, config, assumptions, Progress(policy, quiet))


def sweep(
    args: argparse.Namespace, trace: Trace, assumptions: Assumptions, grid: dict[str, list[Any]]
) -> list[tuning.Point]:
    points = []
    combos = tuning.combinations(grid)
    for number, params in enumerate(combos, start=1):
        config = sim_config.job_types(trace.job_types, args.config, params)
        label = f"sweep {number}/{len(combos)}"
        outcome = run_policy("project", trace, config, assumptions, Progress(label, args.quiet))
        document = results.policy_document(outcome)
        total = document["total"]
        points.append(
            tuning.Point(params, total["worker_seconds"], total["wait_seconds"]["p95"], document["job_types"])
        )
        print(
            f"{label}: {params} -> {total['worker_seconds']:,.0f} worker-s, p95 wait {total['wait_seconds']['p95']:.2f} s"
        )
    return points


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        trace = load(args.trace, args.format, args.start, args.hours, args.speedup)
        if not trace.uploads:
            raise TraceError(
                f"{', '.join(trace.paths)}: no upload in the window (--start {args.start}, --hours {args.hours})"
            )
        assumptions = assumptions_from(args)
        policies = policies_from(args.policies)
        config = sim_config.job_types(trace.job_types, args.config)
        grid = tuning.parse_sweep(args.sweep) if args.sweep else {}
    except (TraceError, ConfigError, SettingsError, ValueError) as error:
        print(f"simulate: {error}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("sim-results") / Path(trace.paths[0]).stem)
    outcomes = [replay(trace, config, assumptions, policy, args.quiet) for policy in policies]
    pareto_document = None
    if grid or args.target_p95_wait is not None:
        try:
            points = sweep(args, trace, assumptions, grid or tuning.DEFAULT_GRID)
        except ConfigError as error:
            print(f"simulate: {error}", file=sys.stderr)
            return 2
        front = tuning.pareto(points)
        pareto_document = [point.document() for point in front]
        print("\nPareto front (cost against p95 row wait), cheapest first:")
        for point in front:
            print(f"  {point.worker_seconds:>14,.0f} worker-s  p95 {point.wait_p95:>9.2f} s  {point.params}")
        if args.target_p95_wait is not None:
            outcomes.append(recommend(args, trace, config, assumptions, points, out))
    document = results.summary(trace, config, assumptions, outcomes, pareto_document)
    results.write(document, out)
    report.write(document, out)
    print()
    print(results.table(document))
    print(f"\nwrote {out / 'summary.json'} and {out / 'report.html'}")
    return 0


def recommend(
    args: argparse.Namespace,
    trace: Trace,
    config: dict,
    assumptions: Assumptions,
    points: list[tuning.Point],
    out: Path,
) -> Outcome:
    """Print and write the per-type recommendation for --target-p95-wait, and replay it."""
    chosen, missed = tuning.recommend(points, args.target_p95_wait)
    fragment = tuning.fragment(chosen, config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recommended.config.json").write_text(json.dumps(fragment, indent=1) + "\n", encoding="utf-8")
    print(
        f"\ncheapest settings per job type with p95 row wait <= {args.target_p95_wait:g} s (jobs.config.json fragment):"
    )
    print(tuning.fragment_text(fragment))
    if missed:
        print(
            f"{len(missed)} type(s) miss the target at every setting tried (given their lowest p95): {', '.join(missed[:10])}"
        )
    tuned = {name: type(job).model_validate({**job.model_dump(), **chosen[name]}) for name, job in config.items()}
    outcome = run_policy("project", trace, tuned, assumptions, Progress(TUNED, args.quiet))
    outcome.policy = TUNED
    return outcome


if __name__ == "__main__":
    sys.exit(main())

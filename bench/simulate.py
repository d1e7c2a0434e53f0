"""Simulator benchmark: the full Azure Functions day (400 types, 18.45 M rows, 1,440 minutes) in <= 60 s.

    ./manage.sh bench simulate        (or .venv/bin/python bench/simulate.py [--trace FILE] [--policies ...])

Replays the whole day through the project's policy at its defaults (and, for
comparison, the KEDA model) and writes bench/results/simulate.json: wall and
CPU seconds per policy, events handled, uploads and rows, and the machine's
load average while it ran (the 2-core machine is shared: CPU seconds are what
the simulator itself needs, wall seconds what it got). Exit status 1 when the
project policy's CPU time is above the 60 s bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.config import job_types  # noqa: E402
from simulator.engine import Assumptions, run_policy  # noqa: E402
from simulator.results import policy_document  # noqa: E402
from simulator.traces import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "azure-functions-2019-d01-400fn.csv"
BOUND_SECONDS = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default=os.environ.get("SIM_BENCH_TRACE", str(DEFAULT_TRACE)))
    parser.add_argument("--policies", default="project,keda")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "simulate.json"))
    args = parser.parse_args()
    if not Path(args.trace).is_file():
        print(f"bench simulate: no trace at {args.trace} (give --trace)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    trace = load([args.trace])
    config = job_types(trace.job_types)
    load_seconds = time.perf_counter() - started
    result = {
        "trace": args.trace,
        "attribution": trace.attribution,
        "uploads": len(trace.uploads),
        "rows": trace.rows,
        "job_types": len(trace.job_types),
        "load_seconds": round(load_seconds, 2),
        "cpus": os.cpu_count(),
        "bound_seconds": BOUND_SECONDS,
        "policies": {},
    }
    for policy in args.policies.split(","):
        wall, cpu = time.perf_counter(), time.process_time()
        outcome = run_policy(policy, trace, config, Assumptions())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        total = policy_document(outcome)["total"]
        result["policies"][policy] = {
            "wall_seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 2),
            "events": outcome.events,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "worker_seconds": total["worker_seconds"],
            "wait_p95": total["wait_seconds"]["p95"],
        }
        print(
            f"{policy}: {wall:.1f} s wall, {cpu:.1f} s CPU, {outcome.events:,} events, "
            f"load average {os.getloadavg()[0]:.1f} ({trace.rows:,} rows, {len(trace.uploads):,} uploads)"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    project = result["policies"].get("project")
    if project is not None and project["cpu_seconds"] > BOUND_SECONDS:
        print(f"the project policy needed {project['cpu_seconds']} s CPU, above the {BOUND_SECONDS:g} s bound")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Worker throughput benchmark: the runtime with a no-op handler against a plain pika consumer.

    ./manage.sh bench worker            (or .venv/bin/python bench/worker.py)

Contenders, each a whole process consuming the same persistent rows
(message id `<upload>:<row>`, an upload id header, as the producer sends
them) from its own queue with the same prefetch:

* baseline: `bench/support/plain_consumer.py`, basic_consume and one ack per message;
* runtime: `python -m workers` with the `tests.handlers.noop` handler and its
  full machinery (executor thread, hooks, heartbeats, stop and cancel
  listeners), outcome reports off (WORKER_REPORT_OUTCOMES=0);
* tracked: the same with outcome reports on (the default);
* runtime-1ms / tracked-1ms: the same two with the `sleep` handler at
  SLEEP_MS=1, a handler that does a millisecond of work per row;
* runtime-wide: the runtime, reports off, with its prefetch raised to the
  tracked worker's channel prefetch, to show what tracking costs apart from
  the window.

A report must be confirmed before its rows are acked, so rows already handled
stay unacked for a confirm round trip. The tracked worker's channel keeps room
for them beyond the type's prefetch (twice its read-ahead,
`WORKER_SETTLE_ALLOWANCE`): with a no-op handler a round trip would otherwise
empty a 20-row window at every group.

Each is timed from outside the same way (bench/support/drain.py), in alternating
order for several rounds; the best round of each counts, and the median of the
rounds' ratios is printed beside it. The ratios are
printed last, runtime / baseline last of all (aim >= 0.9); tracked / untracked aims at >= 0.95.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.drain import fill, round_rates, timed_drain, write_job_config  # noqa: E402
from jobtypes.config import JobType  # noqa: E402
from jobtypes.outcomes import OUTCOMES_QUEUE, OutcomeReport  # noqa: E402
from tests.support.broker import Broker, create_vhost, delete_vhost  # noqa: E402
from tests.support.processes import Service  # noqa: E402
from workers.settings import DEFAULT_SETTLE_ALLOWANCE  # noqa: E402

BODY = b'{"Date":"2024-01-01","Item Description":"Tea","Quantity":"1","Amount":"2.50"}'


def tracked_channel_prefetch(prefetch: int) -> int:
    """The channel prefetch of a worker with reports on, for a type with `prefetch` (workers/runtime.py)."""
    return prefetch + DEFAULT_SETTLE_ALLOWANCE * JobType(name="bench", queue="bench", prefetch=prefetch).read_ahead


def run_once(broker: Broker, directory: Path, contender: str, count: int, prefetch: int) -> float:
    if contender == "runtime-wide":
        prefetch = tracked_channel_prefetch(prefetch)
    job_type = JobType(name="bench", queue=f"bench_{contender}", prefetch=prefetch)
    fill(broker, job_type, [BODY] * count, uuid.uuid4().hex[:12])
    log = directory / f"{contender}.log"
    if contender == "baseline":
        return timed_drain(
            broker,
            job_type.queue,
            lambda: Service("bench.support.plain_consumer", [job_type.queue, str(prefetch)], broker.env(), log),
        )
    handler = "sleep" if contender.endswith("-1ms") else "tests.handlers.noop"
    config = write_job_config(directory, "bench", {"queue": job_type.queue, "handler": handler, "prefetch": prefetch})
    tracked = contender.startswith("tracked")
    env = {**broker.env(), "JOBS_CONFIG": str(config), "WORKER_REPORT_OUTCOMES": str(int(tracked)), "SLEEP_MS": "1"}
    seconds = timed_drain(broker, job_type.queue, lambda: Service("workers", ["bench"], env, log))
    reported = sum(len(OutcomeReport.from_json(body).rows) for _, body in broker.drain(OUTCOMES_QUEUE))
    if reported != (count if tracked else 0):
        raise RuntimeError(f"{contender}: {reported} rows reported for {count} rows")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--prefetch", type=int, default=20)
    parser.add_argument("--working-messages", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    broker = create_vhost()
    directory = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    contenders = {
        name: (lambda name=name: run_once(broker, directory, name, args.messages, args.prefetch))
        for name in ("baseline", "runtime", "tracked", "runtime-wide")
    }
    working = {
        name: (lambda name=name: run_once(broker, directory, name, args.working_messages, args.prefetch))
        for name in ("runtime-1ms", "tracked-1ms")
    }
    try:
        rounds = round_rates(contenders, args.rounds, args.messages, "msg/s")
        rounds |= round_rates(working, args.rounds, args.working_messages, "msg/s")
    finally:
        delete_vhost(broker)
    rate = {name: max(rates) for name, rates in rounds.items()}

    def ratio(subject: str, baseline: str) -> str:
        """Best against best, and the median of the rounds' ratios (one lucky round moves the best)."""
        per_round = statistics.median(a / b for a, b in zip(rounds[subject], rounds[baseline], strict=True))
        return f"{rate[subject] / rate[baseline]:.2f} (median of rounds {per_round:.2f})"

    print()
    print(f"worker benchmark (prefetch {args.prefetch}, best of {args.rounds}, whole processes, same run)")
    print(f"  {args.messages:,} messages, no-op handler:")
    print(f"    baseline (plain pika consumer, ack per message): {rate['baseline']:9,.0f} msg/s")
    print(f"    runtime, outcome reports off:                    {rate['runtime']:9,.0f} msg/s")
    print(f"    runtime, outcome reports on (default):           {rate['tracked']:9,.0f} msg/s")
    wide = tracked_channel_prefetch(args.prefetch)
    print(f"    runtime, outcome reports off, prefetch {wide:<3}:     {rate['runtime-wide']:9,.0f} msg/s")
    print(f"  {args.working_messages:,} messages, 1 ms handler (sleep, SLEEP_MS=1):")
    print(f"    runtime, outcome reports off:                    {rate['runtime-1ms']:9,.0f} msg/s")
    print(f"    runtime, outcome reports on (default):           {rate['tracked-1ms']:9,.0f} msg/s")
    print(f"  tracked / untracked at channel prefetch {wide}, no-op: {ratio('tracked', 'runtime-wide')}")
    print(f"  tracked / baseline, no-op handler:  {ratio('tracked', 'baseline')}")
    print(f"  tracked / untracked, 1 ms handler:  {ratio('tracked-1ms', 'runtime-1ms')}  (aim >= 0.95)")
    print(f"  tracked / untracked, no-op handler: {ratio('tracked', 'runtime')}  (aim >= 0.95)")
    print(f"  runtime / baseline, no-op handler:  {ratio('runtime', 'baseline')}  (aim >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

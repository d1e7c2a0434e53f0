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
  SLEEP_MS=1, a handler that does a millisecond of work per row.

A report must be confirmed before its rows are acked, so with a no-op handler
every row is held one confirm round trip longer and the prefetch window
bounds tracked throughput at about prefetch / (confirm latency + delivery
round trip): tracking costs what that round trip is worth against a window
of no-op rows (little at prefetch 200, much at 20). The runtime keeps the
round trip short (a version 2 outcomes queue, reports under the broker's
4096-byte embedding size, a short GIL switch interval); with a handler that
does any work it is hidden behind the next rows.

Each is timed from outside the same way (bench/support/drain.py), in alternating
order for several rounds; the best round of each counts. The ratios are
printed last, runtime / baseline last of all (aim >= 0.9).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.drain import best_rates, fill, timed_drain, write_job_config  # noqa: E402
from jobtypes.config import JobType  # noqa: E402
from jobtypes.outcomes import OUTCOMES_QUEUE, OutcomeReport  # noqa: E402
from tests.support.broker import Broker, create_vhost, delete_vhost  # noqa: E402
from tests.support.processes import Service  # noqa: E402

BODY = b'{"Date":"2024-01-01","Item Description":"Tea","Quantity":"1","Amount":"2.50"}'


def run_once(broker: Broker, directory: Path, contender: str, count: int, prefetch: int) -> float:
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
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=20)
    parser.add_argument("--working-messages", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    broker = create_vhost()
    directory = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    contenders = {
        name: (lambda name=name: run_once(broker, directory, name, args.messages, args.prefetch))
        for name in ("baseline", "runtime", "tracked")
    }
    working = {
        name: (lambda name=name: run_once(broker, directory, name, args.working_messages, args.prefetch))
        for name in ("runtime-1ms", "tracked-1ms")
    }
    try:
        rate = best_rates(contenders, args.rounds, args.messages, "msg/s")
        rate |= best_rates(working, args.rounds, args.working_messages, "msg/s")
    finally:
        delete_vhost(broker)
    print()
    print(f"worker benchmark (prefetch {args.prefetch}, best of {args.rounds}, whole processes, same run)")
    print(f"  {args.messages:,} messages, no-op handler:")
    print(f"    baseline (plain pika consumer, ack per message): {rate['baseline']:9,.0f} msg/s")
    print(f"    runtime, outcome reports off:                    {rate['runtime']:9,.0f} msg/s")
    print(f"    runtime, outcome reports on (default):           {rate['tracked']:9,.0f} msg/s")
    print(f"  {args.working_messages:,} messages, 1 ms handler (sleep, SLEEP_MS=1):")
    print(f"    runtime, outcome reports off:                    {rate['runtime-1ms']:9,.0f} msg/s")
    print(f"    runtime, outcome reports on (default):           {rate['tracked-1ms']:9,.0f} msg/s")
    print(f"  tracked / untracked, no-op handler: {rate['tracked'] / rate['runtime']:.2f}")
    print(f"  tracked / untracked, 1 ms handler:  {rate['tracked-1ms'] / rate['runtime-1ms']:.2f}  (aim >= 0.95)")
    print(f"  tracked / baseline, no-op handler:  {rate['tracked'] / rate['baseline']:.2f}")
    print(f"  runtime / baseline, no-op handler:  {rate['runtime'] / rate['baseline']:.2f}  (aim >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

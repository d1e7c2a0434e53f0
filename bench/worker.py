"""Worker throughput benchmark: the runtime with a no-op handler against a plain pika consumer.

    ./manage.sh bench worker            (or .venv/bin/python bench/worker.py)

Three contenders, each a whole process consuming the same persistent rows
(message id `<upload>:<row>`, an upload id header, as the producer sends
them) from its own queue with the same prefetch:

* baseline: `bench/plain_consumer.py`, basic_consume and one ack per message;
* runtime: `python -m workers` with the `tests.handlers.noop` handler and its
  full machinery (executor thread, hooks, heartbeats, stop and cancel
  listeners), outcome reports off (WORKER_REPORT_OUTCOMES=0);
* tracked: the same with outcome reports on (the default).

Each is timed from outside the same way (bench/drain.py), in alternating
order for several rounds; the best round of each counts. The ratios are
printed last: runtime / baseline (aim >= 0.9) and tracked / runtime (aim >= 0.95).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.drain import fill, timed_drain, write_job_config  # noqa: E402
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
            lambda: Service("bench.plain_consumer", [job_type.queue, str(prefetch)], broker.env(), log),
        )
    config = write_job_config(
        directory, "bench", {"queue": job_type.queue, "handler": "tests.handlers.noop", "prefetch": prefetch}
    )
    env = {**broker.env(), "JOBS_CONFIG": str(config), "WORKER_REPORT_OUTCOMES": "1" if contender == "tracked" else "0"}
    seconds = timed_drain(broker, job_type.queue, lambda: Service("workers", ["bench"], env, log))
    if contender == "tracked":
        reported = sum(len(OutcomeReport.from_json(body).rows) for _, body in broker.drain(OUTCOMES_QUEUE))
        if reported != count:
            raise RuntimeError(f"{reported} rows reported, expected {count}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    broker = create_vhost()
    directory = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    contenders = ["baseline", "runtime", "tracked"]
    best = dict.fromkeys(contenders, float("inf"))
    try:
        for round_number in range(args.rounds):
            order = contenders if round_number % 2 == 0 else contenders[::-1]
            for contender in order:
                seconds = run_once(broker, directory, contender, args.messages, args.prefetch)
                print(f"  round {round_number + 1} {contender:8}: {args.messages / seconds:9,.0f} msg/s", flush=True)
                best[contender] = min(best[contender], seconds)
    finally:
        delete_vhost(broker)
    rate = {contender: args.messages / seconds for contender, seconds in best.items()}
    print()
    print(
        f"worker benchmark ({args.messages:,} messages, prefetch {args.prefetch}, no-op handler, best of {args.rounds})"
    )
    print(f"  baseline (plain pika consumer, ack per message): {rate['baseline']:9,.0f} msg/s")
    print(f"  runtime, outcome reports off:                    {rate['runtime']:9,.0f} msg/s")
    print(f"  runtime, outcome reports on (default):           {rate['tracked']:9,.0f} msg/s")
    print(f"  tracked / untracked: {rate['tracked'] / rate['runtime']:.2f}  (aim >= 0.95)")
    print(f"  runtime / baseline:  {rate['runtime'] / rate['baseline']:.2f}  (aim >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

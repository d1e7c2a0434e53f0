"""Worker throughput benchmark: the runtime with a no-op handler against a plain pika consumer, dramatiq and Celery.

    ./manage.sh bench worker            (or .venv/bin/python bench/worker.py)

Every contender is one process consuming the same number of persistent no-op
messages from its own queue on the same broker. The runtime's with reports on
(the default) runs at channel prefetch W = the type's prefetch plus room for
rows awaiting their report's confirm (`WORKER_SETTLE_ALLOWANCE`; W is 58 for
a type prefetch of 20), so every contender that can be set runs at W too:

* pika-group: `bench/support/plain_consumer.py`, acks in groups (`multiple=True`)
  as the runtime does, channel prefetch W: the like-for-like baseline;
* pika-each: the same acking each message on its own at the type's prefetch
  (the simplest consumer, what the earlier figures compared against);
* runtime: `python -m workers` with the `tests.handlers.noop` handler and its
  full machinery (executor thread, hooks, heartbeats, stop and cancel
  listeners), outcome reports off, type prefetch W (channel prefetch W);
* tracked: the same with outcome reports on, type prefetch P (channel prefetch W);
* dramatiq: `dramatiq --processes 1`, its defaults (8 threads, prefetch 16, one ack each);
* dramatiq-tuned: one process, 1 thread, prefetch W (`dramatiq_queue_prefetch`);
* celery: `celery worker --concurrency 1`, its defaults (prefork pool, prefetch 4, acks on receipt);
* celery-tuned: solo pool, late acks (at-least-once, as the runtime), prefetch W, no gossip/mingle/heartbeat;
* runtime-1ms / tracked-1ms: the runtime with the `sleep` handler at
  SLEEP_MS=1 (a millisecond of work per row), reports off and on, channel prefetch W.

dramatiq and Celery consume their own messages (sent with their own APIs,
persistent), as their users send them; the others consume rows shaped like
the producer's. Each run is timed from outside the same way
(bench/support/drain.py), in alternating order for several rounds; the best
round of each counts, and the median of the rounds' ratios is printed beside
it. Results go to bench/results/worker.json (bench/support/results.py).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import uuid
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.drain import fill, round_rates, timed_drain, write_job_config  # noqa: E402
from bench.support.results import Row, write_results  # noqa: E402
from common.config import JobType  # noqa: E402
from common.outcomes import OUTCOMES_QUEUE, OutcomeReport  # noqa: E402
from common.settings import REPO_ROOT  # noqa: E402
from harness.broker import Broker, create_vhost, delete_vhost  # noqa: E402
from harness.processes import Service  # noqa: E402
from workers.settings import DEFAULT_SETTLE_ALLOWANCE  # noqa: E402

BODY = b'{"Date":"2024-01-01","Item Description":"Tea","Quantity":"1","Amount":"2.50"}'
PEERS = "bench.support.peers"
#: Each peer contender: the command line of its one worker process (module, arguments) and extra environment.
PEER_COMMANDS = {
    "dramatiq": ("dramatiq", [PEERS, "--processes", "1"], {}),
    "dramatiq-tuned": ("dramatiq", [PEERS, "--processes", "1", "--threads", "1"], {"dramatiq_queue_prefetch": "{W}"}),
    "celery": ("celery", ["-A", f"{PEERS}:celery_app", "worker", "--concurrency", "1", "--loglevel", "warning"], {}),
    "celery-tuned": (
        "celery",
        ["-A", f"{PEERS}:celery_app", "worker", "--pool", "solo", "--loglevel", "warning"]
        + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
        {"BENCH_CELERY_TUNED": "1", "BENCH_PREFETCH": "{W}"},
    ),
}


def tracked_channel_prefetch(prefetch: int) -> int:
    """The channel prefetch of a worker with reports on, for a type with `prefetch` (workers/runtime.py)."""
    return prefetch + DEFAULT_SETTLE_ALLOWANCE * JobType(name="bench", queue="bench", prefetch=prefetch).read_ahead


def run_peer(broker: Broker, directory: Path, contender: str, count: int, wide: int) -> float:
    """Fill a queue with the peer's own no-op messages and time its one worker process draining them."""
    queue = f"bench_{contender}_{uuid.uuid4().hex[:6]}"
    env = {**broker.env(), "BENCH_QUEUE": queue}
    subprocess.run(
        [sys.executable, "-m", PEERS, contender.split("-")[0], str(count)], env=env, cwd=REPO_ROOT, check=True
    )
    module, args, extra = PEER_COMMANDS[contender]
    env |= {name: value.format(W=wide) for name, value in extra.items()}
    return timed_drain(broker, queue, lambda: Service(module, args, env, directory / f"{contender}.log"))


def run_once(broker: Broker, directory: Path, contender: str, count: int, prefetch: int) -> float:
    wide = tracked_channel_prefetch(prefetch)
    if contender in PEER_COMMANDS:
        return run_peer(broker, directory, contender, count, wide)
    tracked = contender.startswith("tracked")
    type_prefetch = prefetch if tracked or contender == "pika-each" else wide
    job_type = JobType(name="bench", queue=f"bench_{contender}", prefetch=type_prefetch)
    fill(broker, job_type, [BODY] * count, uuid.uuid4().hex[:12])
    log = directory / f"{contender}.log"
    if contender.startswith("pika-"):
        arguments = [job_type.queue, str(type_prefetch), contender.removeprefix("pika-")]
        return timed_drain(
            broker, job_type.queue, lambda: Service("bench.support.plain_consumer", arguments, broker.env(), log)
        )
    handler = "sleep" if contender.endswith("-1ms") else "tests.handlers.noop"
    config = write_job_config(
        directory, "bench", {"queue": job_type.queue, "handler": handler, "prefetch": type_prefetch}
    )
    env = {**broker.env(), "JOBS_CONFIG": str(config), "WORKER_REPORT_OUTCOMES": str(int(tracked)), "SLEEP_MS": "1"}
    seconds = timed_drain(broker, job_type.queue, lambda: Service("workers", ["bench"], env, log))
    reported = sum(len(OutcomeReport.from_json(body).rows) for _, body in broker.drain(OUTCOMES_QUEUE))
    if reported != (count if tracked else 0):
        raise RuntimeError(f"{contender}: {reported} rows reported for {count} rows")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--prefetch", type=int, default=20)
    parser.add_argument("--working-messages", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    broker = create_vhost()
    directory = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    names = ["pika-group", "pika-each", "runtime", "tracked", *PEER_COMMANDS]
    contenders = {
        name: (lambda name=name: run_once(broker, directory, name, args.messages, args.prefetch)) for name in names
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
    rows, figures = report(rounds, args)
    write_results("worker", rows, figures, settings=vars(args))
    return 0


def report(rounds: dict[str, list[float]], args: argparse.Namespace) -> tuple[list[Row], dict]:
    """Print the rates and ratios; the README rows and the figures behind them."""
    rate = {name: max(rates) for name, rates in rounds.items()}
    wide = tracked_channel_prefetch(args.prefetch)

    def ratio(subject: str, baseline: str) -> str:
        """Best against best, and the median of the rounds' ratios (one lucky round moves the best)."""
        per_round = statistics.median(a / b for a, b in zip(rounds[subject], rounds[baseline], strict=True))
        return f"**{rate[subject] / rate[baseline]:.2f}x** (median of rounds {per_round:.2f}x)"

    dramatiq, celery = f"dramatiq {version('dramatiq')}", f"Celery {version('celery')}"
    labels = {
        "pika-group": f"plain pika consumer, grouped acks (multiple=True), channel prefetch {wide}",
        "pika-each": f"plain pika consumer, one ack per message, channel prefetch {args.prefetch}",
        "runtime": f"runtime, outcome reports off, channel prefetch {wide}",
        "tracked": f"runtime, outcome reports on (default; type prefetch {args.prefetch}, channel {wide})",
        "dramatiq": f"{dramatiq}, its defaults for one process (8 threads, prefetch 16)",
        "dramatiq-tuned": f"{dramatiq}, one process, 1 thread, prefetch {wide}",
        "celery": f"{celery}, its defaults for one process (prefork, concurrency 1, prefetch 4, early acks)",
        "celery-tuned": f"{celery}, solo pool, late acks, prefetch {wide}, no gossip/mingle/heartbeat",
        "runtime-1ms": f"runtime, 1 ms handler, outcome reports off, channel prefetch {wide}",
        "tracked-1ms": "runtime, 1 ms handler, outcome reports on (default)",
    }
    print()
    print(f"worker benchmark (best of {args.rounds}, one process each, same broker, same run)")
    for name, label in labels.items():
        count = args.working_messages if name.endswith("-1ms") else args.messages
        print(f"  {label}: {rate[name]:,.0f} msg/s ({count:,} messages)")
    command = f"`./manage.sh bench worker`: no-op handler, {args.messages:,} persistent messages, one process each"
    msgs = f"{args.messages:,} messages"
    rows = [
        Row(
            command + f", channel prefetch {wide}",
            f"runtime, reports on (default): {rate['tracked']:,.0f} msg/s; reports off: {rate['runtime']:,.0f} msg/s",
            f"{labels['pika-group']}: {rate['pika-group']:,.0f} msg/s",
            f"{ratio('tracked', 'pika-group')}; reports off {ratio('runtime', 'pika-group')}",
        ),
        Row(
            "same: against the simplest consumer",
            f"runtime, reports on: {rate['tracked']:,.0f} msg/s",
            f"{labels['pika-each']}: {rate['pika-each']:,.0f} msg/s",
            ratio("tracked", "pika-each"),
        ),
        Row(
            "same: against dramatiq (its own no-op actor and messages)",
            f"runtime, reports on: {rate['tracked']:,.0f} msg/s",
            f"{labels['dramatiq']}: {rate['dramatiq']:,.0f} msg/s; tuned ({labels['dramatiq-tuned'].removeprefix(dramatiq + ', ')}): {rate['dramatiq-tuned']:,.0f} msg/s",
            f"{ratio('tracked', 'dramatiq')}; against tuned {ratio('tracked', 'dramatiq-tuned')}",
        ),
        Row(
            "same: against Celery (its own no-op task and messages)",
            f"runtime, reports on: {rate['tracked']:,.0f} msg/s",
            f"{labels['celery']}: {rate['celery']:,.0f} msg/s; tuned ({labels['celery-tuned'].removeprefix(celery + ', ')}): {rate['celery-tuned']:,.0f} msg/s",
            f"{ratio('tracked', 'celery')}; against tuned {ratio('tracked', 'celery-tuned')}",
        ),
        Row(
            f"same: outcome tracking on vs off, channel prefetch {wide}, no-op handler ({msgs})",
            f"{rate['tracked']:,.0f} msg/s",
            f"reports off (`WORKER_REPORT_OUTCOMES=0`): {rate['runtime']:,.0f} msg/s",
            ratio("tracked", "runtime"),
        ),
        Row(
            f"same: outcome tracking on vs off, 1 ms handler ({args.working_messages:,} messages)",
            f"{rate['tracked-1ms']:,.0f} msg/s",
            f"{rate['runtime-1ms']:,.0f} msg/s",
            ratio("tracked-1ms", "runtime-1ms"),
        ),
    ]
    figures = {"channel_prefetch": wide, "msg_per_s_best": rate, "msg_per_s_rounds": rounds, "labels": labels}
    return rows, figures


if __name__ == "__main__":
    sys.exit(main())

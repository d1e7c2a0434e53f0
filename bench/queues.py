"""What quorum queues cost: ingest and consume throughput on quorum against classic queues, one node and three.

    ./manage.sh bench queues            (or .venv/bin/python bench/queues.py)

Four setups: a job type with a classic and one with a quorum work queue
(`queue_type`), on one node and on a three-node cluster, both started by the
benchmark (and stopped at its end) with the code `./manage.sh up
--rabbitmq-nodes N` runs (harness/cluster.py): the cluster on AMQP ports
5682-5684, the single node on 5686, so that neither is the shared development
broker other work loads. The producer gets every node in `RABBITMQ_URLS`, as
`up` gives it. In each setup and round:

* ingest: `--rows` rows uploaded over HTTP to the producer (`python -m
  producer`, the ingest benchmark's upload, bench/ingest.py), timed from the
  first byte to the 200, which comes once every row is confirmed. A quorum
  queue confirms a message once a majority of its members (two of three) has
  it on disk; a classic one once its node has it;
* consume: one worker (`python -m workers`, the no-op handler, the worker
  benchmark's channel prefetch, outcome reports off so that only the work
  queue differs) drains those rows, timed from outside the same way as every
  worker benchmark contender (bench/support/drain.py).

The setups alternate within every round (the
order reversed every other round); the best round of each counts, and the
median of the rounds' ratios is printed beside the best's, because these
machines are shared and noisy. Results: bench/results/queues.json.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import upload, write_sample  # noqa: E402
from bench.support.drain import timed_drain  # noqa: E402
from bench.support.results import Row, write_results  # noqa: E402
from bench.worker import tracked_channel_prefetch  # noqa: E402
from harness.broker import Broker  # noqa: E402
from harness.cluster import Topology, running_cluster  # noqa: E402
from harness.processes import Service  # noqa: E402
from harness.stack import Stack  # noqa: E402

QUEUE_TYPES = ("classic", "quorum")
TOPOLOGIES = {"1 node": 1, "3 nodes": 3}


#: The one-node broker: started beside the cluster the same way, so both are this benchmark's alone.
ONE_NODE = Topology(size=1, prefix="bench-single", base_port=5686, management_base_port=15686)


def bench_stack(broker: Broker, directory: Path, args: argparse.Namespace) -> Stack:
    """A producer on `broker` with one job type per queue type (named after it), the no-op handler."""
    prefetch = tracked_channel_prefetch(args.prefetch)
    types = {
        kind: {"queue": f"bench_{kind}", "queue_type": kind, "handler": "tests.handlers.noop", "prefetch": prefetch}
        for kind in QUEUE_TYPES
    }
    env = {"PRODUCER_PUBLISH_WINDOW": str(args.window), "WORKER_LOG_LEVEL": "info", "WORKER_REPORT_OUTCOMES": "0"}
    directory.mkdir()
    stack = Stack(broker, directory, types, env=env)
    stack.start_producer()
    return stack


def run_once(stack: Stack, queue_type: str, sample: Path) -> tuple[float, float]:
    """(ingest seconds, consume seconds) for the sample's rows through the type of `queue_type`."""
    ingest = upload(stack, sample, queue_type)
    log = stack.directory / f"worker-{queue_type}.log"
    consume = timed_drain(
        stack.broker, stack.queue_of(queue_type), lambda: Service("workers", [queue_type], stack.env, log)
    )
    return ingest, consume


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each setup counts")
    parser.add_argument("--window", type=int, default=2000, help="unconfirmed messages in flight (the producer's)")
    parser.add_argument("--prefetch", type=int, default=20, help="a job type's prefetch (channel prefetch as workers)")
    args = parser.parse_args()
    # Stopped with SIGTERM, still stop the nodes it started (the `finally` of running_cluster).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="bench-queues-"))
    sample = work / "sample.csv"
    write_sample(sample, args.rows)
    ingest: dict[str, list[float]] = {}
    consume: dict[str, list[float]] = {}
    with ExitStack() as stack:
        brokers = {
            "1 node": stack.enter_context(running_cluster(work / "single", ONE_NODE)),
            "3 nodes": stack.enter_context(running_cluster(work / "cluster")),
        }
        stacks = {
            topology: bench_stack(broker, work / topology.replace(" ", "-"), args)
            for topology, broker in brokers.items()
        }
        for started in stacks.values():
            stack.callback(started.stop)
        setups: dict[str, Callable[[], tuple[float, float]]] = {
            f"{kind}, {topology}": (lambda started=started, kind=kind: run_once(started, kind, sample))
            for topology, started in stacks.items()
            for kind in QUEUE_TYPES
        }
        names = list(setups)
        for round_number in range(args.rounds):
            for name in names if round_number % 2 == 0 else names[::-1]:
                seconds_in, seconds_out = setups[name]()
                ingest.setdefault(name, []).append(args.rows / seconds_in)
                consume.setdefault(name, []).append(args.rows / seconds_out)
                print(
                    f"  round {round_number + 1} {name:18}: ingest {ingest[name][-1]:9,.0f} rows/s, "
                    f"consume {consume[name][-1]:9,.0f} msg/s",
                    flush=True,
                )
    rows, figures = report(ingest, consume, args)
    write_results("queues", rows, figures, settings=vars(args))
    return 0


def report(
    ingest: dict[str, list[float]], consume: dict[str, list[float]], args: argparse.Namespace
) -> tuple[list[Row], dict]:
    """Print the best rates and the quorum/classic ratios; the README rows and the figures behind them."""

    def ratio(rounds: dict[str, list[float]], subject: str, baseline: str) -> str:
        best = max(rounds[subject]) / max(rounds[baseline])
        per_round = statistics.median(a / b for a, b in zip(rounds[subject], rounds[baseline], strict=True))
        return f"**{best:.2f}x** (median of rounds {per_round:.2f}x)"

    print()
    print(f"queue cost benchmark (best of {args.rounds}, {args.rows:,} rows, window {args.window})")
    for name in ingest:
        print(f"  {name:18}: ingest {max(ingest[name]):9,.0f} rows/s, consume {max(consume[name]):9,.0f} msg/s")
    command = "`./manage.sh bench queues`"
    rows = []
    for measure, rounds, unit in (("ingest", ingest, "rows/s"), ("consume", consume, "msg/s")):
        what = (
            f"HTTP upload to the producer until every row is confirmed (window {args.window}), {args.rows:,} rows"
            if measure == "ingest"
            else f"one worker, no-op handler, reports off, channel prefetch {tracked_channel_prefetch(args.prefetch)}"
        )
        for topology in TOPOLOGIES:
            quorum, classic = f"quorum, {topology}", f"classic, {topology}"
            label = f"{measure}, {topology}" + (f": {what}" if topology == "1 node" else "")
            rows.append(
                Row(
                    f"{command}: {label}" if not rows else f"same: {label}",
                    f"quorum queue: {max(rounds[quorum]):,.0f} {unit}",
                    f"classic queue: {max(rounds[classic]):,.0f} {unit}",
                    ratio(rounds, quorum, classic),
                )
            )
        rows.append(
            Row(
                f"same: {measure}, quorum queue on 3 nodes against 1",
                f"3 nodes: {max(rounds['quorum, 3 nodes']):,.0f} {unit}",
                f"1 node: {max(rounds['quorum, 1 node']):,.0f} {unit}",
                ratio(rounds, "quorum, 3 nodes", "quorum, 1 node"),
            )
        )
    figures = {"ingest_rows_per_s_rounds": ingest, "consume_msg_per_s_rounds": consume}
    return rows, figures


if __name__ == "__main__":
    sys.exit(main())

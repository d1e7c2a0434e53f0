"""What quorum queues cost: ingest and consume throughput on quorum against classic queues, one node and three.

    ./manage.sh bench queues            (or .venv/bin/python bench/queues.py)

Four setups: a classic and a quorum work queue on one node and on a three-node
cluster, both started by the benchmark (and stopped at its end) with the code
`./manage.sh up --rabbitmq-nodes N` runs (tests/support/cluster.py): the
cluster on AMQP ports 5682-5684, the single node on 5686, so that neither
is the shared development broker other work loads. Clients connect to the
first node, where RabbitMQ puts the leader of the queue they declare. In each
setup and round:

* ingest: the ingest benchmark's baseline publisher (bench/ingest.py: the
  producer's message properties, `mandatory`, publisher confirms, the
  producer's window of unconfirmed messages) publishes `--rows` rows into an
  empty queue, timed until every row is confirmed. A quorum queue confirms a
  message once a majority of its members (two of three) has it on disk;
  a classic one once its node has it;
* consume: the worker benchmark's plain consumer that acks in groups (as the
  runtime does; bench/support/plain_consumer.py) drains those rows, timed
  from outside the same way as every worker contender (bench/support/drain.py).

The work queue carries the arguments jobtypes/queues.py gives it (dead
lettering) plus `x-queue-type`. The setups alternate within every round (the
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
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import baseline_publish, json_bodies, same_properties, write_sample  # noqa: E402
from bench.support.broker import Broker  # noqa: E402
from bench.support.cluster import Topology, running_cluster  # noqa: E402
from bench.support.drain import timed_drain  # noqa: E402
from bench.support.processes import Service  # noqa: E402
from bench.support.results import Row, write_results  # noqa: E402
from bench.worker import tracked_channel_prefetch  # noqa: E402
from jobtypes.config import JobType  # noqa: E402
from jobtypes.queues import queue_arguments  # noqa: E402

QUEUE_TYPES = ("classic", "quorum")
TOPOLOGIES = {"1 node": 1, "3 nodes": 3}


#: The one-node broker: started beside the cluster the same way, so both are this benchmark's alone.
ONE_NODE = Topology(size=1, prefix="bench-single", base_port=5686, management_base_port=15686)


def run_once(
    broker: Broker, queue_type: str, bodies: list[bytes], args: argparse.Namespace, log: Path
) -> tuple[float, float]:
    """(ingest seconds, consume seconds) for `bodies` through a fresh queue of `queue_type` on `broker`."""
    job_type = JobType(name="bench", queue=f"bench_{queue_type}_{uuid.uuid4().hex[:6]}")
    arguments = queue_arguments(job_type)[job_type.queue] | {"x-queue-type": queue_type}
    properties = same_properties(job_type.name, uuid.uuid4().hex, 0)
    ingest = baseline_publish(broker.amqp_url, job_type.queue, arguments, bodies, args.window, properties, True)
    consumer = [job_type.queue, str(tracked_channel_prefetch(args.prefetch)), "group"]
    consume = timed_drain(
        broker, job_type.queue, lambda: Service("bench.support.plain_consumer", consumer, broker.env(), log)
    )
    with broker.channel() as channel:
        channel.queue_delete(job_type.queue)
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
    bodies = json_bodies(sample)
    ingest: dict[str, list[float]] = {}
    consume: dict[str, list[float]] = {}
    with ExitStack() as stack:
        brokers = {
            "1 node": stack.enter_context(running_cluster(work / "single", ONE_NODE)),
            "3 nodes": stack.enter_context(running_cluster(work / "cluster")),
        }
        setups: dict[str, Callable[[], tuple[float, float]]] = {
            f"{kind}, {topology}": (
                lambda broker=broker, kind=kind: run_once(broker, kind, bodies, args, work / "consumer.log")
            )
            for topology, broker in brokers.items()
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
            f"publisher with confirms (the producer's messages, window {args.window}), {args.rows:,} rows"
            if measure == "ingest"
            else f"plain consumer acking in groups, channel prefetch {tracked_channel_prefetch(args.prefetch)}"
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

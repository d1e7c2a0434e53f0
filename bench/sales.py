"""Sales benchmark: one `sales` worker storing rows in batches against the same worker storing one row per call.

    ./manage.sh bench sales             (or .venv/bin/python bench/sales.py)

Both contenders are `python -m workers sales` with the real handler and the
default ledger (an SQLite file, a fresh one per run), consuming the same
sample rows (`workers.sample`) shaped like the producer's. The baseline has
`batch_size` 1: one handler call and one transaction per row, which is what
the per-row handler did before batches (it also read the item's totals and
logged a line per row, so the real old handler was slower still). The
contender uses the type's batch settings from jobs.config.json. Both run at
the same channel prefetch (the batched worker's, `workers.runtime.channel_prefetch`):
the per-row type's prefetch is raised until its channel holds as many rows,
so the ratio is batching alone, not a wider window. Each run is
timed from outside (bench/support/drain.py), alternated, best of several rounds, and
checked exact: every row stored once and the per-item totals equal to the
CSV's. The ratio is printed last (aim >= 5); results go to bench/results/sales.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.support.drain import best_rates, fill, timed_drain, write_job_config  # noqa: E402
from bench.support.results import Row, write_results  # noqa: E402
from common.config import JobType, load_config  # noqa: E402
from common.settings import REPO_ROOT  # noqa: E402
from harness.broker import Broker, create_vhost, delete_vhost  # noqa: E402
from harness.processes import Service  # noqa: E402
from workers.runtime import channel_prefetch  # noqa: E402
from workers.settings import WorkerSettings  # noqa: E402


def sample(rows: int) -> tuple[list[bytes], dict[str, Decimal]]:
    """JSON bodies of a sample CSV, and the expected amount per item."""
    text_csv = subprocess.run(
        [sys.executable, "-m", "workers.sample", str(rows)], cwd=REPO_ROOT, capture_output=True, check=True, text=True
    ).stdout
    records = list(csv.DictReader(io.StringIO(text_csv)))
    expected: dict[str, Decimal] = {}
    for record in records:
        expected[record["Item Description"]] = expected.get(record["Item Description"], Decimal(0)) + Decimal(
            record["Amount"]
        )
    return [json.dumps(record).encode() for record in records], expected


def per_row_settings(batched: dict) -> tuple[dict, int]:
    """Settings for one row per transaction whose channel prefetch matches the batched type's; that prefetch."""
    settings = WorkerSettings(worker_id="bench")

    def channel(**values: int) -> int:
        return channel_prefetch(JobType(name="sales", queue="sales", **values), settings)

    target = channel(**batched)
    prefetch = next(p for p in range(1, target + 1) if channel(**{**batched, "batch_size": 1, "prefetch": p}) >= target)
    return {**batched, "batch_size": 1, "prefetch": prefetch}, target


def run_once(broker: Broker, directory: Path, settings: dict, bodies: list[bytes], expected: dict) -> float:
    name = f"sales_{uuid.uuid4().hex[:6]}"
    job_type = JobType(name="sales", queue=name, **settings)
    fill(broker, job_type, bodies, uuid.uuid4().hex[:12])
    config = write_job_config(directory, "sales", {"queue": name, "handler": "sales", **settings})
    database = f"sqlite:///{directory / (name + '.db')}"
    env = {**broker.env(), "JOBS_CONFIG": str(config), "SALES_DATABASE_URL": database}
    seconds = timed_drain(broker, name, lambda: Service("workers", ["sales"], env, directory / f"{name}.log"))
    with create_engine(database).connect() as connection:
        stored = connection.execute(text("SELECT item, row_count, amount FROM sales_item_totals")).fetchall()
    if sum(count for _, count, _ in stored) != len(bodies):
        raise RuntimeError(f"{name}: {sum(count for _, count, _ in stored)} rows stored, expected {len(bodies)}")
    if {item: Decimal(str(amount)) for item, _, amount in stored} != expected:
        raise RuntimeError(f"{name}: per-item totals differ from the CSV's")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configured = load_config(REPO_ROOT / "jobs.config.json").job_types["sales"]
    batched = {
        "batch_size": configured.batch_size,
        "batch_wait_ms": configured.batch_wait_ms,
        "prefetch": configured.prefetch,
    }
    per_row, window = per_row_settings(batched)
    settings = {"per-row": per_row, "batched": batched}
    bodies, expected = sample(args.rows)
    broker = create_vhost()
    directory = Path(tempfile.mkdtemp(prefix="bench-sales-"))
    contenders = {
        name: (lambda name=name: run_once(broker, directory, settings[name], bodies, expected)) for name in settings
    }
    try:
        rate = best_rates(contenders, args.rounds, args.rows, "rows/s")
    finally:
        delete_vhost(broker)
    batching = f"`batch_size` {batched['batch_size']}, `batch_wait_ms` {batched['batch_wait_ms']:g}"
    print()
    print(f"sales benchmark ({args.rows:,} rows, one worker, SQLite ledger, counts checked, best of {args.rounds})")
    print(f"  both at channel prefetch {window} (per-row type prefetch {per_row['prefetch']})")
    print(f"  baseline, batch_size 1 (a transaction per row): {rate['per-row']:9,.0f} rows/s")
    print(f"  batched, {batching}:   {rate['batched']:9,.0f} rows/s")
    print(f"  batched / per-row: {rate['batched'] / rate['per-row']:.1f}  (aim >= 5)")
    row = Row(
        f"`./manage.sh bench sales`: one sales worker, {args.rows:,} rows, counts checked, channel prefetch {window} both",
        f"batched ({batching}): {rate['batched']:,.0f} rows/s",
        f"one transaction per row, same channel prefetch: {rate['per-row']:,.0f} rows/s",
        f"**{rate['batched'] / rate['per-row']:.1f}x**",
    )
    figures = {"channel_prefetch": window, "settings": settings, "rows_per_s_best": rate}
    write_results("sales", [row], figures, settings=vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

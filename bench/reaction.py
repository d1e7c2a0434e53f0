"""Reaction benchmark: how fast workers appear for a backlog and disappear after it.

    ./manage.sh bench reaction          (or .venv/bin/python bench/reaction.py)

Runs the whole local stack (producer, scaler, `sleep` workers) on a private
vhost and measures two delays from the processes' own logs and status:

* up: from the upload's 200 to the first worker consuming the queue;
* down: from the last ack plus `idle_seconds` to the last worker gone.

The baseline is the same stack measured in the same run with a 5 s poll, the
interval of the original prototype (KEDA's default of 30 s would be six times
slower still); the ratio says how much faster the default 1 s tick reacts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.broker import create_vhost, delete_vhost  # noqa: E402
from tests.support.stack import Stack  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

IDLE_SECONDS = 3


def events(stack: Stack, name: str) -> list[dict]:
    found = []
    for log in (stack.state_dir / "logs").glob("*.log"):
        found += [
            json.loads(line)
            for line in log.read_text().splitlines()
            if line.startswith("{") and f'"event": "{name}"' in line
        ]
    return found


def measure(tick: float, rows: int) -> tuple[float, float]:
    broker = create_vhost()
    stack = Stack(
        broker,
        Path(tempfile.mkdtemp(prefix="bench-reaction-")),
        {
            "sleep": {
                "handler": "sleep",
                "threshold": 5,
                "max_workers": 4,
                "idle_seconds": IDLE_SECONDS,
                "env": {"SLEEP_MS": "50"},
            }
        },
        tick_seconds=tick,
    )
    try:
        stack.start()
        body = b"n\n" + b"".join(b"%d\n" % i for i in range(rows))
        stack.upload(body, "sleep").raise_for_status()
        answered = time.time()
        first = wait_until(lambda: events(stack, "consuming"), timeout=120, interval=0.02, what="a worker consuming")
        up = min(event["ts"] for event in first) - answered
        wait_until(
            lambda: sum(stack.processed().values()) >= rows, timeout=300, interval=0.1, what="every row processed"
        )
        last_ack = max(event["ts"] for event in events(stack, "processed"))
        stopped = wait_until(
            lambda: (e := events(stack, "worker stopped")) and len(e) == len(events(stack, "worker starting")) and e,
            timeout=120,
            interval=0.05,
            what="every worker gone",
        )
        down = max(event["ts"] for event in stopped) - (last_ack + IDLE_SECONDS)
        return up, down
    finally:
        stack.stop()
        delete_vhost(broker)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200)
    args = parser.parse_args()
    fast_up, fast_down = measure(1.0, args.rows)
    slow_up, slow_down = measure(5.0, args.rows)
    print()
    print(f"reaction benchmark ({args.rows} rows, sleep 50 ms/row, idle_seconds {IDLE_SECONDS})")
    print(
        f"  scaler, 1 s tick:           upload -> first worker consuming {fast_up:5.2f} s;  last ack + idle -> last worker gone {fast_down:5.2f} s"
    )
    print(
        f"  baseline, 5 s poll:         upload -> first worker consuming {slow_up:5.2f} s;  last ack + idle -> last worker gone {slow_down:5.2f} s"
    )
    print(
        f"  baseline / scaler:          scale-up {slow_up / fast_up:.1f}x faster;  scale-down {slow_down / max(fast_down, 0.01):.1f}x faster"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m workers.sample N`: print a sample sales CSV with N rows (constant memory).

./manage.sh sample 10000 > data.csv
./manage.sh sample 1000 --bad-every 100 > with-poison.csv   # every 100th Quantity is not a number
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from datetime import date, timedelta

ITEMS = [
    "Coffee beans 1kg",
    "Green tea, loose",
    "Croissant",
    'Bagel "everything"',
    "Oat milk",
    "Crème brûlée",
    "Sandwich, ham & cheese",
    "Orange juice",
    "Muffin",
    "Espresso cups (set of 6)",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.sample", description="Print a sample sales CSV.")
    parser.add_argument("rows", type=int, help="number of data rows")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bad-every", type=int, default=0, help="make every Kth Quantity non-numeric (poison rows)")
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("rows must not be negative")
    rng = random.Random(args.seed)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["Date", "Item Description", "Quantity", "Amount"])
    start = date(2024, 1, 1)
    for number in range(1, args.rows + 1):
        quantity = rng.randint(1, 12)
        price = rng.choice([1.5, 2.25, 3.8, 4.0, 12.5, 19.99])
        bad = args.bad_every and number % args.bad_every == 0
        writer.writerow(
            [
                (start + timedelta(days=number % 365)).isoformat(),
                rng.choice(ITEMS),
                "lots" if bad else quantity,
                f"{quantity * price:.2f}",
            ]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

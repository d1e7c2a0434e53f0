"""The results file every benchmark writes, so that the README's figures are generated, not pasted.

A benchmark ends with `write_results(name, rows, figures, settings)`: it prints
the README rows it measured and writes `bench/results/<name>.json`:

    {
      "name": "worker",                      # the file's stem, the benchmark's name
      "command": "bench/worker.py --rounds 3",  # how it was run (the arguments given)
      "date": "2026-12-05T01:50:00+00:00",    # UTC, when the file was written
      "commit": "2ae0113",                   # `git rev-parse --short HEAD` ("+dirty" if uncommitted changes)
      "machine": {"cores": 2, "memory_gib": 7.8, "load_1min": 5.2},
      "settings": {...},                     # the benchmark's arguments (messages, rounds, prefetch ...)
      "rows": [                              # the README table's rows, in order, cells by column
        {"benchmark": "...", "subject": "...", "baseline": "...", "ratio": "..."}
      ],
      "figures": {...}                       # the raw numbers the rows were formatted from
    }

`bench/readme.py` turns the rows of the files it lists into the README's
table; a new benchmark is plugged in by writing such a file and adding its
name there. The rows are text because only the benchmark knows how its
figures read (a ratio, a "model", a call count); `figures` keeps the numbers
for anyone who wants to compare runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parents[1] / "results"
REPO = RESULTS.parents[1]


@dataclass(frozen=True)
class Row:
    """One row of the README's benchmark table: what was measured, its figure, the baseline's, the ratio."""

    benchmark: str
    subject: str
    baseline: str = ""
    ratio: str = ""


def commit() -> str:
    """The checked-out commit, marked "+dirty" when the work tree differs from it (the figure is then not its own)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
        cwd=REPO,
        capture_output=True,
    )
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "") if head.returncode == 0 else "unknown"


def machine() -> dict:
    """Cores, memory and the load when the file was written (the machines these run on are shared)."""
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_1min": round(os.getloadavg()[0], 1),
    }


def write_results(
    name: str, rows: list[Row] | list[dict[str, str]], figures: dict, settings: dict | None = None
) -> Path:
    """Print `rows` and write them with `figures` and the run's provenance to bench/results/<name>.json.

    Rows are `Row`s for the benchmark table, or dicts of cells by column for
    another table (the fault suite's, see bench/readme.py).
    """
    cells = [asdict(row) if isinstance(row, Row) else row for row in rows]
    script = Path(sys.argv[0]).resolve()
    document = {
        "name": name,
        "command": " ".join(
            [str(script.relative_to(REPO)) if script.is_relative_to(REPO) else script.name, *sys.argv[1:]]
        ),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "settings": settings or {},
        "rows": cells,
        "figures": figures,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    print(f"\nREADME rows ({shown}; `./manage.sh readme` puts them in README.md):")
    for row in cells:
        print("  " + " | ".join(row.values()))
    return path

"""The fault suite's closing table: what was done to the stack and what survived it.

Each fault test adds one row; pytest prints the table at the end of the run
(see `pytest_terminal_summary` in tests/conftest.py) and writes it to
`tests/artifacts/fault-table.md`. Run with `--record-results`
(`./manage.sh test -m fault --record-results`), it also writes them, as results
files, to `bench/results/faults.json` (the single-broker suite) and
`bench/results/faults-cluster.json` (the three-node cluster's,
tests/test_cluster_faults.py), from which `./manage.sh readme` regenerates the
README's fault table (bench/readme.py). Without it the committed files stay as
they were, so running the suite twice in one checkout does not leave the
README check behind the results. Record the whole suite of a file: each file
holds the rows of its suite's last recorded run only, and a run that recorded
no row of a suite leaves that suite's file as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bench.support.results import write_results

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


class Counted(StrEnum):
    """What the "rows processed" cell counts: rows handlers processed, or (a test without workers) rows queued."""

    PROCESSED = "processed"
    QUEUED = "queued exactly"


@dataclass
class FaultRow:
    fault: str
    rows_sent: int
    rows_processed: int
    duplicates: int
    lost: int
    recover_seconds: float | None
    counted: Counted = Counted.PROCESSED
    results: str = "faults"  # the results file (bench/results/<results>.json) the row goes to

    def cells(self) -> list[str]:
        recover = "-" if self.recover_seconds is None else f"{self.recover_seconds:.1f} s"
        processed = str(self.rows_processed) + ("" if self.counted is Counted.PROCESSED else f" {self.counted}")
        return [self.fault, str(self.rows_sent), processed, str(self.duplicates), str(self.lost), recover]


HEADERS = ["fault", "rows sent", "rows processed", "duplicates", "lost", "time to recover"]
KEYS = ["fault", "rows_sent", "rows_processed", "duplicates", "lost", "recover"]
ROWS: list[FaultRow] = []


def record(row: FaultRow) -> None:
    ROWS.append(row)


def markdown_table() -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in ROWS]
    return "\n".join(lines)


def write_artifact(record: bool) -> list[Path]:
    """Write the table to tests/artifacts/fault-table.md and, when `record` (pytest --record-results), each
    suite's rows to its results file; returns the paths written."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "fault-table.md"
    path.write_text(markdown_table() + "\n")
    if not record:
        return [path]
    written = [path]
    for results in dict.fromkeys(row.results for row in ROWS):
        rows = [dict(zip(KEYS, row.cells(), strict=True)) for row in ROWS if row.results == results]
        written.append(write_results(results, rows, figures={}))
    return written

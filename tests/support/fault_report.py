"""The fault suite's closing table: what was done to the stack and what survived it.

Each fault test adds one row; pytest prints the table at the end of the run
(see `pytest_terminal_summary` in tests/conftest.py) and writes it to
`tests/artifacts/fault-table.md` for the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@dataclass
class FaultRow:
    fault: str
    rows_sent: int
    rows_processed: int
    duplicates: int
    lost: int
    recover_seconds: float | None

    def cells(self) -> list[str]:
        recover = "-" if self.recover_seconds is None else f"{self.recover_seconds:.1f} s"
        return [
            self.fault,
            str(self.rows_sent),
            str(self.rows_processed),
            str(self.duplicates),
            str(self.lost),
            recover,
        ]


HEADERS = ["fault", "rows sent", "rows processed", "duplicates", "lost", "time to recover"]
ROWS: list[FaultRow] = []


def record(row: FaultRow) -> None:
    ROWS.append(row)


def markdown_table() -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in ROWS]
    return "\n".join(lines)


def write_artifact() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "fault-table.md"
    path.write_text(markdown_table() + "\n")
    return path

"""The failed-row report: an upload's dead rows as CSV, ready to fix and upload again.

Columns: the upload's own header, then `line` (where the row starts in the
uploaded file, as the row's message carried it to the worker), `attempts` and `error` (the handler's last error). A dead row
whose details were not kept (over the per-upload cap) still gets its line,
with empty values and an error saying so.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

from uploads.model import RowState, UploadRecord

EXTRA_COLUMNS = ["line", "attempts", "error"]


def _values(record: UploadRecord, row: RowState, cap: int) -> list[str]:
    line = str(row.line or record.line_of(row.row))
    if row.body is None:
        blanks = [""] * len(record.header)
        return blanks + [line, str(row.attempts), f"(details not kept: over the cap of {cap})"]
    try:
        data = json.loads(row.body)
    except ValueError:
        data = {}
    values = [str(data.get(name, "")) if isinstance(data, dict) else "" for name in record.header]
    return values + [line, str(row.attempts), row.error or ""]


def failed_rows_csv(record: UploadRecord, rows: Iterable[RowState], cap: int) -> Iterator[str]:
    """The report, a chunk of text at a time (one per 500 rows), so a large report streams."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([*record.header, *EXTRA_COLUMNS])
    for count, row in enumerate(rows, start=1):
        writer.writerow(_values(record, row, cap))
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()

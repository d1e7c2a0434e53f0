"""Range checks on workers' outcome reports, so that what the tracker gives the store can be stored and means something.

A report comes from another process, and part of it from further away still:
a worker copies each row's message id (`<upload_id>:<row>`) and its
`x-replay` header into the report, and anything that can publish to a job
queue sets those. One value the store cannot hold (a replay number of twenty
digits, a NUL in a text) used to stop all counting. So before the tracker
hands a report's rows to the store, every field is checked, against the
upload it names where that is what bounds it:

* the report: at most `UPLOADS_MAX_REPORT_BYTES`, JSON of the right shape and
  types (`OutcomeReport.from_json`);
* the upload id: at most MAX_UPLOAD_ID_CHARS characters of storable text;
* the row: within 1..rows of the upload;
* attempts: 1..MAX_STORED_INT (the databases' integer column);
* the replay number: 0..the replays the upload has actually issued;
* the body of a dead row: storable text (no NUL, no lone surrogate), since a
  replay publishes it again as it is. The handler's error is only for people
  to read: unstorable characters in it are replaced instead.

A row that fails is not applied; the tracker applies the report's other rows
and dead-letters the report with the first failure's reason. A row of an upload
the store does not know (removed by retention, or never created here) passes:
the store ignores it, as it always has.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from common.outcomes import OutcomeReport, RowOutcome
from uploads.model import UploadRecord

#: Largest value of the stores' integer columns (Postgres `integer`).
MAX_STORED_INT = 2**31 - 1
#: Longest upload id (the stores' id column); the producer's ids are shorter.
MAX_UPLOAD_ID_CHARS = 64
#: Longest detail kept in a log line or a dead-lettered report's header.
MAX_DETAIL_CHARS = 300


class Reason(StrEnum):
    """Why a report (or a row of it) was set aside: a short code for metrics, headers and tests."""

    TOO_LARGE = "too-large"
    MALFORMED = "malformed"
    UPLOAD_ID = "bad-upload-id"
    ROW = "row-out-of-range"
    ATTEMPTS = "attempts-out-of-range"
    REPLAY = "replay-not-issued"
    TEXT = "text-not-storable"
    STORE = "store-refused"


@dataclass(frozen=True)
class Rejection:
    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass
class CheckedReport:
    """One delivered report after its checks: the rows to apply, and how many were set aside and why."""

    report: OutcomeReport | None
    accepted: list[RowOutcome] = field(default_factory=list)
    rejected: Counter[Reason] = field(default_factory=Counter)
    #: The first rejection, in words (one per report is enough to find the rest: the report is kept whole).
    first: Rejection | None = None

    def reject(self, rejection: Rejection, rows: int = 1) -> None:
        self.rejected[rejection.reason] += rows
        self.first = self.first or rejection

    def refuse_all(self, rejection: Rejection) -> None:
        """The store would not take the accepted rows either (a permanent error): set them aside too."""
        self.reject(rejection, len(self.accepted))
        self.accepted = []


def parse(body: bytes, max_bytes: int) -> OutcomeReport | Rejection:
    """The report in `body`, or why it is not one."""
    if len(body) > max_bytes:
        return Rejection(Reason.TOO_LARGE, f"{len(body)} bytes, over UPLOADS_MAX_REPORT_BYTES={max_bytes}")
    try:
        return OutcomeReport.from_json(body)
    except (ValueError, RecursionError) as error:
        return Rejection(Reason.MALFORMED, str(error)[:MAX_DETAIL_CHARS])


def check_batch(
    bodies: list[bytes], lookup: Callable[[set[str]], Mapping[str, UploadRecord]], max_bytes: int
) -> list[CheckedReport]:
    """Parse and check a batch of delivered reports against the records they name, looked up all at once."""
    return check_parsed([parse(body, max_bytes) for body in bodies], lookup)


def check_parsed(
    parsed: list[OutcomeReport | Rejection], lookup: Callable[[set[str]], Mapping[str, UploadRecord]]
) -> list[CheckedReport]:
    """Check a batch of parsed reports (or why they are none) against the records they name, looked up at once."""
    named = {
        row.upload_id
        for report in parsed
        if not isinstance(report, Rejection)
        for row in report.rows
        if plausible_upload_id(row.upload_id)
    }
    uploads = lookup(named)
    return [check(report, uploads) for report in parsed]


def plausible_upload_id(upload_id: str) -> bool:
    """Whether `upload_id` may be looked up at all (a NUL in a query is an error on Postgres)."""
    return len(upload_id) <= MAX_UPLOAD_ID_CHARS and storable(upload_id)


def check(parsed: OutcomeReport | Rejection, uploads: Mapping[str, UploadRecord]) -> CheckedReport:
    """Check every row of a parsed report against `uploads` (the records it names, as the store has them)."""
    if isinstance(parsed, Rejection):
        checked = CheckedReport(None)
        checked.reject(parsed)
        return checked
    checked = CheckedReport(parsed)
    for row in parsed.rows:
        rejection = row_rejection(row, uploads)
        if rejection is None:
            checked.accepted.append(_with_storable_error(row))
        else:
            checked.reject(rejection)
    return checked


def row_rejection(row: RowOutcome, uploads: Mapping[str, UploadRecord]) -> Rejection | None:
    """Why the store must not be given `row`, or None."""
    if not plausible_upload_id(row.upload_id):
        return Rejection(Reason.UPLOAD_ID, f"upload id {_short(row.upload_id)} is not one")
    if not 1 <= row.attempts <= MAX_STORED_INT:
        return Rejection(Reason.ATTEMPTS, f"{_where(row)}: attempts {_short(row.attempts)}, not in 1..{MAX_STORED_INT}")
    if row.body is not None and not storable(row.body):
        return Rejection(Reason.TEXT, f"{_where(row)}: the body holds a NUL or a lone surrogate")
    upload = uploads.get(row.upload_id)
    if upload is None:
        return None  # not ours, or removed by retention: the store ignores it
    if not 1 <= row.row <= upload.rows:
        return Rejection(Reason.ROW, f"{_where(row)}: the upload has rows 1..{upload.rows}")
    if not 0 <= row.replay <= upload.replay:
        return Rejection(
            Reason.REPLAY,
            f"{_where(row)}: replay {_short(row.replay)} was never issued (replays so far: {upload.replay})",
        )
    return None


def storable(text: str) -> bool:
    """Whether both stores keep `text` as it is: valid UTF-8 (no lone surrogate) and no NUL (Postgres refuses it)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _with_storable_error(row: RowOutcome) -> RowOutcome:
    if row.error is None or storable(row.error):
        return row
    cleaned = row.error.replace("\x00", "\ufffd").encode(errors="replace").decode()
    return replace(row, error=cleaned)


def _where(row: RowOutcome) -> str:
    return f"row {_short(row.row)} of upload {_short(row.upload_id)}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."

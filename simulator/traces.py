"""Trace readers: every supported file becomes the same list of uploads (rows arriving at a job type).

An `Upload` is what the producer turns a CSV file into: `rows` messages
published at once at `at` seconds to one job type, each taking `row_seconds` of
handler time. The project's own format says exactly that, one upload per line
(`at_seconds,job_type,rows,row_seconds`); the three public traces are mapped
onto it as their README in `../shared/traces` describes, and what each mapping
assumes is returned with the trace (`Trace.assumptions`) so the report prints
it beside every figure, together with the trace's attribution. A bad line is
an error naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import NamedTuple

#: The Azure LLM trace has no service time: a request takes context/PREFILL + generated/DECODE seconds.
LLM_PREFILL_TOKENS_PER_SECOND = 8000.0
LLM_DECODE_TOKENS_PER_SECOND = 40.0
#: Azure Functions reports 0 ms averages for some functions; a row takes at least this long.
MIN_ROW_SECONDS = 0.001
#: Seed of the offsets at which an Azure Functions minute's upload arrives inside its minute (reproducible runs).
AZURE_OFFSET_SEED = 2019
#: Alibaba requests that ran (the others were still pending or processing when the trace was cut).
ALIBABA_RAN = frozenset({"SUCCEED", "FAILED"})

ATTRIBUTION = {
    "project-csv": "",
    "azure-functions-2019": (
        "Azure Functions trace 2019 (day 1, 400-function sample), Microsoft, CC-BY-4.0; "
        'Shahrad et al., "Serverless in the Wild", USENIX ATC 2020'
    ),
    "azure-llm-2023": (
        "Azure LLM inference trace 2023 (2023-11-16), Microsoft, CC-BY-4.0; "
        'Patel et al., "Splitwise: Efficient Generative LLM Inference Using Phase Splitting", ISCA 2024'
    ),
    "alibaba-genai-2024": (
        "Alibaba cluster-trace-v2026-GenAI (lora_request_trace), for research or study purposes; "
        '"Understanding Diffusion Model Serving in Production", SoCC 2025'
    ),
}


class TraceError(ValueError):
    """A trace file is unreadable, of an unknown format, or has a bad line (the message says where)."""


class Format(str, Enum):
    PROJECT = "project-csv"
    AZURE_FUNCTIONS = "azure-functions-2019"
    AZURE_LLM = "azure-llm-2023"
    ALIBABA = "alibaba-genai-2024"


class Upload(NamedTuple):
    at: float
    job_type: str
    rows: int
    row_seconds: float


@dataclass
class Trace:
    """Uploads in arrival order, with where they came from and what turning the file into uploads assumed."""

    paths: list[str]
    format: Format
    uploads: list[Upload]
    start_seconds: float = 0.0
    hours: float | None = None
    speedup: float = 1.0
    assumptions: dict[str, str] = field(default_factory=dict)

    @property
    def attribution(self) -> str:
        return ATTRIBUTION[self.format.value]

    @property
    def rows(self) -> int:
        return sum(upload.rows for upload in self.uploads)

    @property
    def job_types(self) -> list[str]:
        return sorted({upload.job_type for upload in self.uploads})

    @property
    def duration(self) -> float:
        """Seconds of (sped-up) trace time the window covers: the asked hours, else up to the last arrival."""
        if self.hours is not None:
            return self.hours * 3600 / self.speedup
        return max((upload.at for upload in self.uploads), default=0.0)


def detect(path: Path) -> Format:
    """The format of `path` from its header line."""
    header = _header(path)
    first = header[0].strip().lstrip("\ufeff") if header else ""
    formats = {
        "at_seconds": Format.PROJECT,
        "HashFunction": Format.AZURE_FUNCTIONS,
        "TIMESTAMP": Format.AZURE_LLM,
        "gmt_create": Format.ALIBABA,
    }
    if first not in formats:
        raise TraceError(
            f"{path}: unknown trace format (header starts with {first!r}); "
            f"give --format, one of {[f.value for f in Format]}"
        )
    return formats[first]


def load(
    paths: Sequence[str | Path],
    format: str | None = None,
    start_seconds: float = 0.0,
    hours: float | None = None,
    speedup: float = 1.0,
) -> Trace:
    """Read every file of one format, keep the window [start, start + hours) and compress time by `speedup`.

    `start` counts from the trace's first request (the project's format: from its zero).

    Speeding up divides arrival times and handler times alike, so the load in workers is unchanged and a
    day replays in a day/K (worker start and stop latencies are real times and are not divided)."""
    if not paths:
        raise TraceError("no trace file given")
    if speedup <= 0:
        raise TraceError(f"--speedup must be above 0, got {speedup}")
    if hours is not None and hours <= 0:
        raise TraceError(f"--hours must be above 0, got {hours}")
    files = [Path(path) for path in paths]
    for file in files:
        if not file.is_file():
            raise TraceError(f"{file}: no such trace file")
    if format is None:
        kind = detect(files[0])
    elif format in {f.value for f in Format}:
        kind = Format(format)
    else:
        raise TraceError(f"unknown --format {format!r}; use one of {[f.value for f in Format]}")
    reader = READERS[kind]
    uploads: list[Upload] = []
    for file in files:
        uploads.extend(reader(file))
    # Public traces count from their first request: --start is relative to it (the project's own format
    # is relative already).
    origin = min((u.at for u in uploads), default=0.0) if kind is not Format.PROJECT else 0.0
    begin = origin + start_seconds
    end = begin + hours * 3600 if hours is not None else float("inf")
    window = [
        Upload((u.at - begin) / speedup, u.job_type, u.rows, u.row_seconds / speedup)
        for u in uploads
        if begin <= u.at < end
    ]
    window.sort(key=lambda upload: upload.at)
    trace = Trace([str(f) for f in files], kind, window, start_seconds, hours, speedup, dict(ASSUMPTIONS[kind]))
    if speedup != 1:
        trace.assumptions["speedup"] = f"arrivals and handler times divided by {speedup:g}"
    return trace


def _header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError) as error:
        raise TraceError(f"{path}: cannot read: {error}") from None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file with a header."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            yield from enumerate(csv.DictReader(handle), start=2)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise TraceError(f"{path}: cannot read: {error}") from None


def _number(path: Path, line: int, row: dict[str, str], column: str, minimum: float = 0.0) -> float:
    text = row.get(column)
    if text is None:
        raise TraceError(f"{path}, line {line}: column {column!r} is missing")
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{path}, line {line}, column {column!r}: {text!r} is not a number") from None
    if not value >= minimum:  # also catches NaN
        raise TraceError(f"{path}, line {line}, column {column!r}: {text!r} is below {minimum:g}")
    return value


JOB_TYPE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,251}[a-z0-9])?$")


def read_project(path: Path) -> Iterator[Upload]:
    """`at_seconds,job_type,rows,row_seconds`: one upload per line, `job_type` a valid job-type name."""
    header = _header(path)
    missing = [c for c in ("at_seconds", "job_type", "rows", "row_seconds") if c not in header]
    if missing:
        raise TraceError(f"{path}: header lacks {missing} (expected at_seconds,job_type,rows,row_seconds)")
    for line, row in _rows(path):
        name = (row.get("job_type") or "").strip()
        if not JOB_TYPE.match(name):
            raise TraceError(f"{path}, line {line}, column 'job_type': {name!r} is not a job-type name")
        rows = _number(path, line, row, "rows", minimum=1)
        if rows != int(rows):
            raise TraceError(f"{path}, line {line}, column 'rows': {row['rows']!r} is not a whole number")
        yield Upload(_number(path, line, row, "at_seconds"), name, int(rows), _number(path, line, row, "row_seconds"))


def read_azure_functions(path: Path) -> Iterator[Upload]:
    """One job type per function (`<trigger>-<first 10 hex of its hash>`); every non-zero minute is an upload
    of that many rows at a seeded random second inside the minute; a row takes the function's average
    duration (`Average`, ms)."""
    rng = random.Random(AZURE_OFFSET_SEED)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            try:
                first = header.index("1")
                average = header.index("Average")
            except ValueError:
                raise TraceError(f"{path}: no minute columns 1..1440 or no 'Average' column") from None
            for line, row in enumerate(reader, start=2):
                yield from _azure_function(path, line, row, first, average, rng)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise TraceError(f"{path}: cannot read: {error}") from None


def _azure_function(
    path: Path, line: int, row: list[str], first: int, average: int, rng: random.Random
) -> Iterator[Upload]:
    if len(row) <= average:
        raise TraceError(f"{path}, line {line}: {len(row)} columns, expected at least {average + 1}")
    name = f"{row[4].strip().lower() or 'fn'}-{row[0][:10].lower()}"
    if not JOB_TYPE.match(name):
        raise TraceError(f"{path}, line {line}: trigger and hash make no job-type name ({name!r})")
    try:
        row_seconds = max(float(row[average]) / 1000, MIN_ROW_SECONDS)
        counts = [int(value) for value in row[first : first + 1440]]
    except ValueError as error:
        raise TraceError(f"{path}, line {line}: {error}") from None
    for minute, count in enumerate(counts):
        if count > 0:
            yield Upload(minute * 60 + rng.random() * 60, name, count, row_seconds)


def read_azure_llm(path: Path) -> Iterator[Upload]:
    """One job type per file (`llm-code`, `llm-conv`); every request is an upload of one row taking
    context/PREFILL + generated/DECODE seconds; times are seconds after 2023-11-16 00:00 UTC."""
    stem = path.stem.lower()
    name = "llm-code" if "code" in stem else "llm-conv" if "conv" in stem else "llm"
    epoch = datetime(2023, 11, 16)
    for line, row in _rows(path):
        stamp = (row.get("TIMESTAMP") or "").strip()
        try:
            # 100 ns resolution: seven fractional digits, more than datetime's six.
            whole, _, fraction = stamp.partition(".")
            at = (datetime.fromisoformat(whole) - epoch).total_seconds() + float(f"0.{fraction or 0}")
        except ValueError:
            raise TraceError(f"{path}, line {line}, column 'TIMESTAMP': {stamp!r} is not a timestamp") from None
        context = _number(path, line, row, "ContextTokens")
        generated = _number(path, line, row, "GeneratedTokens")
        seconds = context / LLM_PREFILL_TOKENS_PER_SECOND + generated / LLM_DECODE_TOKENS_PER_SECOND
        yield Upload(at, name, 1, max(seconds, MIN_ROW_SECONDS))


def read_alibaba(path: Path) -> Iterator[Upload]:
    """One job type per `predict_type`; every request that ran (SUCCEED or FAILED) is an upload of
    `num_images_per_prompt` rows sharing its `exec_time_seconds`; times are seconds after 2024-11-15 00:00."""
    epoch = datetime(2024, 11, 15)
    for line, row in _rows(path):
        if (row.get("predict_status") or "") not in ALIBABA_RAN:
            continue
        stamp = (row.get("gmt_create") or "").strip()
        try:
            at = (datetime.fromisoformat(stamp) - epoch).total_seconds()
        except ValueError:
            raise TraceError(f"{path}, line {line}, column 'gmt_create': {stamp!r} is not a timestamp") from None
        images = max(int(_number(path, line, row, "num_images_per_prompt", minimum=1)), 1)
        seconds = _number(path, line, row, "exec_time_seconds")
        name = (row.get("predict_type") or "genai").strip().lower().replace("_", "-")
        yield Upload(at, name, images, max(seconds / images, MIN_ROW_SECONDS))


READERS = {
    Format.PROJECT: read_project,
    Format.AZURE_FUNCTIONS: read_azure_functions,
    Format.AZURE_LLM: read_azure_llm,
    Format.ALIBABA: read_alibaba,
}

ASSUMPTIONS: dict[Format, dict[str, str]] = {
    Format.PROJECT: {"trace": "one upload per line, handler time per row as given"},
    Format.AZURE_FUNCTIONS: {
        "trace": "one job type per function; each non-zero minute is one upload of that minute's invocations, "
        f"arriving at a random second of the minute (seed {AZURE_OFFSET_SEED})",
        "handler_time": f"every row takes the function's average duration (column Average, ms; "
        f"at least {MIN_ROW_SECONDS * 1000:g} ms)",
    },
    Format.AZURE_LLM: {
        "trace": "one job type per file; every request is an upload of one row",
        "handler_time": f"context tokens / {LLM_PREFILL_TOKENS_PER_SECOND:g} + generated tokens / "
        f"{LLM_DECODE_TOKENS_PER_SECOND:g} seconds per request (the trace has no service time)",
    },
    Format.ALIBABA: {
        "trace": "one job type per predict_type; every request that ran (SUCCEED or FAILED) is one upload of "
        "num_images_per_prompt rows",
        "handler_time": "the request's exec_time_seconds shared equally by its images",
    },
}

"""Check a spooled CSV file completely and turn its rows into JSON message bodies.

The whole file is checked before the first row is published, so a bad file
publishes nothing. Two passes over the spooled bytes keep memory flat however
large the file is:

1. `check_encoding` reads raw chunks: it recognises binary files (a PNG renamed
   .csv), UTF-16, NUL bytes and invalid UTF-8, with the line and byte offset.
2. `convert_rows` parses the CSV (quotes, commas and newlines inside quoted
   fields are CSV's business, not ours), checks the header and every row's
   field count, and writes one compact JSON object per line to `bodies`
   (after the line of the file the row starts on), ready for the publisher to
   send without parsing again. It holds no record larger
   than its limit in memory and writes no body past the limits of `RowLimits`
   (header size, message size, bodies against the upload's size), and, when
   the job type names its `columns`, refuses a header that lacks one.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import BinaryIO, TextIO

from common.outcomes import MAX_LINE
from producer.errors import InvalidCsv, NotCsvText, UploadTooLarge
from producer.limits import RowLimits, charge_spool, human_bytes

CHUNK = 1024 * 1024
BINARY_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"GIF8": "a GIF image",
    b"\xff\xd8\xff": "a JPEG image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive (an .xlsx workbook is one: export it as CSV)",
    b"\x1f\x8b": "a gzip archive",
}
UTF16_BOMS = {codecs.BOM_UTF16_LE: "UTF-16 (little-endian)", codecs.BOM_UTF16_BE: "UTF-16 (big-endian)"}


@dataclass(frozen=True)
class ConvertedUpload:
    header: list[str]
    rows: int
    #: The line the first data row starts on. Every row's own line is in the bodies file, and travels with
    #: its message, so nothing here grows with the file's shape (a blank line after every row costs nothing).
    first_line: int


def _sniff(first: bytes) -> None:
    for bom, name in UTF16_BOMS.items():
        if first.startswith(bom) and not first.startswith(codecs.BOM_UTF32_LE):
            raise NotCsvText(f"the file is {name} text; save it as UTF-8 and upload it again")
    for signature, name in BINARY_SIGNATURES.items():
        if first.startswith(signature):
            raise NotCsvText(f"this is {name}, not a CSV file")


def check_encoding(source: BinaryIO) -> None:
    """Refuse empty, binary, NUL-carrying or non-UTF-8 content, saying where."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    line = 1
    first = True
    while chunk := source.read(CHUNK):
        if first:
            _sniff(chunk)
            first = False
        nul = chunk.find(b"\x00")
        if nul >= 0:
            where = line + chunk.count(b"\n", 0, nul)
            raise InvalidCsv(f"line {where}: NUL byte at byte offset {offset + nul}; CSV text cannot contain NUL bytes")
        buffered = len(decoder.getstate()[0])
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as error:
            position = max(error.start - buffered, 0)
            where = line + chunk.count(b"\n", 0, position)
            bad = chunk[position : position + 1].hex() or "??"
            raise NotCsvText(
                f"line {where}: not UTF-8 text (byte 0x{bad} at byte offset {offset + position}); "
                "save the file as UTF-8 and upload it again",
            ) from error
        offset += len(chunk)
        line += chunk.count(b"\n")
    if first:
        raise InvalidCsv("the file is empty; the first line must be a header")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        raise NotCsvText(f"line {line}: the file ends in the middle of a UTF-8 character") from error


def _check_header(header: list[str]) -> None:
    if not header or header == [""]:
        raise InvalidCsv("line 1: the header is empty; the first line must name the columns")
    seen: dict[str, int] = {}
    for column, name in enumerate(header, start=1):
        if not name.strip():
            raise InvalidCsv(f"line 1: column {column} of the header has no name")
        if name in seen:
            raise InvalidCsv(f"line 1: the header names {name!r} twice (columns {seen[name]} and {column})")
        seen[name] = column


def body_template(header: list[str]) -> str:
    """A %-template of the JSON object for one row, with the header's keys already encoded.

    Encoding each value with json's own C string encoder into this template is
    about three times faster than json.dumps of a dict per row, and gives the
    same text (tests compare the bodies with the original rows).
    """
    fields = ",".join(encode_basestring(name).replace("%", "%%") + ":%s" for name in header)
    return "{" + fields + "}\n"


class _RecordTooLong(Exception):
    """The record being read passed its size limit; `_rows` says which line and which limit."""


class _BoundedLines:
    """The text's lines for csv.reader, refusing a record longer than `limit` characters before it is read whole.

    csv.reader would otherwise hold a record of any size in memory (a 1 GiB
    line, or a quoted field spanning a million lines) before we could look at
    it. `record` counts the characters of the record being read; `_rows`
    resets it after each record and sets `limit` (the header's, then a row's).
    """

    def __init__(self, text: TextIO, limit: int) -> None:
        self.readline = text.readline
        self.limit = limit
        self.record = 0

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        line = self.readline(self.limit - self.record + 1)
        if not line:
            raise StopIteration
        self.record += len(line)
        if self.record > self.limit:
            raise _RecordTooLong
        return line


def _too_long(start: int, limits: RowLimits) -> InvalidCsv:
    if start == 1:
        return InvalidCsv(
            f"line 1: the header is longer than the limit of {human_bytes(limits.max_header_bytes)} "
            "(PRODUCER_MAX_HEADER_BYTES); nothing was queued",
        )
    return InvalidCsv(
        f"line {start}: the row is longer than the limit of {human_bytes(limits.max_message_bytes)} per message "
        "(PRODUCER_MAX_MESSAGE_BYTES); nothing was queued",
    )


def _csv_error(start: int, error: csv.Error) -> InvalidCsv:
    message = str(error)
    if "field larger than field limit" in message:
        limit = csv.field_size_limit()
        return InvalidCsv(
            f"line {start}: a field is longer than the limit of {limit} characters (PRODUCER_MAX_FIELD_BYTES)"
        )
    if "unexpected end of data" in message or "EOF" in message:
        return InvalidCsv(f"line {start}: a quoted field is never closed (unterminated quote)")
    return InvalidCsv(f"line {start}: not valid CSV: {message}")


def _rows(text: TextIO, limits: RowLimits):
    """Yield (first line number, fields) of every non-blank record, translating csv's errors."""
    lines = _BoundedLines(text, limits.max_header_bytes)
    reader = csv.reader(lines, strict=True)
    while True:
        start = reader.line_num + 1
        lines.record = 0
        try:
            fields = next(reader)
        except StopIteration:
            return
        except _RecordTooLong:
            raise _too_long(start, limits) from None
        except csv.Error as error:
            raise _csv_error(start, error) from error
        if fields:
            if len(fields) > limits.max_columns:
                raise InvalidCsv(
                    f"line {start}: {len(fields)} fields, more than the limit of {limits.max_columns} "
                    "(PRODUCER_MAX_COLUMNS)",
                )
            yield start, fields
            lines.limit = limits.max_message_bytes


def check_columns(header: list[str], expected: list[str] | None) -> None:
    """Refuse a header that lacks one of the type's expected columns, naming it (and a near miss)."""
    for name in expected or ():
        if name in header:
            continue
        near = [column for column in header if column.strip().lower() == name.strip().lower()]
        hint = f" (the file has {near[0]!r}: check spaces and case)" if near else ""
        raise InvalidCsv(
            f"line 1: the header has no column {name!r}{hint}; this job type expects {', '.join(map(repr, expected))}",
        )


class _BodyMeter:
    """Counts the bytes of bodies written, refusing a message or a total over its limit before it is written."""

    def __init__(self, limits: RowLimits, upload_bytes: int) -> None:
        self.limits = limits
        self.max_total = limits.max_body_bytes(upload_bytes)
        self.upload_bytes = upload_bytes
        self.total = 0
        self.uncharged = 0

    def add(self, line: int, body: str) -> None:
        size = len(body) if body.isascii() else len(body.encode())
        if size - 1 > self.limits.max_message_bytes:
            raise InvalidCsv(
                f"line {line}: the row's message would be {human_bytes(size - 1)}, more than the limit of "
                f"{human_bytes(self.limits.max_message_bytes)} per message (PRODUCER_MAX_MESSAGE_BYTES); "
                "nothing was queued",
            )
        self.total += size
        if self.total > self.max_total:
            raise UploadTooLarge(
                f"line {line}: the rows' messages would take more than {human_bytes(self.max_total)}, "
                f"{self.limits.max_spool_ratio:g} times the upload's {human_bytes(self.upload_bytes)} "
                "(PRODUCER_MAX_SPOOL_RATIO: every message repeats the header's names); nothing was queued",
            )
        self.uncharged += size
        if self.uncharged >= CHUNK:
            self.flush()

    def flush(self) -> None:
        charge_spool(self.uncharged)
        self.uncharged = 0


def convert_rows(
    source: BinaryIO, bodies: BinaryIO, limits: RowLimits, columns: list[str] | None = None
) -> ConvertedUpload:
    """Validate every row of `source` and write one UTF-8 JSON body per line to `bodies`.

    Bodies are written as bytes so the publisher sends each line as it is, with
    no decoding or encoding on the hot path.
    """
    upload_bytes = os.fstat(source.fileno()).st_size
    text = io.TextIOWrapper(source, encoding="utf-8-sig", newline="")
    out = io.TextIOWrapper(bodies, encoding="utf-8", newline="\n")
    rows = _rows(text, limits)
    first = next(rows, None)
    if first is None:
        raise InvalidCsv("the file has no header; the first line must name the columns")
    header = first[1]
    _check_header(header)
    check_columns(header, columns)
    width = len(header)
    count = 0
    write = out.write
    meter = _BodyMeter(limits, upload_bytes)
    template = body_template(header)
    first_line = 0
    for line, fields in rows:
        if len(fields) != width:
            raise InvalidCsv(
                f"line {line}: {len(fields)} fields, but the header has {width}; "
                "quote fields that contain commas or newlines",
            )
        if line > MAX_LINE:
            raise UploadTooLarge(f"line {line}: more lines than the {MAX_LINE} a row's line number can say")
        body = template % tuple(map(encode_basestring, fields))
        meter.add(line, body)
        write(f"{line} ")
        write(body)
        count += 1
        first_line = first_line or line
    if count == 0:
        raise InvalidCsv("the file has a header but no data rows")
    meter.flush()
    out.flush()
    out.detach()
    text.detach()
    return ConvertedUpload(header=header, rows=count, first_line=first_line)

"""`python -m uploads.cli`: submit a CSV file and follow it, or list recent uploads (what manage.sh calls).

    submit FILE [JOB_TYPE] [--wait]   upload with an Idempotency-Key; retried with the same key after a 503,
                                      a 429 or a dropped connection, so a retry finishes the same upload;
                                      --wait shows a progress bar until the upload is final
    list [--job-type T] [--state S]   recent uploads, newest first

Exit codes: 0 done with every row succeeded; 1 done with dead rows (the
failed-row report's URL is printed); 2 refused or unreachable; 3 cancelled.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import httpx

from common.auth import client_token
from uploads.model import UploadState

RETRYABLE = {429, 503}
BAR_WIDTH = 40
FINAL_STATES = (UploadState.DONE, UploadState.CANCELLED)


class CliError(Exception):
    """Refused or unreachable: printed, exit 2."""


def _client(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    return httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=httpx.Timeout(600, connect=5))


# submit ------------------------------------------------------------------------------------
def submit(args: argparse.Namespace, out: TextIO) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    key = args.key or f"cli-{uuid.uuid4().hex}"
    with _client(args) as client:
        answer = _upload_with_retries(client, path, args.job_type, key, args.attempts, out)
        print(
            f"queued {answer['rows']} rows of {path.name} for {answer['job_type']}: upload {answer['upload_id']}",
            file=out,
        )
        if not args.wait:
            return 0
        return _follow(client, answer["status_url"], args.interval, out)


def _upload_with_retries(
    client: httpx.Client, path: Path, job_type: str | None, key: str, attempts: int, out: TextIO
) -> dict[str, Any]:
    data = {"job_type": job_type} if job_type else {}
    for attempt in range(1, attempts + 1):
        try:
            with path.open("rb") as file:
                response = client.post(
                    "/upload",
                    files={"file": (path.name, file, "text/csv")},
                    data=data,
                    headers={"Idempotency-Key": key},
                )
        except httpx.TransportError as error:
            problem, wait = f"the producer is unreachable or hung up: {error}", 2.0**attempt
        else:
            if response.status_code == 200:
                return response.json()
            if response.status_code not in RETRYABLE:
                raise CliError(f"refused ({response.status_code}): {_error(response)}")
            problem, wait = f"{response.status_code}: {_error(response)}", float(response.headers.get("Retry-After", 5))
        if attempt < attempts:
            print(f"{problem}; retrying in {wait:g} s with the same Idempotency-Key ({attempt}/{attempts})", file=out)
            time.sleep(min(wait, 60))
    raise CliError(f"gave up after {attempts} attempts: {problem}; retry later with --key {key} to finish this upload")


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:300]


def _follow(client: httpx.Client, status_url: str, interval: float, out: TextIO) -> int:
    tty = out.isatty()
    last_line = 0.0
    while True:
        record = _get(client, status_url)
        finished = record["state"] in FINAL_STATES and record["pending"] == 0
        if tty or finished or time.monotonic() - last_line >= 5:
            print(("\r" if tty else "") + progress_line(record), end="" if tty and not finished else "\n", file=out)
            out.flush()
            last_line = time.monotonic()
        if finished:
            return _verdict(record, client, out)
        time.sleep(interval)


def _get(client: httpx.Client, path: str) -> dict[str, Any]:
    try:
        response = client.get(path)
    except httpx.TransportError as error:
        raise CliError(f"the producer is unreachable: {error}") from error
    if response.status_code != 200:
        raise CliError(f"{path}: {response.status_code} {_error(response)}")
    return response.json()


def progress_line(record: dict[str, Any]) -> str:
    """`[####==xx..] 812/1000 state, 40.2 rows/s, ETA 5 s` (# succeeded, = retrying, x dead, - cancelled).

    An orphaned upload's line ends with the reason (its type left the config, its queue is gone)."""
    rows = max(record["rows"], 1)
    cells = ""
    for key, mark in (("succeeded", "#"), ("retrying", "="), ("dead", "x"), ("cancelled", "-")):
        cells += mark * round(BAR_WIDTH * record[key] / rows)
    bar = cells[:BAR_WIDTH].ljust(BAR_WIDTH, ".")
    done = record["rows"] - record["pending"]
    eta = record.get("eta_seconds")
    eta_text = f", ETA {eta:.0f} s" if eta else ""
    extra = "".join(f", {record[key]} {key}" for key in ("dead", "cancelled") if record[key])
    if record.get("orphaned_reason"):
        extra += f": {record['orphaned_reason']}"
    return f"[{bar}] {done}/{record['rows']} {record['state']}, {record['rows_per_second']:.1f} rows/s{eta_text}{extra}"


def _verdict(record: dict[str, Any], client: httpx.Client, out: TextIO) -> int:
    if record["state"] == UploadState.CANCELLED:
        print(f"cancelled: {record['succeeded']} succeeded, {record['cancelled']} not handled", file=out)
        return 3
    if record["dead"]:
        url = f"{client.base_url}{record['failed_rows_url'].lstrip('/')}"
        print(f"{record['dead']} rows failed for good; the failed rows: {url}", file=out)
        return 1
    print(f"done: all {record['rows']} rows succeeded", file=out)
    return 0


# list --------------------------------------------------------------------------------------
def list_uploads(args: argparse.Namespace, out: TextIO) -> int:
    params = {key: value for key, value in (("job_type", args.job_type), ("state", args.state)) if value}
    with _client(args) as client:
        uploads = _get(client, "/uploads?" + str(httpx.QueryParams({**params, "limit": args.limit})))["uploads"]
    if not uploads:
        print("no uploads yet", file=out)
        return 0
    print(f"{'upload':32}  {'type':12} {'state':10} {'rows':>8} {'ok':>8} {'dead':>6} {'cancel':>6}  file", file=out)
    for item in uploads:
        print(
            f"{item['id']:32}  {item['job_type'][:12]:12} {item['state']:10} {item['rows']:>8} "
            f"{item['succeeded']:>8} {item['dead']:>6} {item['cancelled']:>6}  {item['file_name']}",
            file=out,
        )
    return 0


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog="python -m uploads.cli", description="Submit CSV uploads and follow them.")
    parse.add_argument("--url", default=os.environ.get("PRODUCER_URL", "http://127.0.0.1:8000"), help="the producer")
    parse.add_argument(
        "--token", default=client_token(), help="default: $PRODUCER_TOKEN, else .run/producer.token (./manage.sh up)"
    )
    commands = parse.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("submit", help="upload a CSV file")
    sub.add_argument("file")
    sub.add_argument("job_type", nargs="?", help="default: the config's default type")
    sub.add_argument("--wait", action="store_true", help="follow the upload until it is final")
    sub.add_argument("--key", help="Idempotency-Key (default: a new one; pass the printed one to finish a retry)")
    sub.add_argument("--attempts", type=int, default=5, help="tries after a 503, 429 or dropped connection")
    sub.add_argument("--interval", type=float, default=1.0, help="seconds between progress updates")
    sub.set_defaults(run=submit)
    listing = commands.add_parser("list", help="recent uploads, newest first")
    listing.add_argument("--job-type")
    listing.add_argument("--state")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(run=list_uploads)
    return parse


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args, out)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

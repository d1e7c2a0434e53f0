"""`./manage.sh replay TRACE`: the same trace through the real local stack, measured, beside the simulation.

Every upload of the trace is sent at its (sped-up) time to one real job type
whose handler is `sleep` (a CSV with a `sleep_ms` column, one row per trace
row, each carrying its own handler time), all trace types mapped onto that
one. While it runs, the scaler's status is polled for its worker records;
afterwards the figures come from the real system: worker-seconds from each
worker's start (the scaler's record) to its "worker stopped" log line, row
wait from each "processed" log line (handler start = its time minus its
duration) against the moment its upload was sent, completion from an
upload's last row. The simulator then replays the uploads at the times they
were really sent, with the stack's own settings for the type, and both are
printed side by side. Workers must log per-row lines (WORKER_LOG_LEVEL=debug).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from common.config import JobType, load_config
from scaler.settings import DEFAULT_STATE_DIR
from simulator.config import settings_of
from simulator.engine import Assumptions, run_policy
from simulator.results import QUANTILES, policy_document
from simulator.traces import Trace, TraceError, Upload, load

#: How often the scaler's status is read for worker records while the replay runs.
STATUS_POLL_SECONDS = 0.25
#: Two rows of one worker closer than this are back to back (the gap is per-row overhead, not idle time).
OVERHEAD_GAP_SECONDS = 0.05
#: The type's settings a replay's result records.
REPLAY_SETTINGS = ("threshold", "burst_size", "max_workers", "min_workers", "idle_seconds", "prefetch", "concurrency")
#: After the last upload, how long the rows and the scale-down may take beyond the type's idle_seconds.
SETTLE_SECONDS = 120.0


class ReplayError(RuntimeError):
    """The stack refused an upload, never finished the rows, or its workers log no per-row lines."""


@dataclass
class Sent:
    upload_id: str
    at: float  # wall-clock time the upload was sent
    rows: int
    row_seconds: float
    answered: float = 0.0  # wall-clock time the producer answered (every row confirmed in the queue)


@dataclass
class Measured:
    """What the real system did."""

    worker_seconds: float
    wait: list[float]
    completion: list[float]
    peak_workers: int
    starts: int
    rows: int
    sent: list[Sent] = field(default_factory=list)
    #: The scaler's tick interval, as its status reported it.
    tick_seconds: float = 1.0
    #: Median seconds from a worker's start (the scaler's record) to its "consuming" line: this machine's
    #: worker start latency during the replay.
    start_latency: float | None = None
    #: Mean seconds a worker spends between two back-to-back rows beyond the handler (ack, report, next
    #: delivery): the mean, as it is what throughput depends on.
    row_overhead: float | None = None

    def figures(self) -> dict[str, Any]:
        wait = np.percentile(self.wait, [q * 100 for q in QUANTILES]) if self.wait else [0.0] * 3
        done = np.percentile(self.completion, [q * 100 for q in QUANTILES]) if self.completion else [0.0] * 3
        return {
            "worker_seconds": round(self.worker_seconds, 3),
            "wait_seconds": {f"p{round(q * 100)}": round(float(v), 3) for q, v in zip(QUANTILES, wait, strict=True)},
            "completion_seconds": {
                f"p{round(q * 100)}": round(float(v), 3) for q, v in zip(QUANTILES, done, strict=True)
            },
            "peak_workers": self.peak_workers,
            "starts": self.starts,
            "rows": self.rows,
            "worker_start_seconds": round(self.start_latency, 4) if self.start_latency is not None else None,
            "row_overhead_seconds": round(self.row_overhead, 4) if self.row_overhead is not None else None,
        }


class WorkerWatch:
    """Polls the scaler's status in a thread: when each worker of the type was started, and the peak alive."""

    def __init__(self, scaler_url: str, headers: dict[str, str], job_type: str, logs: LogCollector) -> None:
        self.url = f"{scaler_url}/api/status"
        self.logs = logs
        self.headers = headers
        self.job_type = job_type
        self.started: dict[str, float] = {}
        self.peak = 0
        self.tick_seconds: float | None = None
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-watch", daemon=True)

    def __enter__(self) -> WorkerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=5) as client:
            while not self._stop.is_set():
                self.poll(client)
                self.logs.collect()
                self._stop.wait(STATUS_POLL_SECONDS)

    def poll(self, client: httpx.Client) -> list[dict[str, Any]]:
        """One read of the status; returns the type's live workers (an unreadable status counts as an error)."""
        try:
            response = client.get(self.url)
            response.raise_for_status()
            status = response.json()
        except (httpx.HTTPError, ValueError):
            self.errors += 1
            return []
        self.tick_seconds = (status.get("tick") or {}).get("interval", self.tick_seconds)
        live = [
            w for w in status.get("workers", []) if w.get("job_type") == self.job_type and w.get("finished_at") is None
        ]
        for worker in status.get("workers", []):
            if worker.get("job_type") == self.job_type and isinstance(worker.get("started_at"), int | float):
                self.started.setdefault(worker["id"], float(worker["started_at"]))
        self.peak = max(self.peak, len(live))
        return live


def send(producer_url: str, headers: dict[str, str], job_type: str, upload: Upload) -> Sent:
    """POST one upload: `rows` rows, each with the upload's handler time in `sleep_ms`."""
    body = "sleep_ms\n" + f"{upload.row_seconds * 1000:.3f}\n" * upload.rows
    at = time.time()
    response = httpx.post(
        f"{producer_url}/submit/{job_type}",
        content=body.encode(),
        headers={"Content-Type": "text/csv", **headers},
        timeout=60,
    )
    if response.status_code >= 300:
        raise ReplayError(f"upload refused: HTTP {response.status_code}: {response.text[:200]}")
    return Sent(response.json()["upload_id"], at, upload.rows, upload.row_seconds, time.time())


class LogCollector:
    """Reads the new lines of every worker log of a type as they are written (a finished worker's log may be
    deleted later by the scaler's log bounds, so it is read while it is there)."""

    def __init__(self, logs: Path, job_type: str) -> None:
        self.logs = logs
        self.job_type = job_type
        self.offsets: dict[Path, int] = {}
        self.entries: list[dict[str, Any]] = []
        self.processed = 0
        self._lock = threading.Lock()

    def collect(self) -> None:
        with self._lock:
            for path in sorted(self.logs.glob("*.log")):
                self._read(path)

    def _read(self, path: Path) -> None:
        try:
            with path.open("rb") as handle:
                handle.seek(self.offsets.get(path, 0))
                data = handle.read()
        except OSError:
            return  # deleted between the listing and the read
        complete = data.rfind(b"\n") + 1
        self.offsets[path] = self.offsets.get(path, 0) + complete
        for line in data[:complete].decode(errors="replace").splitlines():
            entry = _json_line(line)
            if entry is not None and entry.get("job_type") == self.job_type:
                self.entries.append(entry)
                self.processed += entry.get("event") == "processed"


def _json_line(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def measure(entries: Iterable[dict[str, Any]], sent: list[Sent], started: dict[str, float], peak: int) -> Measured:
    """The real figures from the worker logs and the watched worker records."""
    by_id = {s.upload_id: s for s in sent}
    first: dict[str, float] = {}
    stopped: dict[str, float] = {}
    consuming: dict[str, float] = {}
    previous: dict[str, float] = {}
    gaps: list[float] = []
    waits: list[float] = []
    last_done: dict[str, float] = {}
    for entry in entries:
        worker, ts = entry.get("worker_id"), float(entry.get("ts", 0))
        first.setdefault(worker, ts)
        stopped[worker] = ts  # the last line; "worker stopped" when it ended normally
        if entry.get("event") == "consuming":
            consuming.setdefault(worker, ts)
        if entry.get("event") != "processed":
            continue
        upload_id = str(entry.get("message_id", "")).rpartition(":")[0]
        if upload_id not in by_id:
            continue
        start = ts - float(entry.get("duration_ms", 0)) / 1000
        if worker in previous and start - previous[worker] < OVERHEAD_GAP_SECONDS:  # back to back, not idle
            gaps.append(max(start - previous[worker], 0.0))
        previous[worker] = ts
        waits.append(max(start - by_id[upload_id].answered, 0.0))
        last_done[upload_id] = max(last_done.get(upload_id, 0.0), ts)
    worker_seconds = sum(stopped[w] - started.get(w, first[w]) for w in first)
    completion = [max(last_done[u] - by_id[u].answered, 0.0) for u in last_done]
    latencies = [consuming[w] - started[w] for w in consuming if w in started]
    latency = float(np.median(latencies)) if latencies else None
    overhead = float(np.mean(gaps)) if gaps else None
    return Measured(
        worker_seconds,
        waits,
        completion,
        peak,
        len(first),
        len(waits),
        sent,
        start_latency=latency,
        row_overhead=overhead,
    )


def replay(
    trace: Trace,
    job_type: JobType,
    producer_url: str,
    scaler_url: str,
    headers: dict[str, str],
    logs: Path,
    progress: Callable[[str], None] = lambda text: None,
) -> Measured:
    """Send the trace's uploads at their times, wait for every row and for the workers to scale to zero."""
    total = trace.rows
    collector = LogCollector(logs, job_type.name)
    with WorkerWatch(scaler_url, headers, job_type.name, collector) as watch:
        origin = time.time()
        sent = []
        for number, upload in enumerate(trace.uploads, start=1):
            delay = origin + upload.at - time.time()
            if delay > 0:
                time.sleep(delay)
            sent.append(send(producer_url, headers, job_type.name, upload))
            if number % 50 == 0:
                progress(f"sent {number}/{len(trace.uploads)} uploads")
        deadline = time.time() + SETTLE_SECONDS + job_type.idle_seconds
        with httpx.Client(headers=headers, timeout=5) as client:
            while time.time() < deadline:
                collector.collect()
                done = collector.processed
                if done >= total and not watch.poll(client):
                    break
                time.sleep(0.5)
            else:
                raise ReplayError(
                    f"the stack did not finish within {SETTLE_SECONDS + job_type.idle_seconds:.0f} s of the last "
                    f"upload (rows handled {done} of {total}); do its workers log per-row lines "
                    "(WORKER_LOG_LEVEL=debug)?"
                )
    collector.collect()
    measured = measure(collector.entries, sent, watch.started, watch.peak)
    measured.tick_seconds = watch.tick_seconds or 1.0
    return measured


def simulate_sent(measured: Measured, job_type: JobType, trace: Trace) -> dict[str, Any]:
    """The simulator's figures for the uploads exactly as the stack accepted them (same times, same type
    settings, the scaler's tick interval and the worker start latency measured during the replay)."""
    origin = measured.sent[0].answered
    uploads = [Upload(s.answered - origin, job_type.name, s.rows, s.row_seconds) for s in measured.sent]
    sent_trace = Trace(trace.paths, trace.format, uploads, trace.start_seconds, None, trace.speedup, trace.assumptions)
    assumptions = Assumptions.for_backend(
        "local",
        tick_seconds=measured.tick_seconds,
        worker_start_seconds=measured.start_latency,
        row_overhead_seconds=measured.row_overhead,
    )
    outcome = run_policy("project", sent_trace, {job_type.name: job_type}, assumptions)
    return policy_document(outcome)["total"]


def compare(real: dict[str, Any], simulated: dict[str, Any]) -> dict[str, float]:
    """Simulated / real - 1 of worker-seconds and p95 row wait."""
    return {
        "worker_seconds": simulated["worker_seconds"] / real["worker_seconds"] - 1,
        "wait_p95": simulated["wait_seconds"]["p95"] / max(real["wait_seconds"]["p95"], 1e-9) - 1,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="./manage.sh replay", description=__doc__.splitlines()[0])
    p.add_argument("trace", nargs="+")
    p.add_argument("--format")
    p.add_argument("--speedup", type=float, default=1.0)
    p.add_argument("--start", type=float, default=0.0)
    p.add_argument("--hours", type=float)
    p.add_argument("--job-type", default="sleep", help="the real type (sleep handler) every upload goes to")
    p.add_argument("--config", default=os.environ.get("JOBS_CONFIG", "jobs.config.json"))
    p.add_argument("--producer", default=f"http://{os.environ.get('PRODUCER_ADDR', '127.0.0.1:8000')}")
    p.add_argument("--scaler", default=f"http://{os.environ.get('SCALER_ADDR', '127.0.0.1:8080')}")
    p.add_argument("--state-dir", default=os.environ.get("SCALER_STATE_DIR", str(DEFAULT_STATE_DIR)))
    p.add_argument("--out", help="write real and simulated figures to DIR/replay.json")
    args = p.parse_args(argv)
    try:
        trace = load(args.trace, args.format, args.start, args.hours, args.speedup)
        job_type = load_config(args.config).get(args.job_type)
        if job_type is None:
            raise TraceError(f"{args.config}: no job type {args.job_type!r} (give --job-type)")
    except (TraceError, ValueError) as error:
        print(f"replay: {error}", file=sys.stderr)
        return 2
    token = os.environ.get("PRODUCER_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    print(f"replaying {len(trace.uploads)} uploads ({trace.rows} rows) over {trace.duration:.0f} s to {job_type.name}")
    try:
        measured = replay(trace, job_type, args.producer, args.scaler, headers, Path(args.state_dir) / "logs", print)
    except (ReplayError, httpx.HTTPError) as error:
        print(f"replay: {error}", file=sys.stderr)
        return 1
    real = measured.figures()
    simulated = simulate_sent(measured, job_type, trace)
    print(comparison_table(real, simulated))
    if args.out:
        window = f"from {args.start:g} s" + (f", {args.hours:g} h" if args.hours is not None else "")
        document = {
            "trace": f"{', '.join(Path(path).name for path in trace.paths)}, {window}, speedup {args.speedup:g}",
            "attribution": trace.attribution,
            "settings": settings_of(job_type, REPLAY_SETTINGS),
            "real": real,
            "simulated": simulated,
            "difference": compare(real, simulated),
        }
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "replay.json").write_text(json.dumps(document, indent=1) + "\n")
    return 0


def comparison_table(real: dict[str, Any], simulated: dict[str, Any]) -> str:
    rows = [("worker-seconds", real["worker_seconds"], simulated["worker_seconds"])]
    for q in ("p50", "p95", "p99"):
        rows.append((f"row wait {q} (s)", real["wait_seconds"][q], simulated["wait_seconds"][q]))
    rows.append(("completion p95 (s)", real["completion_seconds"]["p95"], simulated["completion_seconds"]["p95"]))
    rows.append(("peak workers", real["peak_workers"], simulated["peak_workers"]))
    rows.append(("worker starts", real["starts"], simulated["starts"]))
    lines = [f"{'':<22} {'real':>12} {'simulated':>12}"]
    lines += [f"{name:<22} {a:>12,.2f} {b:>12,.2f}" for name, a, b in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

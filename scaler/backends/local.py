"""Workers as local processes: the default backend, for one machine.

Each worker is a process in a session of its own, with its output in one log
file: forked from its type's warm template (scaler.backends.templates), or,
for a type with a custom `command` or while its template is not ready, a new
process running the type's command (default `python -m workers <type>`).
Either way it gets only the environment a worker needs
(scaler.backends.worker_environment), its type's validated settings included.
A small JSON record per worker (pid and the process's start time) lives in the
state directory, so a scaler that is restarted while workers run adopts them
instead of starting duplicates, and never mistakes a recycled pid for a
worker. Finished workers stay listed for a minute (the dashboard shows how they
ended), then their records are dropped; their logs are kept within bounds
(scaler.backends.worker_logs).
"""

from __future__ import annotations

import importlib.machinery
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

from common.config import DEFAULT_STOP_GRACE_SECONDS, JobType
from common.settings import REPO_ROOT
from scaler.backends.base import WorkerInfo, WorkerLogNotFound, WorkerState
from scaler.backends.local_settings import LocalSettings
from scaler.backends.templates import TemplatePool
from scaler.backends.worker_environment import worker_environment, worker_search_path
from scaler.backends.worker_logs import WorkerLogs

log = logging.getLogger(__name__)
KEEP_FINISHED_SECONDS = 60.0
#: How many lines of an exited worker's log become its failure reason.
FAILURE_LINES = 8
#: The `command` of a worker record whose process was forked from its type's template.
FORKED = "fork"


class LocalBackend:
    name = "local"

    def __init__(
        self,
        state_dir: Path,
        settings: LocalSettings | None = None,
        configured: Callable[[], Iterable[JobType]] | None = None,
    ) -> None:
        """`configured` gives the job types in force; without it (e.g. `stop-workers`) no template runs."""
        self.settings = settings or LocalSettings.from_environment()
        self.records_dir = state_dir / "workers"
        self.logs_dir = state_dir / "logs"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.logs = WorkerLogs(self.logs_dir, self.settings)
        self.configured = configured
        self.templates = TemplatePool(state_dir / "templates", self.environment) if self.settings.templates else None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.finished: dict[str, WorkerInfo] = {}
        self.kill_deadlines: dict[str, float] = {}
        # (module, *where its workers look) found once, not looked up again; a missing one is, every tick
        self.handlers_found: set[tuple[str, ...]] = set()
        self.calls = 0

    # listing ---------------------------------------------------------------
    def _records(self) -> list[dict]:
        records = []
        for path in self.records_dir.glob("*.json"):
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                log.warning("ignoring unreadable worker record %s", path)
        return records

    def _alive(self, record: dict) -> bool:
        child = self.children.get(record["worker_id"])
        if child is not None:
            return child.poll() is None
        try:
            process = psutil.Process(record["pid"])
            return abs(process.create_time() - record["create_time"]) < 1.0 and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def environment(self, job_type: JobType) -> dict[str, str]:
        env = worker_environment(job_type, os.environ, self.settings.env_passthrough)
        credential = self._credential_file(job_type)
        if credential is not None and credential.is_file():
            env.pop("RABBITMQ_URL", None)  # the scaler's own user, not the type's
            env["RABBITMQ_URLS"] = credential.read_text().strip()
        return env

    def _credential_file(self, job_type: JobType) -> Path | None:
        """Where the type's workers' own broker URL is, when the scaler hands out per-type credentials."""
        directory = self.settings.worker_credentials
        return directory / f"{job_type.name}.url" if directory is not None else None

    def list_workers(self) -> list[WorkerInfo]:
        """Live workers from their records (adopting any this process did not start), plus the recently finished.

        Also keeps the templates in line with the configured types and the logs within bounds.
        """
        self.calls += 1
        if self.templates is not None and self.configured is not None:
            self.templates.sync(self.configured())
        workers = self._list_records()
        self.logs.maybe_sweep(info.worker_id for info in workers)
        return workers + list(self.finished.values())

    def _list_records(self) -> list[WorkerInfo]:
        now = time.time()
        workers = []
        for record in self._records():
            worker_id = record["worker_id"]
            if self._alive(record):
                stopping = worker_id in self.kill_deadlines
                workers.append(
                    WorkerInfo(
                        worker_id,
                        record["job_type"],
                        WorkerState.STOPPING if stopping else WorkerState.STARTING,
                        record["started_at"],
                        details={"pid": str(record["pid"]), "log": record["log"]},
                    )
                )
                continue
            child = self.children.pop(worker_id, None)
            code = child.returncode if child is not None else self._forked_exit_code(worker_id)
            state = WorkerState.SUCCEEDED if code == 0 else WorkerState.FAILED
            self.finished[worker_id] = WorkerInfo(
                worker_id,
                record["job_type"],
                state,
                record["started_at"],
                finished_at=now,
                exit_code=code,
                failure_reason=last_lines(Path(record["log"])) if code not in (0, None) else None,
                details={"pid": str(record["pid"]), "log": record["log"]},
            )
            self.kill_deadlines.pop(worker_id, None)
            (self.records_dir / f"{worker_id}.json").unlink(missing_ok=True)
            log.log(
                logging.INFO if code in (0, None) else logging.WARNING,
                "worker %s (%s) exited with %s",
                worker_id,
                record["job_type"],
                "an unknown code (adopted)" if code is None else code,
            )
        for worker_id, info in list(self.finished.items()):
            if now - (info.finished_at or now) > KEEP_FINISHED_SECONDS:
                del self.finished[worker_id]
        return workers

    def _forked_exit_code(self, worker_id: str) -> int | None:
        return self.templates.exit_code(worker_id) if self.templates is not None else None

    def check(self, job_type: JobType) -> str | None:
        """A type without its broker credential, or run by the default command and whose handler module cannot
        be found where its workers will look (their environment, the type's `env` included), without importing
        it."""
        credential = self._credential_file(job_type)
        if credential is not None and not credential.is_file():
            return (
                f"no broker credential for its workers at {credential} (SCALER_WORKER_CREDENTIALS_DIR): "
                "./manage.sh up creates a broker user for every configured type"
            )
        if job_type.command is not None:
            return None
        module = handler_module(job_type)
        search_path = worker_search_path(self.environment(job_type), REPO_ROOT)
        if (module, *search_path) in self.handlers_found or find_module(module, search_path):
            self.handlers_found.add((module, *search_path))
            return None
        if "." in job_type.handler:
            return (
                f"no handler module {module} on its workers' Python path (the type's 'handler' field names it; "
                "its 'env' may add a PYTHONPATH)"
            )
        return (
            f"no handler module {module} (create workers/{job_type.handler}/handler.py with a "
            "handle(row, context) function, or name an existing module in the type's 'handler' field)"
        )

    # starting and ending ------------------------------------------------------
    def start_worker(self, job_type: JobType) -> WorkerInfo:
        worker_id = f"{job_type.name[:40]}-{time.strftime('%H%M%S')}-{secrets.token_hex(2)}"
        log_path = self.logs.path_for(worker_id)
        pid = self.templates.fork(job_type, worker_id, log_path) if self.templates is not None else None
        if pid is not None:
            command = [FORKED, job_type.name]
        else:
            command = job_type.command or [sys.executable, "-m", "workers", job_type.name]
            pid = self._spawn(worker_id, command, job_type, log_path)
        started_at = time.time()
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.Error:
            create_time = started_at
        record = {
            "worker_id": worker_id,
            "job_type": job_type.name,
            "pid": pid,
            "create_time": create_time,
            "started_at": started_at,
            "log": str(log_path),
            "command": command,
        }
        temporary = self.records_dir / f".{worker_id}.tmp"
        temporary.write_text(json.dumps(record))
        temporary.rename(self.records_dir / f"{worker_id}.json")
        log.info("started worker %s (%s), pid %d%s", worker_id, job_type.name, pid, _how(command))
        return WorkerInfo(worker_id, job_type.name, WorkerState.STARTING, started_at, details={"pid": str(pid)})

    def _spawn(self, worker_id: str, command: list[str], job_type: JobType, log_path: Path) -> int:
        """Start a new process for the worker (the plain way); returns its pid."""
        with log_path.open("ab") as output:
            child = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env={**self.environment(job_type), "WORKER_ID": worker_id},
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.children[worker_id] = child
        return child.pid

    def terminate(self, worker: WorkerInfo, job_type: JobType | None) -> None:
        """SIGTERM now (the worker stops gracefully); SIGKILL its process group once the grace period is over."""
        pid = int(worker.details.get("pid", "0"))
        if pid <= 0 or worker.state.finished:
            return
        deadline = self.kill_deadlines.get(worker.worker_id)
        grace = job_type.stop_grace_seconds if job_type else DEFAULT_STOP_GRACE_SECONDS
        try:
            if deadline is None:
                self.kill_deadlines[worker.worker_id] = time.time() + grace
                os.kill(pid, signal.SIGTERM)
                log.info(
                    "sent SIGTERM to worker %s (pid %d); SIGKILL in %.0f s if it is still running",
                    worker.worker_id,
                    pid,
                    grace,
                )
            elif time.time() >= deadline:
                os.killpg(pid, signal.SIGKILL)
                log.warning(
                    "killed worker %s (pid %d): still running %.0f s after SIGTERM", worker.worker_id, pid, grace
                )
        except ProcessLookupError:
            pass

    def read_log(self, worker_id: str, lines: int = 200) -> str:
        path = self.logs.path_for(worker_id)
        if not path.is_file():
            raise WorkerLogNotFound(worker_id)
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - lines * 400, 0))
            tail = deque(handle.read().decode("utf-8", "replace").splitlines(), maxlen=lines)
        return "\n".join(tail) + "\n"

    def close(self) -> None:
        """Templates stop; workers keep running: a restarted scaler adopts them from their records."""
        if self.templates is not None:
            self.templates.close()


def handler_module(job_type: JobType) -> str:
    """The module a worker of `job_type` imports for its handler (the runtime's convention)."""
    return job_type.handler if "." in job_type.handler else f"workers.{job_type.handler}.handler"


def find_module(dotted: str, search_path: list[str]) -> bool:
    """Whether `dotted` can be found on `search_path`, one package level at a time and without importing
    anything (so no user code runs in the scaler)."""
    path: list[str] | None = search_path
    spec = None
    for part in dotted.split("."):
        if path is None:
            return False
        spec = importlib.machinery.PathFinder.find_spec(part, path)
        if spec is None:
            return False
        path = list(spec.submodule_search_locations or []) or None
    return spec is not None


def last_lines(log_path: Path, count: int = FAILURE_LINES) -> str | None:
    """The last `count` non-empty lines of an exited worker's log: its own words for why it failed."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - 8192, 0))
            lines = [line for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return None
    return "\n".join(lines[-count:]) or None


def _how(command: list[str]) -> str:
    return ", forked from its template" if command[0] == FORKED else ""

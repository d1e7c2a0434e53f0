"""The local backend's worker templates: one warm fork server per job type (workers.template).

Templates start lazily: a type gets one when it first needs a worker (that
worker is spawned the plain way while the template imports in the
background; the tick never waits), so a type that is never used costs no
memory (a template holds about 25 MB of its own). From then on the template is
kept while the type is configured: `sync(job_types)` runs once per tick with
the configured types, restarts a template that died or whose type's settings
changed, and stops those of types no longer configured. A template that
fails before it is ready (its handler cannot be imported) is retried with
exponential backoff, and until then `fork` answers None and the backend
spawns workers the plain way, whose own exit then shows the error. Types with
a custom `command` never get a template.

Everything here runs on the control loop's thread: the pipes are read without
blocking, except for the short wait for a fork's answer or a finished
worker's exit code.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from common.config import JobType
from common.handoff import encode
from common.settings import REPO_ROOT

log = logging.getLogger(__name__)
#: Seconds to wait for a template's answer to a fork request before spawning the plain way.
FORK_ANSWER_SECONDS = 2.0
#: Seconds to wait for the exit code of a forked worker that was just seen gone.
EXIT_CODE_SECONDS = 0.5
#: Backoff of a template that failed before it was ready: first retry, doubling up to the maximum.
RETRY_SECONDS, MAX_RETRY_SECONDS = 5.0, 300.0


class Template:
    """One running template process and what it said."""

    def __init__(self, job_type: JobType, env: dict[str, str], log_path: Path) -> None:
        self.name = job_type.name
        self.signature = _signature(job_type, env)
        self.ready = False
        self.error: str | None = None
        self.exits: dict[str, int] = {}
        self.forked: set[str] = set()
        self._answers: dict[str, int] = {}
        self._pending = b""
        with log_path.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workers.template", job_type.name],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=output,
                start_new_session=True,
            )
        assert self.process.stdout is not None
        self._fd = self.process.stdout.fileno()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def read(self, timeout: float = 0.0) -> None:
        """Take in whatever the template said (waiting up to `timeout` s for something)."""
        while select.select([self._fd], [], [], timeout)[0]:
            data = _read_some(self._fd)
            if not data:
                return
            *lines, self._pending = (self._pending + data).split(b"\n")
            for line in filter(None, lines):
                self._take(json.loads(line))
            timeout = 0.0

    def _take(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self.ready = True
            log.info("worker template for %s ready (pid %d)", self.name, self.pid)
        elif "error" in message:
            self.error = str(message["error"])
        elif "started" in message:
            self._answers[message["started"]] = int(message["pid"])
        elif "exited" in message:
            self.exits[message["exited"]] = int(message["code"])

    def fork(self, worker_id: str, log_path: Path) -> int | None:
        """Ask for a worker; its pid, or None when the template did not answer in time."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"worker_id": worker_id, "log": str(log_path)}).encode() + b"\n")
            self.process.stdin.flush()
        except OSError:
            return None
        deadline = time.monotonic() + FORK_ANSWER_SECONDS
        while worker_id not in self._answers and self.alive() and time.monotonic() < deadline:
            self.read(timeout=deadline - time.monotonic())
        pid = self._answers.pop(worker_id, None)
        if pid is not None:
            self.forked.add(worker_id)
        return pid

    def exit_code(self, worker_id: str) -> int | None:
        """The exit code of a worker this template forked, waiting briefly for the news when it is not in yet."""
        deadline = time.monotonic() + EXIT_CODE_SECONDS
        while worker_id not in self.exits and self.alive() and time.monotonic() < deadline:
            self.read(timeout=deadline - time.monotonic())
        self.forked.discard(worker_id)
        return self.exits.pop(worker_id, None)

    def stop(self) -> None:
        """Close its stdin (it exits; workers it forked keep running) and reap it."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=5)


class TemplatePool:
    def __init__(self, directory: Path, environment: Callable[[JobType], dict[str, str]]) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.environment = environment
        self.templates: dict[str, Template] = {}
        #: Types that needed a worker since they were configured: they keep a template.
        self.used: set[str] = set()
        #: type -> (signature that failed, when to retry, the delay after that)
        self.backoff: dict[str, tuple[str, float, float]] = {}

    def sync(self, job_types: Iterable[JobType]) -> None:
        """Make the running templates match the configured types (see the module's docstring)."""
        configured = {job_type.name: job_type for job_type in job_types if job_type.command is None}
        self.used &= set(configured)
        for name in set(self.templates) - self.used:
            log.info("stopping the worker template for %s (no longer configured)", name)
            self.templates.pop(name).stop()
        for name in self.used:
            self._keep(configured[name])

    def _keep(self, job_type: JobType) -> None:
        env = self.environment(job_type)
        template = self.templates.get(job_type.name)
        if template is not None:
            template.read()
            if template.alive() and template.signature == _signature(job_type, env):
                return
            self._retire(template)
        failed = self.backoff.get(job_type.name)
        if failed and failed[0] == _signature(job_type, env) and time.monotonic() < failed[1]:
            return
        self.templates[job_type.name] = Template(job_type, env, self.directory / f"{job_type.name[:100]}.log")

    def _retire(self, template: Template) -> None:
        """A template that died or whose type changed: note why, stop it, back off if it never got ready."""
        del self.templates[template.name]
        why = "its settings changed" if template.alive() else f"it exited with {template.process.returncode}"
        template.stop()
        if template.ready or why == "its settings changed":
            self.backoff.pop(template.name, None)
            log.warning("restarting the worker template for %s: %s", template.name, why)
            return
        _, _, delay = self.backoff.get(template.name, ("", 0.0, RETRY_SECONDS / 2))
        delay = min(delay * 2, MAX_RETRY_SECONDS)
        self.backoff[template.name] = (template.signature, time.monotonic() + delay, delay)
        log.warning(
            "worker template for %s failed (%s); workers start the plain way, template retried in %.0f s",
            template.name,
            template.error or why,
            delay,
        )

    def fork(self, job_type: JobType, worker_id: str, log_path: Path) -> int | None:
        """Fork a worker from the type's ready template; None when there is none (spawn the plain way).

        The first request of a type starts its template for the workers after this one."""
        if job_type.command is not None:
            return None
        if job_type.name not in self.used:
            self.used.add(job_type.name)
            self._keep(job_type)
        template = self.templates.get(job_type.name)
        if template is None:
            return None
        template.read()
        if not (template.ready and template.alive()):
            return None
        if template.signature != _signature(job_type, self.environment(job_type)):
            return None
        return template.fork(worker_id, log_path)

    def exit_code(self, worker_id: str) -> int | None:
        """The exit code of a forked worker that ended, if its template (still the same process) knows it."""
        for template in self.templates.values():
            if worker_id in template.forked or worker_id in template.exits:
                return template.exit_code(worker_id)
        return None

    def close(self) -> None:
        for template in self.templates.values():
            template.stop()
        self.templates.clear()


def _signature(job_type: JobType, env: dict[str, str]) -> str:
    return encode(job_type) + json.dumps(env, sort_keys=True)


def _read_some(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""

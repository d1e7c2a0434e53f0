"""A worker template: one warm process per job type that forks workers on request.

A new worker process spends most of its start importing pika, the runtime and
its handler. The local backend instead keeps, per job type, one process that
has imported all of that once (`python -m workers.template <type>`,
started with a worker's environment) and forks a worker whenever the scaler
asks. The template holds no broker connection and no message, and runs no
thread, so a fork copies nothing that could be shared by mistake.

Protocol, one JSON object per line; the scaler writes to the template's stdin,
the template answers on its stdout:

* template -> scaler, once: `{"ready": <pid>}` after the imports, or
  `{"error": "..."}` and exit 2 when the type or its handler is unusable;
* scaler -> template: `{"worker_id": "...", "log": "/path/to/worker.log"}`;
  answer `{"started": "<worker_id>", "pid": <pid>}`;
* template -> scaler, whenever a forked worker ends: `{"exited": "<worker_id>",
  "pid": <pid>, "code": <exit code>}` (the template is the worker's parent and
  reaps it, so the scaler learns its exit code).

A forked worker starts a session of its own (the scaler signals its process
group), writes to its log file, gets its WORKER_ID and runs the normal worker
main. The template exits when its stdin closes (the scaler stopped); its
workers keep running and a restarted scaler adopts them from their records.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import sys
import traceback
from typing import Any

from common.config import JobType
from workers.__main__ import CannotStart, prepare, serve
from workers.handlers import Handler

STDIN, STDOUT = 0, 1


def _say(message: dict[str, Any]) -> None:
    os.write(STDOUT, json.dumps(message).encode() + b"\n")


class ForkServer:
    def __init__(self, job_type: JobType, handler: Handler) -> None:
        self.job_type = job_type
        self.handler = handler
        self.children: dict[int, str] = {}
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)

    def serve(self) -> int:
        """Answer requests until stdin closes; returns the template's exit code."""
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        _say({"ready": os.getpid()})
        pending = b""
        while True:
            readable, _, _ = select.select([STDIN, self.wake_read], [], [])
            if self.wake_read in readable:
                self._reap()
            if STDIN in readable:
                data = os.read(STDIN, 65536)
                if not data:
                    return 0
                *lines, pending = (pending + data).split(b"\n")
                for line in filter(None, lines):
                    self._start(json.loads(line))

    def _reap(self) -> None:
        while True:
            try:
                os.read(self.wake_read, 4096)
            except BlockingIOError:
                break
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker_id = self.children.pop(pid, "")
            _say({"exited": worker_id, "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def _start(self, request: dict[str, str]) -> None:
        worker_id, log_path = request["worker_id"], request["log"]
        pid = os.fork()
        if pid == 0:
            os._exit(self._run_child(worker_id, log_path))
        self.children[pid] = worker_id
        _say({"started": worker_id, "pid": pid})

    def _run_child(self, worker_id: str, log_path: str) -> int:
        """In the forked child: become a worker like `python -m workers` would; returns its exit code."""
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _redirect(log_path)
            os.close(self.wake_read)
            os.close(self.wake_write)
            os.environ["WORKER_ID"] = worker_id
            return serve(self.job_type, self.handler)
        except SystemExit as error:
            return error.code if isinstance(error.code, int) else 1
        except BaseException:  # noqa: BLE001 - whatever happens, the child must never return into the template
            traceback.print_exc()
            return 1
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()


def _redirect(log_path: str) -> None:
    """stdin from /dev/null, stdout and stderr appended to the worker's log file."""
    output = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    empty = os.open(os.devnull, os.O_RDONLY)
    os.dup2(empty, STDIN)
    os.dup2(output, STDOUT)
    os.dup2(output, 2)
    os.close(output)
    os.close(empty)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m workers.template <job-type>", file=sys.stderr)
        return 2
    try:
        job_type, handler = prepare(args[0])
    except CannotStart as error:
        print(f"worker template: cannot start: {error}", file=sys.stderr)
        _say({"error": str(error)})
        return 2
    return ForkServer(job_type, handler).serve()


if __name__ == "__main__":
    sys.exit(main())

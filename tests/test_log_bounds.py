"""Logs stay bounded: local workers' logs per job type, a live worker's log, the services' logs.

Real processes and real files: workers started by the local backend that
crash with output or write without pause, and the log pipe `./manage.sh up`
puts behind each service. An hour of crash loop is replayed in seconds by
writing its crash logs at the rate the old scaler produced them (210 a minute)
while the backend sweeps as it does every tick.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from common.config import parse_config
from common.log_pipe import LogPipeSettings, RotatingFile
from harness.broker import Broker
from harness.processes import REPO
from harness.stack import Stack, kill_workers_in
from harness.waiting import wait_until
from scaler.backends.base import WorkerState
from scaler.backends.local import LocalBackend
from scaler.backends.local_settings import LocalSettings

CRASH = "import sys; sys.stderr.write('Traceback: no handler module workers.new_job.handler\\n' * 400); sys.exit(2)"
CHATTY = "import time\nwhile True:\n    print('x' * 999, flush=True)\n    time.sleep(0.0002)"
MB = 1024 * 1024


def job_type(name: str, program: str):
    return parse_config({name: {"queue": f"q_{name}", "command": [sys.executable, "-c", program]}}).get(name)


def size_of(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def test_crashed_workers_leave_only_the_newest_logs_of_their_type(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path, LocalSettings(logs_per_type=5, log_sweep_seconds=0))
    crashing, other = job_type("new-job", CRASH), job_type("other", CRASH)
    started = [backend.start_worker(crashing).worker_id for _ in range(30)]
    started_other = [backend.start_worker(other).worker_id for _ in range(3)]
    wait_until(
        lambda: all(w.state is WorkerState.FAILED for w in backend.list_workers()), timeout=60, what="every crash"
    )
    backend.list_workers()
    kept = {path.stem for path in (tmp_path / "logs").glob("*.log")}
    assert kept & set(started_other) == set(started_other), "another type's logs are not its neighbour's to delete"
    assert len(kept & set(started)) == 5
    assert kept & set(started) <= set(started[-10:]), "the newest are kept (they may end in another order)"
    assert "no handler module" in backend.read_log(started[-1])


def test_an_hour_of_crash_loop_leaves_the_state_directory_under_4_mb(tmp_path: Path) -> None:
    state = tmp_path / ".run"
    backend = LocalBackend(state / "scaler", LocalSettings(log_sweep_seconds=0))
    (state / "logs").mkdir(parents=True)
    service_log = RotatingFile(state / "logs" / "scaler.log", LogPipeSettings())
    crash_log = ("Traceback (most recent call last):\n" + "  File ...\n" * 300).encode()
    for minute in range(60):
        for number in range(210):
            worker_id = f"new-job-{minute:02d}{number:04d}-{number:04x}"
            (state / "scaler" / "logs" / f"{worker_id}.log").write_bytes(crash_log)
            service_log.write(f"INFO started worker {worker_id} (new-job), pid 4242\n".encode())
            service_log.write(f"WARNING worker {worker_id} (new-job) exited with 2\n".encode() + b"." * 200 + b"\n")
        backend.list_workers()
    service_log.close()
    total = size_of(state)
    print(f"after 12,600 crashed workers: .run/ holds {total / MB:.1f} MB")
    assert total < 4 * MB, "the bound the README states for an hour of crash loop"
    assert len(list((state / "scaler" / "logs").glob("*.log"))) == LocalSettings().logs_per_type


def test_a_live_workers_log_is_cut_past_its_limit_and_keeps_being_written(tmp_path: Path) -> None:
    limit = 200_000
    backend = LocalBackend(tmp_path, LocalSettings(log_max_bytes=limit, log_sweep_seconds=0))
    worker = backend.start_worker(job_type("chatty", CHATTY))
    log = tmp_path / "logs" / f"{worker.worker_id}.log"
    try:
        wait_until(lambda: backend.list_workers() and log.with_name(log.name + ".1").exists(), timeout=30, what="a cut")
        for _ in range(20):
            backend.list_workers()
            assert log.stat().st_size <= limit + 2 * MB, "cut again before it grows far past the limit"
            time.sleep(0.05)
        assert log.with_name(log.name + ".1").stat().st_size > limit / 2
        before = log.stat().st_size
        wait_until(lambda: log.stat().st_size != before, timeout=10, what="the worker to go on writing")
        assert b"\0" not in log.read_bytes()[:4096], "append mode: no hole at the start of the emptied file"
    finally:
        kill_workers_in(tmp_path)


def test_the_service_log_pipe_rotates(tmp_path: Path) -> None:
    log = tmp_path / "scaler.log"
    pipe = subprocess.Popen(
        [sys.executable, "-m", "common.log_pipe", str(log)],
        stdin=subprocess.PIPE,
        env={**os.environ, "SERVICE_LOG_MAX_BYTES": "100000", "SERVICE_LOG_BACKUPS": "2"},
    )
    lines = [f"line {n:06d} ".encode() + b"x" * 90 + b"\n" for n in range(20_000)]
    pipe.communicate(b"".join(lines), timeout=60)
    assert pipe.returncode == 0
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == ["scaler.log", "scaler.log.1", "scaler.log.2"]
    assert all((tmp_path / name).stat().st_size <= 100_000 for name in files)
    assert log.read_bytes().endswith(lines[-1]), "the newest lines are in the file itself"
    assert all(text.endswith(b"\n") for text in (tmp_path / "scaler.log.1").read_bytes().splitlines(keepends=True))


def test_manage_sh_services_log_through_a_live_pipe_and_keep_no_zombie(broker: Broker, tmp_path: Path) -> None:
    """What `./manage.sh up` starts (its start_service, on this test's ports and vhost): each service's log pipe
    is alive and writing, not a `<defunct>` child of the service with the service's output lost."""
    stack = Stack(broker, tmp_path, {"noop": {"handler": "tests.handlers.noop"}})
    run = tmp_path / ".run"
    script = f"""
        source {REPO / "manage.sh"}
        RUN={run} PY={sys.executable}
        start_service producer {stack.producer_url}/healthz -- "$PY" -m producer
        start_service scaler {stack.scaler_url}/healthz -- "$PY" -m scaler --backend local
    """
    env = {**os.environ, **stack.env}
    subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=True)
    services = {name: psutil.Process(int((run / f"{name}.pid").read_text())) for name in ("producer", "scaler")}
    try:
        for name, service in services.items():
            children = service.children()
            assert children, f"the {name}'s log pipe is its child (process substitution)"
            assert all(child.status() != psutil.STATUS_ZOMBIE for child in children), f"{name}: {children}"
            log = run / "logs" / f"{name}.log"
            wait_until(lambda log=log: log.exists() and log.stat().st_size > 0, timeout=10, what=f"{name}'s log")
    finally:
        for service in services.values():
            service.terminate()
        psutil.wait_procs(list(services.values()), timeout=30)
        kill_workers_in(stack.state_dir)

"""Local workers: woken at once by uploads, forked from warm templates, adopted, with a minimal environment.

Real RabbitMQ, a real producer and scaler, real worker processes.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from common.config import parse_config
from harness.broker import Broker
from harness.stack import Stack, kill_workers_in
from harness.waiting import wait_until
from scaler.backends.local import LocalBackend
from scaler.backends.local_settings import LocalSettings

SLEEP = {"handler": "sleep", "threshold": 5, "max_workers": 4, "idle_seconds": 2, "env": {"SLEEP_MS": "20"}}
FORK_SERVER = "workers.template"


def rows(count: int) -> bytes:
    return b"n\n" + b"".join(b"%d\n" % i for i in range(count))


def templates(stack: Stack) -> dict[str, int]:
    """Job type -> pid of the scaler's live worker templates."""
    assert stack.scaler is not None
    found = {}
    for child in psutil.Process(stack.scaler.pid).children():
        try:
            command = child.cmdline()
        except psutil.Error:
            continue
        if FORK_SERVER in command and child.status() != psutil.STATUS_ZOMBIE:
            found[command[-1]] = child.pid
    return found


def wait_template_ready(stack: Stack, job_type: str, not_pid: int | None = None) -> int:
    """Wait until the scaler logs that a template of `job_type` (other than `not_pid`) is ready; its pid."""

    def ready() -> int | None:
        pid = templates(stack).get(job_type)
        if pid and pid != not_pid and f"worker template for {job_type} ready (pid {pid})" in stack.scaler.log():
            return pid
        return None

    return wait_until(ready, timeout=30, what=f"the worker template of {job_type} to be ready")


def warm_up(stack: Stack, job_type: str, headers: dict[str, str] | None = None) -> int:
    """A first upload: its worker is spawned the plain way and the type's template starts; returns the template's
    pid once it is ready and that worker is gone."""
    before = sum(stack.processed().values())
    stack.upload(rows(2), job_type, headers=headers).raise_for_status()
    template = wait_template_ready(stack, job_type)
    wait_until(lambda: sum(stack.processed().values()) >= before + 2, timeout=30, what="the warm-up rows")
    stack.wait_workers(job_type, lambda s: s["workers"] == 0, timeout=30, what="the warm-up worker to stop")
    return template


def records(stack: Stack) -> dict[str, dict]:
    return {
        data["worker_id"]: data
        for data in (json.loads(path.read_text()) for path in (stack.state_dir / "workers").glob("*.json"))
    }


@pytest.fixture()
def stack(broker: Broker, tmp_path: Path) -> Iterator[Stack]:
    created = Stack(broker, tmp_path, {"sleep": SLEEP}, tick_seconds=0.5, env={"WORKER_HEARTBEAT_SECONDS": "0.5"})
    yield created
    created.stop()


def test_an_upload_wakes_the_scaler_before_its_next_tick(broker: Broker, tmp_path: Path) -> None:
    tick = 30.0
    stack = Stack(broker, tmp_path, {"sleep": {**SLEEP, "idle_seconds": 600}}, tick_seconds=tick)
    try:
        stack.start()
        first_tick = wait_until(lambda: stack.status()["tick"]["last_at"], timeout=10, what="the first tick")
        assert stack.status()["job_types"]["sleep"]["workers"] == 0
        stack.upload(rows(50), "sleep").raise_for_status()
        worker = wait_until(
            lambda: next(iter(records(stack).values()), None), timeout=tick * 2, what="a worker for the upload"
        )
        assert worker["started_at"] < first_tick + tick, "the worker must start on the wake-up, not on the next tick"
        assert stack.status()["tick"]["number"] >= 2
        wait_until(lambda: sum(stack.processed().values()) >= 50, timeout=60, what="every row processed")
    finally:
        stack.stop()


def test_forked_workers_process_rows_and_a_restarted_scaler_adopts_them(stack: Stack, broker: Broker) -> None:
    stack.start()
    template = warm_up(stack, "sleep")
    response = stack.upload(rows(400), "sleep")
    response.raise_for_status()
    stack.wait_workers("sleep", lambda s: s["running"] >= 3, timeout=20, what="running workers")
    forked = {worker_id for worker_id, record in records(stack).items() if record["command"][0] == "fork"}
    assert forked, "workers are forked from the warm template"
    for pid in {record["pid"] for record in records(stack).values()}:
        assert psutil.Process(pid).ppid() == template, "a forked worker is the template's child"
        assert psutil.Process(pid).cmdline() == psutil.Process(template).cmdline()

    stack.scaler.signal(signal.SIGKILL)
    stack.scaler.process.wait(10)
    wait_until(lambda: not psutil.pid_exists(template), timeout=10, what="the old template to exit with its scaler")
    alive = set(stack.live_worker_pids()) & forked
    assert alive, "forked workers outlive their scaler and template"
    stack.start_scaler()
    listed = wait_until(
        lambda: {w["id"] for w in stack.status()["workers"] if w["state"] in ("starting", "running")} or None,
        timeout=10,
        what="adopted workers",
    )
    assert alive & set(stack.live_worker_pids()) <= listed, "every forked worker still alive is adopted"

    queue = stack.queue_of("sleep")
    wait_until(lambda: broker.queue_depth(queue) == 0, timeout=120, what="the queue to drain")
    upload_id = response.json()["upload_id"]
    processed = wait_until(
        lambda: len(p := {m for m in stack.processed() if m.startswith(upload_id)}) >= 400 and p,
        timeout=30,
        what="400 rows",
    )
    assert processed == {f"{upload_id}:{n}" for n in range(1, 401)}
    stack.wait_workers("sleep", lambda s: s["workers"] == 0, timeout=30, what="scale-down to zero")
    wait_until(lambda: not stack.live_worker_pids(), timeout=15, what="worker processes to exit")


def test_a_killed_template_is_restarted_and_forks_again(stack: Stack) -> None:
    stack.start()
    first = warm_up(stack, "sleep")
    psutil.Process(first).kill()
    second = wait_template_ready(stack, "sleep", not_pid=first)
    stack.upload(rows(40), "sleep").raise_for_status()
    wait_until(lambda: sum(stack.processed().values()) >= 42, timeout=60, what="every row processed")
    parents = {psutil.Process(r["pid"]).ppid() for r in records(stack).values() if psutil.pid_exists(r["pid"])}
    assert parents <= {second}, "workers come from the restarted template"
    assert "restarting the worker template for sleep: it exited with -9" in stack.scaler.log()


def test_a_config_change_of_a_type_restarts_its_template(stack: Stack) -> None:
    stack.start()
    first = warm_up(stack, "sleep")
    config = stack.config()
    config["sleep"]["env"] = {"SLEEP_MS": "30"}
    stack.config_path.write_text(json.dumps(config))
    second = wait_template_ready(stack, "sleep", not_pid=first)
    assert json.loads(psutil.Process(second).environ()["WORKER_JOB_TYPE"])["env"] == {"SLEEP_MS": "30"}


SECRETS = {
    "PRODUCER_TOKEN": "upload-token-not-for-workers",
    "SCALER_SOMETHING": "scaler-only",
    "AWS_SECRET_ACCESS_KEY": "cloud-secret",
}


@pytest.mark.parametrize("started", ["forked", "spawned"])
def test_workers_get_only_what_they_need_in_their_environment(broker: Broker, tmp_path: Path, started: str) -> None:
    dump = tmp_path / "environment.json"
    settings = {
        "handler": "tests.handlers.environment",
        "threshold": 0,
        "idle_seconds": 1,
        "env": {"ENV_DUMP": str(dump)},
    }
    if started == "spawned":
        settings["command"] = [sys.executable, "-m", "workers", "envdump"]
    secrets = {**SECRETS, "RABBITMQ_API_URL": broker.api_url}
    stack = Stack(broker, tmp_path, {"envdump": settings}, env={**secrets, "WORKER_HEARTBEAT_SECONDS": "0.5"})
    try:
        stack.start()
        token = {"Authorization": f"Bearer {SECRETS['PRODUCER_TOKEN']}"}
        if started == "forked":
            warm_up(stack, "envdump", headers=token)
            dump.unlink()
        stack.upload(rows(1), "envdump", headers=token).raise_for_status()
        environment = wait_until(lambda: dump.exists() and json.loads(dump.read_text()), timeout=30, what="the dump")
        command = next(iter(records(stack).values()))["command"]
        assert (command[0] == "fork") == (started == "forked")
    finally:
        stack.stop()
    for name, value in secrets.items():
        assert name not in environment
        assert value not in json.dumps(environment)
    assert environment["RABBITMQ_URL"] == broker.amqp_url
    assert environment["ENV_DUMP"] == str(dump), "the type's own env"
    assert environment["WORKER_HEARTBEAT_SECONDS"] == "0.5", "the runtime's settings"
    assert environment["WORKER_ID"].startswith("envdump-")
    handed = json.loads(environment["WORKER_JOB_TYPE"])
    assert handed["name"] == "envdump" and handed["queue"] == stack.queue_of("envdump")
    unexpected = {
        name
        for name in environment
        if not name.startswith(("WORKER_", "LC_", "RABBITMQ_"))
        and name not in {"ENV_DUMP", "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR"}
        and name not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED"}
    }
    assert not unexpected, f"the worker sees variables it does not need: {sorted(unexpected)}"


@pytest.mark.parametrize("templates", ["true", "false"])
def test_a_broken_config_edit_is_reported_once_and_workers_run_on_the_last_good_one(
    broker: Broker, tmp_path: Path, templates: str
) -> None:
    stack = Stack(broker, tmp_path, {"sleep": SLEEP}, tick_seconds=0.2, env={"SCALER_WORKER_TEMPLATES": templates})
    try:
        stack.start()
        if templates == "true":
            warm_up(stack, "sleep")
        good = stack.config()
        stack.config_path.write_text(json.dumps({"sleep": {**good["sleep"], "max_workers": "many"}}))
        status = wait_until(lambda: (s := stack.status())["config"]["error"] and s, timeout=10, what="the error")
        assert "'max_workers'" in status["config"]["error"], "the dashboard's banner says what is wrong"
        ticks = status["tick"]["number"]
        wait_until(lambda: stack.status()["tick"]["number"] >= ticks + 10, timeout=20, what="ten more ticks")

        before = sum(stack.processed().values())
        stack.upload(rows(30), "sleep").raise_for_status()
        started = wait_until(lambda: records(stack), timeout=10, what="a worker for the upload")
        assert {w["command"][0] == "fork" for w in started.values()} == {templates == "true"}
        wait_until(lambda: sum(stack.processed().values()) >= before + 30, timeout=60, what="rows processed")
        exits = {w["exit_code"] for w in stack.status()["workers"]}
        assert 2 not in exits, "no worker re-reads the broken file and exits"
        assert stack.scaler.log().count("jobs config rejected") == 1, "reported once, not every tick"
    finally:
        stack.stop()


def test_a_template_that_cannot_import_its_handler_backs_off_and_workers_spawn_plainly(tmp_path: Path) -> None:
    broken = parse_config({"new-job": {"queue": "queue_new", "handler": "no_such_handler"}}).get("new-job")
    backend = LocalBackend(tmp_path, LocalSettings(), configured=lambda: [broken])
    first = backend.start_worker(broken)
    assert backend.templates is not None
    wait_until(lambda: backend.list_workers() and "new-job" in backend.templates.backoff, timeout=30, what="backoff")
    retry_at = backend.templates.backoff["new-job"][1]
    for _ in range(10):
        backend.list_workers()
        assert "new-job" not in backend.templates.templates, "no new template before the backoff is over"
    second = backend.start_worker(broken)
    finished = wait_until(
        lambda: {
            w.worker_id: w for w in backend.list_workers() if w.state.finished and w.worker_id == second.worker_id
        },
        timeout=30,
        what="the plain worker to exit",
    )
    assert finished[second.worker_id].exit_code == 2, "spawned the plain way, it exits with the handler's error"
    assert "no handler module workers.no_such_handler.handler" in backend.read_log(second.worker_id)
    assert backend.templates.backoff["new-job"][1] == retry_at
    assert "no handler module" in (tmp_path / "templates" / "new-job.log").read_text()
    assert first.worker_id != second.worker_id


def test_a_handler_importable_only_through_the_types_env_pythonpath_passes_the_check_and_is_imported(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check looks where the worker will (worker_search_path of the environment the backend gives it)."""
    library = tmp_path / "library" / "own_handlers"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text("")
    imported = tmp_path / "imported"
    (library / "greet.py").write_text(f"open({str(imported)!r}, 'w').close()\n\ndef handle(row, context):\n    pass\n")
    config = {"greet": {"queue": "q_greet", "handler": "own_handlers.greet"}}
    without = parse_config(config).get("greet")
    with_env = parse_config({"greet": {**config["greet"], "env": {"PYTHONPATH": str(library.parent)}}}).get("greet")
    monkeypatch.setenv("RABBITMQ_URL", broker.amqp_url)
    backend = LocalBackend(tmp_path / "state", LocalSettings(), configured=lambda: [with_env])
    try:
        problem = backend.check(without)
        assert problem is not None and "no handler module own_handlers.greet on its workers' Python path" in problem
        assert backend.check(with_env) is None
        backend.start_worker(with_env)
        wait_until(imported.exists, timeout=30, what="the worker to import the handler from its env's PYTHONPATH")
    finally:
        backend.close()
        kill_workers_in(tmp_path / "state")

"""The pause/drain set on disk (atomic, survives a new process, a broken file keeps the last set) and the
terminal summary that `./manage.sh status` prints for failing types and the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaler.operator_controls import Controls, ControlStoreError, FileControlStore
from scaler.policy import Control
from scaler.terminal import render


def test_a_new_process_reads_what_the_last_one_saved(tmp_path: Path) -> None:
    path = tmp_path / "state" / "controls.json"
    first = Controls(FileControlStore(path))
    first.set("bulk", Control.PAUSED)
    first.set("nightly", Control.DRAIN)
    first.set("bulk", Control.RUN)
    assert Controls(FileControlStore(path)).snapshot() == {"nightly": Control.DRAIN}
    assert [p.name for p in path.parent.iterdir()] == ["controls.json"], "no temporary file left behind"


def test_a_broken_file_keeps_the_last_set_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "controls.json"
    clock = [0.0]
    controls = Controls(FileControlStore(path), refresh_seconds=5, clock=lambda: clock[0])
    controls.set("bulk", Control.PAUSED)
    path.write_text('{"bulk": "sleeping"}')
    clock[0] = 4.0
    controls.refresh()
    assert controls.error is None, "not re-read before refresh_seconds"
    clock[0] = 6.0
    controls.refresh()
    assert controls.snapshot() == {"bulk": Control.PAUSED}
    assert controls.error and "controls.json" in controls.error and "sleeping" in controls.error


def test_a_failed_save_changes_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    controls = Controls(FileControlStore(blocker / "controls.json"))
    with pytest.raises(ControlStoreError, match="cannot save the pause/drain set"):
        controls.set("bulk", Control.PAUSED)
    assert controls.snapshot() == {}


def test_retries_are_taken_once() -> None:
    controls = Controls()
    controls.retry("new-job")
    assert controls.take_retries() == {"new-job"} and controls.take_retries() == set()


def test_the_terminal_shows_the_budget_and_a_failing_types_lines() -> None:
    item = {
        "ready": 100,
        "unacked": 0,
        "dead": 0,
        "workers": 0,
        "max_workers": 10,
        "desired": 1,
        "state": "failing",
        "reason": "failing, next probe in 20 s; 2 failed start round(s): Traceback (most recent call last):\n"
        "ImportError: this handler is broken on purpose",
    }
    document = {
        "backend": "local",
        "broker": {"reachable": True},
        "tick": {"interval": 1, "last_duration_ms": 3},
        "leader": True,
        "budget": {"max_workers": 4, "used": 4, "by_type": {"bulk": 4}, "resources": {}},
        "job_types": {"new-job": item},
    }
    screen = render(document)
    assert "BUDGET workers 4/4  (held by bulk 4)" in screen
    assert "failing            failing, next probe in 20 s" in screen
    assert "| ImportError: this handler is broken on purpose" in screen

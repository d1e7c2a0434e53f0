"""The jobs config module: the seed format works, every mistake is named precisely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.config import ConfigError, load_config, parse_config
from common.config_watch import ConfigWatcher

SEED = {"new-job": {"queue": "queue_new", "image": "worker-new:latest", "threshold": 10}}


def test_seed_format_entry_is_a_complete_job_type_with_documented_defaults() -> None:
    job = parse_config(SEED).job_types["new-job"]
    assert (job.queue, job.image, job.threshold) == ("queue_new", "worker-new:latest", 10)
    assert job.effective_burst_threshold == 20
    assert (job.burst_size, job.max_workers, job.min_workers, job.idle_seconds) == (5, 10, 0, 30.0)
    assert (job.prefetch, job.max_attempts, job.handler) == (1, 3, "new_job")
    assert (job.dead_queue, job.retry_queue) == ("queue_new.dead", "queue_new.retry")


def test_repository_config_loads_with_sales_as_default() -> None:
    config = load_config(Path(__file__).resolve().parents[1] / "jobs.config.json")
    assert config.default == "sales"
    assert {"sales", "sleep"} <= set(config.job_types)


def test_default_is_the_first_type_unless_one_is_marked() -> None:
    data = {"a": {"queue": "qa"}, "b": {"queue": "qb"}}
    assert parse_config(data).default == "a"
    data["b"]["default"] = True
    assert parse_config(data).default == "b"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"t": {"queue": "q", "max_worker": 3}}, ["'t'", "'max_worker'", "unknown field"]),
        ({"t": {"queue": "q", "threshold": -1}}, ["'t'", "'threshold'", "greater than or equal to 0"]),
        ({"t": {"queue": "q", "threshold": "ten"}}, ["'t'", "'threshold'", "integer"]),
        ({"t": {"image": "x"}}, ["'t'", "'queue'", "required field is missing"]),
        (
            {"t": {"queue": "q", "min_workers": 5, "max_workers": 2}},
            ["'t'", "min_workers (5) is above max_workers (2)"],
        ),
        ({"t": {"queue": "q", "threshold": 10, "burst_threshold": 5}}, ["burst_threshold (5) is below threshold (10)"]),
        ({"Bad_Name": {"queue": "q"}}, ["'Bad_Name'", "'name'", "lower-case"]),
        ({"t": {"queue": "q.dead"}}, ["'t'", "'queue'", "reserved"]),
        (
            {"t": {"queue": "q", "resources": {"limits": {"cpu": "lots"}}}},
            ["'t'", "resources.limits", "not a Kubernetes quantity"],
        ),
        ({"t": {"queue": "q", "resources": {"limits": {"gpu": 1}}}}, ["unknown resource 'gpu'"]),
        ({"t": {"queue": "q", "env": {"1X": "y"}}}, ["'t'", "'env'", "not a valid environment variable name"]),
        ({"a": {"queue": "q"}, "b": {"queue": "q"}}, ["'b'", "'queue'", "already used by job type 'a'"]),
        ({"a": {"queue": "qa", "default": True}, "b": {"queue": "qb", "default": True}}, ["at most one job type"]),
        ({"t": {"queue": "q", "columns": []}}, ["'t'", "'columns'", "no empty list"]),
        ({"t": {"queue": "q", "columns": ["a", "a"]}}, ["'t'", "'columns'", "twice"]),
        ({"t": "queue_t"}, ["'t'", "settings must be an object"]),
        ([], ["top level must be an object"]),
        ({}, ["no job types"]),
    ],
)
def test_invalid_configs_are_rejected_naming_type_field_and_problem(data: object, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(data)
    for fragment in expected:
        assert fragment in str(raised.value)


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "jobs.config.json"
    path.write_text('{\n  "t": {"queue": "q",}\n}')
    with pytest.raises(ConfigError, match=r"invalid JSON at line 2, column 22"):
        load_config(path)


def test_watcher_keeps_last_good_config_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "jobs.config.json"
    path.write_text(json.dumps({"t": {"queue": "q1"}}))
    watcher = ConfigWatcher(path)
    assert watcher.config.job_types["t"].queue == "q1"

    path.write_text("{ not json")
    assert watcher.refresh() is False
    assert watcher.config.job_types["t"].queue == "q1"
    assert watcher.error is not None and "invalid JSON" in watcher.error

    path.write_text(json.dumps({"t": {"queue": "q2"}, "u": {"queue": "q3"}}))
    assert watcher.refresh() is True
    assert watcher.error is None
    assert set(watcher.config.job_types) == {"t", "u"}

"""Worker settings from the environment, and the per-type runtime fields of the jobs config."""

from __future__ import annotations

import logging

import pytest

from common.config import ConfigError, parse_config
from common.env import SettingsError
from workers.runtime import MAX_PREFETCH_COUNT, channel_prefetch
from workers.settings import WorkerSettings


def test_defaults_and_overrides() -> None:
    default = WorkerSettings.from_environment("sales", {"WORKER_ID": "w1"})
    assert default == WorkerSettings(worker_id="w1")
    assert default.report_outcomes and default.log_level == logging.INFO and default.settle_delay_seconds == 0.05
    tuned = WorkerSettings.from_environment(
        "sales",
        {
            "WORKER_ID": "w1",
            "WORKER_REPORT_OUTCOMES": "off",
            "WORKER_LOG_LEVEL": "debug",
            "WORKER_SETTLE_DELAY_MS": "10",
            "WORKER_HEARTBEAT_SECONDS": "0.5",
            "WORKER_SWITCH_INTERVAL_MS": "2",
            "WORKER_REPORT_MAX_BYTES": "10000",
            "WORKER_SETTLE_ALLOWANCE": "0",
        },
    )
    assert (tuned.report_outcomes, tuned.log_level, tuned.settle_delay_seconds, tuned.heartbeat_seconds) == (
        False,
        logging.DEBUG,
        0.01,
        0.5,
    )
    assert (tuned.switch_interval_seconds, tuned.report_max_bytes, tuned.settle_allowance) == (0.002, 10000, 0)
    assert WorkerSettings.from_environment("sales", {}).worker_id.startswith("sales-")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WORKER_HEARTBEAT_SECONDS": "soon"}, "WORKER_HEARTBEAT_SECONDS='soon' is not a number"),
        ({"WORKER_SETTLE_DELAY_MS": "-1"}, "WORKER_SETTLE_DELAY_MS='-1' must be above 0"),
        ({"WORKER_REPORT_MAX_BYTES": "big"}, "WORKER_REPORT_MAX_BYTES='big' is not a whole number"),
        ({"WORKER_LOG_LEVEL": "loud"}, "WORKER_LOG_LEVEL='loud'"),
        ({"WORKER_REPORT_OUTCOMES": "maybe"}, "WORKER_REPORT_OUTCOMES='maybe'"),
        ({"WORKER_SETTLE_ALLOWANCE": "-1"}, "WORKER_SETTLE_ALLOWANCE='-1'"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        WorkerSettings.from_environment("sales", environ)


def test_runtime_fields_of_a_job_type() -> None:
    job_type = parse_config({"t": {"queue": "q", "concurrency": 4, "batch_size": 50, "timeout_seconds": 30}}).job_types[
        "t"
    ]
    assert (job_type.concurrency, job_type.batch_size, job_type.batch_wait_ms, job_type.timeout_seconds) == (
        4,
        50,
        20.0,
        30.0,
    )
    assert job_type.effective_prefetch == 400, "two batches per thread"
    assert parse_config({"t": {"queue": "q", "concurrency": 3}}).job_types["t"].effective_prefetch == 3
    assert parse_config({"t": {"queue": "q"}}).job_types["t"].timeout_seconds is None
    for field, value in [("concurrency", 0), ("batch_size", 0), ("batch_wait_ms", -1), ("timeout_seconds", 0)]:
        with pytest.raises(ConfigError, match=f"job type 't', field '{field}'"):
            parse_config({"t": {"queue": "q", field: value}})


@pytest.mark.parametrize(
    ("fields", "read_ahead"),
    [
        ({}, 0),
        ({"prefetch": 20}, 19),
        ({"concurrency": 3}, 0),
        ({"prefetch": 10, "concurrency": 4}, 6),
        ({"batch_size": 50, "concurrency": 2}, 100),
    ],
)
def test_read_ahead_is_the_rows_held_beyond_the_handler_calls(fields: dict, read_ahead: int) -> None:
    """The rows held waiting their turn: the room a worker also keeps for rows whose report awaits its confirm."""
    assert parse_config({"t": {"queue": "q", **fields}}).job_types["t"].read_ahead == read_ahead


@pytest.mark.parametrize(
    ("fields", "environ", "expected"),
    [
        ({}, {}, 1),
        ({"prefetch": 20}, {}, 58),
        ({"prefetch": 20}, {"WORKER_REPORT_OUTCOMES": "off"}, 20),
        ({"prefetch": 20}, {"WORKER_SETTLE_ALLOWANCE": "0"}, 20),
        ({"batch_size": 10_000, "concurrency": 4}, {}, MAX_PREFETCH_COUNT),
    ],
)
def test_channel_prefetch_adds_room_for_rows_awaiting_their_report(fields: dict, environ: dict, expected: int) -> None:
    job_type = parse_config({"t": {"queue": "q", **fields}}).job_types["t"]
    settings = WorkerSettings.from_environment("t", {"WORKER_ID": "w", **environ})
    assert channel_prefetch(job_type, settings) == expected

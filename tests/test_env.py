"""The environment helpers every settings object is built from: defaults, bounds, flags, and errors that name
the variable and its value; and the processes that stop at start on a bad value instead of failing later."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.env import SettingsError, env_flag, env_float, env_int, env_str
from common.errors import AutoscalerError
from harness.processes import free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("environ", [{}, {"X": ""}, {"X": "  "}])
def test_unset_or_blank_means_the_default(environ: dict[str, str]) -> None:
    assert env_int("X", 7, environ=environ) == 7
    assert env_float("X", 2.5, environ=environ) == 2.5
    assert env_flag("X", True, environ=environ) is True
    assert env_str("X", "default", environ=environ) == "default"
    assert env_int("X", None, environ=environ) is None


def test_values_are_parsed() -> None:
    environ = {"N": " 12 ", "F": "0.25", "S": " text "}
    assert env_int("N", 0, environ=environ) == 12
    assert env_float("F", 1.0, environ=environ) == 0.25
    assert env_float("N", 1.0, environ=environ) == 12.0
    assert env_str("S", "", environ=environ) == "text"


@pytest.mark.parametrize(
    ("text", "expected"),
    [(w, True) for w in ("1", "true", "YES", "On")] + [(w, False) for w in ("0", "False", "no", "OFF")],
)
def test_flags(text: str, expected: bool) -> None:
    assert env_flag("SWITCH", not expected, environ={"SWITCH": text}) is expected


@pytest.mark.parametrize(
    ("read", "text", "message"),
    [
        (lambda e: env_int("COUNT", 1, environ=e), "abc", "COUNT='abc' is not a whole number"),
        (lambda e: env_int("COUNT", 1, environ=e), "1.5", "COUNT='1.5' is not a whole number"),
        (lambda e: env_float("COUNT", 1.0, environ=e), "soon", "COUNT='soon' is not a number"),
        (lambda e: env_float("COUNT", 1.0, environ=e), "nan", "COUNT='nan' is not a finite number"),
        (lambda e: env_int("COUNT", 1, minimum=0, environ=e), "-1", "COUNT='-1' must not be negative"),
        (lambda e: env_int("COUNT", 1, minimum=1, environ=e), "0", "COUNT='0' must not be below 1"),
        (lambda e: env_float("COUNT", 1.0, above=0, environ=e), "0", "COUNT='0' must be above 0"),
        (lambda e: env_flag("COUNT", True, environ=e), "maybe", "COUNT='maybe' is not a switch: use true or false"),
    ],
)
def test_a_bad_value_is_named(read, text: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        read({"COUNT": text})
    assert str(raised.value) == message


def test_the_error_is_the_projects_and_a_value_error() -> None:
    assert issubclass(SettingsError, AutoscalerError)
    assert issubclass(SettingsError, ValueError)


def test_bounds_accept_their_edge() -> None:
    assert env_int("N", 5, minimum=0, environ={"N": "0"}) == 0
    assert env_float("N", 5.0, above=0, environ={"N": "0.001"}) == 0.001


@pytest.mark.parametrize(
    ("module", "env", "message"),
    [
        ("scaler", {"SCALER_TICK_SECONDS": "abc"}, "SCALER_TICK_SECONDS='abc' is not a number"),
        ("scaler", {"SCALER_HEALTH_STALE_SECONDS": "abc"}, "SCALER_HEALTH_STALE_SECONDS='abc' is not a number"),
        ("scaler", {"SCALER_WORKER_LOGS_PER_TYPE": "x"}, "SCALER_WORKER_LOGS_PER_TYPE='x' is not a whole number"),
        ("scaler", {"SCALER_WAKE_UPS": "sometimes"}, "SCALER_WAKE_UPS='sometimes' is not a switch"),
        (
            "scaler",
            {"SCALER_BACKEND": "kubernetes", "SCALER_LIST_PAGE_SIZE": "abc"},
            "SCALER_LIST_PAGE_SIZE='abc' is not a whole number",
        ),
        (
            "scaler",
            {"SCALER_BACKEND": "kubernetes", "SCALER_LEASE_SECONDS": "abc"},
            "SCALER_LEASE_SECONDS='abc' is not a number",
        ),
        (
            "scaler",
            {"SCALER_BACKEND": "kubernetes", "SCALER_LEASE_SECONDS": "6", "SCALER_TICK_DEADLINE_SECONDS": "4"},
            "SCALER_TICK_DEADLINE_SECONDS=4 must be shorter than the renew deadline",
        ),
        ("producer", {"AUTH_ALLOW_LOOPBACK": "perhaps"}, "AUTH_ALLOW_LOOPBACK='perhaps' is not a switch"),
        ("producer", {"PRODUCER_TOKEN": ""}, "PRODUCER_TOKEN is not set"),
        (
            "scaler",
            {"AUTH_TRUSTED_PROXIES": "10.0.0.0/8, nginx"},
            "AUTH_TRUSTED_PROXIES: 'nginx' is not an IP address or network",
        ),
        ("producer", {"PRODUCER_MIN_BODY_BYTES_PER_SECOND": "-1"}, "PRODUCER_MIN_BODY_BYTES_PER_SECOND='-1'"),
        ("producer", {"UPLOADS_RETENTION_DAYS": "0"}, "UPLOADS_RETENTION_DAYS='0' must be above 0"),
        (
            "producer",
            {"PRODUCER_PUBLISH_LEASE_SECONDS": "1", "PRODUCER_PUBLISH_PROGRESS_SECONDS": "0.5"},
            "PRODUCER_PUBLISH_LEASE_SECONDS=1 must be at least 4 times PRODUCER_PUBLISH_PROGRESS_SECONDS=0.5",
        ),
    ],
)
def test_a_process_with_a_bad_value_stops_at_start_naming_it(
    module: str, env: dict[str, str], message: str, tmp_path: Path
) -> None:
    """The value is refused before anything starts: no worker, no Lease campaign, not even the cluster's
    configuration (there is none here, so loading it would fail with the client's own error)."""
    result = subprocess.run(
        [sys.executable, "-m", module],
        cwd=REPO,
        env={
            **os.environ,
            "SCALER_PORT": str(free_port()),
            "PRODUCER_PORT": str(free_port()),
            "SCALER_STATE_DIR": str(tmp_path / "scaler"),
            "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
            "PRODUCER_TOKEN": "a-token",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"{module}: cannot start: {message}" in result.stderr
    assert "Traceback" not in result.stderr

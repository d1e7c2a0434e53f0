"""The simulator against the real local stack: the same minutes of a real trace, both ways, within 20 %.

`./manage.sh replay`'s own entry point sends eight minutes of the shipped Azure
Functions excerpt (five functions, about 1.7 busy workers on average, bursty),
six times faster, to a real `sleep` type whose rows carry their own handler
time; the simulator replays the same uploads at the times the stack accepted
them, with the same settings. Worker-seconds and the p95 row wait must agree
within 20 % (the README's claim, which shows a recorded run's table: with
`--record-results` the comparison is written to bench/results/replay.json, from
which `./manage.sh readme` makes it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.support import results
from harness.broker import Broker
from harness.stack import Stack
from simulator import replay
from simulator.traces import load

EXCERPT = Path(__file__).parent / "data" / "traces" / "azure-functions-2019-excerpt.csv"
SETTINGS = {"handler": "sleep", "threshold": 5, "burst_size": 3, "max_workers": 4, "idle_seconds": 3}
AGREEMENT = 0.20
#: The comparison, with the run's date, commit and machine, for the README (`./manage.sh readme`).
RESULT = results.RESULTS / "replay.json"


def test_replay_of_a_real_trace_agrees_with_the_simulation(
    broker: Broker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    record_results: bool,
) -> None:
    stack = Stack(broker, tmp_path, {"replay": SETTINGS}, tick_seconds=1.0)
    stack.start()
    monkeypatch.setenv("PRODUCER_TOKEN", stack.env["PRODUCER_TOKEN"])
    try:
        code = replay.main(
            [str(EXCERPT), "--hours", str(8 / 60), "--speedup", "6", "--job-type", "replay"]
            + ["--config", str(stack.config_path), "--producer", stack.producer_url, "--scaler", stack.scaler_url]
            + ["--state-dir", str(stack.state_dir), "--out", str(tmp_path / "out")]
        )
    finally:
        stack.stop()
    printed = capsys.readouterr()
    assert code == 0, printed.err
    result = json.loads((tmp_path / "out" / "replay.json").read_text())
    if record_results:
        provenance = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": results.commit()}
        RESULT.write_text(json.dumps({**result, **provenance, "machine": results.machine()}, indent=1) + "\n")
    table = replay.comparison_table(result["real"], result["simulated"])
    assert table in printed.out
    assert result["real"]["rows"] == load([EXCERPT], hours=8 / 60).rows, "every row of the trace handled once"
    assert abs(result["difference"]["worker_seconds"]) <= AGREEMENT, table
    assert abs(result["difference"]["wait_p95"]) <= AGREEMENT, table

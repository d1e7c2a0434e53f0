"""The simulator against the real local stack: the same minutes of a real trace, both ways, within 20 %.

Eight minutes of the shipped Azure Functions excerpt (five functions, about
1.7 busy workers on average, bursty), six times faster, go to a real `sleep`
type whose rows carry their own handler time; the simulator replays the same
uploads at the times they were really sent, with the same settings. Worker-
seconds and the p95 row wait must agree within 20 % (the README's claim).
"""

from __future__ import annotations

import json
from pathlib import Path

from jobtypes.config import load_config
from simulator.replay import compare, comparison_table, replay, simulate_sent
from simulator.traces import load
from tests.support.broker import Broker
from tests.support.stack import Stack

EXCERPT = Path(__file__).parent / "data" / "traces" / "azure-functions-2019-excerpt.csv"
SETTINGS = {"handler": "sleep", "threshold": 5, "burst_size": 3, "max_workers": 4, "idle_seconds": 3}
AGREEMENT = 0.20
#: The comparison, for the README (`python -m simulator.readme ... --replay FILE`).
ARTIFACT = Path(__file__).parent / "artifacts" / "simulator-replay.json"


def test_replay_of_a_real_trace_agrees_with_the_simulation(broker: Broker, tmp_path: Path) -> None:
    stack = Stack(broker, tmp_path, {"replay": SETTINGS}, tick_seconds=1.0)
    stack.start()
    try:
        trace = load([EXCERPT], hours=8 / 60, speedup=6)
        job_type = load_config(stack.config_path).job_types["replay"]
        measured = replay(
            trace, job_type, stack.producer_url, stack.scaler_url, stack.auth_headers(), stack.state_dir / "logs"
        )
    finally:
        stack.stop()
    assert measured.rows == trace.rows, "every row of the trace was handled once"
    real = measured.figures()
    simulated = simulate_sent(measured, job_type, trace)
    table = comparison_table(real, simulated)
    print(table)
    difference = compare(real, simulated)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(
        json.dumps(
            {
                "trace": f"{EXCERPT.name}, first 8 minutes, speedup 6",
                "attribution": trace.attribution,
                "settings": SETTINGS,
                "real": real,
                "simulated": simulated,
                "difference": difference,
            },
            indent=1,
        )
    )
    assert abs(difference["worker_seconds"]) <= AGREEMENT, table
    assert abs(difference["wait_p95"]) <= AGREEMENT, table

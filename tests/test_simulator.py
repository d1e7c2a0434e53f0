"""The simulator: trace readers on shipped excerpts, the model against hand-computed cases, the CLI's files.

The hand-computed cases are one job type with arrivals whose timing can be
worked out on paper (see each test); the policy itself is the project's
`decide`/`allocate`, which a test shows is the imported function.
"""

from __future__ import annotations

import ast
import heapq
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import scaler.budget
import scaler.policy
import simulator.engine
from scaler.budget import Budget
from simulator import config as sim_config
from simulator import readme
from simulator.__main__ import main
from simulator.engine import Assumptions, run_policy, water_fill
from simulator.results import policy_document
from simulator.sketch import Sketch
from simulator.traces import Format, Trace, TraceError, Upload, load

DATA = Path(__file__).parent / "data" / "traces"
AZURE = DATA / "azure-functions-2019-excerpt.csv"
LLM = DATA / "azure-llm-2023-code-excerpt.csv"
ALIBABA_HEADER = (
    "gmt_create,predict_type,predict_status,exec_time_seconds,groupId,prompt_length,negative_prompt_length,"
    "num_images_per_prompt,num_inference_steps,checkpoint_model_version_id,num_lora\n"
)
QUIET = Assumptions(worker_start_seconds=0.0, worker_stop_seconds=0.0, row_overhead_seconds=0.0)


def one_type(uploads: list[Upload], **settings: object) -> tuple[Trace, dict]:
    trace = Trace(["hand"], Format.PROJECT, uploads)
    return trace, sim_config.job_types(trace.job_types, None, settings)


def totals(policy: str, uploads: list[Upload], assumptions: Assumptions = QUIET, **settings: object) -> dict:
    trace, config = one_type(uploads, **settings)
    return policy_document(run_policy(policy, trace, config, assumptions))["total"]


# readers -----------------------------------------------------------------------------------------
def test_azure_functions_excerpt_becomes_one_type_per_function_and_one_upload_per_busy_minute() -> None:
    trace = load([AZURE])
    assert trace.format is Format.AZURE_FUNCTIONS
    assert trace.job_types == sorted(
        ["http-0affafe05e", "timer-5c6038b264", "http-e1830183c9", "http-2a93bec9d9", "http-5405b1b13e"]
    )
    lines = AZURE.read_text().splitlines()
    header = lines[0].split(",")
    first, average = header.index("1"), header.index("Average")
    expected_rows = sum(sum(int(v) for v in line.split(",")[first : first + 1440]) for line in lines[1:])
    expected_uploads = sum(sum(1 for v in line.split(",")[first : first + 1440] if v != "0") for line in lines[1:])
    assert trace.rows == expected_rows
    assert len(trace.uploads) == expected_uploads
    row = next(line.split(",") for line in lines[1:] if line.startswith("0affafe05e"))
    seconds = {u.row_seconds for u in trace.uploads if u.job_type == "http-0affafe05e"}
    assert seconds == {float(row[average]) / 1000}
    assert trace.uploads[0].at == 0 and trace.duration < 1440 * 60
    assert "CC-BY-4.0" in trace.attribution


def test_azure_llm_excerpt_is_one_row_per_request_with_the_stated_token_model() -> None:
    trace = load([LLM])
    assert (len(trace.uploads), trace.rows, trace.job_types) == (300, 300, ["llm-code"])
    context, generated = LLM.read_text().splitlines()[1].split(",")[1:]
    assert trace.uploads[0].at == 0
    assert trace.uploads[0].row_seconds == pytest.approx(int(context) / 8000 + int(generated) / 40)
    assert trace.uploads[1].at == pytest.approx(0.052, abs=1e-6)  # 18:17:04.0319600 - 18:17:03.9799600


def test_alibaba_reader_keeps_requests_that_ran_and_shares_exec_time_by_image(tmp_path: Path) -> None:
    path = tmp_path / "lora.csv"
    path.write_text(
        ALIBABA_HEADER + "2024-11-15 10:00:00,TXT_2_IMG,SUCCEED,30.0,G1,1,,3.0,30,M1,0\n"
        "2024-11-15 10:00:05,IMG_2_IMG,PENDING,,G2,1,,1.0,30,M1,0\n"
        "2024-11-15 10:01:00,IMG_2_IMG,FAILED,12.0,G3,1,,1.0,30,M1,0\n"
    )
    trace = load([path])
    assert trace.uploads == [Upload(0.0, "txt-2-img", 3, 10.0), Upload(60.0, "img-2-img", 1, 12.0)]


def test_project_csv_and_its_errors_name_the_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("at_seconds,job_type,rows,row_seconds\n5,resize,10,0.5\n0,resize,2,1\n")
    assert load([path], speedup=2).uploads == [Upload(0, "resize", 2, 0.5), Upload(2.5, "resize", 10, 0.25)]
    path.write_text("at_seconds,job_type,rows,row_seconds\n5,resize,ten,0.5\n")
    with pytest.raises(TraceError, match=r"line 2, column 'rows': 'ten' is not a number"):
        load([path])
    path.write_text("when,what\n1,2\n")
    with pytest.raises(TraceError, match="unknown trace format"):
        load([path])


# the model against hand-computed cases -----------------------------------------------------------
def test_constant_arrivals_below_one_worker_keep_one_warm_worker() -> None:
    # One row of 1 s every 10 s, idle_seconds 30: the first upload starts one worker (no worker, backlog),
    # which never idles 30 s until the last row (done at 91 s); it stops 30 s (+ the loop's 0.01 s margin)
    # after that. Every row starts on arrival.
    uploads = [Upload(10.0 * k, "steady", 1, 1.0) for k in range(10)]
    total = totals("project", uploads, idle_seconds=30)
    assert total["starts"] == 1 and total["peak_workers"] == 1
    assert total["worker_seconds"] == pytest.approx(91 + 30.01, abs=0.25)
    assert total["wait_seconds"]["p99"] == pytest.approx(0, abs=0.01)
    assert total["completion_seconds"]["p50"] == pytest.approx(1.0, abs=0.02)
    assert total["busy_fraction"] == pytest.approx(10 / (91 + 30.01), abs=0.01)


def test_a_burst_drains_at_max_workers_with_evenly_spread_waits() -> None:
    # 100 rows of 1 s at once, threshold 10 (burst above 20), burst_size 5 = max_workers: 5 workers start at
    # once, row i starts at floor(i / 5) s: waits spread over 0..19 s (p50 9.5 s), the upload done at 20 s.
    total = totals("project", [Upload(0.0, "bulk", 100, 1.0)], threshold=10, burst_size=5, max_workers=5)
    assert total["starts"] == 5
    assert total["wait_seconds"]["p50"] == pytest.approx(9.5, abs=0.6)
    assert total["wait_seconds"]["p99"] == pytest.approx(19, abs=0.6)
    assert total["completion_seconds"]["p50"] == pytest.approx(20, abs=0.05)
    assert total["worker_seconds"] == pytest.approx(5 * (20 + 30.01), abs=5 * 0.25)


def test_keda_model_creates_one_job_per_row_at_most_ceil_ready_over_20_per_poll() -> None:
    # 40 rows at t=0, pods up 5 s after creation: every 30 s poll creates ceil(ready / 20) Jobs, each takes one
    # row and ends (within the 30 s): 2 a poll while more than 20 rows are ready (10 polls), then 1 (20 polls);
    # the last row starts at 30 * 30 + 5 s.
    keda = Assumptions.for_backend("kubernetes", worker_stop_seconds=0.0, row_overhead_seconds=0.0)
    total = totals("keda", [Upload(0.0, "jobs", 40, 1.0)], keda)
    assert total["starts"] == 40 and total["peak_workers"] == 2
    assert total["wait_seconds"]["p99"] == pytest.approx(905, abs=7)
    assert total["worker_seconds"] == pytest.approx(40 * (5 + 1), abs=0.01)


def test_fixed_pool_is_paid_for_the_whole_run() -> None:
    total = totals("fixed:2", [Upload(0.0, "pool", 10, 1.0)])
    assert total["completion_seconds"]["p50"] == pytest.approx(5, abs=0.05)
    assert total["worker_seconds"] == pytest.approx(2 * 5, abs=0.05)
    assert total["starts"] == 2


def test_a_shared_budget_goes_to_the_higher_priority_first() -> None:
    # Two types with 100 rows of 1 s each at t=0 and a budget of 2 workers: allocate gives both to `urgent`
    # (priority 10) until its backlog is gone, so `bulk` waits about the 50 s urgent needs.
    trace = Trace(["hand"], Format.PROJECT, [Upload(0.0, "urgent", 100, 1.0), Upload(0.0, "bulk", 100, 1.0)])
    config = sim_config.job_types(["urgent", "bulk"], None, {"threshold": 1, "idle_seconds": 1})
    config["urgent"] = config["urgent"].model_copy(update={"priority": 10})
    assumptions = Assumptions(
        worker_start_seconds=0.0, worker_stop_seconds=0.0, row_overhead_seconds=0.0, budget=Budget(max_workers=2)
    )
    document = policy_document(run_policy("project", trace, config, assumptions))
    assert max(document["timeline"]["workers"]) <= 2
    urgent, bulk = document["job_types"]["urgent"], document["job_types"]["bulk"]
    assert urgent["completion_seconds"]["p50"] == pytest.approx(50, abs=1.5)
    assert bulk["wait_seconds"]["p50"] > 50


def test_the_policy_is_the_scalers_own_function(monkeypatch: pytest.MonkeyPatch) -> None:
    assert simulator.engine.decide is scaler.policy.decide
    assert simulator.engine.allocate is scaler.budget.allocate
    for path in Path(simulator.engine.__file__).parent.glob("*.py"):
        defined = {node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}
        assert not defined & {"decide", "allocate", "_decide", "_scale", "_shares"}, path
    calls = []

    def counting(*args: object, **kwargs: object) -> scaler.policy.Decision:
        calls.append(args[0])
        return scaler.policy.decide(*args, **kwargs)

    monkeypatch.setattr(simulator.engine, "decide", counting)
    totals("project", [Upload(0.0, "counted", 3, 0.5)])
    assert calls and {job.name for job in calls} == {"counted"}


def test_sketch_quantiles_are_within_one_percent() -> None:
    sketch = Sketch(2)
    sketch.add(0, 0.0, 100.0, 1000)
    sketch.add(1, 5.0, 5.0, 10)
    assert sketch.quantiles((0.5, 0.95), 0) == pytest.approx([50, 95], rel=0.01)
    assert sketch.quantiles((0.5,), 1) == pytest.approx([5], rel=0.01)
    assert sketch.histogram([0, 10, 1e7]) == pytest.approx([100 + 10, 900], rel=0.01)


# the command -----------------------------------------------------------------------------------
def test_simulate_writes_the_agreed_summary_a_report_and_a_recommendation(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(
        [str(LLM), "--out", str(out), "--policies", "project,keda,fixed:2", "--quiet"]
        + ["--sweep", "threshold=1,10", "max_workers=10,40", "--target-p95-wait", "5"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and '"llm-code": {"queue": "sim_llm-code"' in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["version"] == 1 and summary["trace"]["format"] == "azure-llm-2023"
    assert "CC-BY-4.0" in summary["trace"]["attribution"]
    assert set(summary["policies"]) == {"project", "keda", "fixed:2", "project-tuned"}
    for policy in summary["policies"].values():
        assert set(policy) >= {"total", "job_types", "timeline", "wait_histogram"}
        assert set(policy["total"]) >= {
            "worker_seconds", "busy_fraction", "wait_seconds", "completion_seconds", "peak_workers", "starts",
            "rows", "uploads",
        }  # fmt: skip
        assert len(policy["timeline"]["t"]) <= 2000
        assert len(policy["wait_histogram"]["counts"]) == len(policy["wait_histogram"]["edges"]) - 1
    assert summary["pareto"] and {"params", "worker_seconds", "wait_p95"} <= set(summary["pareto"][0])
    recommended = json.loads((out / "recommended.config.json").read_text())
    assert set(recommended) == {"llm-code"} and recommended["llm-code"]["max_workers"] in (10, 40)
    page = (out / "report.html").read_text()
    assert "<svg" in page and "Splitwise" in page and "<script" not in page
    document = tmp_path / "README.md"
    document.write_text(f"# x\n{readme.BEGIN}\nSTALE\n{readme.END}\ntail\n")
    assert readme.main([str(out), "--write", str(document)]) == 0
    written = document.read_text()
    assert "STALE" not in written and written.endswith(f"{readme.END}\ntail\n")
    assert "| project-tuned |" in written and "Splitwise" in written and "KEDA model" in written


def test_simulate_refuses_bad_input_with_a_message(tmp_path: Path, capsys) -> None:
    assert main([str(LLM), "--sweep", "treshold=1", "--out", str(tmp_path)]) == 2
    assert "expected NAME=V1,V2" in capsys.readouterr().err
    assert main([str(LLM), "--policies", "hpa", "--out", str(tmp_path)]) == 2
    assert "unknown policy 'hpa'" in capsys.readouterr().err


def test_sleep_handler_takes_a_rows_own_sleep_ms() -> None:
    from workers.sleep import handler

    assert handler.row_seconds({"sleep_ms": "250"}) == 0.25
    assert handler.row_seconds({"other": "x"}) == handler.SLEEP_SECONDS
    with pytest.raises(ValueError, match="column 'sleep_ms': 'soon' is not a number"):
        handler.row_seconds({"sleep_ms": "soon"})
    with pytest.raises(ValueError, match="not a duration"):
        handler.row_seconds({"sleep_ms": "-5"})


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(0, 10), min_size=1, max_size=8),
    st.integers(1, 60),
    st.floats(0.01, 3),
)
def test_water_filling_gives_each_slot_what_earliest_free_first_gives(
    ready: list[float], groups: int, step: float
) -> None:
    exact = [0] * len(ready)
    slots = [(free, j) for j, free in enumerate(ready)]
    heapq.heapify(slots)
    for _ in range(groups):
        free, j = heapq.heappop(slots)
        exact[j] += 1
        heapq.heappush(slots, (free + step, j))
    counts = water_fill(ready, groups, step)
    assert sum(counts) == groups
    assert all(abs(a - b) <= 1 for a, b in zip(counts, exact, strict=True))

"""The README's benchmark and fault tables are what `./manage.sh readme` makes of the committed results files.

No benchmark runs here: only the regeneration from bench/results/*.json, so a
figure pasted into the README, or a results file committed without
regenerating the README, fails this test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import readme
from bench.support import results
from tests.support import fault_report


def test_the_readme_tables_are_generated_from_the_results_files() -> None:
    text = readme.README.read_text()
    assert readme.regenerate(text) == text, "README.md differs from bench/results/: run ./manage.sh readme"


def test_a_results_file_without_a_column_is_named_with_the_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = {"date": "2026-12-05", "commit": "abc", "machine": {"cores": 2}, "rows": [{"benchmark": "b"}]}
    (tmp_path / "tick.json").write_text(json.dumps(document))
    monkeypatch.setattr(readme, "RESULTS", tmp_path)
    table = readme.Table("bench-table", readme.TABLES[0].columns, ("tick",))
    with pytest.raises(readme.ResultsError, match=r"tick\.json: row 1 lacks subject, baseline, ratio"):
        readme.render(table)
    with pytest.raises(readme.ResultsError, match=r"ingest\.json: missing"):
        readme.render(readme.Table("bench-table", table.columns, ("ingest",)))


def test_a_results_file_carries_its_provenance_and_feeds_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    monkeypatch.setattr(readme, "RESULTS", tmp_path)
    path = results.write_results("mine", [results.Row("`bench mine`", "2 x", "1 x", "**2.00x**")], {"x": 2})
    document = json.loads(path.read_text())
    assert document["commit"] and document["date"] and document["machine"]["cores"] >= 1
    assert document["machine"]["memory_gib"] > 0 and document["figures"] == {"x": 2}
    table = readme.render(readme.Table("bench-table", readme.TABLES[0].columns, ("mine",)))
    assert "| `bench mine` | 2 x | 1 x | **2.00x** |" in table.splitlines()


@pytest.mark.parametrize("block", readme.BLOCKS, ids=lambda block: block.marker)
def test_every_generated_part_of_the_readme_is_checked(block: readme.Block) -> None:
    """A figure edited by hand in any generated block (the upload-record and simulator ones too) is a difference."""
    text = readme.README.read_text()
    opening = f"<!-- {block.marker} -->\n"
    assert opening in text, f"README.md has no {block.marker} block"
    edited = text.replace(opening, opening + "| pasted | 1 |\n")
    assert readme.regenerate(edited) == text


def test_only_a_recorded_run_rewrites_the_fault_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain suite run keeps the committed results (so a second run's README check still holds)."""
    monkeypatch.setattr(results, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(fault_report, "ARTIFACTS", tmp_path / "artifacts")
    monkeypatch.setattr(fault_report, "ROWS", [fault_report.FaultRow("kill -9", 10, 10, 1, 0, 2.5)])
    assert fault_report.write_artifact(record=False) == [tmp_path / "artifacts" / "fault-table.md"]
    assert not (tmp_path / "results").exists()
    written = fault_report.write_artifact(record=True)
    assert written[1:] == [tmp_path / "results" / "faults.json"]
    rows = json.loads(written[1].read_text())["rows"]
    assert rows == [
        {
            "fault": "kill -9",
            "rows_sent": "10",
            "rows_processed": "10",
            "duplicates": "1",
            "lost": "0",
            "recover": "2.5 s",
        }
    ]

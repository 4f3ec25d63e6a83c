"""bench's schedule-power rows: a fault's recorded step, re-run under drawn interleavings."""

from __future__ import annotations

import dataclasses

from stateful.bench import recorded_races, window_hits, windows_markdown
from stateful.strategies import VirtualDelays


def test_some_interleavings_of_a_faults_recorded_step_break_it() -> None:
    counts = window_hits(recorded_races()["lp1879878-revert"], VirtualDelays, trials=20)
    assert counts["runs"] >= 10 and counts["errors"] == 0
    assert 0 < counts["hits"] <= counts["runs"]


def test_with_the_fault_off_no_interleaving_breaks_the_step() -> None:
    case = recorded_races()["lp1879878-revert"]
    fixed = dataclasses.replace(case, recording=dataclasses.replace(case.recording, faults=[]))
    counts = window_hits(fixed, VirtualDelays, trials=20)
    assert counts["runs"] >= 10 and counts["hits"] == 0


def test_the_table_shows_each_share_and_names_faults_without_a_row() -> None:
    rows = [{"fault": "lp1896463", "strategy": "virtual", "hits": 3, "runs": 60, "errors": 0, "file": "f.json"}]
    text = "\n".join(windows_markdown(rows))
    assert "| lp1896463 | 3/60 (5 %) |" in text
    assert "No row for" in text and "lp1818914" in text


def test_the_recorded_races_never_touch_another_targets_files(monkeypatch) -> None:
    import stateful.regression

    def no_other_target(name: str):  # type: ignore[no-untyped-def]
        assert name == "model", f"bench loaded a {name} file"

    monkeypatch.setattr(stateful.regression, "target_factory", no_other_target)
    assert "lp1896463" in recorded_races()

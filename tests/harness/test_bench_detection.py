"""bench's detection rows, and the batches of campaigns behind them (stateful.parallel)."""

from __future__ import annotations

import functools
import os
import signal
import time
from typing import Any

import fixtures
import pytest

from stateful import bench
from stateful.campaign import Worker
from stateful.errors import Finding, HarnessError
from stateful.parallel import run_cells

BUDGET = bench.DetectionBudget(seeds=2, max_examples=30, cap_s=30.0, shrink_s=1.0)


def test_campaigns_in_spawned_processes_give_the_rows_they_give_in_turn() -> None:
    lines: list[str] = []
    alone = bench.detection_rows(["lp1879878-revert"], ["virtual"], BUDGET, jobs=1, log=lambda line: None)
    (row,) = bench.detection_rows(["lp1879878-revert"], ["virtual"], BUDGET, jobs=2, log=lines.append)
    # seconds, and the shrunk sizes (the shrink is cut off by wall-clock time), depend on the machine's load
    assert [(r.fault, r.strategy, r.seeds, r.found, r.median_examples) for r in alone] == [
        (row.fault, row.strategy, row.seeds, row.found, row.median_examples)
    ]
    assert row.found == 2, "an easy fault, found within 30 examples by both seeds"
    assert sorted(line.split(": ")[1] for line in lines) == [
        "lp1879878-revert virtual seed 0", "lp1879878-revert virtual seed 1"
    ]
    assert [line.split(",")[0] for line in lines] == ["detection 1/2", "detection 2/2"]


def _square(n: int) -> int:
    return n * n


def _raise(error: BaseException) -> None:
    raise error


def _find(invariant: str, message: str) -> None:
    raise Finding(invariant, message)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # a stand-in for a long campaign, which a failing batch must not wait for


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_come_in_the_cells_order_and_each_is_announced_once(jobs: int) -> None:
    announced: list[tuple[int, int]] = []
    cells = [(f"square {n}", functools.partial(_square, n)) for n in range(6)]
    assert run_cells(cells, jobs, lambda index, result: announced.append((index, result))) == [0, 1, 4, 9, 16, 25]
    assert sorted(announced) == [(n, n * n) for n in range(6)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_error_that_is_not_the_harness_s_comes_back_as_one_naming_the_cell(jobs: int) -> None:
    # a Finding does not survive pickling as it is (two arguments, one stored): it must not break the pool
    cells = [("lp1 virtual seed 3", functools.partial(_find, "usage-matches-oracle", "host1 vcpus"))]
    with pytest.raises(HarnessError, match=r"^lp1 virtual seed 3: Finding: \[usage-matches-oracle\] host1 vcpus$"):
        run_cells(cells, jobs, lambda index, result: None)


def test_a_failing_cell_stops_the_batch_without_waiting_for_the_rest() -> None:
    cells = [("fails", functools.partial(_raise, HarnessError("stuck task")))]
    cells += [(f"long {n}", functools.partial(_sleep, 120.0)) for n in range(4)]
    started = time.monotonic()
    with pytest.raises(HarnessError, match="stuck task"):
        run_cells(cells, 2, lambda index, result: None)
    # waiting for the queued cells would take 4 minutes; the bound only tells the two apart
    assert time.monotonic() - started < 60


def test_a_ctrl_c_stops_the_detection_rather_than_counting_a_miss() -> None:
    """A campaign takes a first Ctrl-C as a request to stop; its seed must not then read as "not found"."""
    count = Worker.on_example

    def press_ctrl_c_at_the_first_example(worker: Worker, recording: Any) -> None:
        count(worker, recording)
        if not worker.hurry.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    lines: list[str] = []
    with fixtures.MonkeyPatch("stateful.campaign.Worker.on_example", press_ctrl_c_at_the_first_example):
        with pytest.raises(KeyboardInterrupt):
            bench.detection_rows(["lp1600304"], ["sequential"], BUDGET, jobs=1, log=lines.append)
    assert lines == []


def test_a_strategy_that_finds_nothing_has_no_numbers() -> None:
    runs = [bench.SeedRun(None, None, None), bench.SeedRun(None, None, None)]
    row = bench.summarize("lp1095403", "sequential", runs)
    assert (row.seeds, row.found, row.median_s, row.worst_s, row.median_examples, row.shrunk_steps) == (
        2, 0, None, None, None, None
    )


def test_the_smallest_shrunk_failure_and_the_median_of_those_found() -> None:
    runs = [bench.SeedRun(4.0, 40, (3, 2)), bench.SeedRun(None, None, None), bench.SeedRun(1.0, 10, (2, 1))]
    row = bench.summarize("lp1896463", "virtual", runs)
    assert (row.seeds, row.found, row.median_s, row.worst_s, row.median_examples) == (3, 2, 2.5, 4.0, 25)
    assert (row.shrunk_steps, row.shrunk_nonzero_delays) == (2, 1)

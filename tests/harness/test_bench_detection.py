"""bench's detection rows: the same rows whether its campaigns run here or several at a time."""

from stateful import bench

BUDGET = bench.DetectionBudget(seeds=2, max_examples=30, cap_s=30.0, shrink_s=1.0)
FAULTS = ["lp1095403", "lp1879878-revert"]
STRATEGIES = ["virtual"]


def _examples(rows: list[bench.Detection]) -> list[tuple]:
    # seconds, and the shrunk sizes (the shrink is cut off by wall-clock time), depend on the machine's load
    return [(r.fault, r.strategy, r.seeds, r.found, r.median_examples) for r in rows]


def test_campaigns_in_parallel_give_the_rows_they_give_in_turn() -> None:
    lines: list[str] = []
    alone = bench.detection_rows(FAULTS, STRATEGIES, BUDGET, jobs=1, log=lambda line: None)
    parallel = bench.detection_rows(FAULTS, STRATEGIES, BUDGET, jobs=2, log=lines.append)
    assert _examples(parallel) == _examples(alone)
    assert [(r.fault, r.strategy) for r in parallel] == [(f, s) for f in FAULTS for s in STRATEGIES]
    # each seed's campaign reported as it finished, numbered in finishing order
    assert len(lines) == 4 and lines[-1].startswith("detection 4/4")
    assert [r.found for r in parallel] == [2, 2], "two easy faults, found within 30 examples"


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

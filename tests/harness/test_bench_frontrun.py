"""The frontrun baseline of ``bench``: its scenarios, findings and not-found rows.

frontrun is optional (the ``bench`` extra); the tests that run it skip
without it.  They use fixed seeds and DPOR's deterministic default order, so
what they find, and after how many executions, does not vary; nothing here is
timed.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from stateful import bench, frontrun_baseline
from stateful.faults import builtin_faults
from stateful.locks import SchedulerLocks, per_host
from stateful.scheduler import checkpoint
from stateful.target import Op

ROOT = Path(__file__).resolve().parents[2]
FAULTS = {fault.name: fault for fault in builtin_faults("model")}
#: ``bench --json``'s detection strategies, as CONTRACT names them
CONTRACT_STRATEGIES = {"virtual", "pct", "sequential", "wallclock", "frontrun"}

needs_frontrun = pytest.mark.skipif(
    frontrun_baseline.available() is None,
    reason="frontrun is not installed (it comes with the bench extra: pip install -e '.[bench]')",
)


def test_every_model_fault_has_a_scenario_or_a_reason():
    covered = set(frontrun_baseline.SCENARIOS) | set(frontrun_baseline.NOT_SET_UP)
    assert covered == set(FAULTS)
    assert not set(frontrun_baseline.SCENARIOS) & set(frontrun_baseline.NOT_SET_UP)
    for scenario in frontrun_baseline.SCENARIOS.values():
        assert len(scenario.workers) >= 2, scenario.fault


def test_each_scenario_names_the_test_it_comes_from():
    for scenario in frontrun_baseline.SCENARIOS.values():
        path, name = scenario.test.split("::")
        tree = ast.parse((ROOT / path).read_text())
        assert name in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}, scenario.test


@needs_frontrun
def test_random_with_a_fixed_seed_finds_lp1879878_revert_the_same_way_twice():
    fault = FAULTS["lp1879878-revert"]
    scenario = frontrun_baseline.SCENARIOS["lp1879878-revert"]
    first = frontrun_baseline.explore(fault, scenario, "random", seed=0, max_executions=10)
    again = frontrun_baseline.explore(fault, scenario, "random", seed=0, max_executions=10)
    assert first.found and first.strategy == "random"
    assert first.invariant == "usage-matches-oracle"
    assert (again.found, again.executions, again.invariant, again.message) == (
        first.found, first.executions, first.invariant, first.message,
    )


@needs_frontrun
@pytest.mark.parametrize("strategy", frontrun_baseline.STRATEGIES)
def test_without_the_fault_nothing_is_found(strategy):
    """The same exploration with the fault off: the fixed model holds under frontrun's interleavings."""
    scenario = frontrun_baseline.SCENARIOS["lp1879878-revert"]
    seed = 0 if strategy == "random" else None
    clean = frontrun_baseline.explore(None, scenario, strategy, seed=seed, max_executions=5)
    assert not clean.found
    assert (clean.executions, clean.invariant, clean.verdict) == (5, None, "pass")


@needs_frontrun
def test_switching_at_any_bytecode_breaks_the_model_with_no_fault_on():
    """Why frontrun's threads switch only at our switch points: at bytecode granularity it
    interleaves inside the database's compare-and-swap, which Nova's database makes atomic."""
    scenario = frontrun_baseline.SCENARIOS["lp1600304"]
    opcode = frontrun_baseline.explore(
        None, scenario, "random", seed=0, max_executions=3, granularity="opcode"
    )
    assert opcode.found and opcode.invariant == "no-unexpected-error"
    assert "UnexpectedTaskStateError" in opcode.message
    gated = frontrun_baseline.explore(None, scenario, "random", seed=0, max_executions=3)
    assert not gated.found


@needs_frontrun
def test_a_budget_too_small_is_a_not_found_row():
    row = bench.frontrun_detect(FAULTS["lp1095403"], "dpor", seeds=3, max_executions=2, duration=60.0)
    # DPOR is deterministic: one run
    assert (row.strategy, row.variant, row.seeds, row.found) == ("frontrun", "dpor", 1, 0)
    assert (row.median_s, row.worst_s, row.median_examples, row.shrunk_steps) == (None, None, None, None)


@needs_frontrun
def test_a_frontrun_cell_runs_in_a_spawned_process():
    from stateful.parallel import run_cells

    cell = functools.partial(bench.frontrun_cell, "lp1879878-revert", "random", 2, 10, 60.0)
    ((row, log),) = run_cells([("frontrun cell", cell)], jobs=2, done=lambda index, result: None)
    assert (row.fault, row.strategy, row.variant, row.seeds, row.found) == (
        "lp1879878-revert", "frontrun", "random", 2, 2
    )
    assert [run["seed"] for run in log] == [0, 1]


@needs_frontrun
def test_a_found_row_counts_seeds_and_executions():
    log: list[dict] = []
    row = bench.frontrun_detect(
        FAULTS["lp1879878-revert"], "random", 2, max_executions=10, duration=60.0, log=log
    )
    assert [(run["seed"], run["found"]) for run in log] == [(0, True), (1, True)]
    assert (row.fault, row.target, row.strategy, row.variant, row.seeds, row.found) == (
        "lp1879878-revert", "model", "frontrun", "random", 2, 2,
    )
    assert row.strategy in CONTRACT_STRATEGIES
    assert row.median_examples is not None and row.median_examples >= 1
    assert row.shrunk_steps is None and row.shrunk_nonzero_delays is None


def _results(rows, frontrun):
    return {
        "machine": "test", "handoff_us": 1.0, "pingpong_us": 1.0, "handoff_ratio": 1.0, "steps_per_s": 1.0,
        "plain_steps_per_s": 1.0, "steps_ratio_vs_plain": 1.0, "model_ops_per_s": 1, "peak_rss_mb": 1.0,
        "detection": rows, "frontrun": frontrun,
    }


def _row(variant, found):
    return {
        "fault": "lp1095403", "target": "model", "strategy": "frontrun", "variant": variant, "seeds": 1,
        "found": found, "median_s": 0.5 if found else None, "worst_s": 0.5 if found else None,
        "median_examples": 8 if found else None, "shrunk_steps": None, "shrunk_nonzero_delays": None,
    }


def test_markdown_shows_not_found_and_no_shrunk_size_for_frontrun():
    info = {"version": "0.7.0", "random_seeds": 3, "max_executions": 2000, "cap_s": 60.0,
            "not_set_up": {"lp1818914": "no concurrency"}}
    text = bench.markdown(_results([_row("dpor", 1), _row("random", 0)], info))
    dpor, random = (line for line in text.splitlines() if line.startswith("| lp1095403 |"))
    assert dpor.startswith("| lp1095403 | frontrun (dpor) | 1/1 |")
    assert dpor.endswith("| 0.5 | 0.5 | 8 | n/a | n/a |")
    assert random.startswith("| lp1095403 | frontrun (random) | 0/1 |")
    assert random.count("not found") == 5
    assert "Not a fair race" in text and "lp1818914: no frontrun row (no concurrency)" in text


def test_without_frontrun_the_rows_are_missing_with_the_reason(monkeypatch):
    monkeypatch.setattr(frontrun_baseline, "available", lambda: None)
    rows, info = bench.frontrun_baseline_rows(quick=True, cap=2.0)
    assert rows == []
    assert "not installed" in info["skipped"]
    assert "frontrun rows are missing: frontrun is not installed" in bench.markdown(_results([], info))


def test_frontrun_rows_sit_with_their_fault():
    ours = [{"fault": "a", "strategy": "virtual"}, {"fault": "b", "strategy": "virtual"}]
    theirs = [{"fault": "a", "strategy": "frontrun"}, {"fault": "b", "strategy": "frontrun"}]
    merged = bench.merge_by_fault(ours, theirs)
    assert [(r["fault"], r["strategy"]) for r in merged] == [
        ("a", "virtual"), ("a", "frontrun"), ("b", "virtual"), ("b", "frontrun"),
    ]


def test_our_rows_have_no_variant():
    row = bench.Detection("lp1095403", "model", "virtual", 1, 0, None, None, None, None, None)
    assert row.variant is None and row.strategy in CONTRACT_STRATEGIES


# -- the gate: our scheduler's switch points and locks, for frontrun's threads ----------------


class _Counter:
    """A fake target: each operation reads a counter, reaches a checkpoint, writes it back plus one."""

    rejections = ()

    def __init__(self, locked: bool, fair: bool) -> None:
        self.value = 0
        self.locked, self.fair = locked, fair

    def operation(self, op):
        from oslo_concurrency import lockutils

        def increment() -> None:
            seen = self.value
            checkpoint("counter.read")
            self.value = seen + 1

        def run() -> None:
            if not self.locked:
                return increment()
            with lockutils.lock("compute_resources", fair=self.fair):
                increment()

        return run


def _explore_counter(locked: bool, fair: bool):
    """frontrun's random schedules (a fixed seed) over two gated workers of a :class:`_Counter`."""
    import frontrun

    # two operations of the machine's, only for their labels: the fake target ignores them
    workers = [frontrun_baseline._worker(Op("audit", {"host": host}), gated=True) for host in ("host1", "host2")]
    with frontrun_baseline._cooperative_locks():
        locks = SchedulerLocks(per_host)
        with locks:
            return frontrun.explore(
                setup=lambda: frontrun_baseline._State(_Counter(locked, fair)),
                workers=workers,
                invariant=lambda state: not state.errors and state.target.value == 2,
                strategy="random", seed=0, max_attempts=30, reproduce_on_failure=0, detect_io=False,
            )


@needs_frontrun
@pytest.mark.parametrize("fair", [True, False], ids=["fair", "unfair"])
def test_a_model_lock_parks_its_waiter_at_the_gate_and_keeps_the_update_whole(monkeypatch, fair):
    """In some interleavings the second worker waits for the lock at the gate (parked, then
    woken by the release); in none does it see the counter half updated."""
    parks: list[object] = []
    park = frontrun_baseline._Gate.park

    def counted(gate, task, lock):
        parks.append(lock)
        park(gate, task, lock)

    monkeypatch.setattr(frontrun_baseline._Gate, "park", counted)
    result = _explore_counter(locked=True, fair=fair)
    assert result.property_holds is True, result.explanation
    assert result.num_explored == 30
    assert parks, "no interleaving had a worker wait for the lock"


@needs_frontrun
def test_without_the_lock_the_gate_lets_workers_interleave_at_a_checkpoint():
    """The other side of the test above: it could fail.  A checkpoint is a switch point."""
    result = _explore_counter(locked=False, fair=False)
    assert result.property_holds is False


@needs_frontrun
def test_a_failure_of_frontrun_itself_is_no_finding(monkeypatch):
    """A deadlock or timeout frontrun reports, with no invariant broken, must not count as found."""
    import frontrun

    class Failed:
        property_holds, num_explored, inconclusive_reason = False, 1, None
        explanation = "Deadlock detected: both threads wait\n..."

    monkeypatch.setattr(frontrun, "explore", lambda **options: Failed())
    run = frontrun_baseline.explore(
        FAULTS["lp1095403"], frontrun_baseline.SCENARIOS["lp1095403"], "dpor", max_executions=5
    )
    assert (run.found, run.invariant) == (False, None)
    assert run.verdict == "frontrun failed: Deadlock detected: both threads wait"

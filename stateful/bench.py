"""``python -m stateful bench``: speed and bug-finding power, as ratios to in-process baselines.

These machines are noisy, so every speed is reported next to a baseline run
in the same process a moment earlier: a checkpoint hand-off against a raw
two-thread lock ping-pong, the machine's steps per second against a trivial
plain-Hypothesis state machine.  Detection runs each built-in fault under
each schedule strategy for several seeds and reports examples and seconds to
the first failure and the size of the shrunk failure; a strategy that found
nothing in its budget shows as such (null), never as a number.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import platform
import resource
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import fixtures
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from stateful.campaign import NOT_REPLAYABLE, Campaign, CampaignOptions
from stateful.detection_chart import detection_svg
from stateful.errors import Finding, HarnessError, UsageError
from stateful.faults import Fault, builtin_faults, select_faults
from stateful.machine import MachineConfig, make_machine
from stateful.parallel import run_cells
from stateful.scheduler import Scheduler, checkpoint
from stateful.regression import RegressionCase, load
from stateful.session import Session
from stateful.strategies import PCT, FixedDelays, VirtualDelays, WallClockDelays
from stateful.targets import target_factory
from stateful.target import Op
from stateful.topology import example_topology


# -- throughput ----------------------------------------------------------------------


def pingpong_seconds(rounds: int) -> float:
    """Seconds per round trip of two threads handing a pair of locks back and forth."""
    ping, pong = threading.Lock(), threading.Lock()
    ping.acquire()
    pong.acquire()

    def partner() -> None:
        for _ in range(rounds):
            ping.acquire()
            pong.release()

    thread = threading.Thread(target=partner)
    thread.start()
    started = time.perf_counter()
    for _ in range(rounds):
        ping.release()
        pong.acquire()
    elapsed = time.perf_counter() - started
    thread.join()
    return elapsed / rounds


def handoff_seconds(rounds: int) -> float:
    """Seconds per checkpoint hand-off: task -> control loop -> task."""

    def body() -> None:
        for _ in range(rounds):
            checkpoint("bench.handoff")

    started = time.perf_counter()
    Scheduler(FixedDelays()).run([("handoff", body)])
    return (time.perf_counter() - started) / rounds


def model_ops_per_s(seconds: float) -> float:
    """Sequential operations per second on the embedded service (checkpoints are no-ops)."""
    target = target_factory("model")()
    target.setup(example_topology())
    cycle = [
        Op("create", {"instance": "vm", "flavor": "small", "host": "host1"}),
        Op("resize", {"instance": "vm", "flavor": "medium", "host": "host2"}),
        Op("confirm", {"instance": "vm"}),
        Op("audit", {"host": "host2"}),
        Op("delete", {"instance": "vm"}),
    ]
    done, started = 0, time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            for op in cycle:
                target.operation(op)()
            done += len(cycle)
    finally:
        target.teardown()
    return done / (time.perf_counter() - started)


class TrivialMachine(RuleBasedStateMachine):
    """The plain-Hypothesis baseline: a counter with two rules and an invariant."""

    steps_taken = 0

    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    @rule(n=st.integers(0, 10))
    def add(self, n: int) -> None:
        TrivialMachine.steps_taken += 1
        self.value += n

    @rule()
    def reset(self) -> None:
        TrivialMachine.steps_taken += 1
        self.value = 0

    @invariant()
    def never_negative(self) -> None:
        assert self.value >= 0


def steps_per_second(machine: Any, examples: int, count_steps: Callable[[], int]) -> float:
    started = time.perf_counter()
    run_state_machine_as_test(
        machine, settings=settings(max_examples=examples, database=None, deadline=None, derandomize=True)
    )
    return count_steps() / (time.perf_counter() - started)


def machine_throughput(examples: int) -> tuple[float, float]:
    """(our machine's steps/s on the model, trivial machine's steps/s), measured back to back."""
    ours_steps = 0

    def count(recording: Any) -> None:
        nonlocal ours_steps
        ours_steps += len(recording.steps)

    TrivialMachine.steps_taken = 0
    plain = steps_per_second(TrivialMachine, examples, lambda: TrivialMachine.steps_taken)
    ours_machine = make_machine(MachineConfig(target_factory("model"), schedule=VirtualDelays, on_example=count))
    ours = steps_per_second(ours_machine, examples, lambda: ours_steps)
    return ours, plain


def peak_rss_mb(children: bool = False) -> float:
    """This process's peak RSS in MB; with ``children``, the larger of it and its biggest child's
    (``--jobs`` campaigns run in child processes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if children:
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return peak / 1024


# -- detection --------------------------------------------------------------------------


@dataclass
class Detection:
    """One row of ``detection`` (CONTRACT): one fault under one strategy (and variant) over its seeds."""

    fault: str
    target: str
    strategy: str
    seeds: int
    found: int
    median_s: float | None
    worst_s: float | None
    median_examples: float | None
    shrunk_steps: int | None
    shrunk_nonzero_delays: int | None
    #: which form of the strategy, where it has several: frontrun's exploration (``random`` or
    #: ``dpor``), so that ``strategy`` stays one of CONTRACT's names; None for ours
    variant: str | None = None


@dataclass(frozen=True)
class DetectionBudget:
    """What each strategy gets per fault: seeds, and per seed a campaign's examples, seconds and shrink."""

    seeds: int
    max_examples: int
    cap_s: float
    shrink_s: float


FULL_BUDGET = DetectionBudget(seeds=5, max_examples=2000, cap_s=60.0, shrink_s=60.0)
QUICK_BUDGET = DetectionBudget(seeds=1, max_examples=60, cap_s=2.0, shrink_s=1.0)


@dataclass(frozen=True)
class SeedRun:
    """One seed's campaign of one fault under one strategy.

    All None when it found nothing; ``shrunk`` (steps, non-zero delays) is
    also None for a schedule whose findings are not shrunk (NOT_REPLAYABLE).
    """

    seconds: float | None
    examples: int | None
    shrunk: tuple[int, int] | None


def detect_seed(fault: str, strategy: str, seed: int, budget: DetectionBudget) -> SeedRun:
    """``fuzz --fault FAULT --schedule STRATEGY --seed SEED`` on the budget, in this process."""
    with tempfile.TemporaryDirectory() as directory:
        options = CampaignOptions(
            faults=[fault], seed=seed, schedule=strategy, max_examples=budget.max_examples,
            duration=budget.cap_s, db="none", regressions=directory, profile="dev", shrink_seconds=budget.shrink_s,
        )
        report = Campaign(options).run()
    if report.interrupted:
        raise KeyboardInterrupt  # the campaign stopped at a Ctrl-C: its seed did not run out its budget
    if report.harness_errors:
        raise HarnessError(f"bench {fault}/{strategy}/seed {seed}: {report.harness_error_messages}")
    if not report.findings:
        return SeedRun(None, None, None)
    finding = report.findings[0]
    return SeedRun(
        finding.first_failure_s or finding.elapsed_s,
        finding.first_failure_examples or report.examples,
        (finding.steps, finding.nonzero_delays) if strategy not in NOT_REPLAYABLE else None,
    )


def summarize(fault: str, strategy: str, runs: list[SeedRun]) -> Detection:
    """The ``detection`` row of one fault and strategy from its seeds' runs."""
    hits = [run for run in runs if run.seconds is not None and run.examples is not None]
    seconds = [run.seconds for run in hits if run.seconds is not None]  # (all of them: for the type checker)
    smallest = min((run.shrunk for run in hits if run.shrunk), default=(None, None))
    return Detection(
        fault, "model", strategy, len(runs), len(hits),
        round(statistics.median(seconds), 3) if hits else None,
        round(max(seconds), 3) if hits else None,
        statistics.median(run.examples for run in hits if run.examples is not None) if hits else None,
        smallest[0], smallest[1],
    )


def detection_rows(
    faults: list[str], strategies: list[str], budget: DetectionBudget, jobs: int, log: Callable[[str], None]
) -> list[Detection]:
    """One row per fault and strategy; each seed's campaign is a cell of :func:`~stateful.parallel.run_cells`.

    Running ``jobs`` campaigns at once changes more than their seconds when
    the cores are short: a campaign that reaches its cap under load has run
    fewer examples, and wall-clock sleeps interleave differently.  So
    ``jobs`` should not exceed the cores.
    """
    keys = [(fault, strategy, seed) for fault in faults for strategy in strategies for seed in range(budget.seeds)]
    started, finished = time.perf_counter(), 0

    def done(index: int, run: SeedRun) -> None:
        nonlocal finished
        finished += 1
        fault, strategy, seed = keys[index]
        found = "not found" if run.seconds is None else f"found after {run.examples} examples ({run.seconds:.1f} s)"
        log(f"detection {finished}/{len(keys)}, {time.perf_counter() - started:.0f} s in: "
            f"{fault} {strategy} seed {seed}: {found}")

    cells = [(f"{fault} {strategy} seed {seed}", functools.partial(detect_seed, fault, strategy, seed, budget))
             for fault, strategy, seed in keys]
    runs = run_cells(cells, jobs, done)
    by_row: dict[tuple[str, str], list[SeedRun]] = {}
    for (fault, strategy, _), run in zip(keys, runs):
        by_row.setdefault((fault, strategy), []).append(run)
    return [summarize(fault, strategy, row_runs) for (fault, strategy), row_runs in by_row.items()]


# -- schedule power on recorded set-ups --------------------------------------------------------

#: Where each fault's shrunk failure is kept: its last step is the race, its
#: earlier steps the set-up (absent from an installed package: then skipped).
REGRESSIONS = Path(__file__).resolve().parents[1] / "tests" / "regressions"

#: The strategies compared on equal footing, as the ``windows`` rows name them.
WINDOW_STRATEGIES: dict[str, Callable[[Any], Any]] = {
    "virtual": VirtualDelays,
    "virtual, no lengths": functools.partial(VirtualDelays, use_lengths=False),
    "pct": PCT,
    "wallclock": WallClockDelays,
}


def window_hits(case: RegressionCase, schedule: Callable[[Any], Any], trials: int) -> dict[str, int]:
    """Runs of a case's last (concurrent) step under ``schedule``, after its
    earlier steps as recorded: how many ran, broke an invariant (``hits``),
    or ended in a harness error (``errors``).

    This isolates the schedule from the machine: the same operations from the
    same state each time, only the interleaving drawn anew.  Virtual
    strategies are derandomized, so a run repeats; Hypothesis may try fewer
    or more than ``trials`` draws (it stops early when a strategy has few
    distinct choices), and only those that ran the step count.
    """
    recording = case.recording
    *set_up, race = recording.steps
    faults = select_faults(recording.target, list(recording.faults))
    counts = {"runs": 0, "hits": 0, "errors": 0}

    @settings(max_examples=trials, database=None, derandomize=True, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data: st.DataObject) -> None:
        with Session(target_factory(recording.target)(), recording.topology, faults) as session:
            for step in set_up:
                session.apply_recorded(step)
            strategy = schedule(data)
            try:
                session.apply(race.ops, strategy)
            except Finding:
                counts["hits"] += 1
            except HarnessError:
                counts["errors"] += 1
            counts["runs"] += 1

    run()
    return counts


def recorded_races() -> dict[str, RegressionCase]:
    """Per model fault, its first committed file that has that fault alone and ends in a concurrent step."""
    races: dict[str, RegressionCase] = {}
    for path in sorted(REGRESSIONS.glob("*.json")) if REGRESSIONS.is_dir() else []:
        if json.loads(path.read_text(encoding="utf-8")).get("target") != "model":
            continue  # validating a Nova file imports Nova, which need not be installed (or importable now)
        case = load(path)
        recording = case.recording
        if recording.target == "model" and len(recording.faults) == 1 and recording.steps[-1].concurrent:
            races.setdefault(recording.faults[0], case)
    return races


def window_rows(trials: int, strategies: list[str]) -> list[dict[str, Any]]:
    """One row per model fault with a recorded race (:func:`recorded_races`), per strategy."""
    races = recorded_races()
    return [
        {"fault": fault.name, "strategy": name, "file": races[fault.name].name,
         **window_hits(races[fault.name], WINDOW_STRATEGIES[name], trials)}
        for fault in builtin_faults("model")
        if fault.name in races
        for name in strategies
    ]


# -- memory over a long run ------------------------------------------------------------------


def rss_mb() -> float:
    """This process's resident set size now, in MB (psutil, else /proc, else the peak)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return psutil.Process().memory_info().rss / 2**20
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_mb()
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_profile(examples: int) -> dict[str, Any]:
    """RSS (and peak RSS) after 1/4, 1/2, 3/4 and all of a campaign of ``examples`` examples.

    The campaign is ``fuzz``'s own (in this process, model target, virtual
    delays, no fault, so nothing stops it early); flat numbers mean nothing
    accumulates per example.  Its workers report progress every example here
    (not every half second), so each sample is taken at its mark exactly,
    however fast the machine.  (One Hypothesis run over many examples is not
    flat: Hypothesis caches every example's choices, up to 10,000 per run,
    some 0.2 MB per example here; campaigns run chunks of
    ``stateful.campaign.CHUNK`` examples, which is why this measures one.)
    """
    marks = [max(1, examples * quarter // 4) for quarter in (1, 2, 3)]
    samples: list[dict[str, Any]] = []

    def sample(done: int) -> None:
        samples.append(
            {"examples": done, "rss_mb": round(rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1)}
        )

    def progress(report: Any) -> None:
        if marks and report.examples >= marks[0]:
            while marks and report.examples >= marks[0]:
                marks.pop(0)
            sample(report.examples)

    gc.collect()
    start = {"rss_mb": round(rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1)}
    every_example = fixtures.MonkeyPatch("stateful.campaign.SAMPLE_EVERY", 0.0)
    with tempfile.TemporaryDirectory() as directory, every_example:
        options = CampaignOptions(
            max_examples=examples, seed=0, db="none", regressions=directory, profile="dev"
        )
        report = Campaign(options, progress=progress).run()
    if report.harness_errors or report.findings:
        raise HarnessError(f"bench memory: the campaign did not run clean: {report.harness_error_messages}")
    sample(report.examples)
    first, last = samples[0], samples[-1]
    return {
        "examples": report.examples,
        "seconds": report.elapsed_s,
        "start": start,
        "samples": samples,
        "growth_mb": round(last["rss_mb"] - first["rss_mb"], 1),
    }


# -- frontrun, the nearest Python peer, as a baseline ----------------------------------------------

#: The faults frontrun explores in ``--quick`` (it explores every one it can in a full run).
QUICK_FRONTRUN_FAULTS = ("lp1879878-revert", "lp1095403")


def frontrun_detect(
    fault: Fault,
    exploration: str,
    seeds: int,
    max_executions: int,
    duration: float,
    log: list[dict[str, Any]] | None = None,
) -> Detection:
    """``fault``'s fixed-schedule scenario explored by frontrun's ``exploration`` (``random`` or ``dpor``).

    The row's strategy is ``frontrun`` (CONTRACT's name) and its variant the exploration.  Random
    exploration runs once per seed.  DPOR is deterministic (its default
    depth-first order), so it runs once.  Examples are frontrun's executions
    (one per interleaving tried); a finding is not shrunk in our sense, so the
    shrunk sizes are null (shown as n/a).  Each run is appended to ``log``.
    """
    from stateful import frontrun_baseline

    seed_list: list[int | None] = list(range(seeds)) if exploration == "random" else [None]
    runs = frontrun_baseline.explore_seeds(fault, exploration, seed_list, max_executions, duration)
    if log is not None:
        log.extend({**asdict(run), "seconds": round(run.seconds, 3)} for run in runs)
    hits = [run for run in runs if run.found]
    seconds = [run.seconds for run in hits]
    return Detection(
        fault.name, "model", "frontrun", len(runs), len(hits),
        round(statistics.median(seconds), 3) if hits else None,
        round(max(seconds), 3) if hits else None,
        statistics.median(run.executions for run in hits) if hits else None,
        None, None, variant=exploration,
    )


def frontrun_cell(
    fault: str, exploration: str, seeds: int, max_executions: int, duration: float
) -> tuple[Detection, list[dict[str, Any]]]:
    """:func:`frontrun_detect` of a fault by name, with its log: one cell of :func:`run_cells`."""
    log: list[dict[str, Any]] = []
    (switch,) = [f for f in builtin_faults("model") if f.name == fault]
    return frontrun_detect(switch, exploration, seeds, max_executions, duration, log), log


def frontrun_baseline_rows(
    quick: bool, cap: float, jobs: int = 1, log: Callable[[str], None] = lambda line: None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(frontrun's detection rows, random and DPOR for each fault set up; what was and wasn't).

    ``cap`` is each run's wall-clock cap, the same as each seed of our
    strategies gets (:func:`measure`).
    """
    from stateful import frontrun_baseline

    seeds, max_executions = (1, 100) if quick else (3, 2000)
    version = frontrun_baseline.available()
    info: dict[str, Any] = {
        "version": version,
        "random_seeds": seeds,
        "max_executions": max_executions,
        "cap_s": cap,
        "not_set_up": dict(frontrun_baseline.NOT_SET_UP),
    }
    if version is None:
        info["skipped"] = "frontrun is not installed (pip install -e '.[bench]')"
        return [], info
    faults = [f.name for f in builtin_faults("model") if frontrun_baseline.scenario_for(f.name) is not None]
    if quick:
        info["quick_faults"] = list(QUICK_FRONTRUN_FAULTS)
        faults = [f for f in faults if f in QUICK_FRONTRUN_FAULTS]
    keys = [(fault, exploration) for fault in faults for exploration in frontrun_baseline.STRATEGIES]

    def done(index: int, result: tuple[Detection, list[dict[str, Any]]]) -> None:
        row = result[0]
        log(f"frontrun {keys[index][0]} {keys[index][1]}: {row.found}/{row.seeds} found")

    cells = [(f"frontrun {fault} {exploration}",
              functools.partial(frontrun_cell, fault, exploration, seeds, max_executions, cap))
             for fault, exploration in keys]
    results = run_cells(cells, jobs, done)
    info["runs"] = [run for _, runs in results for run in runs]
    return [asdict(row) for row, _ in results], info


# -- the whole run -------------------------------------------------------------------------


def budget_for(quick: bool, seeds: int | None = None, cap_s: float | None = None) -> DetectionBudget:
    """The full or quick detection budget, with ``seeds`` and each seed's ``cap_s`` overridden where given."""
    budget = QUICK_BUDGET if quick else FULL_BUDGET
    if seeds:
        budget = replace(budget, seeds=seeds)
    if cap_s:
        budget = replace(budget, cap_s=cap_s, shrink_s=min(budget.shrink_s, cap_s))
    return budget


def measure(quick: bool, budget: DetectionBudget, jobs: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The whole benchmark, as ``bench --json`` prints it.

    ``jobs`` runs the detection campaigns (and frontrun's explorations) that
    many at a time; throughput, memory and windows always run alone, here.
    """
    rounds = 2000 if quick else 20000
    log("throughput")
    pingpong = pingpong_seconds(rounds)
    handoff = handoff_seconds(rounds)
    ours, plain = machine_throughput(20 if quick else 100)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "handoff_ratio": round(handoff / pingpong, 2),
        "handoff_us": round(handoff * 1e6, 1),
        "pingpong_us": round(pingpong * 1e6, 1),
        "model_ops_per_s": round(model_ops_per_s(1.0 if quick else 5.0)),
        "steps_per_s": round(ours, 1),
        "plain_steps_per_s": round(plain, 1),
        "steps_ratio_vs_plain": round(ours / plain, 3),
    }
    log("memory over a campaign")
    results["memory"] = memory_profile(12 if quick else 1000)
    log("schedule power on the recorded set-ups")
    results["windows"] = window_rows(30 if quick else 400, ["virtual"] if quick else list(WINDOW_STRATEGIES))
    strategies = ["virtual", "sequential"] if quick else ["virtual", "pct", "sequential", "wallclock"]
    results["detection_budget"] = {**asdict(budget), "jobs": jobs}
    faults = [fault.name for fault in builtin_faults("model")]
    results["detection"] = [asdict(row) for row in detection_rows(faults, strategies, budget, jobs, log)]
    frontrun_rows, results["frontrun"] = frontrun_baseline_rows(quick, budget.cap_s, jobs, log)
    results["detection"] = merge_by_fault(results["detection"], frontrun_rows)
    results["peak_rss_mb"] = round(peak_rss_mb(children=True), 1)
    return results


#: what :func:`markdown` reads of a report (CONTRACT's keys, and the baselines' own numbers)
REPORT_KEYS = (
    "machine", "handoff_ratio", "handoff_us", "pingpong_us", "model_ops_per_s", "steps_per_s",
    "plain_steps_per_s", "steps_ratio_vs_plain", "peak_rss_mb", "detection",
)


def load_results(path: str) -> dict[str, Any]:
    """A saved ``bench --json`` report (e.g. the nightly job's), to draw again; UsageError if it is not one."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"bench --render {path}: cannot read a JSON report: {error}") from None
    missing = [key for key in REPORT_KEYS if not isinstance(results, dict) or key not in results]
    if missing:
        raise UsageError(f"bench --render {path}: not a bench --json report (no {', '.join(missing)})")
    return results


def publish(results: dict[str, Any], as_json: bool, docs_path: str | None, svg_path: str | None) -> None:
    """Print the report (JSON or Markdown); also write the Markdown table and the detection picture."""
    print(json.dumps(results) if as_json else markdown(results))
    if docs_path:
        Path(docs_path).write_text(f"# Benchmarks\n\n{markdown(results)}\n")
    if svg_path:
        cap_s = results.get("detection_budget", {}).get("cap_s", FULL_BUDGET.cap_s)
        title = f"Seconds to the first finding ({results['machine']})"
        Path(svg_path).write_text(detection_svg(results["detection"], cap_s, title))


def merge_by_fault(rows: list[dict[str, Any]], more: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` then ``more``, each fault's rows together, faults in their first order."""
    order: dict[str, int] = {}
    for row in rows + more:
        order.setdefault(row["fault"], len(order))
    return sorted(rows + more, key=lambda row: order[row["fault"]])


def budget_markdown(budget: dict[str, Any] | None) -> list[str]:
    if not budget:
        return []
    return [
        f"Detection: {budget['seeds']} seed(s) per fault and schedule strategy, each seed a `fuzz` campaign of "
        f"up to {budget['max_examples']} examples or {budget['cap_s']:g} s, then up to {budget['shrink_s']:g} s "
        f"of shrinking; {budget['jobs']} campaign(s) at a time (frontrun's budget: in its notes below).",
        "",
    ]


def memory_markdown(memory: dict[str, Any] | None) -> list[str]:
    if not memory:
        return []
    quarters = ", ".join(f"{s['rss_mb']} MB after {s['examples']}" for s in memory["samples"])
    peaks = ", ".join(f"{s['peak_rss_mb']}" for s in memory["samples"])
    return [
        f"| RSS over one campaign of {memory['examples']} examples (model, virtual delays) | {quarters} "
        f"| {memory['start']['rss_mb']} MB before the run | {memory['growth_mb']:+g} MB from the first "
        f"quarter to the end (peak RSS at each: {peaks} MB) |",
    ]


def frontrun_notes(results: dict[str, Any]) -> list[str]:
    info = results.get("frontrun")
    if not info:
        return []
    lines = ["", "Reading the frontrun rows:", ""]
    if info.get("skipped"):
        return lines + [f"- frontrun rows are missing: {info['skipped']}."]
    lines += [
        f"- frontrun {info['version']} (PyPI) explores the concurrent operations of each fault's "
        "fixed-schedule test (tests/models/test_faults.py, test_open_races.py), on a fresh model after "
        "that test's serial preparation, with the fault on, and checks the suite's own after-step "
        "invariants when they end. "
        f"`frontrun (random)`: random schedules, {info['random_seeds']} seed(s); `frontrun (dpor)`: DPOR in its "
        "default order and preemption bound, deterministic, so one run. "
        f"Budget per run: {info['max_executions']} executions or {info['cap_s']:g} s. Examples are frontrun "
        "executions (one interleaving each); frontrun does not shrink, so shrunk sizes are n/a.",
        "- Same interleavings: frontrun would switch threads at any bytecode, inside what the model keeps "
        "atomic as Nova does (a database compare-and-swap), and then breaks the model with no fault on; so "
        "its threads may switch only at our delay sites and locks (stateful/frontrun_baseline.py). All those "
        "switches go through one lock, which leaves DPOR little to reduce.",
        "- Not a fair race, and in frontrun's favour: it is handed the very operations, arguments and "
        "preparation that expose the fault and explores only their interleavings; our strategies must "
        "find the operations as well. Its seconds are per fault scenario, ours per campaign.",
    ]
    if info.get("quick_faults"):
        lines.append(f"- `--quick` runs frontrun on {', '.join(info['quick_faults'])} only.")
    for fault, reason in info.get("not_set_up", {}).items():
        lines.append(f"- {fault}: no frontrun row ({reason}).")
    return lines


def markdown(results: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        return "not found" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    def strategy(d: dict[str, Any]) -> str:
        return f"{d['strategy']} ({d['variant']})" if d.get("variant") else d["strategy"]

    def shrunk(d: dict[str, Any], key: str) -> str:
        # frontrun and wall-clock sleeps do not shrink: a size never had is not applicable, not "not found"
        return "n/a" if d["found"] and d[key] is None else cell(d[key])

    lines = [
        f"Machine: {results['machine']}",
        "",
        "| measure | value | baseline (same run) | ratio |",
        "|---|---|---|---|",
        f"| checkpoint hand-off | {results['handoff_us']} µs | raw thread ping-pong {results['pingpong_us']} µs "
        f"| {results['handoff_ratio']}x (goal ≤ 2) |",
        f"| machine steps/s (model, scheduler on) | {results['steps_per_s']} | trivial plain-Hypothesis machine "
        f"{results['plain_steps_per_s']} | {results['steps_ratio_vs_plain']} (goal ≥ 0.25) |",
        f"| model sequential ops/s | {results['model_ops_per_s']} | | (goal ≥ 5000) |",
        f"| peak RSS | {results['peak_rss_mb']} MB | | |",
        *memory_markdown(results.get("memory")),
        "",
        *budget_markdown(results.get("detection_budget")),
        "| fault | strategy | found/seeds | median s | worst s | median examples | shrunk steps | shrunk non-zero delays |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in results["detection"]:
        lines.append(
            f"| {d['fault']} | {strategy(d)} | {d['found']}/{d['seeds']} | {cell(d['median_s'])} | "
            f"{cell(d['worst_s'])} | {cell(d['median_examples'])} | {shrunk(d, 'shrunk_steps')} | "
            f"{shrunk(d, 'shrunk_nonzero_delays')} |"
        )
    lines += [
        "",
        "Strategies: `virtual` our Hypothesis-drawn virtual delays (the default); `pct` PCT's priority "
        "change points; `sequential` no delays, each step's operations one after another; `wallclock` "
        "free-running threads with real sleeps of up to 2 ms at about half the checkpoints (the method of "
        "Nova's hand-written race tests, scaled down): not deterministic, so its findings are kept as first "
        "seen, not shrunk (n/a).",
    ]
    lines += frontrun_notes(results)
    lines += windows_markdown(results.get("windows"))
    return "\n".join(lines)


def windows_markdown(rows: list[dict[str, Any]] | None) -> list[str]:
    if not rows:
        return []
    strategies = list(dict.fromkeys(row["strategy"] for row in rows))
    by_fault: dict[str, dict[str, str]] = {}
    for row in rows:
        percent = f" ({100 * row['hits'] / row['runs']:.0f} %)" if row["runs"] else ""
        errors = f", {row['errors']} harness errors" if row.get("errors") else ""
        by_fault.setdefault(row["fault"], {})[row["strategy"]] = f"{row['hits']}/{row['runs']}{percent}{errors}"
    lines = [
        "",
        "## Schedule power on each fault's recorded set-up",
        "",
        "Each fault's committed regression file (tests/regressions) is replayed up to its last, concurrent "
        "step; that step is then run again and again from the same state, with only the interleaving "
        "drawn anew by each strategy (derandomized Hypothesis draws). The share of runs that break an "
        "invariant measures the schedule alone, apart from how often the machine sets such a step up. "
        "`virtual, no lengths` is the default strategy without the operations' checkpoint counts (its "
        "pauses spread by fixed scales instead).",
        "",
        "| fault | " + " | ".join(strategies) + " |",
        "|---|" + "---|" * len(strategies),
    ]
    for fault, shares in by_fault.items():
        lines.append(f"| {fault} | " + " | ".join(shares.get(name, "") for name in strategies) + " |")
    without = [fault.name for fault in builtin_faults("model") if fault.name not in by_fault]
    if without:
        lines += ["", f"No row for {', '.join(without)}: no committed file of that fault alone ends in a "
                  "concurrent step (theirs end in a step run alone: no interleaving to draw)."]
    return lines

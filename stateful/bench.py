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

import json
import os
import platform
import resource
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from stateful.campaign import Campaign, CampaignOptions
from stateful.errors import HarnessError
from stateful.faults import builtin_faults
from stateful.machine import MachineConfig, make_machine
from stateful.scheduler import Scheduler, checkpoint
from stateful.strategies import FixedDelays, VirtualDelays
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- detection --------------------------------------------------------------------------


@dataclass
class Detection:
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


def detect(fault: str, strategy: str, seeds: int, max_examples: int, duration: float, shrink_seconds: float) -> Detection:
    seconds, examples, shrunk = [], [], []
    with tempfile.TemporaryDirectory() as directory:
        for seed in range(seeds):
            options = CampaignOptions(
                faults=[fault], seed=seed, schedule=strategy, max_examples=max_examples,
                duration=duration, db="none", regressions=directory, profile="dev", shrink_seconds=shrink_seconds,
            )
            report = Campaign(options).run()
            if report.harness_errors:
                raise HarnessError(f"bench {fault}/{strategy}: {report.harness_error_messages}")
            if report.findings:
                finding = report.findings[0]
                seconds.append(finding.first_failure_s or finding.elapsed_s)
                examples.append(finding.first_failure_examples or report.examples)
                shrunk.append((finding.steps, finding.nonzero_delays))
    found = len(seconds)
    smallest = min(shrunk) if shrunk else (None, None)
    return Detection(
        fault, "model", strategy, seeds, found,
        round(statistics.median(seconds), 3) if found else None,
        round(max(seconds), 3) if found else None,
        statistics.median(examples) if found else None,
        smallest[0], smallest[1],
    )


# -- the whole run -------------------------------------------------------------------------


def run_bench(quick: bool, as_json: bool, docs_path: str | None) -> int:
    rounds = 2000 if quick else 20000
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
    strategies = ["virtual", "sequential"] if quick else ["virtual", "pct", "sequential", "wallclock"]
    seeds, budget, cap, shrink = (1, 60, 2.0, 1.0) if quick else (5, 2000, 60.0, 60.0)
    results["detection"] = [
        asdict(detect(fault.name, strategy, seeds, budget, cap, shrink))
        for fault in builtin_faults("model")
        for strategy in strategies
    ]
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if as_json:
        print(json.dumps(results))
    else:
        print(markdown(results))
    if docs_path:
        Path(docs_path).write_text(f"# Benchmarks\n\n{markdown(results)}\n")
    return 0


def markdown(results: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        return "not found" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

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
        "",
        "| fault | strategy | found/seeds | median s | worst s | median examples | shrunk steps | shrunk non-zero delays |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in results["detection"]:
        lines.append(
            f"| {d['fault']} | {d['strategy']} | {d['found']}/{d['seeds']} | {cell(d['median_s'])} | "
            f"{cell(d['worst_s'])} | {cell(d['median_examples'])} | {cell(d['shrunk_steps'])} | "
            f"{cell(d['shrunk_nonzero_delays'])} |"
        )
    return "\n".join(lines)

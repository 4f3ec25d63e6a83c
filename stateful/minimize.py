"""Minimizing a failing recording by replaying it: fewer steps, operations and delays.

Hypothesis shrinks the choices an example was drawn from, within a time
bound, and a state machine's choices shrink unevenly: a stray audit or an
unrelated create survives when deleting it would shift every later draw.
This pass works on what was drawn — the recording — and needs no Hypothesis:
it deletes steps, drops operations from concurrent steps, zeroes delays and
lowers the rest to 1, keeping each change whose replay still breaks the same
invariant.  That is the one-at-a-time phase of delta debugging (Zeller and
Hildebrandt, TSE 2002), repeated until nothing more goes.  A replay of the
embedded target costs milliseconds, so a minimized failure is what a
reviewer reads in a regression file: the steps and pauses that matter.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Iterator, Sequence

from stateful.errors import Finding
from stateful.faults import Fault
from stateful.replay import replay
from stateful.scheduler import ScheduleEntry
from stateful.serializability import INVARIANT as SERIALIZABLE
from stateful.session import Recording, StepRecord
from stateful.target import Target


def minimize(
    recording: Recording,
    finding: Finding,
    target: Callable[[], Target],
    faults: Sequence[Fault],
    seconds: float = 60.0,
    stop: Callable[[], bool] = lambda: False,
) -> tuple[Recording, Finding]:
    """The smallest recording found within ``seconds`` (or until ``stop()``) that still
    breaks ``finding.invariant``.

    Returns it with the finding its replay ends in (same invariant, maybe
    other numbers).  Candidates are tried in a fixed order, so the result is
    deterministic when neither bound is reached.
    """
    deadline = time.monotonic() + seconds

    def out_of_time() -> bool:
        return time.monotonic() >= deadline or stop()

    best, best_finding = recording, finding
    changed = True
    while changed and not out_of_time():
        changed = False
        for candidate in smaller(best):
            if out_of_time():
                break
            result = replay(candidate, target, faults, check_serializable=finding.invariant == SERIALIZABLE)
            if result.finding is not None and result.invariant == finding.invariant:
                best, best_finding, changed = result.recording, result.finding, True
                break
    return best, best_finding


def smaller(recording: Recording) -> Iterator[Recording]:
    """Each one-change-smaller variant of ``recording``, the biggest cuts first."""
    steps = recording.steps
    for index in reversed(range(len(steps))):
        yield _with_steps(recording, steps[:index] + steps[index + 1 :])
    for index, step in enumerate(steps):
        for task in range(len(step.ops) if step.concurrent else 0):
            yield _with_steps(recording, [*steps[:index], without_op(step, task), *steps[index + 1 :]])
    for index, step in enumerate(steps):
        for position, entry in enumerate(step.schedule):
            for delay in (0, 1):
                if entry.delay > delay:
                    schedule = list(step.schedule)
                    schedule[position] = replace(entry, delay=delay)
                    changed = StepRecord(step.ops, tuple(schedule))
                    yield _with_steps(recording, [*steps[:index], changed, *steps[index + 1 :]])


def without_op(step: StepRecord, task: int) -> StepRecord:
    """``step`` without its ``task``-th operation; the others keep their delays."""
    ops = step.ops[:task] + step.ops[task + 1 :]
    if len(ops) == 1:
        return StepRecord(ops)
    schedule = tuple(_renumbered(entry, task) for entry in step.schedule if entry.task != task)
    return StepRecord(ops, schedule)


def _renumbered(entry: ScheduleEntry, removed: int) -> ScheduleEntry:
    return replace(entry, task=entry.task - 1) if entry.task > removed else entry


def _with_steps(recording: Recording, steps: list[StepRecord]) -> Recording:
    return Recording(recording.target, list(recording.faults), recording.topology, steps)

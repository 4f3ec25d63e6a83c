"""One example's life: a fresh target, fault switches on, steps applied and checked.

The Hypothesis state machine, the regression-file replayer and the
determinism self-check all drive a target through a :class:`Session`, so a
step means exactly the same thing in each of them.  A session records every
step it applies (operations, and for concurrent steps the schedule followed)
into a :class:`Recording`: plain data, enough to replay the example without
Hypothesis.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import fixtures

from stateful.errors import Finding, HarnessError
from stateful.faults import Fault
from stateful.invariants import AFTER_STEP, check, check_always, check_audit_changes_nothing
from stateful.locks import SchedulerLocks, per_host
from stateful.scheduler import (
    DEFAULT_STEP_TIMEOUT,
    Outcome,
    RunResult,
    ScheduleEntry,
    Scheduler,
    Strategy,
    TraceEvent,
    schedule_of,
)
from stateful.strategies import FixedDelays
from stateful.target import Observation, Op, Target


@dataclass(frozen=True)
class StepRecord:
    """One applied step: its operations and, if concurrent, the schedule it followed."""

    ops: tuple[Op, ...]
    schedule: tuple[ScheduleEntry, ...] = ()

    @property
    def concurrent(self) -> bool:
        return len(self.ops) > 1


@dataclass
class Recording:
    """Everything needed to replay an example: plain data, no Hypothesis."""

    target: str
    faults: list[str]
    topology: Mapping[str, Any]
    steps: list[StepRecord] = field(default_factory=list)
    #: The trace of each concurrent step, in order (not stored in files: a
    #: replay regenerates it, and comparing the two is the determinism check).
    traces: list[list[TraceEvent]] = field(default_factory=list)
    #: The finding the example ended in, if it did (set as the finding is raised).  Not compared:
    #: two runs that break alike raise two exception objects, which are never equal.
    broke: Finding | None = field(default=None, compare=False)

    @property
    def nonzero_delays(self) -> int:
        return sum(1 for step in self.steps for entry in step.schedule if entry.delay)


@dataclass
class StepResult:
    outcomes: list[Outcome]
    trace: list[TraceEvent]
    #: The accounting after the step (already checked).
    observation: Observation


class Session(fixtures.Fixture):
    """A target built for one topology, with fault switches and scheduler-aware locks.

    Use as a context manager (or ``useFixture``); :meth:`apply` runs a step
    and raises :class:`~stateful.errors.Finding` when an invariant breaks.
    """

    def __init__(
        self,
        target: Target,
        topology: Mapping[str, Any],
        faults: Sequence[Fault] = (),
        *,
        lock_key: Callable[[str], Hashable] = per_host,
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
    ) -> None:
        super().__init__()
        self.target = target
        self.topology = topology
        self.faults = list(faults)
        self.lock_key = lock_key
        self.step_timeout = step_timeout
        self.recording = Recording(target.name, [f.name for f in self.faults], topology)

    def _setUp(self) -> None:
        self.useFixture(SchedulerLocks(self.lock_key))
        for fault in self.faults:
            self.useFixture(fault.fixture())
        self.target.setup(self.topology)
        self.addCleanup(self.target.teardown)

    def apply(self, ops: Sequence[Op], strategy: Strategy | None = None) -> StepResult:
        """Apply one step (one operation, or several at once under ``strategy``)."""
        try:
            return self._apply(tuple(ops), strategy)
        except Finding as finding:
            self.recording.broke = finding
            raise

    def apply_recorded(self, step: StepRecord) -> StepResult:
        """Apply a recorded step again; a concurrent one follows its recorded schedule."""
        return self.apply(step.ops, FixedDelays.from_schedule(step.schedule) if step.concurrent else None)

    def _apply(self, ops: tuple[Op, ...], strategy: Strategy | None) -> StepResult:
        audit_host = ops[0].args["host"] if len(ops) == 1 and ops[0].name == "audit" else None
        before = self.target.observe() if audit_host else None
        if strategy is None:
            if len(ops) != 1:
                raise HarnessError("a concurrent step needs a schedule strategy")
            outcomes, trace = self._run_directly(ops[0]), []
            self.recording.steps.append(StepRecord(ops))
        else:
            outcomes, trace = self._run_scheduled(ops, strategy)
        self._check_errors(ops, outcomes)
        actual, expected = self.target.observe(), self.target.expected()
        check(AFTER_STEP, actual, expected, context=f"after {' | '.join(op.label for op in ops)}")
        if before is not None and audit_host is not None and before.in_flight == 0:
            check_audit_changes_nothing(before, actual, audit_host)
        return StepResult(outcomes, trace, actual)

    def _run_directly(self, op: Op) -> list[Outcome]:
        outcome = Outcome(op.label)
        try:
            outcome.value = self.target.operation(op)()
        except Exception as error:  # noqa: BLE001 - classified in _check_errors
            outcome.error = error
        return [outcome]

    def _run_scheduled(self, ops: tuple[Op, ...], strategy: Strategy) -> tuple[list[Outcome], list[TraceEvent]]:
        if not strategy.virtual:
            from stateful.wallclock import WallClockScheduler

            run: RunResult = WallClockScheduler(strategy, step_timeout=self.step_timeout).run(  # type: ignore[arg-type]
                [(op.label, self.target.operation(op)) for op in ops]
            )
            self.recording.steps.append(StepRecord(ops))
            return run.outcomes, run.trace
        hints = getattr(self.target, "checkpoint_hints", None) if hasattr(strategy, "expect_lengths") else None
        if hints:
            strategy.expect_lengths([hints.get(op.name) for op in ops])  # type: ignore[attr-defined]
        scheduler = Scheduler(
            strategy,
            step_timeout=self.step_timeout,
            on_checkpoint=self._check_always,
            on_checkpoint_anywhere=getattr(self.target, "observes_from_any_thread", False),
            greenlets=getattr(self.target, "tasks_as_greenlets", False),
        )
        try:
            run = scheduler.run([(op.label, self.target.operation(op)) for op in ops])
        finally:
            # Recorded even when the step fails midway, so the failure replays.
            self.recording.steps.append(StepRecord(ops, tuple(schedule_of(scheduler.trace))))
            self.recording.traces.append(list(scheduler.trace))
        return run.outcomes, run.trace

    def _check_always(self, event: TraceEvent) -> None:
        check_always(self.target.observe_counters(), context=f"at {event}")

    def _check_errors(self, ops: tuple[Op, ...], outcomes: list[Outcome]) -> None:
        for op, outcome in zip(ops, outcomes):
            error = outcome.error
            if error is None:
                continue
            if raised_by_the_harness(error):
                raise HarnessError(
                    f"{op.label}: the fuzzer's own code raised {type(error).__name__}: {error}"
                ) from error
            if not isinstance(error, self.target.rejections):
                raise Finding(
                    "no-unexpected-error", f"{op.label} raised {type(error).__name__}: {error}"
                ) from error


_HARNESS_PACKAGE = Path(__file__).resolve().parent


def raised_by_the_harness(error: BaseException) -> bool:
    """Whether ``error`` is a plain Python error (KeyError, TypeError, ...) raised in the fuzzer's own code.

    That is a bug of ours — a target's bookkeeping, say — not of the system
    under test.  Errors raised in the system's code (including copies of it
    in modules marked ``SYSTEM_UNDER_TEST_CODE``) and the targets' own
    reports of the system's failures (their own exception classes) are
    findings.  The shims the system calls through (delay-site wrappers,
    scheduler-aware locks: modules marked ``JUDGED_BY_CALLER``) are judged by
    the frame that called them: a lock released twice is the caller's error.
    """
    if type(error).__module__ != "builtins" or error.__traceback__ is None:
        return False
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
    while len(frames) > 1 and frames[-1].f_globals.get("JUDGED_BY_CALLER"):
        frames.pop()
    frame = frames[-1]
    if frame.f_globals.get("SYSTEM_UNDER_TEST_CODE"):
        return False
    return Path(frame.f_code.co_filename).resolve().is_relative_to(_HARNESS_PACKAGE)

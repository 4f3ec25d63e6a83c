"""Replaying a recorded example: steps and schedules drive a fresh session directly.

No Hypothesis is involved: each single-operation step is applied as is and
each concurrent step follows its recorded schedule through
:class:`~stateful.strategies.FixedDelays`.  The determinism self-check replays
an example just run and compares the two traces event by event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from stateful.errors import Finding, NondeterministicRun
from stateful.faults import Fault
from stateful.regression import RegressionCase
from stateful.scheduler import TraceEvent
from stateful.serializability import INVARIANT as SERIALIZABLE
from stateful.serializability import check_step
from stateful.session import Recording, Session
from stateful.target import Target


@dataclass
class Replay:
    """What a replay did: the recording it made, and the finding it ended in, if any."""

    recording: Recording
    finding: Finding | None

    @property
    def invariant(self) -> str | None:
        return self.finding.invariant if self.finding else None


def replay(
    recording: Recording, target: Callable[[], Target], faults: Sequence[Fault], check_serializable: bool = False
) -> Replay:
    """Apply ``recording``'s steps to a fresh target; stop at the first finding.

    ``check_serializable`` also checks each concurrent step against the serial
    orders of its operations (:mod:`stateful.serializability`).
    """
    session = Session(target(), recording.topology, faults)
    with session:
        for step in recording.steps:
            try:
                result = session.apply_recorded(step)
                if check_serializable and step.concurrent:
                    check_step(session, result, target)
            except Finding as finding:
                return Replay(session.recording, finding)
    return Replay(session.recording, None)


def first_divergence(a: Sequence[Sequence[TraceEvent]], b: Sequence[Sequence[TraceEvent]]) -> str | None:
    """Where two runs' traces first differ (step and event), or None if identical."""
    for step, (left, right) in enumerate(zip(a, b)):
        for index, (x, y) in enumerate(zip(left, right)):
            if x != y:
                return f"concurrent step {step}, event {index}: {x} vs {y}"
        if len(left) != len(right):
            return f"concurrent step {step}: {len(left)} events vs {len(right)}"
    if len(a) != len(b):
        return f"{len(a)} concurrent steps vs {len(b)}"
    return None


def check_determinism(recording: Recording, target: Callable[[], Target], faults: Sequence[Fault]) -> None:
    """Replay ``recording`` and raise :class:`NondeterministicRun` if the traces differ."""
    again = replay(recording, target, faults).recording
    divergence = first_divergence(recording.traces, again.traces)
    if divergence is not None:
        raise NondeterministicRun(f"the same example ran differently when replayed: {divergence}")


@dataclass
class Verdict:
    """How a regression case replayed: as recorded or not, and why."""

    as_recorded: bool
    message: str
    replay: Replay


def replay_case(case: RegressionCase, extra_fault_files: Sequence[str] = ()) -> Verdict:
    """Replay a regression file's case and compare with its expected outcome."""
    from stateful.faults import select_faults
    from stateful.targets import target_factory

    recording = case.recording
    factory = target_factory(recording.target)
    faults = select_faults(recording.target, recording.faults, extra_fault_files)
    result = replay(recording, factory, faults, check_serializable=case.invariant == SERIALIZABLE)
    got = result.invariant
    if case.expected == "fail":
        if got == case.invariant:
            return Verdict(True, f"still fails {got}, as recorded", result)
        if got is None:
            return Verdict(
                False,
                f"the bug is gone: expected to fail {case.invariant} but every invariant held "
                "(if it was fixed, set expected.outcome to \"pass\")",
                result,
            )
        return Verdict(False, f"fails {got} instead of the recorded {case.invariant}: {result.finding}", result)
    if got is None:
        return Verdict(True, "passes, as recorded", result)
    return Verdict(False, f"expected to pass but fails {got}: {result.finding}", result)


def replay_case_with_faults_off(case: RegressionCase) -> Verdict:
    """Replay a case that fails with fault switches on, with them off: it must pass.

    This is what makes a fault's file its documentation: the same steps and
    schedule are harmless without the switch, so the switch is the bug.
    """
    from stateful.targets import target_factory

    target = target_factory(case.recording.target)
    result = replay(case.recording, target, (), check_serializable=case.invariant == SERIALIZABLE)
    if result.invariant is None:
        return Verdict(True, "passes with its fault switches off", result)
    return Verdict(
        False,
        f"fails {result.invariant} even with {', '.join(case.recording.faults)} off: "
        f"the fault switch is not what breaks it ({result.finding})",
        result,
    )

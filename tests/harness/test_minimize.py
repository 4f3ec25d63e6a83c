"""Minimizing a failing recording by replay: what is left is what the race needs."""

from __future__ import annotations

from stateful.errors import Finding
from stateful.faults import builtin_faults
from stateful.minimize import minimize, smaller, without_op
from stateful.replay import replay
from stateful.scheduler import ScheduleEntry
from stateful.session import Recording, StepRecord
from stateful.target import Op
from stateful.targets import target_factory
from stateful.topology import example_topology

LP1729371 = [f for f in builtin_faults("model") if f.name == "lp1729371"]
MODEL = target_factory("model")

# lp1729371's race: an audit of host1, paused after its instance read, while
# a create on host1 allocates in placement before its instance row exists.
AUDIT = Op("audit", {"host": "host1"})
CREATE = Op("create", {"instance": "vm1", "flavor": "small", "host": "host1"})
RACE = StepRecord((AUDIT, CREATE), (ScheduleEntry(0, "db.instance.get_by_host_and_node", 0, 1),))


def padded() -> Recording:
    """The race behind steps, an operation and delays it does not need."""
    other = Op("create", {"instance": "vm2", "flavor": "medium", "host": "host2"})
    noise = (
        ScheduleEntry(2, "db.instance.get_by_host_and_node", 0, 5),
        ScheduleEntry(1, "compute.spawn", 0, 3),
    )
    steps = [
        StepRecord((other,)),
        StepRecord((Op("audit", {"host": "host2"}),)),
        StepRecord((AUDIT, CREATE, Op("audit", {"host": "host2"})), RACE.schedule + noise),
    ]
    return Recording("model", ["lp1729371"], example_topology(2), steps)


def fails(recording: Recording) -> Finding | None:
    return replay(recording, MODEL, LP1729371).finding


def test_a_stop_request_ends_minimizing_with_what_it_has():
    recording = padded()
    finding = fails(recording)
    assert finding is not None
    unchanged, same = minimize(recording, finding, MODEL, LP1729371, stop=lambda: True)
    assert unchanged is recording and same is finding


def test_minimizing_keeps_only_what_the_race_needs():
    recording = padded()
    finding = fails(recording)
    assert finding is not None and finding.invariant == "placement-matches-oracle"
    small, small_finding = minimize(recording, finding, MODEL, LP1729371)
    assert small_finding.invariant == finding.invariant
    assert [step.ops for step in small.steps] == [RACE.ops]
    assert small.nonzero_delays == 1
    # one-minimal: no single further cut still fails
    for candidate in smaller(small):
        again = fails(candidate)
        assert again is None or again.invariant != finding.invariant


def test_minimizing_is_deterministic():
    recording = padded()
    finding = fails(recording)
    first, _ = minimize(recording, finding, MODEL, LP1729371)
    second, _ = minimize(recording, finding, MODEL, LP1729371)
    assert first == second


def test_minimizing_a_recording_that_does_not_fail_changes_nothing():
    recording = Recording("model", ["lp1729371"], example_topology(2), [StepRecord((CREATE,))])
    small, finding = minimize(recording, Finding("placement-matches-oracle", "recorded"), MODEL, LP1729371)
    assert small == recording and finding.message == "recorded"


def test_dropping_an_operation_renumbers_the_later_tasks_delays():
    step = StepRecord(
        (AUDIT, CREATE, AUDIT),
        (ScheduleEntry(0, "a", 0, 1), ScheduleEntry(1, "b", 0, 2), ScheduleEntry(2, "c", 0, 3)),
    )
    renumbered = (ScheduleEntry(0, "a", 0, 1), ScheduleEntry(1, "c", 0, 3))
    assert without_op(step, 1) == StepRecord((AUDIT, AUDIT), renumbered)
    assert without_op(StepRecord((AUDIT, CREATE), step.schedule[:2]), 0) == StepRecord((CREATE,))

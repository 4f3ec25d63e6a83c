"""A concurrent step must end as some serial order of the operations that succeeded."""

from __future__ import annotations

import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from stateful.errors import Finding
from stateful.machine import MachineConfig, make_machine
from stateful.profiles import profile
from stateful.replay import replay
from stateful.scheduler import ScheduleEntry
from stateful.serializability import check_serializable, end_state, first_difference
from stateful.session import Recording, Session, StepRecord
from stateful.target import Op
from stateful.targets import target_factory
from stateful.topology import example_topology

MODEL = target_factory("model")
CREATE = Op("create", {"instance": "vm1", "flavor": "small", "host": "host1"})
RESIZE = Op("resize", {"instance": "vm1", "flavor": "medium", "host": "host2"})
AUDIT = Op("audit", {"host": "host2"})
#: A resize to host2 paused after an instance save while host2 is audited.
INTERLEAVED = [StepRecord((CREATE,)), StepRecord((RESIZE, AUDIT), (ScheduleEntry(0, "db.instance.save", 1, 3),))]


def ran(steps: list[StepRecord]) -> Recording:
    return replay(Recording("model", [], example_topology(2), steps), MODEL, ()).recording


def concurrent_end(steps: list[StepRecord]) -> dict:
    """The end state of running ``steps`` (the last one concurrent), as the check compares it."""
    session = Session(MODEL(), example_topology(2))
    with session:
        for step in steps:
            session.apply_recorded(step)
        return end_state(session.target.observe(), session.target.describe)


def test_an_interleaved_resize_and_audit_ends_as_a_serial_order():
    check_serializable(ran(INTERLEAVED), [RESIZE, AUDIT], concurrent_end(INTERLEAVED), MODEL, ())


def test_an_end_state_no_serial_order_gives_is_a_finding_that_says_where_it_differs():
    end = concurrent_end(INTERLEAVED)
    end["servers"]["vm1"] = {**end["servers"]["vm1"], "host": "host1"}  # as if the move were lost
    with pytest.raises(Finding) as caught:
        check_serializable(ran(INTERLEAVED), [RESIZE, AUDIT], end, MODEL, ())
    assert caught.value.invariant == "serializable"
    assert "servers.vm1.host: 'host1' vs 'host2'" in caught.value.message


def test_only_the_operations_that_succeeded_are_ordered():
    # With only the audit succeeding, the resize must not be applied by any order.
    steps = [StepRecord((CREATE,)), StepRecord((AUDIT,))]
    end = concurrent_end(steps)
    check_serializable(ran([*steps[:1], StepRecord((RESIZE, AUDIT))]), [AUDIT], end, MODEL, ())


def test_first_difference_names_the_path():
    assert first_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}) == "a.c: 2 vs 3"


def test_the_machine_with_no_fault_is_serializable():
    config = MachineConfig(MODEL, check_serializable=True)
    budget = settings(profile("ci"), max_examples=25, phases=[Phase.generate])
    run_state_machine_as_test(make_machine(config), settings=budget)

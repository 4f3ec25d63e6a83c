"""Pauses spread over whole operations: the model's checkpoint counts and how VirtualDelays uses them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stateful.session import Session
from stateful.strategies import GAP_SCALES, VirtualDelays
from stateful.target import OPERATIONS, Op
from stateful.lengths import operation_lengths
from stateful.targets.model import CHECKPOINT_HINTS, ModelTarget
from stateful.topology import example_topology


def test_every_operation_has_its_measured_length() -> None:
    assert set(CHECKPOINT_HINTS) == set(OPERATIONS)
    assert all(CHECKPOINT_HINTS[name] > 0 for name in OPERATIONS if name != "host_down")
    assert CHECKPOINT_HINTS == operation_lengths(ModelTarget)  # measured again: the same
    assert CHECKPOINT_HINTS["live_migrate"] > max(GAP_SCALES[:2])  # deeper than the short scales reach


@settings(max_examples=50, database=None)
@given(st.data())
def test_first_pauses_fall_within_each_operations_length(data: st.DataObject) -> None:
    strategy = VirtualDelays(data)
    strategy.expect_lengths([35, 5, None])
    strategy.begin(["live_migrate", "audit", "unknown"])
    assert strategy.countdown[0] <= 35 and strategy.countdown[1] <= 5
    assert strategy.countdown[2] <= max(GAP_SCALES)


class Spy(VirtualDelays):
    told: list[list[int | None]] = []

    def expect_lengths(self, lengths):  # type: ignore[no-untyped-def]
        Spy.told.append(list(lengths))
        super().expect_lengths(lengths)


@settings(max_examples=1, database=None)
@given(st.data())
def test_a_session_tells_the_strategy_its_operations_lengths(data: st.DataObject) -> None:
    Spy.told.clear()
    with Session(ModelTarget(), example_topology()) as session:
        session.apply([Op("create", {"instance": "vm1", "flavor": "small", "host": "host1"})])
        session.apply([Op("audit", {"host": "host1"}), Op("delete", {"instance": "vm1"})], Spy(data))
    assert Spy.told == [[CHECKPOINT_HINTS["audit"], CHECKPOINT_HINTS["delete"]]]


def test_without_lengths_the_gaps_follow_the_scales() -> None:
    audit_gaps: list[int] = []

    @settings(max_examples=100, database=None, derandomize=True)
    @given(st.data())
    def draw(data: st.DataObject) -> None:
        strategy = VirtualDelays(data, use_lengths=False)
        strategy.expect_lengths([35, 5])
        strategy.begin(["live_migrate", "audit"])
        audit_gaps.append(strategy.countdown[1])

    draw()
    assert max(audit_gaps) > 5  # the audit's own length no longer bounds its first pause

"""Is a concurrent step's end state the end state of some serial order of its operations?

The accounting invariants compare a node's counters with what the records
imply; they cannot see records that went wrong together — an instance left
in a state, on a host or with a flavor that no order of the same operations
would give.  This check (opt-in: ``MachineConfig(check_serializable=True)``,
``fuzz --serializable``) replays the example up to the concurrent step on a
fresh target, applies the operations that succeeded one after another in
every order, and requires the concurrent end state to equal one of them.

Operations the concurrent run rejected are left out of the serial orders:
they changed nothing (a rejection is Nova refusing before it starts).  The
state compared is accounting and records, made independent of what a serial
order changes incidentally: consumers by their readable names (uuids are
handed out in order of creation), PCI devices and pinned CPUs counted per
consumer (which free device an instance gets depends on who asked first).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, Sequence

from stateful.errors import Finding
from stateful.faults import Fault
from stateful.session import Recording, Session, StepResult
from stateful.target import Observation, Op, Target

INVARIANT = "serializable"


def end_state(observation: Observation, describe: Callable[[str], str]) -> dict[str, Any]:
    """What a serial order must reproduce, free of incidental uuids and device choices."""
    return {
        "usage": observation.usage,
        "servers": observation.servers,
        "allocations": {
            describe(consumer): held for consumer, held in observation.allocations.items() if held
        },
        "pci_devices": _held_per_consumer(observation.pci_owners, describe),
        "pinned_cpus": _held_per_consumer(observation.cpu_owners, describe),
    }


def _held_per_consumer(
    owners: dict[str, dict[str, list[str]]], describe: Callable[[str], str]
) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for node, by_item in owners.items():
        for consumers in by_item.values():
            for consumer in consumers:
                per_node = counts.setdefault(node, {})
                per_node[describe(consumer)] = per_node.get(describe(consumer), 0) + 1
    return counts


def check_step(session: Session, result: StepResult, target: Callable[[], Target]) -> None:
    """Check the concurrent step ``session`` just applied (its recording's last step)."""
    ops = session.recording.steps[-1].ops
    succeeded = [op for op, outcome in zip(ops, result.outcomes) if outcome.error is None]
    end = end_state(result.observation, session.target.describe)
    try:
        check_serializable(session.recording, succeeded, end, target, session.faults)
    except Finding as finding:
        session.recording.broke = finding
        raise


def check_serializable(
    recording: Recording,
    succeeded: Sequence[Op],
    concurrent_end: dict[str, Any],
    target: Callable[[], Target],
    faults: Sequence[Fault],
) -> None:
    """Raise a ``serializable`` :class:`Finding` unless some serial order of ``succeeded``,
    applied after ``recording``'s steps but its last (the concurrent one), ends in
    ``concurrent_end``."""
    orders = []
    for order, state in serial_end_states(recording, succeeded, target, faults):
        if state == concurrent_end:
            return
        orders.append((order, state))
    labels = " | ".join(op.label for op in recording.steps[-1].ops)
    differences = "; ".join(
        f"after {' then '.join(op.label for op in order) or 'nothing'}: "
        f"{first_difference(concurrent_end, state)}"
        for order, state in orders
    )
    raise Finding(INVARIANT, f"the end of {labels} matches no serial order of what succeeded ({differences})")


def serial_end_states(
    recording: Recording, ops: Sequence[Op], target: Callable[[], Target], faults: Sequence[Fault]
) -> Iterator[tuple[tuple[Op, ...], dict[str, Any]]]:
    """Each order of ``ops`` and the end state it gives (orders that break an invariant give none)."""
    for order in itertools.permutations(ops):
        session = Session(target(), recording.topology, faults)
        with session:
            try:
                for step in recording.steps[:-1]:
                    session.apply_recorded(step)
                for op in order:
                    session.apply([op])
            except Finding:
                continue
            yield order, end_state(session.target.observe(), session.target.describe)


def first_difference(left: Any, right: Any, path: str = "") -> str:
    """Where two end states first differ, as ``path: left vs right``."""
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right), key=str):
            if left.get(key) != right.get(key):
                return first_difference(left.get(key), right.get(key), f"{path}.{key}" if path else str(key))
    return f"{path}: {left!r} vs {right!r}"

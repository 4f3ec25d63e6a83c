"""Usage-accounting invariants, as pure functions over observations.

Every invariant has a stable name: it appears in failure messages, in
regression files (the expected outcome) and in campaign reports.  The checks
run in a fixed order, most specific first, so that one bug is always
reported under the same name (negative usage is ``no-negative-usage``, not
also a mismatch with the oracle).
"""

from __future__ import annotations

from typing import Callable, Iterator

from stateful.errors import Finding
from stateful.target import Observation

ALWAYS = ("no-negative-usage", "no-double-ownership")
AFTER_STEP = (
    *ALWAYS,
    "usage-not-below-reserved",
    "terminal-holds-nothing",
    "usage-matches-oracle",
    "placement-matches-oracle",
)
#: Names raised elsewhere (by the session or the scheduler), listed so that
#: regression files naming them validate.
OTHER = ("audit-changes-nothing", "no-unexpected-error", "rejects-illegal-operation", "no-deadlock")
NAMES = (*AFTER_STEP, *OTHER)


def _negative(actual: Observation, expected: Observation) -> Iterator[str]:
    for node, usage in actual.usage.items():
        for resource, amount in usage.items():
            if amount < 0:
                yield f"{node} {resource} is {amount}"


def _owned_twice(actual: Observation, expected: Observation) -> Iterator[str]:
    for kind, owners_by_node in (("PCI device", actual.pci_owners), ("CPU", actual.cpu_owners)):
        for node, owners in owners_by_node.items():
            for item, consumers in owners.items():
                if len(consumers) > 1:
                    yield f"{kind} {item} on {node} is owned by {', '.join(consumers)}"


def _below_reserved(actual: Observation, expected: Observation) -> Iterator[str]:
    for node, floor in actual.reserved.items():
        for resource, reserved in floor.items():
            amount = actual.usage.get(node, {}).get(resource, reserved)
            if amount < reserved:
                yield f"{node} {resource} is {amount}, below the reserved {reserved}"


def _terminal_holding(actual: Observation, expected: Observation) -> Iterator[str]:
    for consumer in actual.terminal_consumers:
        held = actual.allocations.get(consumer)
        if held:
            yield f"{consumer} is finished but still holds allocations {held}"
        for kind, owners_by_node in (("PCI device", actual.pci_owners), ("CPU", actual.cpu_owners)):
            for node, owners in owners_by_node.items():
                for item, consumers in owners.items():
                    if consumer in consumers:
                        yield f"{consumer} is finished but still owns {kind} {item} on {node}"


def _usage_mismatch(actual: Observation, expected: Observation) -> Iterator[str]:
    for node in sorted(set(actual.usage) | set(expected.usage)):
        have, want = actual.usage.get(node, {}), expected.usage.get(node, {})
        for resource in sorted(set(have) | set(want)):
            if have.get(resource, 0) != want.get(resource, 0):
                yield (
                    f"{node} {resource}: tracked {have.get(resource, 0)}, "
                    f"but the database's instances and migrations imply {want.get(resource, 0)}"
                )


def _placement_mismatch(actual: Observation, expected: Observation) -> Iterator[str]:
    for consumer in sorted(set(actual.allocations) | set(expected.allocations)):
        have, want = actual.allocations.get(consumer, {}), expected.allocations.get(consumer, {})
        if have != want:
            yield f"consumer {consumer}: placement holds {have or 'nothing'}, expected {want or 'nothing'}"


_CHECKS: dict[str, Callable[[Observation, Observation], Iterator[str]]] = {
    "no-negative-usage": _negative,
    "no-double-ownership": _owned_twice,
    "usage-not-below-reserved": _below_reserved,
    "terminal-holds-nothing": _terminal_holding,
    "usage-matches-oracle": _usage_mismatch,
    "placement-matches-oracle": _placement_mismatch,
}


def violations(names: tuple[str, ...], actual: Observation, expected: Observation) -> Iterator[tuple[str, str]]:
    """Every (invariant, message) broken, in the fixed order of ``names``."""
    for name in names:
        for message in _CHECKS[name](actual, expected):
            yield name, message


def check(names: tuple[str, ...], actual: Observation, expected: Observation, context: str = "") -> None:
    """Raise a :class:`Finding` for the first invariant broken, with all its messages."""
    for name in names:
        messages = list(_CHECKS[name](actual, expected))
        if messages:
            where = f" ({context})" if context else ""
            raise Finding(name, "; ".join(messages) + where)


def check_always(actual: Observation, context: str = "") -> None:
    """The invariants that hold even midway through a step; they need no oracle."""
    check(ALWAYS, actual, actual, context)


def check_audit_changes_nothing(before: Observation, after: Observation, host: str) -> None:
    """An audit with nothing in flight must leave usage and allocations as they were."""
    changed = [
        f"{node} {resource}: {before.usage[node].get(resource)} -> {after.usage[node].get(resource)}"
        for node in sorted(before.usage)
        for resource in sorted(before.usage[node])
        if before.usage[node].get(resource) != after.usage.get(node, {}).get(resource)
    ]
    if before.allocations != after.allocations:
        changed.append("placement allocations changed")
    if changed:
        raise Finding("audit-changes-nothing", f"audit of {host} with nothing in flight changed " + "; ".join(changed))

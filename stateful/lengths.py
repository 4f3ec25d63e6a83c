"""How many checkpoints each operation reaches, measured by running each once.

A target that tells (its ``checkpoint_hints``) lets the default schedule
spread its pauses over whole operations
(:meth:`~stateful.strategies.VirtualDelays.expect_lengths`), the deepest
checkpoints included.  Measured rather than written down, so the hints follow
the code under test as it changes; the targets are deterministic, so the
measure is the same in every process.  Measure with no fault on: a fault
changes the code paths, and the lengths must not depend on which example ran
first in a process.
"""

from __future__ import annotations

from typing import Callable

from stateful.errors import HarnessError
from stateful.target import Op, Target


def calibration(resize_to: str = "pinned") -> tuple[tuple[str, dict[str, str]], ...]:
    """Operations in an order that makes each one legal, on an instance with a PCI
    device, resized to ``resize_to`` (dedicated CPUs by default: their claims and
    frees pass more checkpoints than a plain instance's)."""
    return (
        ("create", {"instance": "vm1", "flavor": "pci", "host": "host1"}),
        ("create", {"instance": "vm2", "flavor": "small", "host": "host2"}),
        ("resize", {"instance": "vm1", "flavor": resize_to, "host": "host2"}),
        ("confirm", {"instance": "vm1"}),
        ("migrate", {"instance": "vm1", "host": "host1"}),
        ("revert", {"instance": "vm1"}),
        ("live_migrate", {"instance": "vm1", "host": "host1"}),
        ("live_migrate_rollback", {"instance": "vm1", "host": "host2"}),
        ("audit", {"host": "host1"}),
        ("host_down", {"host": "host1"}),
        ("evacuate", {"instance": "vm1", "host": "host2"}),
        ("host_up", {"host": "host1"}),
        ("delete", {"instance": "vm1"}),
    )


def operation_lengths(target: Callable[[], Target], resize_to: str = "pinned") -> dict[str, int]:
    """Per operation name, the checkpoints it reached when run once, alone, on a fresh
    ``target()``, in the order of :func:`calibration`."""
    from stateful.session import Session
    from stateful.strategies import FixedDelays
    from stateful.topology import example_topology

    lengths: dict[str, int] = {}
    with Session(target(), example_topology()) as session:
        for name, args in calibration(resize_to):
            result = session.apply([Op(name, args)], FixedDelays())
            if result.outcomes[0].error is not None:
                raise HarnessError(f"calibrating {session.target.name}: {name} failed: {result.outcomes[0].error}")
            lengths[name] = sum(1 for event in result.trace if event.kind == "reach")
    return lengths

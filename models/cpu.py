"""Dedicated-CPU pinning on a node, with the checks of Nova's ``NUMACell``.

Pinning a CPU that is already pinned, or unpinning one that is free, raises
exactly as ``objects.NUMACell.pin_cpus`` / ``unpin_cpus`` do: in Nova that is
how a double-counted or lost pinning surfaces, so the model must not paper
over it.  A node has one NUMA cell here.
"""

from __future__ import annotations

from typing import Iterable

from models.errors import CPUPinningInvalid, CPUUnpinningInvalid


def pin_cpus(pcpuset: frozenset[int], pinned: frozenset[int], cpus: Iterable[int]) -> frozenset[int]:
    """``pinned`` with ``cpus`` added; CPUPinningInvalid if any is unknown or already pinned."""
    wanted = frozenset(cpus)
    if not wanted <= pcpuset:
        raise CPUPinningInvalid(
            f"CPUs {sorted(wanted - pcpuset)} are not in the dedicated set {sorted(pcpuset)}"
        )
    if wanted & pinned:
        raise CPUPinningInvalid(
            f"cannot pin {sorted(wanted)}: {sorted(wanted & pinned)} already pinned; "
            f"free are {sorted(pcpuset - pinned)}"
        )
    return pinned | wanted


def unpin_cpus(pcpuset: frozenset[int], pinned: frozenset[int], cpus: Iterable[int]) -> frozenset[int]:
    """``pinned`` with ``cpus`` removed; CPUUnpinningInvalid if any is not pinned."""
    wanted = frozenset(cpus)
    if not wanted <= pcpuset:
        raise CPUUnpinningInvalid(
            f"CPUs {sorted(wanted - pcpuset)} are not in the dedicated set {sorted(pcpuset)}"
        )
    if not wanted <= pinned:
        raise CPUUnpinningInvalid(
            f"cannot unpin {sorted(wanted)}: {sorted(wanted - pinned)} are not pinned; "
            f"pinned are {sorted(pinned)}"
        )
    return pinned - wanted


def fit_instance(pcpuset: frozenset[int], pinned: frozenset[int], count: int) -> tuple[int, ...] | None:
    """The lowest ``count`` free dedicated CPUs (``numa_fit_instance_to_host``), or None."""
    free = sorted(pcpuset - pinned)
    if len(free) < count:
        return None
    return tuple(free[:count])

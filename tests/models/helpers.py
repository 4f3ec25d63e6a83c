"""Shared helpers for the embedded compute service's tests."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

from models import oracle
from models.faults import FAULTS
from models.service import Cloud
from models.topology import small_topology
from stateful.invariants import AFTER_STEP, violations
from stateful.locks import SchedulerLocks
from stateful.scheduler import RunResult, Scheduler
from stateful.strategies import FixedDelays
from stateful.target import Observation

#: small_topology's reserved amounts on every host
RESERVED = {"vcpus": 1, "memory_mb": 512, "disk_gb": 1}


def cloud() -> Cloud:
    return Cloud(small_topology())


def used(c: Cloud, host: str) -> tuple[int, int, int]:
    """(vcpus, memory_mb, disk_gb) the host's RT counts now."""
    amounts = oracle.observe(c)["usage"][host]
    return amounts["vcpus"], amounts["memory_mb"], amounts["disk_gb"]


def pci_owners(c: Cloud, host: str) -> dict[str, list[str]]:
    """Device address -> the instances the host's PCI tracker gives it to."""
    owners: dict[str, list[str]] = oracle.observe(c)["pci_owners"][host]
    return owners


def cpu_owners(c: Cloud, host: str) -> dict[str, list[str]]:
    """Pinned CPU id -> the instances the host's RT pins it for."""
    owners: dict[str, list[str]] = oracle.observe(c)["cpu_owners"][host]
    return owners


def reserved_plus(*flavors: tuple[int, int, int]) -> tuple[int, int, int]:
    """The usage small_topology's reserved amounts plus these (vcpus, mem, disk) imply."""
    return (
        RESERVED["vcpus"] + sum(f[0] for f in flavors),
        RESERVED["memory_mb"] + sum(f[1] for f in flavors),
        RESERVED["disk_gb"] + sum(f[2] for f in flavors),
    )


SMALL = (1, 512, 1)
MEDIUM = (2, 1024, 2)
LARGE = (4, 2048, 4)
PINNED = (2, 1024, 2)
PINNED_LARGE = (4, 2048, 4)


def problems(c: Cloud) -> list[tuple[str, str]]:
    """Every invariant the stateful suite checks after a step, broken now."""
    actual = Observation(**oracle.observe(c))
    expected = Observation(**oracle.expected(c))
    return list(violations(AFTER_STEP, actual, expected))


def assert_consistent(c: Cloud) -> None:
    found = problems(c)
    assert not found, "\n".join(f"{name}: {message}" for name, message in found)


def audit_all(c: Cloud) -> None:
    for host, down in c.down.items():
        if not down:
            c.update_available_resource(host)


Task = tuple[str, Callable[[], Any]]
#: (task index, site, nth time the task reached the site, from 0) -> delay
Delays = Mapping[tuple[int, str, int], int]


def run_concurrently(ops: list[Task], delays: Delays) -> RunResult:
    """Run ``ops`` as scheduler tasks under scheduler-aware per-host locks, with fixed delays."""
    with SchedulerLocks():
        return Scheduler(FixedDelays(dict(delays))).run(ops)


def audit(c: Cloud, host: str, label: str = "audit") -> Task:
    """A task that runs the host's periodic audit."""
    return label, lambda: c.update_available_resource(host)


def errors(result: RunResult) -> list[BaseException | None]:
    """What each task raised (None where it returned)."""
    return [outcome.error for outcome in result.outcomes]


def snapshot(c: Cloud) -> dict[str, Any]:
    """Everything an operation could change: records, placement, each RT's memory."""
    return {
        "instances": {u: dict(vars(row)) for u, row in c.db.instances.items()},
        "migrations": {
            i: {k: v for k, v in vars(row).items() if k != "_db"} for i, row in c.db.migrations.items()
        },
        "nodes": {n: vars(cn.copy()) for n, cn in c.db.compute_nodes.items()},
        "pci": {n: dict(states) for n, states in c.db.pci_devices.items()},
        "observed": oracle.observe(c),
        "trackers": {
            host: (
                dict(m.rt.tracked_instances),
                sorted(m.rt.tracked_migrations),
                dict(m.rt.assigned_resources),
            )
            for host, m in c.computes.items()
        },
        "down": dict(c.down),
    }


FAULT = {fault.name: fault for fault in FAULTS}


@contextlib.contextmanager
def switched(name: str, on: bool) -> Iterator[None]:
    """The fault switch ``name`` on (or not) for the block inside."""
    with FAULT[name].fixture() if on else contextlib.nullcontext():
        yield


def run_switched(name: str, on: bool, ops: list[Task], delays: Delays) -> RunResult:
    """:func:`run_concurrently` with the fault switch ``name`` on (or not)."""
    with switched(name, on):
        return run_concurrently(ops, delays)


def broken(c: Cloud) -> set[str]:
    """The names of the invariants the cloud breaks now."""
    return {name for name, _ in problems(c)}


def assert_broken_if(on: bool, c: Cloud, *invariants: str) -> None:
    """With the fault switched on the cloud breaks (at least) ``invariants``; off, none at all."""
    if on:
        found = broken(c)
        assert set(invariants) <= found, f"broken: {sorted(found)}"
    else:
        assert_consistent(c)


def delete_during_audit(name: str, on: bool, flavor: str) -> tuple[Cloud, str]:
    """An instance of ``flavor`` on host1 is deleted while host1 audits: the delete, its
    instance saved 'deleted', waits for the RT lock (switch ``name`` on or not).  Returns
    the cloud and the instance's uuid."""
    c = cloud()
    uuid = c.create(flavor, "host1")
    result = run_switched(
        name,
        on,
        [("delete", lambda: c.delete(uuid)), audit(c, "host1")],
        {(0, "lock:compute_resources:acquire", 0): 10},
    )
    assert errors(result) == [None, None]
    return c, uuid


def assert_revert_swaps_usage_if(name: str, on: bool, delays: Delays) -> None:
    """A medium instance resized from host1 to large on host2 is reverted while each host
    audits, under ``delays``.  With the switch ``name`` on the hosts' usage swaps: the
    source forgets the instance, the destination still counts it.  Off, the source
    counts the instance again and the destination nothing."""
    c = cloud()
    uuid = c.create("medium", "host1")
    c.resize(uuid, "large", "host2")
    result = run_switched(
        name,
        on,
        [
            ("revert", lambda: c.revert_resize(uuid)),
            audit(c, "host1", "audit source"),
            audit(c, "host2", "audit dest"),
        ],
        delays,
    )
    assert errors(result) == [None, None, None]
    assert c.db.instances[uuid].host == "host1"
    swapped, settled = (reserved_plus(), reserved_plus(LARGE)), (reserved_plus(MEDIUM), reserved_plus())
    assert (used(c, "host1"), used(c, "host2")) == (swapped if on else settled)
    assert_broken_if(on, c, "usage-matches-oracle")

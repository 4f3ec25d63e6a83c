"""What the accounting should be, from the database's records alone, and what it is.

:func:`expected` derives, from the instances and migrations stored in the
database plus the topology, the usage every up node should show (reserved
amounts included, as Nova counts them), the pinned CPUs and PCI devices each
consumer should own, and the allocations each consumer should hold in
placement.  :func:`observe` reads what the services actually hold: each
resource tracker's in-memory node, the node record it saved, its PCI tracker
and pinned CPUs, and placement.  Both return the same plain-dict shape
(the fields of ``stateful.target.Observation``), so they compare key by key.

The rules (the reference's "Invariants worth checking"):

* A live instance counts its flavor, pinning and PCI devices on its node;
  its uuid holds its node's allocation for its flavor.
* A migration counts only while in progress (not terminal, not ``error``)
  and named by its instance's migration context: a move's other side counts
  the flavor the instance doesn't have there (a same-node resize: the
  flavor the instance doesn't have now; the source after the instance moved:
  the old flavor; the destination before it arrived: the new flavor), with
  the context's pinning and devices for that side.  The migration uuid holds
  the source's old-flavor allocation, the instance uuid the destination's.
* An evacuation whose source host has not come back to clean up leaves the
  instance also holding the source's share.
* Deleted instances and terminal migrations hold nothing.

Nodes whose compute service is down are left out of usage and ownership (a
dead service's counters are stale by definition); placement is not.  The
expectations are those of a quiescent cloud: between the steps of an
operation the services legitimately differ from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.placement import resources_for
from models.records import (
    DELETED,
    EVACUATION,
    TERMINAL_MIGRATION_STATUSES,
    UNCLEANED_EVACUATION_STATUSES,
    ComputeNode,
    Flavor,
    Instance,
    Migration,
)

if TYPE_CHECKING:
    from models.service import Cloud

#: Suffix of the usage entries that report a node's saved record, not the RT's memory.
SAVED = ":db"


def observe(cloud: Cloud, include_saved: bool = True) -> dict[str, Any]:
    """The accounting the services hold now, as plain data.

    ``include_saved=False`` is the cheap observation the checks made at every
    checkpoint of a step read (``Target.observe_counters``): each up node's
    in-memory usage and owner maps, the reserved amounts and the down hosts,
    without the saved records, placement or the fields derived from the
    database's rows (``servers`` is left empty).
    """
    usage: dict[str, dict[str, int]] = {}
    pci_owners: dict[str, dict[str, list[str]]] = {}
    cpu_owners: dict[str, dict[str, list[str]]] = {}
    db, down = cloud.db, cloud.down
    for host, manager in cloud.computes.items():
        if down[host]:
            continue
        rt = manager.rt
        for nodename, cn in rt.compute_nodes.items():
            owners = rt.pci_tracker.owners()
            usage[nodename] = _usage(cn, len(owners))
            if include_saved:
                saved_devices = db.pci_devices.get(nodename, {})
                in_use = sum(1 for _, owner in saved_devices.values() if owner is not None)
                usage[nodename + SAVED] = _usage(db.compute_nodes[nodename], in_use)
            pci_owners[nodename] = owners
            cpu_owners[nodename] = _invert(rt.assigned_resources)
    if not include_saved:
        return {
            "usage": usage,
            "reserved": _reserved_floors(cloud),
            "pci_owners": pci_owners,
            "cpu_owners": cpu_owners,
            "servers": {},
            "down_hosts": _down_hosts(cloud),
        }
    return _observation(cloud, usage, pci_owners, cpu_owners, _copy_allocations(cloud.placement.allocations))


def expected(cloud: Cloud, include_saved: bool = True) -> dict[str, Any]:
    """What the accounting should be, from the database's instances and migrations alone."""
    tally = _Tally(cloud)
    migrations_by_instance: dict[str, list[Migration]] = {}
    for migration in cloud.db.migrations.values():
        migrations_by_instance.setdefault(migration.instance_uuid, []).append(migration)
    for instance in cloud.db.instances.values():
        if instance.deleted or instance.vm_state == DELETED or instance.host is None:
            continue
        migrations = migrations_by_instance.get(instance.uuid, [])
        current = _current_migration(instance, migrations)
        assert instance.node is not None
        tally.count(instance.node, instance.uuid, instance.flavor, instance.pinned_cpus, instance.pci_devices)
        if current is None:
            tally.allocate(instance.uuid, instance.node, instance.flavor)
        else:
            _count_migration(tally, instance, current)
        for migration in migrations:
            if (
                migration is not current
                and migration.migration_type == EVACUATION
                and migration.status in UNCLEANED_EVACUATION_STATUSES
            ):
                tally.allocate(instance.uuid, migration.source_node, migration.old_flavor)
    usage = dict(tally.usage)
    if include_saved:
        usage.update({node + SAVED: dict(amounts) for node, amounts in tally.usage.items()})
    return _observation(cloud, usage, tally.pci_owners(), tally.cpu_owners(), tally.allocations)


def _current_migration(instance: Instance, migrations: list[Migration]) -> Migration | None:
    """The in-progress migration the instance's migration context names, if any."""
    context = instance.migration_context
    if context is None:
        return None
    for migration in migrations:
        if migration.id == context.migration_id and migration.in_progress:
            return migration
    return None


def _count_migration(tally: _Tally, instance: Instance, migration: Migration) -> None:
    context = instance.migration_context
    assert context is not None and migration.dest_node is not None
    source, dest = migration.source_node, migration.dest_node
    if source == dest:
        if instance.flavor.name == migration.old_flavor.name:
            tally.count(
                dest, instance.uuid, migration.new_flavor, context.new_pinned_cpus, context.new_pci_devices
            )
        else:
            tally.count(
                source, instance.uuid, migration.old_flavor, context.old_pinned_cpus, context.old_pci_devices
            )
    elif instance.node == source:
        tally.count(
            dest, instance.uuid, migration.new_flavor, context.new_pinned_cpus, context.new_pci_devices
        )
    elif instance.node == dest:
        tally.count(
            source, instance.uuid, migration.old_flavor, context.old_pinned_cpus, context.old_pci_devices
        )
    if migration.migration_type == EVACUATION:
        # No migration consumer: the instance holds both hosts until the source cleans up.
        tally.allocate(instance.uuid, source, instance.flavor)
        tally.allocate(instance.uuid, dest, instance.flavor)
    else:
        tally.allocate(migration.uuid, source, migration.old_flavor)
        tally.allocate(instance.uuid, dest, migration.new_flavor)


class _Tally:
    """Expected usage, ownership and allocations, accumulated instance by instance."""

    def __init__(self, cloud: Cloud) -> None:
        self.up = {node for node, cn in cloud.db.compute_nodes.items() if not cloud.down[cn.host]}
        self.usage: dict[str, dict[str, int]] = {}
        self._cpus: dict[str, dict[int, list[str]]] = {}
        self._pci: dict[str, dict[str, list[str]]] = {}
        for node, cn in cloud.db.compute_nodes.items():
            if node in self.up:
                self.usage[node] = _reserved(cn)
                self._cpus[node] = {}
                self._pci[node] = {}
        self.allocations: dict[str, dict[str, dict[str, int]]] = {}

    def count(
        self, node: str, uuid: str, flavor: Flavor, pinned: tuple[int, ...], devices: tuple[str, ...]
    ) -> None:
        if node not in self.up:
            return
        amounts = self.usage[node]
        amounts["vcpus"] += flavor.vcpus
        amounts["memory_mb"] += flavor.memory_mb
        amounts["disk_gb"] += flavor.root_gb
        for cpu in pinned:
            _own(self._cpus[node], cpu, uuid)
        for address in devices:
            _own(self._pci[node], address, uuid)
        amounts["pinned_cpus"] = len(self._cpus[node])
        amounts["pci_devices"] = len(self._pci[node])

    def allocate(self, consumer: str, provider: str, flavor: Flavor) -> None:
        self.allocations.setdefault(consumer, {})[provider] = resources_for(flavor)

    def cpu_owners(self) -> dict[str, dict[str, list[str]]]:
        return {
            node: {str(cpu): owners for cpu, owners in sorted(cpus.items())}
            for node, cpus in self._cpus.items()
        }

    def pci_owners(self) -> dict[str, dict[str, list[str]]]:
        return {node: dict(sorted(devices.items())) for node, devices in self._pci.items()}


def _own(owners: dict[Any, list[str]], item: Any, uuid: str) -> None:
    listed = owners.setdefault(item, [])
    if uuid not in listed:
        listed.append(uuid)


def _reserved(cn: ComputeNode) -> dict[str, int]:
    return {
        "vcpus": cn.reserved_host_cpus,
        "memory_mb": cn.reserved_host_memory_mb,
        "disk_gb": cn.reserved_host_disk_gb,
        "pci_devices": 0,
        "pinned_cpus": 0,
    }


def _usage(cn: ComputeNode, pci_in_use: int) -> dict[str, int]:
    return {
        "vcpus": cn.vcpus_used,
        "memory_mb": cn.memory_mb_used,
        "disk_gb": cn.local_gb_used,
        "pci_devices": pci_in_use,
        "pinned_cpus": len(cn.pinned_cpus),
    }


def _invert(assigned: dict[str, tuple[int, ...]]) -> dict[str, list[str]]:
    if not assigned:
        return {}
    owners: dict[int, list[str]] = {}
    for uuid, cpus in assigned.items():
        for cpu in cpus:
            _own(owners, cpu, uuid)
    return {str(cpu): listed for cpu, listed in sorted(owners.items())}


def _copy_allocations(
    allocations: dict[str, dict[str, dict[str, int]]],
) -> dict[str, dict[str, dict[str, int]]]:
    return {
        consumer: {provider: dict(resources) for provider, resources in held.items()}
        for consumer, held in allocations.items()
    }


def _observation(
    cloud: Cloud,
    usage: dict[str, dict[str, int]],
    pci_owners: dict[str, dict[str, list[str]]],
    cpu_owners: dict[str, dict[str, list[str]]],
    allocations: dict[str, dict[str, dict[str, int]]],
) -> dict[str, Any]:
    """The record-derived fields both sides share, around the ones they differ in."""
    db = cloud.db
    terminal = [m.uuid for m in db.migrations.values() if m.status in TERMINAL_MIGRATION_STATUSES]
    terminal += [i.uuid for i in db.instances.values() if i.deleted or i.vm_state == DELETED]
    return {
        "usage": usage,
        "reserved": _reserved_floors(cloud),
        "allocations": allocations,
        "pci_owners": pci_owners,
        "cpu_owners": cpu_owners,
        "terminal_consumers": sorted(terminal),
        "in_flight": sum(1 for m in db.migrations.values() if m.in_progress),
        "servers": {
            i.uuid: {"host": i.host, "vm_state": i.vm_state, "task_state": i.task_state, "flavor": i.flavor.name}
            for i in db.instances.values()
            if not i.deleted
        },
        "down_hosts": _down_hosts(cloud),
    }


def _reserved_floors(cloud: Cloud) -> dict[str, dict[str, int]]:
    """Each up node's reserved amounts: the floor its usage can't go below."""
    down = cloud.down
    return {
        node: {
            "vcpus": cn.reserved_host_cpus,
            "memory_mb": cn.reserved_host_memory_mb,
            "disk_gb": cn.reserved_host_disk_gb,
        }
        for node, cn in cloud.db.compute_nodes.items()
        if not down[cn.host]
    }


def _down_hosts(cloud: Cloud) -> list[str]:
    return sorted(host for host, down in cloud.down.items() if down)

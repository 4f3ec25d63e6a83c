"""The resource tracker (RT) of one compute host, after ``nova/compute/resource_tracker.py``.

It keeps the node's usage counters, ``tracked_instances``,
``tracked_migrations``, the PCI tracker and the pinned CPUs in memory, and
changes them only under Nova's lock: oslo.concurrency's in-process lock
``compute_resources`` taken with ``fair=True``, on this host (the engine
keys locks by :func:`stateful.locks.on_host`, as production's one process
per host does).  Method names, steps and their order are Nova's; the methods
are kept small so that a fault switch can put one method's pre-fix body back.

Where Nova's current code still races, the model fixes it in one small place
whose docstring starts "Model fix (Nova open, ``nova-open-...``)"; that fault
switch restores Nova's code.

Not modelled: stats, monitors, provider-tree inventory sync (inventories are
fixed), ironic multi-node hosts (one node per host, named after it).
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

from oslo_concurrency import lockutils

from models import cpu
from models.errors import ComputeResourcesUnavailable, InstanceNotFound
from models.pci import PciDevTracker
from models.records import (
    ACTIVE,
    DELETED,
    MIGRATING,
    REBUILD_STATES,
    RESIZE_REVERTING,
    RESIZED,
    RESIZING_STATES,
    ComputeNode,
    Flavor,
    Instance,
    Migration,
    MigrationContext,
)
from stateful.locks import on_host

if TYPE_CHECKING:
    from models.db import Database
    from models.placement import Placement

COMPUTE_RESOURCE_SEMAPHORE = "compute_resources"

Method = TypeVar("Method", bound=Callable[..., Any])


def synchronized(method: Method) -> Method:
    """Run an RT entry point on its host under the host's ``compute_resources`` lock.

    The lock is the one ``lockutils.synchronized(COMPUTE_RESOURCE_SEMAPHORE, fair=True)``
    takes, without that decorator's debug logging and timing.
    """

    @functools.wraps(method)
    def on_own_host(self: ResourceTracker, *args: Any, **kwargs: Any) -> Any:
        with on_host(self.host), lockutils.lock(COMPUTE_RESOURCE_SEMAPHORE, fair=True, do_log=False):
            return method(self, *args, **kwargs)

    return on_own_host  # type: ignore[return-value]


@contextlib.contextmanager
def compute_resources_lock(host: str) -> Iterator[None]:
    """The host's ``compute_resources`` lock, for code that takes it outside an entry point."""
    with on_host(host), lockutils.lock(COMPUTE_RESOURCE_SEMAPHORE, fair=True, do_log=False):
        yield


@contextlib.contextmanager
def _compute_resources_locks(*hosts: str) -> Iterator[None]:
    """Several hosts' RT locks at once, taken in name order so that no two callers deadlock."""
    with contextlib.ExitStack() as stack:
        for host in sorted(set(hosts)):
            stack.enter_context(compute_resources_lock(host))
        yield


def _instance_in_resize_state(instance: Instance) -> bool:
    if instance.vm_state == RESIZED:
        return True
    return instance.vm_state == ACTIVE and instance.task_state in RESIZING_STATES + REBUILD_STATES


def _instance_is_live_migrating(instance: Instance) -> bool:
    return instance.task_state == MIGRATING and instance.vm_state == ACTIVE


def _allow_resource_removal(instance: Instance) -> bool:
    """``vm_states.allow_resource_removal`` (shelving is not modelled)."""
    return instance.vm_state == DELETED


def _migration_time(migration: Migration) -> int:
    return migration.updated_at or migration.created_at


class ResourceTracker:
    def __init__(self, host: str, db: Database, placement: Placement) -> None:
        self.host = host
        self.db = db
        self.placement = placement
        # Held for the RT's life, as a service's lock lives as long as it does:
        # oslo keeps fair locks only weakly, and one rebuilt on every acquire
        # costs a failed ``import eventlet`` (a search of sys.path) each time.
        # Entry points still take the lock through lockutils, by name.
        with on_host(host):
            self._compute_resources = lockutils.internal_fair_lock(COMPUTE_RESOURCE_SEMAPHORE)
        # A (re)started service reads its node back from the database.
        node = db.compute_node_get(host)
        self.compute_nodes: dict[str, ComputeNode] = {node.hypervisor_hostname: node}
        self.old_resources: dict[str, ComputeNode] = {node.hypervisor_hostname: node.copy()}
        self.pci_tracker = PciDevTracker(db, node.hypervisor_hostname, node.pci_addresses)
        # dicts used as ordered sets: iteration order never depends on hashing
        self.tracked_instances: dict[str, None] = {}
        self.tracked_migrations: dict[str, Migration] = {}
        #: instance uuid -> pinned CPUs assigned to it here (Nova's ``assigned_resources``)
        self.assigned_resources: dict[str, tuple[int, ...]] = {}

    # -- claims ------------------------------------------------------------------

    @synchronized
    def instance_claim(self, instance: Instance, nodename: str) -> None:
        """Claim a build's resources: fit test, pinning, host/node saved, PCI, usage."""
        cn = self.compute_nodes[nodename]
        pinned = self._claim_test(cn, instance.flavor)
        instance.pinned_cpus = pinned
        instance.pci_devices = self.pci_tracker.claim_instance(instance.uuid, instance.flavor.pci_devices)
        self._set_instance_host_and_node(instance, cn)
        self._claim_resources(instance.uuid, pinned)
        self._update_usage_from_instance(instance, nodename)
        self._update(cn)

    @synchronized
    def abort_instance_claim(self, instance: Instance, nodename: str) -> None:
        self._update_usage_from_instance(instance, nodename, is_removed=True)
        instance.pinned_cpus = ()
        instance.pci_devices = ()
        self._unset_instance_host_and_node(instance)
        self._update(self.compute_nodes[nodename])

    @synchronized
    def resize_claim(self, instance: Instance, flavor: Flavor, nodename: str, migration: Migration) -> None:
        """Claim for a resize or cold migration; ``instance.new_flavor`` is already set."""
        self._move_claim(instance, flavor, nodename, migration)

    @synchronized
    def rebuild_claim(self, instance: Instance, nodename: str, migration: Migration) -> None:
        self._move_claim(instance, instance.flavor, nodename, migration)

    @synchronized
    def live_migration_claim(self, instance: Instance, nodename: str, migration: Migration) -> None:
        self._move_claim(instance, instance.flavor, nodename, migration)

    def _move_claim(
        self, instance: Instance, new_flavor: Flavor, nodename: str, migration: Migration
    ) -> None:
        cn = self.compute_nodes[nodename]
        self._claim_existing_migration(migration, cn)
        new_pinned = self._claim_test(cn, new_flavor)
        # Live migrations claim their PCI devices separately (claim_pci_devices).
        new_pci: tuple[str, ...] = ()
        if not migration.is_live_migration:
            new_pci = self.pci_tracker.claim_instance(instance.uuid, new_flavor.pci_devices)
        instance.migration_context = MigrationContext(
            instance_uuid=instance.uuid,
            migration_id=migration.id,
            old_pinned_cpus=instance.pinned_cpus,
            new_pinned_cpus=new_pinned,
            old_pci_devices=instance.pci_devices,
            new_pci_devices=new_pci,
        )
        instance.save()
        self._claim_resources(instance.uuid, new_pinned)
        self._update_usage_from_migration(instance, migration, nodename)
        self._update(cn)

    def _claim_existing_migration(self, migration: Migration, cn: ComputeNode) -> None:
        migration.dest_compute = self.host
        migration.dest_node = cn.hypervisor_hostname
        # Live migrations keep the conductor's status ('accepted').
        if not migration.is_live_migration:
            migration.status = "pre-migrating"
        migration.save()

    def _claim_test(self, cn: ComputeNode, flavor: Flavor) -> tuple[int, ...]:
        """``claims.Claim._claim_test``: only pinning and PCI (placement checked the rest)."""
        pinned: tuple[int, ...] = ()
        if flavor.cpu_dedicated:
            fit = cpu.fit_instance(cn.pcpuset, cn.pinned_cpus, flavor.vcpus)
            if fit is None:
                raise ComputeResourcesUnavailable(
                    f"{cn.hypervisor_hostname}: requested instance NUMA topology cannot fit the host"
                )
            pinned = fit
        if flavor.pci_devices > self.pci_tracker.free_count():
            raise ComputeResourcesUnavailable(f"{cn.hypervisor_hostname}: claim pci failed")
        return pinned

    def _set_instance_host_and_node(self, instance: Instance, cn: ComputeNode) -> None:
        instance.host = self.host
        instance.node = cn.hypervisor_hostname
        instance.save()

    def _unset_instance_host_and_node(self, instance: Instance) -> None:
        instance.host = None
        instance.node = None
        instance.save()

    # -- dropping claims -----------------------------------------------------------

    @synchronized
    def drop_move_claim_at_source(self, instance: Instance, migration: Migration) -> None:
        """Confirm: the migration is confirmed and the old flavor's usage leaves the source."""
        migration.status = "confirmed"
        migration.save()
        self._drop_move_claim(instance, migration.source_node, instance.old_flavor, prefix="old_")
        instance.drop_migration_context()

    def drop_move_claim_at_dest(self, instance: Instance, migration: Migration) -> None:
        """Revert: the migration is reverted and the new flavor's usage leaves the destination.

        Model fix (Nova open, ``nova-open-revert-window``): the same critical section gives
        the instance back to the source (reverted context, old flavor, source host and
        node), under the source's RT lock as well as this host's.  Nova takes this host's
        lock only and leaves the instance on the destination until finish_revert_resize:
        an audit of the source in between forgets the instance (its migration is reverted,
        its host is not the source), an audit here counts it with the source's pinning.
        (A real fix would hand the instance back through the source; holding both locks
        states the atomicity such a fix must give.)
        """
        with _compute_resources_locks(self.host, migration.source_compute):
            with on_host(self.host):
                self._drop_move_claim_at_dest(instance, migration)

    def _drop_move_claim_at_dest(self, instance: Instance, migration: Migration) -> None:
        assert migration.dest_node is not None and instance.old_flavor is not None
        migration.status = "reverted"
        migration.save()
        self._drop_move_claim(instance, migration.dest_node, instance.new_flavor, prefix="new_")
        instance.revert_migration_context()
        instance.flavor = instance.old_flavor
        instance.host = migration.source_compute
        instance.node = migration.source_node
        instance.save(expected_task_state=[RESIZE_REVERTING])

    @synchronized
    def drop_move_claim(self, instance: Instance, nodename: str, flavor: Flavor | None = None) -> None:
        """Drop an incoming claim (live-migration rollback); Nova always uses the new_ side here."""
        self._drop_move_claim(instance, nodename, flavor, prefix="new_")

    @synchronized
    def drop_live_migration_claim(self, instance: Instance, nodename: str, migration: Migration) -> None:
        """Live-migration rollback: drop the claim and, in the same critical section, end the
        migration (see ComputeManager._rollback_live_migration)."""
        self._drop_move_claim(instance, nodename, instance.flavor, prefix="new_")
        self._fail_live_migration(migration)
        instance.task_state = None
        instance.drop_migration_context()
        instance.save(expected_task_state=[MIGRATING])

    def _fail_live_migration(self, migration: Migration) -> None:
        """Model fix (Nova open, ``nova-open-live-migration-rollback-window``; see
        ComputeManager._rollback_live_migration): the migration is marked failed before
        the task state is cleared, so no other move of the instance can start while it
        still looks in progress.  (``lp1600304`` leaves this out and marks it last.)"""
        migration.status = "failed"
        migration.save()

    def _drop_move_claim(
        self, instance: Instance, nodename: str, flavor: Flavor | None = None, prefix: str = "new_"
    ) -> None:
        # The hazard: this subtracts whenever it knows a flavor, even if the
        # instance is no longer tracked here (the fix for bug 1818914).
        uuid = instance.uuid
        if uuid in self.tracked_migrations and not flavor:
            flavor = self._get_flavor(instance, prefix, self.tracked_migrations[uuid])
        if flavor is not None:
            self._drop_move_usage(instance, nodename, flavor, prefix)
        migration = self.tracked_migrations.pop(uuid, None)
        if self._stays_after_drop(migration):
            self.tracked_instances[uuid] = None
        else:
            self.tracked_instances.pop(uuid, None)

    def _drop_move_usage(self, instance: Instance, nodename: str, flavor: Flavor, prefix: str) -> None:
        pinned = self._get_migration_context_resource("pinned_cpus", instance, prefix) or ()
        self._drop_pci_devices(instance, prefix)
        self._release_assigned_resources(instance.uuid, pinned)
        self._update_usage(flavor, pinned, nodename, sign=-1)
        self._update(self.compute_nodes[nodename])

    def _drop_pci_devices(self, instance: Instance, prefix: str) -> None:
        for address in self._get_migration_context_resource("pci_devices", instance, prefix) or ():
            self.pci_tracker.free_device(address, instance.uuid)

    def _stays_after_drop(self, migration: Migration | None) -> bool:
        """Model fix (Nova open, ``nova-open-delete-after-move``): after a same-node resize
        is confirmed or reverted the instance is still here and still counted, so it
        is tracked as an instance; Nova stops tracking it, and deleting it before the
        next audit leaves its usage behind."""
        return migration is not None and migration.source_node == migration.dest_node

    @synchronized
    def update_usage(self, instance: Instance, nodename: str) -> None:
        """After an instance changed (deleted): update its usage if it made a claim here."""
        self._track_arrived_instance(instance, nodename)
        if instance.uuid in self.tracked_instances:
            self._update_usage_from_instance(instance, nodename)
            self._update(self.compute_nodes[nodename])
        else:
            self._free_untracked_devices(instance)

    def _free_untracked_devices(self, instance: Instance) -> None:
        """Model fix (Nova open, ``nova-open-delete-pci-leak``): an audit that read the instance
        already deleted stopped tracking it but kept its PCI devices (clean_usage spares
        every instance it read); Nova frees nothing here, and they stay allocated."""
        if _allow_resource_removal(instance):
            self.pci_tracker.free_instance(instance.uuid)
            self.pci_tracker.save()

    def _track_arrived_instance(self, instance: Instance, nodename: str) -> None:
        """Model fix (Nova open, ``nova-open-delete-after-move``): an instance that arrived
        by a move is counted through its migration until the next audit; Nova's
        update_usage then ignores it, and a delete leaves its usage behind."""
        if instance.uuid in self.tracked_migrations and instance.node == nodename:
            del self.tracked_migrations[instance.uuid]
            self.tracked_instances[instance.uuid] = None

    @synchronized
    def finish_evacuation(
        self, instance: Instance, node: str, migration: Migration, activate: bool = False
    ) -> None:
        self._finish_evacuation(instance, node, migration, activate)

    def _finish_evacuation(
        self, instance: Instance, node: str, migration: Migration, activate: bool = False
    ) -> None:
        instance.apply_migration_context()
        # Saving host/node first keeps the next audit consistent: it counts the
        # instance from its record, no longer from the migration's.
        instance.host = self.host
        instance.node = node
        if activate:
            instance.vm_state = ACTIVE
            instance.task_state = None
        instance.save()
        instance.drop_migration_context()
        # Marked done only once the instance belongs to this host.
        migration.status = "done"
        migration.save()

    @synchronized
    def finish_live_migration(self, instance: Instance, node: str, pci_devices: tuple[str, ...]) -> None:
        """Model fix (Nova open, ``nova-open-live-migration-unlocked``): the destination moves the
        instance under the RT lock, as finish_evacuation does since bug 1896463.  Nova's
        post_live_migration_at_destination does it unlocked: an audit reading instances
        before and migrations after counts the instance nowhere and frees its PCI devices."""
        self._finish_live_migration(instance, node, pci_devices)

    def _finish_live_migration(self, instance: Instance, node: str, pci_devices: tuple[str, ...]) -> None:
        instance.apply_migration_context()
        instance.drop_migration_context()
        # Nova derives Instance.pci_devices from the device rows; the model keeps them here.
        instance.pci_devices = pci_devices
        instance.host = self.host
        instance.node = node
        instance.task_state = None
        instance.save(expected_task_state=[MIGRATING])

    def delete_allocation_for_evacuated_instance(self, instance: Instance, nodename: str) -> None:
        self.placement.remove_provider_from_allocation(instance.uuid, nodename)

    # -- PCI entry points used by live migration --------------------------------

    @synchronized
    def claim_pci_devices(self, instance: Instance, count: int) -> tuple[str, ...]:
        devices = self.pci_tracker.claim_instance(instance.uuid, count)
        self.pci_tracker.save()
        return devices

    @synchronized
    def allocate_pci_devices_for_instance(self, instance: Instance) -> tuple[str, ...]:
        """Allocate what was claimed; returns every device now allocated to the instance here."""
        self.pci_tracker.allocate_instance(instance.uuid)
        self.pci_tracker.save()
        return tuple(device.address for device in self.pci_tracker.allocations.get(instance.uuid, []))

    @synchronized
    def free_pci_device_allocations_for_instance(self, instance: Instance) -> None:
        self.pci_tracker.free_instance_allocations(instance.uuid)
        self.pci_tracker.save()

    @synchronized
    def free_pci_device_claims_for_instance(self, instance: Instance) -> None:
        self.pci_tracker.free_instance_claims(instance.uuid)
        self._free_audited_claims(instance)
        self.pci_tracker.save()

    def _free_audited_claims(self, instance: Instance) -> None:
        """Model fix (Nova open, ``nova-open-live-migration-rollback-pci``): an audit during the
        live migration counted the incoming migration and so allocated its claimed devices;
        a rollback frees those too.  Nova frees claims only: the devices stay allocated to
        an instance that never arrived, until the next audit."""
        self.pci_tracker.free_instance_allocations(instance.uuid)

    # -- the audit -----------------------------------------------------------------

    def update_available_resource(self, nodename: str) -> None:
        """The periodic audit: rebuild the node's usage from the database."""
        self._update_available_resource(nodename)

    @synchronized
    def _update_available_resource(self, nodename: str) -> None:
        cn = self.compute_nodes[nodename]
        # 1. and 2.: the two reads, each a snapshot of its own moment.
        instances = self.db.instance_get_all_by_host_and_node(self.host, nodename)
        migrations = self.db.migration_get_in_progress_and_error(self.host, nodename)
        # 3.
        instance_by_uuid = {instance.uuid: instance for instance in instances}
        for migration in migrations:
            if (
                migration.instance_uuid in instance_by_uuid
                and migration.dest_compute == self.host
                and migration.dest_node == nodename
            ):
                self._apply_incoming_migration(instance_by_uuid[migration.instance_uuid], migration)
        # 4. and 5.
        instance_by_uuid = self._update_usage_from_instances(instances, nodename)
        self._pair_instances_to_migrations(migrations, instance_by_uuid)
        self._update_usage_from_migrations(migrations, nodename)
        # 6., 7.
        self._remove_deleted_instances_allocations(cn, migrations, instance_by_uuid)
        self.pci_tracker.clean_usage(instance_by_uuid, (m.instance_uuid for m in migrations))
        self._populate_assigned_resources(instance_by_uuid)
        # 8.
        self._update(cn)

    def _apply_incoming_migration(self, instance: Instance, migration: Migration) -> None:
        """An instance here with an incoming, unfinished migration counts with its new
        resources (bug 1953359); applied in memory only, never saved.

        Model fix (Nova open, ``nova-open-resize-finish-window``): a same-node resize is
        left to the same-node branch, and an arrived resize counts its new flavor too, as
        finish_resize will.  Nova applies every incoming context and keeps the old flavor:
        on another node the audit counts the old flavor until the next one (finish_resize
        tells the RT nothing); on the same node the branch counts the new side again and
        pins its CPUs twice.
        """
        if migration.source_node == migration.dest_node:
            return
        instance.apply_migration_context()
        if migration.is_resize and instance.new_flavor is not None:
            instance.flavor = instance.new_flavor

    def _update_usage_from_instances(self, instances: list[Instance], nodename: str) -> dict[str, Instance]:
        self.tracked_instances.clear()
        cn = self.compute_nodes[nodename]
        cn.vcpus_used = cn.reserved_host_cpus
        cn.memory_mb_used = cn.reserved_host_memory_mb
        cn.local_gb_used = cn.reserved_host_disk_gb
        # The driver reports the host topology without pinning; every
        # counted instance and migration pins its CPUs again below.
        cn.pinned_cpus = frozenset()
        instance_by_uuid = {}
        for instance in instances:
            if self._counts_instance(instance):
                self._update_usage_from_instance(instance, nodename)
            instance_by_uuid[instance.uuid] = instance
        return instance_by_uuid

    def _counts_instance(self, instance: Instance) -> bool:
        """The audit skips a deleted instance whose row still exists (bug 1095403)."""
        return not _allow_resource_removal(instance)

    def _update_usage_from_instance(
        self, instance: Instance, nodename: str, is_removed: bool = False
    ) -> None:
        uuid = instance.uuid
        is_new_instance = uuid not in self.tracked_instances
        is_removed_instance = self._is_removed_instance(instance, is_new_instance, is_removed)
        sign = 0
        if is_new_instance:
            self.tracked_instances[uuid] = None
            sign = 1
        if is_removed_instance:
            del self.tracked_instances[uuid]
            self._release_assigned_resources(uuid, instance.pinned_cpus)
            sign = -1
        if sign:
            self.pci_tracker.update_pci_for_instance(uuid, sign)
            self._update_usage(instance.flavor, instance.pinned_cpus, nodename, sign)

    def _is_removed_instance(self, instance: Instance, is_new_instance: bool, is_removed: bool) -> bool:
        """Only an instance tracked here has usage to remove (bug 1095403)."""
        return not is_new_instance and (is_removed or _allow_resource_removal(instance))

    def _pair_instances_to_migrations(
        self, migrations: list[Migration], instance_by_uuid: dict[str, Instance]
    ) -> None:
        for migration in migrations:
            migration._instance = instance_by_uuid.get(migration.instance_uuid)

    def _migration_instance(self, migration: Migration) -> Instance | None:
        """``migration.instance``: the paired one, or lazy-loaded (deleted ones too)."""
        if migration._instance is None:
            try:
                migration._instance = self.db.instance_get_by_uuid(migration.instance_uuid, read_deleted=True)
            except InstanceNotFound:
                return None
        return migration._instance

    def _update_usage_from_migrations(self, migrations: list[Migration], nodename: str) -> None:
        filtered: dict[str, Migration] = {}
        instances: dict[str, Instance] = {}
        self.tracked_migrations.clear()
        for migration in migrations:
            uuid = migration.instance_uuid
            if uuid not in instances:
                found = self._migration_instance(migration)
                if found is None:
                    continue
                instances[uuid] = found
            instance = instances[uuid]
            if not (_instance_in_resize_state(instance) or _instance_is_live_migrating(instance)):
                continue
            other = filtered.get(uuid)
            if other is None or _migration_time(migration) > _migration_time(other):
                filtered[uuid] = migration
        for migration in filtered.values():
            instance = instances[migration.instance_uuid]
            if self._skip_stale_migration(instance, migration):
                continue
            self._update_usage_from_migration(instance, migration, nodename)

    def _skip_stale_migration(self, instance: Instance, migration: Migration) -> bool:
        """A migration the instance's migration context doesn't name is stale: mark it error."""
        context = instance.migration_context
        if context is not None and context.migration_id != migration.id:
            migration.status = "error"
            migration.save()
            return True
        return False

    def _update_usage_from_migration(self, instance: Instance, migration: Migration, nodename: str) -> None:
        uuid = migration.instance_uuid
        incoming = migration.dest_compute == self.host and migration.dest_node == nodename
        outbound = migration.source_compute == self.host and migration.source_node == nodename
        tracked = uuid in self.tracked_instances
        flavor: Flavor | None = None
        pinned: tuple[int, ...] | None = None
        sign = 0
        if incoming and outbound:
            # Same-node resize: count the flavor the instance does not have now.
            if instance.flavor.name == migration.old_flavor.name:
                flavor = self._get_flavor(instance, "new_", migration)
                pinned = self._get_migration_context_resource("pinned_cpus", instance)
                sign = 1
            else:
                flavor = self._get_flavor(instance, "old_", migration)
                pinned = self._get_migration_context_resource("pinned_cpus", instance, prefix="old_")
        elif incoming and not tracked:
            flavor = self._get_flavor(instance, "new_", migration)
            pinned = self._get_migration_context_resource("pinned_cpus", instance)
            sign = 1
        elif outbound and not tracked:
            # Confirm may have cleared old_flavor already (bug 1834349): then
            # there is nothing left to hold for a revert.
            flavor = self._get_flavor(instance, "old_", migration)
            pinned = self._get_migration_context_resource("pinned_cpus", instance, prefix="old_")
        if flavor is not None:
            if sign:
                self.pci_tracker.update_pci_for_instance(uuid, sign)
            self._update_usage(flavor, pinned or (), nodename)
            self.tracked_migrations[uuid] = migration

    def _remove_deleted_instances_allocations(
        self, cn: ComputeNode, migrations: list[Migration], instance_by_uuid: dict[str, Instance]
    ) -> None:
        migration_uuids = {migration.uuid: None for migration in migrations}
        allocations = self.placement.get_allocations_for_provider(cn.hypervisor_hostname)
        for consumer_uuid in allocations:
            if consumer_uuid in self.tracked_instances or consumer_uuid in migration_uuids:
                continue
            instance = self._consumer_instance(consumer_uuid, instance_by_uuid)
            if self._allocation_is_stale(instance):
                self.placement.delete_allocation(consumer_uuid)

    def _consumer_instance(
        self, consumer_uuid: str, instance_by_uuid: dict[str, Instance]
    ) -> Instance | None:
        """The instance behind an allocation's consumer, deleted ones included; None if unknown."""
        instance = instance_by_uuid.get(consumer_uuid)
        if instance is None:
            try:
                instance = self.db.instance_get_by_uuid(consumer_uuid, read_deleted=True)
            except InstanceNotFound:
                return None
        return instance

    def _allocation_is_stale(self, instance: Instance | None) -> bool:
        """Only a deleted instance's allocation goes: an unknown consumer may be one
        the scheduler just allocated for (bug 1729371), an instance without a host
        is still building, and one on another host may be mid-move."""
        return instance is not None and instance.deleted

    def _populate_assigned_resources(self, instance_by_uuid: dict[str, Instance]) -> None:
        assigned: dict[str, tuple[int, ...]] = {}
        for migration in self.tracked_migrations.values():
            instance = migration._instance
            context = instance.migration_context if instance is not None else None
            # The instance of an incoming live migration may not have arrived
            # here yet and have no context (bug 1849165).
            if context is None:
                continue
            if migration.source_compute == self.host:
                _assign(assigned, migration.instance_uuid, context.old_pinned_cpus)
            if migration.dest_compute == self.host:
                _assign(assigned, migration.instance_uuid, context.new_pinned_cpus)
        for uuid in self.tracked_instances:
            _assign(assigned, uuid, instance_by_uuid[uuid].pinned_cpus)
        self.assigned_resources = {uuid: cpus for uuid, cpus in assigned.items() if cpus}

    # -- helpers shared by claims, drops and the audit -------------------------

    def _claim_resources(self, uuid: str, pinned: tuple[int, ...]) -> None:
        if pinned:
            _assign(self.assigned_resources, uuid, pinned)

    def _release_assigned_resources(self, uuid: str, pinned: Iterable[int]) -> None:
        held = self.assigned_resources.get(uuid)
        if held is None:
            return
        released = frozenset(pinned)
        kept = tuple(c for c in held if c not in released)
        if kept:
            self.assigned_resources[uuid] = kept
        else:
            del self.assigned_resources[uuid]

    def _get_flavor(self, instance: Instance, prefix: str, migration: Migration) -> Flavor | None:
        if migration.is_resize:
            flavor: Flavor | None = getattr(instance, prefix + "flavor")
            return flavor
        # Other moves keep the flavor; nothing was stashed.
        return instance.flavor

    def _get_migration_context_resource(self, resource: str, instance: Instance, prefix: str = "new_") -> Any:
        context = instance.migration_context
        return getattr(context, prefix + resource) if context is not None else None

    def _update_usage(self, flavor: Flavor, pinned: tuple[int, ...], nodename: str, sign: int = 1) -> None:
        cn = self.compute_nodes[nodename]
        cn.memory_mb_used += sign * flavor.memory_mb
        cn.local_gb_used += sign * flavor.root_gb
        cn.vcpus_used += sign * flavor.vcpus
        # The counters change first; a pinning conflict then raises, as in Nova.
        if pinned:
            change = cpu.pin_cpus if sign > 0 else cpu.unpin_cpus
            cn.pinned_cpus = change(cn.pcpuset, cn.pinned_cpus, pinned)

    def _update(self, cn: ComputeNode) -> None:
        """Persist the node if its usage changed (``_resource_change``), and the PCI devices."""
        nodename = cn.hypervisor_hostname
        if cn.usage() != self.old_resources[nodename].usage():
            self.db.compute_node_save(cn)
            self.old_resources[nodename] = cn.copy()
        self.pci_tracker.save()


def _assign(assigned: dict[str, tuple[int, ...]], uuid: str, cpus: Iterable[int]) -> None:
    merged = assigned.get(uuid, ()) + tuple(cpus)
    assigned[uuid] = tuple(sorted(set(merged)))

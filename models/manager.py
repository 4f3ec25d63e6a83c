"""The compute manager of one host, after ``nova/compute/manager.py``.

Each public method is an RPC endpoint; a cast to another host is a direct
call of that host's manager in the calling thread (as Nova's
``CastAsCallFixture`` makes it), so one API operation runs start to finish as
one Python call, hopping hosts as Nova's casts do.  Every endpoint marks the
code inside as running on its host (:func:`stateful.locks.on_host`), so the
oslo locks it takes are this host's.  Casts are made after any claim
context has closed, as a real cast returns at once.

Steps and their order are Nova's current ones (see the reference's "Manager
flows"), except the "Model fix (Nova open, ...)" places, which ``nova-open-*``
fault switches restore; driver work is a delay site and nothing else.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from oslo_concurrency import lockutils

from models import sites
from models.errors import ComputeResourcesUnavailable, InstanceNotFound
from models.records import (
    ACTIVE,
    DELETED,
    DELETING,
    ERROR,
    EVACUATION,
    REBUILDING,
    RESIZE_FINISH,
    RESIZE_MIGRATED,
    RESIZE_MIGRATING,
    RESIZE_PREP,
    RESIZE_REVERTING,
    RESIZED,
    SPAWNING,
    UNCLEANED_EVACUATION_STATUSES,
    Flavor,
    Instance,
    Migration,
)
from models.resource_tracker import ResourceTracker
from stateful.locks import on_host
from stateful.scheduler import checkpoint

if TYPE_CHECKING:
    from models.service import Cloud

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


class SpawnFailed(Exception):
    """The virt driver failed to spawn the guest (requested with ``create(fail=True)``)."""


class LiveMigrationFailed(Exception):
    """The hypervisor's live migration failed (requested with ``live_migrate(fail=True)``)."""


def endpoint(method: Endpoint) -> Endpoint:
    @functools.wraps(method)
    def on_this_host(self: ComputeManager, *args: Any, **kwargs: Any) -> Any:
        with on_host(self.host):
            return method(self, *args, **kwargs)

    return on_this_host  # type: ignore[return-value]


class ComputeManager:
    def __init__(self, host: str, cloud: Cloud) -> None:
        self.host = host
        self.cloud = cloud
        self.db = cloud.db
        self.placement = cloud.placement
        self.rt = ResourceTracker(host, cloud.db, cloud.placement)
        #: this host's only node (Nova: one per non-ironic host, named after it)
        self.nodename = host

    def _compute(self, host: str) -> ComputeManager:
        return self.cloud.compute(host)

    # -- start-up and the periodic ---------------------------------------------

    def restart(self) -> None:
        """A new nova-compute process: the RT's memory is lost; it starts afresh from the database."""
        self.rt = ResourceTracker(self.host, self.db, self.placement)
        self.init_host()

    @endpoint
    def init_host(self) -> None:
        """A (re)started service: clean up what was evacuated away, then audit."""
        self._destroy_evacuated_instances()
        self.update_available_resource()

    def _destroy_evacuated_instances(self) -> None:
        evacuations = self.db.migration_get_by_filters(self.host, UNCLEANED_EVACUATION_STATUSES, EVACUATION)
        for migration in evacuations:
            try:
                instance = self.db.instance_get_by_uuid(migration.instance_uuid, read_deleted=True)
            except InstanceNotFound:
                continue
            if not instance.deleted:
                self.placement.remove_provider_from_allocation(instance.uuid, migration.source_node)
            self._set_migration_status(migration, "completed")

    @endpoint
    def update_available_resource(self) -> None:
        self.rt.update_available_resource(self.nodename)

    # -- build and delete ------------------------------------------------------------

    @endpoint
    def build_and_run_instance(self, instance: Instance, node: str, fail: bool = False) -> None:
        try:
            self.rt.instance_claim(instance, node)
        except ComputeResourcesUnavailable:
            self._build_failed(instance)
            raise
        instance.task_state = SPAWNING
        instance.save()
        try:
            checkpoint(sites.COMPUTE_SPAWN)
            if fail:
                raise SpawnFailed(f"spawn of {instance.uuid} failed on {self.host}")
        except SpawnFailed:
            self.rt.abort_instance_claim(instance, node)
            self._build_failed(instance)
            return
        instance.vm_state = ACTIVE
        instance.task_state = None
        instance.save(expected_task_state=[SPAWNING])

    def _build_failed(self, instance: Instance) -> None:
        """No reschedule: the allocation goes and the instance ends in ERROR, hostless."""
        self.placement.delete_allocation(instance.uuid)
        instance.vm_state = ERROR
        instance.task_state = None
        instance.save()

    @endpoint
    def terminate_instance(self, instance: Instance) -> None:
        with lockutils.lock(instance.uuid):
            self._delete_instance(instance)

    def _delete_instance(self, instance: Instance) -> None:
        checkpoint(sites.COMPUTE_SHUTDOWN_INSTANCE)
        instance.vm_state = DELETED
        instance.task_state = None
        instance.save()
        self._complete_deletion(instance)
        instance.destroy()

    def _complete_deletion(self, instance: Instance) -> None:
        if instance.host == self.host:
            assert instance.node is not None
            self.rt.update_usage(instance, instance.node)
        self.placement.delete_allocation(instance.uuid)

    # -- resize and cold migration ---------------------------------------------------

    @endpoint
    def prep_resize(self, instance: Instance, flavor: Flavor, migration: Migration) -> None:
        """On the destination: stash the new flavor and claim it."""
        instance.new_flavor = flavor
        instance.save()
        try:
            self.rt.resize_claim(instance, flavor, self.nodename, migration)
        except ComputeResourcesUnavailable:
            self._resize_claim_failed(instance, migration)
            raise
        self._compute(migration.source_compute).resize_instance(instance, migration)

    def _resize_claim_failed(self, instance: Instance, migration: Migration) -> None:
        """No alternate host: the conductor's rollback (migration error, allocations back)."""
        self._set_migration_status(migration, "error")
        self.placement.move_allocations(migration.uuid, instance.uuid)
        instance.new_flavor = None
        instance.task_state = None
        instance.save(expected_task_state=[RESIZE_PREP])

    @endpoint
    def resize_instance(self, instance: Instance, migration: Migration) -> None:
        """On the source: power off, copy, and hand the instance to the destination."""
        self._set_migration_status(migration, "migrating")
        instance.task_state = RESIZE_MIGRATING
        instance.save(expected_task_state=[RESIZE_PREP])
        checkpoint(sites.COMPUTE_MIGRATE_DISK_AND_POWER_OFF)
        self._set_migration_status(migration, "post-migrating")
        instance.host = migration.dest_compute
        instance.node = migration.dest_node
        instance.old_flavor = instance.flavor
        instance.task_state = RESIZE_MIGRATED
        instance.save(expected_task_state=[RESIZE_MIGRATING])
        assert migration.dest_compute is not None
        self._compute(migration.dest_compute).finish_resize(instance, migration)

    @endpoint
    def finish_resize(self, instance: Instance, migration: Migration) -> None:
        """On the destination: switch to the new flavor; no RT call here."""
        instance.old_flavor = instance.flavor
        if migration.old_flavor.name != migration.new_flavor.name:
            assert instance.new_flavor is not None
            instance.flavor = instance.new_flavor
        instance.apply_migration_context()
        instance.task_state = RESIZE_FINISH
        instance.save(expected_task_state=[RESIZE_MIGRATED])
        checkpoint(sites.COMPUTE_FINISH_MIGRATION)
        self._set_migration_status(migration, "finished")
        instance.vm_state = RESIZED
        instance.task_state = None
        instance.save(expected_task_state=[RESIZE_FINISH])

    @endpoint
    def confirm_resize(self, instance: Instance, migration: Migration) -> None:
        """On the source, under the instance's lock."""
        with lockutils.lock(instance.uuid):
            if migration.status not in ("finished", "confirming"):
                return
            try:
                instance = self.db.instance_get_by_uuid(instance.uuid)
            except InstanceNotFound:
                return
            try:
                try:
                    self._confirm_resize(instance, migration)
                finally:
                    # Whatever happened, the instance now lives on the destination.
                    self._delete_allocation_after_move(migration)
                    # Last: the audit needs old_flavor until the migration is confirmed.
                    self._delete_stashed_flavor_info(instance)
            except Exception:
                self._error_out_instance(instance)
                raise

    def _confirm_resize(self, instance: Instance, migration: Migration) -> None:
        checkpoint(sites.COMPUTE_CONFIRM_MIGRATION)
        self.rt.drop_move_claim_at_source(instance, migration)
        instance.vm_state = ACTIVE
        instance.task_state = None
        instance.save(expected_task_state=[None, DELETING])

    def _delete_allocation_after_move(self, migration: Migration) -> None:
        self.placement.delete_allocation(migration.uuid)

    def _delete_stashed_flavor_info(self, instance: Instance) -> None:
        instance.old_flavor = None
        instance.new_flavor = None
        instance.save()

    def _error_out_instance(self, instance: Instance) -> None:
        instance.vm_state = ERROR
        instance.task_state = None
        instance.save()

    @endpoint
    def revert_resize(self, instance: Instance, migration: Migration) -> None:
        """On the destination: destroy the guest, drop the claim, hand back to the source."""
        checkpoint(sites.COMPUTE_DESTROY)
        self.rt.drop_move_claim_at_dest(instance, migration)
        self._compute(migration.source_compute).finish_revert_resize(instance, migration)

    @endpoint
    def finish_revert_resize(self, instance: Instance, migration: Migration) -> None:
        """On the source: old flavor and host back (no RT call), allocations back."""
        try:
            self._finish_revert_resize(instance, migration)
        finally:
            self._delete_stashed_flavor_info(instance)

    def _finish_revert_resize(self, instance: Instance, migration: Migration) -> None:
        self._revert_instance_flavor_host_node(instance, migration)
        self._revert_allocation(instance, migration)
        checkpoint(sites.COMPUTE_FINISH_REVERT_MIGRATION)
        instance.drop_migration_context()
        instance.save(expected_task_state=[RESIZE_REVERTING])
        instance.vm_state = ACTIVE
        instance.task_state = None
        instance.save()

    def _revert_instance_flavor_host_node(self, instance: Instance, migration: Migration) -> None:
        assert instance.old_flavor is not None
        instance.flavor = instance.old_flavor
        instance.host = migration.source_compute
        instance.node = migration.source_node
        instance.save(expected_task_state=[RESIZE_REVERTING])

    def _revert_allocation(self, instance: Instance, migration: Migration) -> None:
        """The source allocation the migration held goes back to the instance."""
        self.placement.move_allocations(migration.uuid, instance.uuid)

    # -- evacuate ------------------------------------------------------------------------

    @endpoint
    def rebuild_instance(self, instance: Instance, migration: Migration) -> None:
        """On the evacuation destination: claim, rebuild, then finish under the RT lock."""
        try:
            self.rt.rebuild_claim(instance, self.nodename, migration)
        except ComputeResourcesUnavailable:
            self._set_migration_status(migration, "failed")
            self.rt.delete_allocation_for_evacuated_instance(instance, self.nodename)
            instance.task_state = None
            instance.save(expected_task_state=[REBUILDING])
            raise
        checkpoint(sites.COMPUTE_REBUILD)
        self._finish_rebuild(instance, migration)

    def _finish_rebuild(self, instance: Instance, migration: Migration) -> None:
        """The rebuilt instance turns active in the same locked save that moves it here.

        Nova 34 saves it active, with no task state, first and outside the RT
        lock (``_do_rebuild_instance``), then calls ``finish_evacuation``: an
        audit in between skips the evacuation's migration (the instance is no
        longer rebuilding) while the instance is not yet on this host, and
        counts it nowhere.  The switch ``nova-open-evacuation-active-early``
        restores Nova's order.
        """
        self.rt.finish_evacuation(instance, self.nodename, migration, activate=True)

    # -- live migration -------------------------------------------------------------------

    @endpoint
    def check_can_live_migrate_destination(self, instance: Instance, migration: Migration) -> None:
        """On the destination: the move claim, then the PCI claim.

        Every model instance has a NUMA topology (one cell), so every live
        migration takes libvirt's NUMA-aware path and claims here.
        """
        self.rt.live_migration_claim(instance, self.nodename, migration)
        if instance.flavor.pci_devices:
            self.rt.claim_pci_devices(instance, instance.flavor.pci_devices)

    @endpoint
    def live_migration(self, instance: Instance, migration: Migration, fail: bool = False) -> None:
        """On the source."""
        assert migration.dest_compute is not None
        dest = self._compute(migration.dest_compute)
        self._set_migration_status(migration, "queued")
        self._set_migration_status(migration, "preparing")
        dest.pre_live_migration(instance)
        self._set_migration_status(migration, "running")
        try:
            checkpoint(sites.COMPUTE_LIVE_MIGRATION)
            if fail:
                raise LiveMigrationFailed(f"live migration of {instance.uuid} to {dest.host} failed")
        except LiveMigrationFailed:
            self._rollback_live_migration(instance, dest, migration)
            return
        self._post_live_migration(instance, dest, migration)

    @endpoint
    def pre_live_migration(self, instance: Instance) -> None:
        checkpoint(sites.COMPUTE_PRE_LIVE_MIGRATION)

    def _post_live_migration(self, instance: Instance, dest: ComputeManager, migration: Migration) -> None:
        """Model fix (Nova open, ``nova-open-live-migration-source-audit``): the migration is
        marked completed before the source's own audit.  Nova audits first: the instance is
        on the destination with no task state by then, so an API call may already have
        started another move (task state ``resize_prep``, no migration context yet), and
        the audit then counts the still-``running`` live migration as an outbound resize,
        charging the source for an instance that left it, until its next audit."""
        self.rt.free_pci_device_allocations_for_instance(instance)
        dest.post_live_migration_at_destination(instance)
        self._set_migration_status(migration, "completed")
        self.update_available_resource()
        self._delete_allocation_after_move(migration)

    @endpoint
    def post_live_migration_at_destination(self, instance: Instance) -> None:
        """Allocate the claimed PCI devices, then move the instance here (both under the RT lock)."""
        devices = self.rt.allocate_pci_devices_for_instance(instance)
        checkpoint(sites.COMPUTE_POST_LIVE_MIGRATION_AT_DESTINATION)
        self.rt.finish_live_migration(instance, self.nodename, devices)

    def _rollback_live_migration(
        self, instance: Instance, dest: ComputeManager, migration: Migration
    ) -> None:
        """Model fix (Nova open, ``nova-open-live-migration-rollback-window``): the destination
        drops its claim and ends the live migration (status ``failed``, task state cleared,
        context dropped) in one critical section.  Nova drops the claim first, the source
        clears the task state afterwards and marks the migration failed last: a destination
        audit after the drop still sees the instance live migrating there and counts it
        again; one after the task state is cleared counts the still-``running`` migration
        as soon as another move of the instance (a second live migration, a resize) has
        set a task state of its own.  Either lasts until the next audit."""
        self._revert_allocation(instance, migration)
        dest.rollback_live_migration_at_destination(instance)
        dest.drop_move_claim_at_destination(instance, migration)

    @endpoint
    def rollback_live_migration_at_destination(self, instance: Instance) -> None:
        checkpoint(sites.COMPUTE_ROLLBACK_LIVE_MIGRATION_AT_DESTINATION)
        self.rt.free_pci_device_claims_for_instance(instance)

    @endpoint
    def drop_move_claim_at_destination(self, instance: Instance, migration: Migration) -> None:
        self.rt.drop_live_migration_claim(instance, self.nodename, migration)

    def _set_migration_status(self, migration: Migration, status: str) -> None:
        migration.status = status
        migration.save()

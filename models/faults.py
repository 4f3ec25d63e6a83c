"""Fault switches for the embedded compute service: Nova's fixed races, brought back.

The model's code is Nova's current, fixed behaviour.  Each ``lp*`` switch
patches one or two methods with their pre-fix body (or wraps a method to
restore the pre-fix step it lost), so the race returns exactly where it was;
``lp1600304`` also brings back the ordering its stale migrations came from
(three patches).
``nova-open-*`` switches go the other way: the model fixes a race still in
Nova's current code (the method named, "Model fix (Nova open, ...)"), and the
switch restores Nova's code.  The interleaving that exposes each one is in
``tests/models/test_faults.py`` (``lp*``) and ``tests/models/test_open_races.py``
(``nova-open-*``).
"""

from __future__ import annotations

from typing import Any, Callable

import fixtures

from models import sites
from models.errors import AllocationConflict
from models.manager import ComputeManager
from models.placement import resources_for
from models.records import (
    ACTIVE,
    DELETING,
    MIGRATING,
    REBUILDING,
    RESIZE_REVERTING,
    ComputeNode,
    Flavor,
    Instance,
    Migration,
)
from models.resource_tracker import ResourceTracker, _allow_resource_removal, compute_resources_lock
from stateful.faults import Fault
from stateful.scheduler import checkpoint

RT = "models.resource_tracker.ResourceTracker."
MANAGER = "models.manager.ComputeManager."

#: A method's path, and what makes its replacement (when the fixture is built).
Replacement = tuple[str, Callable[[], Any]]


def _patches(*replacements: Replacement) -> Callable[[], fixtures.Fixture]:
    """A fixture factory; each replacement is built when the fixture is, so switches stack."""

    def fixture() -> fixtures.Fixture:
        return fixtures.CompoundFixture([fixtures.MonkeyPatch(path, make()) for path, make in replacements])

    return fixture


def _current(path: str) -> Any:
    owner = ResourceTracker if path.startswith(RT) else ComputeManager
    return getattr(owner, path.rsplit(".", 1)[1])


# -- lp1896463 ----------------------------------------------------------------


def _finish_evacuation_unlocked(
    self: ResourceTracker, instance: Instance, node: str, migration: Migration, activate: bool = False
) -> None:
    """Before the fix the manager finished the evacuation itself, outside the RT lock."""
    self._finish_evacuation(instance, node, migration, activate)


def _finish_rebuild_active_first(self: ComputeManager, instance: Instance, migration: Migration) -> None:
    """Nova 34 (and every release before): the spawned instance is saved active, outside the RT lock,
    before the evacuation is finished."""
    instance.vm_state = ACTIVE
    instance.task_state = None
    instance.save(expected_task_state=[REBUILDING])
    self.rt.finish_evacuation(instance, self.nodename, migration)


# -- lp1879878 ------------------------------------------------------------------


def _drop_move_claim_at_source_status_first(
    self: ResourceTracker, instance: Instance, migration: Migration
) -> None:
    """Ussuri: confirm saved the migration as confirmed before, and outside the lock of, the drop."""
    migration.status = "confirmed"
    migration.save()
    with compute_resources_lock(self.host):
        self._drop_move_claim(instance, migration.source_node, instance.old_flavor, prefix="old_")
    instance.drop_migration_context()


def _drop_move_claim_at_dest_status_first(
    self: ResourceTracker, instance: Instance, migration: Migration
) -> None:
    """Ussuri: revert saved 'reverted' and reverted the context, then dropped a claim with no flavor."""
    assert migration.dest_node is not None
    migration.status = "reverted"
    migration.save()
    instance.revert_migration_context()
    instance.save(expected_task_state=[RESIZE_REVERTING])
    with compute_resources_lock(self.host):
        self._drop_move_claim(instance, migration.dest_node)


def _confirm_resize_stash_first(self: ComputeManager, instance: Instance, migration: Migration) -> None:
    """Ussuri: confirm cleared the stashed flavors first and dropped the claim with a kept copy."""
    old_flavor = instance.old_flavor
    self._delete_stashed_flavor_info(instance)
    checkpoint(sites.COMPUTE_CONFIRM_MIGRATION)
    with compute_resources_lock(self.rt.host):
        migration.status = "confirmed"
        migration.save()
        self.rt._drop_move_claim(instance, migration.source_node, old_flavor, prefix="old_")
        instance.drop_migration_context()
    instance.vm_state = ACTIVE
    instance.task_state = None
    instance.save(expected_task_state=[None, DELETING])


# -- lp1818914 -------------------------------------------------------------------


def _drop_move_claim_tracked_migrations_only(
    self: ResourceTracker,
    instance: Instance,
    nodename: str,
    flavor: Flavor | None = None,
    prefix: str = "new_",
) -> None:
    """Stein: usage went only with a tracked migration; a still-tracked instance was just forgotten."""
    uuid = instance.uuid
    if uuid in self.tracked_migrations:
        migration = self.tracked_migrations.pop(uuid)
        if not flavor:
            flavor = self._get_flavor(instance, prefix, migration)
        if flavor is not None:
            self._drop_move_usage(instance, nodename, flavor, prefix)
    elif uuid in self.tracked_instances:
        del self.tracked_instances[uuid]


# -- lp1834349 -------------------------------------------------------------------


def _logs_outgoing_flavor(original: Callable[..., None]) -> Callable[..., None]:
    def update_usage_from_migration(
        self: ResourceTracker, instance: Instance, migration: Migration, nodename: str
    ) -> None:
        incoming = migration.dest_compute == self.host and migration.dest_node == nodename
        outbound = migration.source_compute == self.host and migration.source_node == nodename
        if outbound and not incoming and instance.uuid not in self.tracked_instances:
            # Stein logged the outgoing migration's flavor before checking it was still stashed.
            flavor: Any = self._get_flavor(instance, "old_", migration)
            flavor.name  # noqa: B018 - the AttributeError is the bug
        original(self, instance, migration, nodename)

    return update_usage_from_migration


# -- lp1095403 -------------------------------------------------------------------


def _counts_every_instance(self: ResourceTracker, instance: Instance) -> bool:
    """Grizzly: the audit handed deleted instances to _update_usage_from_instance too."""
    return True


def _removes_untracked_instances(
    self: ResourceTracker, instance: Instance, is_new_instance: bool, is_removed: bool
) -> bool:
    """Grizzly: a deleted instance was 'removed' even if it had never been added."""
    return is_removed or _allow_resource_removal(instance)


# -- lp1600304 -------------------------------------------------------------------


def _never_stale(self: ResourceTracker, instance: Instance, migration: Migration) -> bool:
    """Before the fix every in-progress migration counted, whatever the instance's context named."""
    return False


def _leaves_the_migration_running(self: ResourceTracker, migration: Migration) -> None:
    """Stale migrations came from rollbacks that end the live migration at the destination
    without ending its record ..."""


def _marking_failed_afterwards(rollback: Callable[..., None]) -> Callable[..., None]:
    """... which the source marks failed last, once another move may have started (as Nova 34 still does)."""

    def rollback_then_mark_failed(
        self: ComputeManager, instance: Instance, dest: ComputeManager, migration: Migration
    ) -> None:
        rollback(self, instance, dest, migration)
        # nova-open-live-migration-rollback-window's ordering, if on, has marked it already
        if migration.status != "failed":
            self._set_migration_status(migration, "failed")

    return rollback_then_mark_failed


# -- lp1707071 -------------------------------------------------------------------


def _pike_allocation_heal(
    self: ResourceTracker, cn: ComputeNode, migrations: list[Migration], instance_by_uuid: dict[str, Instance]
) -> None:
    """Pike: each audit rewrote the allocation of every instance it counts against its own
    provider only, knew nothing of migration consumers, and removed the allocations of
    instances that had moved to another host."""
    provider = cn.hypervisor_hostname
    for uuid in self.tracked_instances:
        try:
            self.placement.put_allocations(uuid, {provider: resources_for(instance_by_uuid[uuid].flavor)})
        except AllocationConflict:
            continue  # Pike logged the refused PUT and went on
    allocations = self.placement.get_allocations_for_provider(provider)
    for consumer_uuid in allocations:
        if consumer_uuid in self.tracked_instances:
            continue
        instance = self._consumer_instance(consumer_uuid, instance_by_uuid)
        moved_away = instance is not None and instance.host not in (None, self.host)
        if moved_away or self._allocation_is_stale(instance):
            self.placement.delete_allocation(consumer_uuid)


# -- lp1729371 -------------------------------------------------------------------


def _unknown_or_unhosted_is_stale(self: ResourceTracker, instance: Instance | None) -> bool:
    """Before the fix an allocation was gone with its instance when the instance was not
    found, or had no host: exactly the state of an instance the scheduler just placed."""
    return instance is None or instance.deleted or instance.host is None


# -- lp1849165 -------------------------------------------------------------------


def _reads_every_migration_context(original: Callable[..., None]) -> Callable[..., None]:
    def populate_assigned_resources(self: ResourceTracker, instance_by_uuid: dict[str, Instance]) -> None:
        for migration in self.tracked_migrations.values():
            # Train read each tracked migration's context, arrived here or not.
            context: Any = migration._instance.migration_context if migration._instance is not None else None
            if migration.source_compute == self.host:
                context.old_pinned_cpus  # noqa: B018 - the AttributeError is the bug
            if migration.dest_compute == self.host:
                context.new_pinned_cpus  # noqa: B018
        original(self, instance_by_uuid)

    return populate_assigned_resources


# -- nova-open-delete-after-move ---------------------------------------------------


def _ignores_arrived_instance(self: ResourceTracker, instance: Instance, nodename: str) -> None:
    """Nova: update_usage only knows instances tracked as instances."""


def _forgets_instance_after_drop(self: ResourceTracker, migration: Migration | None) -> bool:
    """Nova: a dropped claim always stops tracking the instance, same node or not."""
    return False


# -- the other nova-open switches ------------------------------------------------------


def _drop_move_claim_at_dest_as_nova(self: ResourceTracker, instance: Instance, migration: Migration) -> None:
    """Nova: this host's lock only; the instance stays on the destination until finish_revert_resize."""
    assert migration.dest_node is not None
    with compute_resources_lock(self.host):
        migration.status = "reverted"
        migration.save()
        self._drop_move_claim(instance, migration.dest_node, instance.new_flavor, prefix="new_")
        instance.revert_migration_context()
        instance.save(expected_task_state=[RESIZE_REVERTING])


def _applies_every_incoming_context(self: ResourceTracker, instance: Instance, migration: Migration) -> None:
    """Nova: every incoming migration's context is applied, same node or not; the flavor is kept."""
    instance.apply_migration_context()


def _frees_nothing_untracked(self: ResourceTracker, instance: Instance) -> None:
    """Nova: update_usage frees only what a tracked instance holds."""


def _finish_live_migration_unlocked(
    self: ResourceTracker, instance: Instance, node: str, pci_devices: tuple[str, ...]
) -> None:
    """Nova: post_live_migration_at_destination moves the instance without the RT lock."""
    self._finish_live_migration(instance, node, pci_devices)


def _frees_claims_only(self: ResourceTracker, instance: Instance) -> None:
    """Nova: a live-migration rollback frees the destination's PCI claims, not allocations."""


def _drop_move_claim_at_destination_as_nova(self: ComputeManager, instance: Instance, migration: Migration) -> None:
    """Nova: the destination only drops its claim (Nova's RPC names no migration) ..."""
    self.rt.drop_move_claim(instance, self.nodename, flavor=instance.flavor)


def _rollback_live_migration_as_nova(
    self: ComputeManager, instance: Instance, dest: ComputeManager, migration: Migration
) -> None:
    """... and the source ends the live migration afterwards."""
    self._revert_allocation(instance, migration)
    dest.rollback_live_migration_at_destination(instance)
    dest.drop_move_claim_at_destination(instance, migration)
    instance.task_state = None
    instance.drop_migration_context()
    instance.save(expected_task_state=[MIGRATING])
    self._set_migration_status(migration, "failed")


def _post_live_migration_as_nova(
    self: ComputeManager, instance: Instance, dest: ComputeManager, migration: Migration
) -> None:
    """Nova: the source audits itself before it marks the live migration completed."""
    self.rt.free_pci_device_allocations_for_instance(instance)
    dest.post_live_migration_at_destination(instance)
    self.update_available_resource()
    self._set_migration_status(migration, "completed")
    self._delete_allocation_after_move(migration)


def _wrapping(path: str, wrapper: Callable[[Any], Any]) -> Replacement:
    return path, lambda: wrapper(_current(path))


def _replacing(path: str, replacement: Any) -> Replacement:
    return path, lambda: replacement


_STASH_FIRST = _replacing(MANAGER + "_confirm_resize", _confirm_resize_stash_first)
_ACTIVE_FIRST = _replacing(MANAGER + "_finish_rebuild", _finish_rebuild_active_first)
_LIVE_MIGRATION_UNLOCKED = _replacing(RT + "finish_live_migration", _finish_live_migration_unlocked)

#: What subtracting an instance's usage once too often breaks: the counters fall below
#: the reserved amounts (and zero), or unpinning CPUs that are no longer pinned raises.
_SUBTRACTED_TWICE = (
    "no-negative-usage",
    "usage-not-below-reserved",
    "usage-matches-oracle",
    "no-unexpected-error",
)


def _lp(name: str, description: str, *replacements: Replacement, breaks: tuple[str, ...]) -> Fault:
    """A race Nova fixed, brought back; ``name`` is ``lp<bug number>``, maybe with ``-<part>``."""
    number = name[2:].partition("-")[0]
    bug = f"https://bugs.launchpad.net/nova/+bug/{number}"
    return Fault(name, "model", bug, description, _patches(*replacements), breaks=breaks)


def _nova_open(
    name: str, where: str, description: str, *replacements: Replacement, breaks: tuple[str, ...]
) -> Fault:
    """A race still in Nova's code that the model fixes; ``where`` says where Nova has it."""
    bug = "found by this suite in nova 34.0.0: " + where
    return Fault(name, "model", bug, description, _patches(*replacements), breaks=breaks)


FAULTS: list[Fault] = [
    _lp(
        "lp1896463",
        "finish_evacuation runs outside the RT lock; an audit between its two reads frees the PCI claim",
        _replacing(RT + "finish_evacuation", _finish_evacuation_unlocked),
        _ACTIVE_FIRST,
        breaks=("usage-matches-oracle", "no-unexpected-error"),
    ),
    _lp(
        "lp1879878-confirm",
        "confirm saves the migration confirmed before, and outside the lock of, the claim drop",
        _replacing(RT + "drop_move_claim_at_source", _drop_move_claim_at_source_status_first),
        breaks=_SUBTRACTED_TWICE,
    ),
    _lp(
        "lp1879878-revert",
        "revert saves 'reverted' and reverts the context before, and outside the lock of, the claim drop",
        _replacing(RT + "drop_move_claim_at_dest", _drop_move_claim_at_dest_status_first),
        breaks=("usage-matches-oracle", "no-unexpected-error", "no-double-ownership"),
    ),
    _lp(
        "lp1879878-stash",
        "confirm clears the stashed old_flavor first, while the migration is still in progress",
        _STASH_FIRST,
        breaks=_SUBTRACTED_TWICE,
    ),
    _lp(
        "lp1818914",
        "dropping a move claim subtracts only for a tracked migration, not a still-tracked instance",
        _replacing(RT + "_drop_move_claim", _drop_move_claim_tracked_migrations_only),
        breaks=("usage-matches-oracle", "terminal-holds-nothing"),
    ),
    _lp(
        "lp1834349",
        "the audit dereferences an outbound migration's old_flavor that confirm cleared "
        "(with Stein's early clear)",
        _wrapping(RT + "_update_usage_from_migration", _logs_outgoing_flavor),
        _STASH_FIRST,
        breaks=_SUBTRACTED_TWICE,
    ),
    _lp(
        "lp1095403",
        "the audit subtracts the usage of a deleted instance whose row still exists",
        _replacing(RT + "_counts_instance", _counts_every_instance),
        _replacing(RT + "_is_removed_instance", _removes_untracked_instances),
        breaks=_SUBTRACTED_TWICE,
    ),
    _lp(
        "lp1600304",
        "the audit counts a stale in-progress migration the instance's migration context doesn't name "
        "(a live-migration rollback marks its migration failed last, leaving such migrations)",
        _replacing(RT + "_skip_stale_migration", _never_stale),
        _replacing(RT + "_fail_live_migration", _leaves_the_migration_running),
        _wrapping(MANAGER + "_rollback_live_migration", _marking_failed_afterwards),
        breaks=("usage-matches-oracle",),
    ),
    _lp(
        "lp1707071",
        "audits rewrite instances' allocations to their own provider and delete those of moved instances",
        _replacing(RT + "_remove_deleted_instances_allocations", _pike_allocation_heal),
        breaks=("placement-matches-oracle", "terminal-holds-nothing"),
    ),
    _lp(
        "lp1729371",
        "the audit deletes the allocation of an instance not yet in the database or not yet on a host",
        _replacing(RT + "_allocation_is_stale", _unknown_or_unhosted_is_stale),
        breaks=("placement-matches-oracle",),
    ),
    _lp(
        "lp1849165",
        "the audit reads the migration context of an incoming live migration that has none yet",
        _wrapping(RT + "_populate_assigned_resources", _reads_every_migration_context),
        # Nova moves a live-migrated instance outside the RT lock (as it did in
        # Train), and that window is where a tracked migration lacks its context.
        _LIVE_MIGRATION_UNLOCKED,
        breaks=("no-unexpected-error", "usage-matches-oracle"),
    ),
    _nova_open(
        "nova-open-delete-after-move",
        "update_usage() and _drop_move_claim() (nova/compute/resource_tracker.py)",
        "deleting an instance that arrived by a move, or was resized on its host, before an audit "
        "leaves it counted",
        _replacing(RT + "_track_arrived_instance", _ignores_arrived_instance),
        _replacing(RT + "_stays_after_drop", _forgets_instance_after_drop),
        breaks=("usage-matches-oracle", "terminal-holds-nothing"),
    ),
    _nova_open(
        "nova-open-evacuation-active-early",
        "ComputeManager._do_rebuild_instance saves the instance active "
        "before rebuild_instance calls ResourceTracker.finish_evacuation (nova/compute/manager.py)",
        "an audit between the rebuilt instance's active save and finish_evacuation counts it on no host",
        _ACTIVE_FIRST,
        breaks=("usage-matches-oracle",),
    ),
    _nova_open(
        "nova-open-revert-window",
        "drop_move_claim_at_dest marks the migration reverted while the instance stays on the "
        "destination until finish_revert_resize (nova/compute/resource_tracker.py, manager.py)",
        "audits between the revert's claim drop and finish_revert_resize swap usage between the hosts",
        _replacing(RT + "drop_move_claim_at_dest", _drop_move_claim_at_dest_as_nova),
        breaks=("usage-matches-oracle", "no-unexpected-error", "no-double-ownership"),
    ),
    _nova_open(
        "nova-open-resize-finish-window",
        "the audit applies an incoming resize's migration context but not its flavor, which "
        "finish_resize switches without telling the RT (nova/compute/resource_tracker.py, manager.py)",
        "an audit before finish_resize counts the old flavor, or, on the same node, pins the new CPUs twice",
        _replacing(RT + "_apply_incoming_migration", _applies_every_incoming_context),
        breaks=("usage-matches-oracle", "no-unexpected-error"),
    ),
    _nova_open(
        "nova-open-delete-pci-leak",
        "update_usage frees nothing for an instance an audit already stopped tracking, and "
        "clean_usage spares it (nova/compute/resource_tracker.py, nova/pci/manager.py)",
        "an audit between a delete's 'deleted' save and its update_usage leaves the PCI devices allocated",
        _replacing(RT + "_free_untracked_devices", _frees_nothing_untracked),
        breaks=("terminal-holds-nothing", "usage-matches-oracle"),
    ),
    _nova_open(
        "nova-open-live-migration-unlocked",
        "post_live_migration_at_destination moves the instance outside the RT lock "
        "(nova/compute/manager.py), the race bug 1896463 fixed for evacuation",
        "a destination audit between its two reads counts a live-migrated instance nowhere and frees its PCI",
        _LIVE_MIGRATION_UNLOCKED,
        breaks=("usage-matches-oracle", "no-unexpected-error"),
    ),
    _nova_open(
        "nova-open-live-migration-rollback-window",
        "_rollback_live_migration has the destination drop its claim before the source clears "
        "the instance's task state (nova/compute/manager.py)",
        "a destination audit between a live-migration rollback's claim drop and its end counts the "
        "instance again",
        _replacing(MANAGER + "drop_move_claim_at_destination", _drop_move_claim_at_destination_as_nova),
        _replacing(MANAGER + "_rollback_live_migration", _rollback_live_migration_as_nova),
        breaks=("usage-matches-oracle",),
    ),
    _nova_open(
        "nova-open-live-migration-rollback-pci",
        "an audit allocates an incoming live migration's claimed PCI devices and "
        "rollback_live_migration_at_destination frees claims only (nova/compute/manager.py)",
        "a destination audit during a live migration that rolls back leaves its PCI devices allocated there",
        _replacing(RT + "_free_audited_claims", _frees_claims_only),
        breaks=("usage-matches-oracle",),
    ),
    _nova_open(
        "nova-open-live-migration-source-audit",
        "ComputeManager._post_live_migration calls update_available_resource before it marks the "
        "migration completed, and _update_usage_from_migrations counts a migration whose instance "
        "is in any resize state and has no migration context (nova/compute/manager.py, "
        "nova/compute/resource_tracker.py)",
        "a resize or migrate started as a live migration ends makes the source's own audit count "
        "the instance there again",
        _replacing(MANAGER + "_post_live_migration", _post_live_migration_as_nova),
        breaks=("usage-matches-oracle",),
    ),
]

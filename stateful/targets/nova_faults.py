"""Fault switches for real Nova: put the pre-fix code of known races back.

Each fault's fixture monkeypatches Nova's resource tracker for the life of
the fixture (the session sets it up before the target, and the patch is on
the class, so every compute service in the process gets it).

* ``lp1896463`` — https://bugs.launchpad.net/nova/+bug/1896463: the
  evacuation's end (``instance.host`` set to the destination, migration
  context dropped, migration ``done``) ran outside the ``compute_resources``
  lock.  An audit of the destination that read its instance list before and
  its migration list after that end finds the instance in neither, and frees
  the instance's PCI devices there.  The fix moved it into
  ``ResourceTracker.finish_evacuation`` (locked); the fault runs that method's
  body without the lock.
* ``lp1879878-confirm`` / ``lp1879878-revert`` —
  https://bugs.launchpad.net/nova/+bug/1879878: confirming (reverting) marked
  the migration ``confirmed`` (``reverted``) before, and outside the lock of,
  dropping the move claim on the source (destination).  An audit in between
  no longer counts the move.  Confirm: the drop then subtracts the old flavor
  again (usage below the reserved amount, negative for CPUs with none
  reserved).  Revert: the audit counts the instance (still on the
  destination) and the drop, which named no flavor, subtracts nothing, so
  the destination keeps the new flavor's usage after the instance left.
  The fault saves the status first, unlocked, then drops the claim under the lock.

Nova's open races (``nova-open-*``) go the other way, as on the model
(``models/faults.py``): where Nova 34's own ordering breaks an invariant, the
Nova target runs with a minimal fix (:class:`OpenRaceFixes`, set up by the
target, each fix a ``fixtures.MonkeyPatch`` of one of Nova's methods) and the
switch keeps Nova's code instead (it tells :class:`OpenRaceFixes` to leave
that fix out, so Nova's own method runs):

* ``nova-open-delete-after-move`` — ``ResourceTracker.update_usage`` only
  updates an instance the tracker tracks *as an instance*: one that arrived
  by a move is tracked through its migration until the next audit, so
  deleting it before then leaves its usage (and PCI devices) on the node.
  And ``ResourceTracker._drop_move_claim`` stops tracking the instance even
  after a same-node resize, where it stays and stays counted.
* ``nova-open-delete-pci-leak`` — ``ResourceTracker.update_usage`` frees
  nothing for an instance it does not track; an audit that ran between the
  delete's ``vm_state=deleted`` save and ``update_usage`` stopped tracking the
  instance but ``PciDevTracker.clean_usage`` spared its devices (the instance
  was still in its read), so the devices stay allocated to a deleted instance.
* ``nova-open-delete-mid-move`` — a delete during a cold migration or resize
  removes the instance's allocations only (``ComputeManager._complete_deletion``);
  the move then fails on the deleted instance.  Its clean-up
  (``ComputeManager._revert_allocation``, e.g. from ``resize_instance`` on
  the source) moves the source allocation the migration held back to the
  instance's uuid: placement keeps it for a deleted instance until the
  source's next audit (``_remove_deleted_instances_allocations``) deletes it.
  During a revert, ``finish_revert_resize`` fails before its
  ``_revert_allocation``: the migration (``error``) keeps the source
  allocation for good, and the source's tracker counts the instance until
  its next audit.  And a delete between the destination's claim and
  ``finish_resize`` removes only what the instance's host counts as the
  instance: the destination keeps the move's claim, and once
  ``resize_instance`` saved the instance there, the source keeps counting
  it, each until its next audit.  Six patches, below.
"""

from __future__ import annotations

from stateful.targets import nova_env  # first: puts Nova in threading mode

import contextlib  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
from typing import Any, Callable, Iterator  # noqa: E402

import fixtures  # noqa: E402
from oslo_concurrency import lockutils  # noqa: E402

from nova import exception  # noqa: E402
from nova import objects  # noqa: E402
from nova import utils  # noqa: E402
from nova.compute import manager  # noqa: E402
from nova.compute import resource_tracker  # noqa: E402
from nova.compute import task_states  # noqa: E402
from nova.compute import vm_states  # noqa: E402
from nova.scheduler.client import report  # noqa: E402

from stateful.faults import Fault  # noqa: E402
from stateful.locks import on_host  # noqa: E402

#: This module holds Nova's own code (pre-fix and fixed copies of its
#: methods): an error raised here is Nova's, a finding, not the harness's
#: (see :func:`stateful.session.raised_by_the_harness`).
SYSTEM_UNDER_TEST_CODE = True

RT = "nova.compute.resource_tracker.ResourceTracker"
_SEMAPHORE = resource_tracker.COMPUTE_RESOURCE_SEMAPHORE


def _unlocked(method):  # type: ignore[no-untyped-def]
    """The body of a ``@utils.synchronized`` method, without its lock."""
    return getattr(method, "__wrapped__")


class _EvacuationOutsideLock(fixtures.Fixture):
    def _setUp(self) -> None:
        body = _unlocked(resource_tracker.ResourceTracker.finish_evacuation)
        self.useFixture(fixtures.MonkeyPatch(f"{RT}.finish_evacuation", body))


@utils.synchronized(_SEMAPHORE, fair=True)
def _drop_claim_at_source(tracker, context, instance, migration):  # type: ignore[no-untyped-def]
    tracker._drop_move_claim(context, instance, migration.source_node, instance.old_flavor, prefix="old_")
    instance.drop_migration_context()


def _pre_fix_drop_move_claim_at_source(self, context, instance, migration):  # type: ignore[no-untyped-def]
    migration.status = "confirmed"
    migration.save()
    _drop_claim_at_source(self, context, instance, migration)


@utils.synchronized(_SEMAPHORE, fair=True)
def _drop_claim_at_dest(tracker, context, instance, migration):  # type: ignore[no-untyped-def]
    # Pre-fix, the destination dropped the claim without naming the flavor:
    # only a migration the tracker still tracks is subtracted.
    tracker._drop_move_claim(context, instance, migration.dest_node, None, prefix="new_")
    instance.revert_migration_context()
    instance.save(expected_task_state=[task_states.RESIZE_REVERTING])


def _pre_fix_drop_move_claim_at_dest(self, context, instance, migration):  # type: ignore[no-untyped-def]
    migration.status = "reverted"
    migration.save()
    _drop_claim_at_dest(self, context, instance, migration)


class _ConfirmStatusOutsideLock(fixtures.Fixture):
    def _setUp(self) -> None:
        self.useFixture(fixtures.MonkeyPatch(f"{RT}.drop_move_claim_at_source", _pre_fix_drop_move_claim_at_source))


class _RevertStatusOutsideLock(fixtures.Fixture):
    """Nova's ordering before the fix; the revert window (``nova-open-revert-window``) was open then too,
    and its fix wraps the method this fault replaces, so the fault keeps that window open."""

    def _setUp(self) -> None:
        self.useFixture(_KeepNovaOrdering("nova-open-revert-window"))
        self.useFixture(fixtures.MonkeyPatch(f"{RT}.drop_move_claim_at_dest", _pre_fix_drop_move_claim_at_dest))


# -- Nova's open races: fixed by default on the Nova target -------------------------------

#: The ``nova-open-*`` switches on now: :class:`OpenRaceFixes` leaves their fixes out.
_KEPT_OPEN: dict[str, int] = {}


class _KeepNovaOrdering(fixtures.Fixture):
    """A ``nova-open-*`` switch: while it is set up, the target runs Nova's own code for ``name``.

    Faults are set up before the target (``Session``), so the switch only has
    to be on when :class:`OpenRaceFixes` is set up.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def _setUp(self) -> None:
        _KEPT_OPEN[self.name] = _KEPT_OPEN.get(self.name, 0) + 1
        self.addCleanup(self._release)

    def _release(self) -> None:
        _KEPT_OPEN[self.name] -= 1
        if not _KEPT_OPEN[self.name]:
            del _KEPT_OPEN[self.name]


def _relocked(body: Callable[..., Any]) -> Callable[..., Any]:
    """``body`` under the ``compute_resources`` lock, as ``@utils.synchronized`` methods are."""
    return utils.synchronized(_SEMAPHORE, fair=True)(body)


def _tracking_arrived_instances(update_usage: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-after-move``) for ``ResourceTracker.update_usage``.

    Nova's ``update_usage`` changes usage only for an instance in
    ``tracked_instances``.  An instance that arrived by a move (the
    destination of a resize, cold migration or evacuation, or the source
    after a revert) is counted through its migration, in
    ``tracked_migrations``, until the next audit counts it as an instance;
    deleted before that, it keeps its usage and PCI devices on the node.  The
    fix: an instance on this node tracked only through its migration is
    tracked as an instance from here on (its usage is already counted), so
    the delete removes it.  The model's ``ResourceTracker._track_arrived_instance``.
    Not while the migration counts another flavor than the instance's own:
    a resize before ``finish_resize`` switches it (the delete would take
    the old flavor off the new one's count; the fix of
    ``nova-open-delete-mid-move``, :func:`_dropping_move_claims_of_deleted`,
    drops the claim instead).
    """

    @functools.wraps(update_usage)
    def fixed(self, context, instance, nodename):  # type: ignore[no-untyped-def]
        uuid = instance["uuid"]
        if (
            not self.disabled(nodename)
            and uuid not in self.tracked_instances
            and uuid in self.tracked_migrations
            and instance.node == nodename
            and _flavor_id(self._get_flavor(instance, "new_", self.tracked_migrations[uuid]))
            == _flavor_id(instance.flavor)
        ):
            del self.tracked_migrations[uuid]
            self.tracked_instances.add(uuid)
        return update_usage(self, context, instance, nodename)

    return fixed


#: On a ResourceTracker: instance uuid -> the flavor it is still counted with after a
#: same-node revert dropped the new flavor's claim (see :func:`_keeping_same_node_instance`).
_COUNTED_AS = "_stateful_counted_as"


def _counted_as(tracker: Any) -> dict[str, Any]:
    return tracker.__dict__.setdefault(_COUNTED_AS, {})


def _keeping_same_node_instance(drop: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-after-move``) for ``ResourceTracker._drop_move_claim``.

    Nova's ``_drop_move_claim`` always discards the instance from
    ``tracked_instances``.  After a same-node resize is confirmed or
    reverted the instance is still on the node and still counted (with the
    flavor it keeps), so an untracked instance's delete leaves that usage
    behind until the next audit.  The fix: when the dropped claim was a
    tracked same-node migration on this node, the instance stays tracked.
    The model's ``ResourceTracker._stays_after_drop``.

    A same-node revert (``drop_move_claim_at_dest``, ``prefix="new_"``)
    leaves the old flavor counted while, in Nova's code, ``instance.flavor``
    stays the new one until ``finish_revert_resize`` switches it back,
    without a word to the tracker; ``update_usage`` subtracts
    ``instance.flavor`` when the instance is deleted, so a delete in between
    would take the new flavor off what counts the old one (negative usage:
    found by ``fuzz --target nova``).  So the fix also notes the flavor still
    counted, for :func:`_removing_counted_flavor`.  (With the
    ``nova-open-revert-window`` fix the flavor switches back in the drop's
    own save; the note then names the flavor the instance has.)
    """

    @functools.wraps(drop)
    def fixed(self, context, instance, nodename, flavor=None, prefix="new_"):  # type: ignore[no-untyped-def]
        uuid = instance["uuid"]
        migration = self.tracked_migrations.get(uuid)
        drop(self, context, instance, nodename, flavor=flavor, prefix=prefix)
        _counted_as(self).pop(uuid, None)
        if migration is not None and migration.source_node == migration.dest_node == nodename:
            self.tracked_instances.add(uuid)
            if prefix == "new_" and instance.obj_attr_is_set("old_flavor") and instance.old_flavor is not None:
                _counted_as(self)[uuid] = instance.old_flavor

    return fixed


def _flavor_id(flavor: Any) -> Any:
    return None if flavor is None else flavor.flavorid


def _removing_counted_flavor(update_usage: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-after-move``) for ``ResourceTracker.update_usage``, with the above.

    A tracked instance deleted in the middle of a same-node revert (its
    flavor still the new one, its old flavor the one counted) has the
    counted flavor subtracted: ``update_usage`` runs on a copy of the
    instance with that flavor.  Once ``finish_revert_resize`` switched the
    flavor back, or an audit recounted the node (it counts ``instance.flavor``;
    :func:`_forgetting_counted_flavors`), the instance's own flavor is right.
    """

    @functools.wraps(update_usage)
    def fixed(self, context, instance, nodename):  # type: ignore[no-untyped-def]
        uuid = instance["uuid"]
        counted = _counted_as(self).get(uuid)
        if (
            counted is not None
            and uuid in self.tracked_instances
            and vm_states.allow_resource_removal(vm_state=instance.vm_state, task_state=instance.task_state)
        ):
            del _counted_as(self)[uuid]
            if _flavor_id(instance.flavor) != _flavor_id(counted):
                instance = instance.obj_clone()
                instance.flavor = counted
        return update_usage(self, context, instance, nodename)

    return fixed


def _forgetting_counted_flavors(recount: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-after-move``) for ``ResourceTracker._update_usage_from_instances``:
    the audit counts every instance with its own flavor again, so the notes of
    :func:`_keeping_same_node_instance` no longer apply."""

    @functools.wraps(recount)
    def fixed(self, context, instances, nodename):  # type: ignore[no-untyped-def]
        _counted_as(self).clear()
        return recount(self, context, instances, nodename)

    return fixed


def _freeing_untracked_devices(update_usage: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-pci-leak``) for ``ResourceTracker.update_usage``.

    Nova's ``update_usage`` frees nothing for an instance it does not track.
    A delete saves the instance ``vm_state=deleted`` and then calls it; an
    audit in between reads the instance, does not track it (being deleted)
    and ``PciDevTracker.clean_usage`` spares its devices (it was in the
    audit's instance list), so nothing ever frees them.  The fix: for an
    untracked instance whose resources may be removed (deleted, or shelved
    and offloaded) that still holds PCI claims or allocations here, free them
    and save (``ResourceTracker._update``, as the tracked path does).  The
    model's ``ResourceTracker._free_untracked_devices``.
    """

    @functools.wraps(update_usage)
    def fixed(self, context, instance, nodename):  # type: ignore[no-untyped-def]
        uuid = instance["uuid"]
        tracked = uuid in self.tracked_instances
        update_usage(self, context, instance, nodename)
        pci = self.pci_tracker
        if (
            tracked
            or pci is None
            or self.disabled(nodename)
            or not vm_states.allow_resource_removal(vm_state=instance.vm_state, task_state=instance.task_state)
            or (uuid not in pci.claims and uuid not in pci.allocations)
        ):
            return
        pci.free_instance(context, instance)
        self._update(context.elevated(), self.compute_nodes[nodename])

    return fixed


def _instance_deleted(context: Any, uuid: str) -> bool:
    """Whether the instance is deleted, or being deleted past the point of no return.

    ``ComputeManager._delete_instance`` saves ``vm_state=deleted`` before it
    deletes the instance's allocations and destroys it; an archived instance
    is not found at all.
    """
    try:
        instance = objects.Instance.get_by_uuid(context.elevated(read_deleted="yes"), uuid, expected_attrs=[])
    except exception.InstanceNotFound:
        return True
    return bool(instance.deleted) or instance.vm_state == vm_states.DELETED


def _not_reverting_to_deleted(revert: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-mid-move``) for ``ComputeManager._revert_allocation``.

    A failed cold migration or resize (``prep_resize`` on the destination,
    ``resize_instance`` on the source), a revert (``_finish_revert_resize``)
    and a live migration's abort or rollback call ``_revert_allocation``,
    which moves the source allocation
    the migration holds back to the instance's uuid
    (``SchedulerReportClient.move_allocations``) without asking whether the
    instance still exists.  A delete during the move
    (``ComputeManager._delete_instance`` → ``_complete_deletion``) deletes the
    instance's allocations only, and the move then fails on the deleted
    instance: its revert hands the migration's allocation to the deleted
    instance's uuid, where it stays until the source's next audit
    (``ResourceTracker._remove_deleted_instances_allocations``; never, if the
    instance row was archived first).  The fix: after the move, if the
    instance is deleted (or saved ``vm_state=deleted``, after which the
    delete removes its allocations: then the move came first and the delete
    removes them), delete the allocations the move just gave it.
    """

    @functools.wraps(revert)
    def fixed(self, context, instance, migration):  # type: ignore[no-untyped-def]
        reverted = revert(self, context, instance, migration)
        if reverted and _instance_deleted(context, instance.uuid):
            self.reportclient.delete_allocation_for_instance(context, instance.uuid, force=True)
        return reverted

    return fixed


def _deleting_move_allocations(delete: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-mid-move``) for ``ComputeManager._delete_instance``.

    Nova's delete removes the allocations of the instance's uuid only
    (``_complete_deletion`` → ``delete_allocation_for_instance``).  During a
    cold migration or resize the source's share is held by the migration's
    uuid, and the move is left to hand it back: when the move then fails on
    the deleted instance before its ``_revert_allocation`` (a revert:
    ``_finish_revert_resize`` saves the instance first, ``InstanceNotFound``),
    nothing ever frees it: the source's audit
    (``_remove_deleted_instances_allocations``) skips a migration in
    ``error`` as active and finds no instance for a ``reverted`` one's uuid.
    And a move that fails while the delete is under way (its error handler
    saves the instance ``error`` over the delete's ``deleted``, so
    :func:`_instance_deleted` cannot tell) hands it back to the instance's
    uuid after the delete removed that uuid's allocations.
    The fix: once the instance row is destroyed, the delete also removes
    the allocations of the instance's migrations (a finished one holds none;
    one whose revert already handed its allocation back holds none either)
    and, again, the instance's own.  A revert after that sees the row
    destroyed and cleans up itself (:func:`_not_reverting_to_deleted`).
    Not covered: a delete a compute restart completes
    (``_init_instance`` → ``_complete_partial_deletion``, which the harness
    never runs), and a delete whose ``destroy`` fails.
    """

    @functools.wraps(delete)
    def fixed(self, context, instance, bdms):  # type: ignore[no-untyped-def]
        delete(self, context, instance, bdms)
        migrations = objects.MigrationList.get_by_filters(
            context.elevated(read_deleted="yes"), {"instance_uuid": instance.uuid}
        )
        for migration in migrations:
            self.reportclient.delete_allocation_for_instance(
                context, migration.uuid, consumer_type="migration", force=True
            )
        if migrations:
            self.reportclient.delete_allocation_for_instance(context, instance.uuid, force=True)

    return fixed


@utils.synchronized(_SEMAPHORE, fair=True)
def _drop_claim_of_deleted(  # type: ignore[no-untyped-def]
    tracker, context, instance, nodename, flavor, prefix
):
    """What a node still counts for a deleted instance a move was taking from it, or bringing to it, removed.

    ``prefix`` is the node's side of the move, as in ``_drop_move_claim``:
    ``"old_"`` the source, ``"new_"`` the destination, ``flavor`` the one it
    counts there.  The destination counts the move's claim, a tracked
    migration.  Until the source's next audit its tracker counts the
    instance as an instance (with the old flavor); after one, through its
    outbound migration.
    """
    if flavor is None or tracker.disabled(nodename):
        return
    uuid = instance.uuid
    if uuid in tracker.tracked_migrations:
        tracker._drop_move_claim(context, instance, nodename, flavor, prefix=prefix)
    elif uuid in tracker.tracked_instances and prefix == "old_":
        leaving = instance.obj_clone()
        leaving.flavor = flavor
        tracker._update_usage_from_instance(context, leaving, nodename, is_removed=True)
        tracker._update(context.elevated(), tracker.compute_nodes[nodename])


#: Statuses of a cold migration or resize that its hosts may still count: from the destination's claim
#: to ``finished`` (a delete confirms a ``resized`` instance first, so a move still ``finished`` when the
#: delete ends had not saved the instance ``resized`` yet), and ``error`` (Nova leaves a failed move's
#: claims to the next audits).
_MOVE_UNFINISHED = ("pre-migrating", "migrating", "post-migrating", "finished", "error")


def _dropping_move_claims_of_deleted(delete: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-mid-move``) for ``ComputeManager._delete_instance``: the move's claims.

    From ``prep_resize``'s claim until a confirm or revert a cold migration
    or resize is counted on both of its hosts: the destination counts the
    new flavor (a tracked migration), the source the old one (the instance
    itself; after an audit, its outbound migration).  A delete before
    ``finish_resize`` saved the instance ``resized`` (after that the delete
    confirms the resize first) runs on the instance's host (the source
    until ``resize_instance`` saves it on the destination) and removes only
    what that host counts as the instance (``update_usage``).  The move then
    fails on the destroyed instance (``InstanceNotFound`` in
    ``resize_instance`` on the source or ``finish_resize`` on the
    destination; the migration ends in ``error``), and nothing drops the
    rest: the destination's claim, and once the instance was saved there
    the source's count, stay until each host's next audit (seed 26).  The
    fix: once the row is destroyed, the delete has each host of such a move
    drop what it still counts for the instance, under that host's lock.
    The migrations are read after the destroy: a claim that had not saved
    the migration's destination by then fails on its instance save and
    counts nothing, and one under way holds its host's lock until it has
    counted.  The other host's tracker is reached directly
    (``nova_env.compute_manager``) where a fix in production would send
    that compute a message; a stopped compute is skipped (its restart's
    audit recounts it).
    """

    @functools.wraps(delete)
    def fixed(self, context, instance, bdms):  # type: ignore[no-untyped-def]
        delete(self, context, instance, bdms)
        unfinished = {"instance_uuid": instance.uuid, "status": list(_MOVE_UNFINISHED)}
        migrations = objects.MigrationList.get_by_filters(context.elevated(read_deleted="yes"), unfinished)
        destroyed = _with_deleted_migration_context(context, instance) if migrations else None
        for migration in migrations:
            if migration.migration_type not in ("resize", "migration"):
                continue
            for host, node, flavor_id, prefix in _counting_sides(migration, instance):
                manager = self if host == self.host else nova_env.compute_manager(host)
                if manager is None:
                    continue
                flavor = objects.Flavor.get_by_id(context, flavor_id)
                with on_host(host):
                    _drop_claim_of_deleted(manager.rt, context, destroyed, node, flavor, prefix)

    return fixed


def _counting_sides(migration: Any, instance: Any) -> list[tuple[str, str, int, str]]:
    """The hosts that may count a cold migration or resize of the deleted ``instance`` beyond what its
    delete removed, each with its node, the id of the flavor it counts and its side (``_drop_move_claim``'s
    prefix): the destination (none if the move failed first) and the source.  A same-node resize counts
    both flavors on its node, the delete removed the instance's own: the other one is left."""
    source = (migration.source_compute, migration.source_node)
    dest = (migration.dest_compute, migration.dest_node)
    if source == dest:
        if instance.instance_type_id == migration.new_instance_type_id:  # finish_resize switched it
            return [(*dest, migration.old_instance_type_id, "old_")]
        return [(*dest, migration.new_instance_type_id, "new_")]
    sides = [(*dest, migration.new_instance_type_id, "new_")] if dest[0] is not None else []
    return [*sides, (*source, migration.old_instance_type_id, "old_")]


def _with_deleted_migration_context(context: Any, instance: Any) -> Any:
    """A copy of the destroyed ``instance`` with its migration context, read from its deleted row.

    ``_drop_move_claim`` frees the move's PCI devices through it; loaded
    lazily it would read the live rows only, and find none.
    """
    copy = instance.obj_clone()
    try:
        copy.migration_context = objects.MigrationContext.get_by_instance_uuid(
            context.elevated(read_deleted="yes"), instance.uuid
        )
    except exception.MigrationContextNotFound:
        copy.migration_context = None
    return copy


def _dropping_source_claim_of_deleted(finish: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-mid-move``) for ``ComputeManager.finish_revert_resize``.

    The source compute's half of a revert.  Its first write,
    ``_revert_instance_flavor_host_node``'s ``instance.save``, raises
    ``InstanceNotFound`` if a delete (cast to the destination, where the
    instance still is) destroyed the instance after ``revert_resize``
    started; everything after it is skipped: the source's tracker keeps
    counting the instance (as an instance, or after an audit through its
    outbound migration) with the old flavor, and its PCI devices allocated,
    until its next audit; and the migration's allocation is left in
    placement (:func:`_deleting_move_allocations`).  The fix: on
    ``InstanceNotFound``, remove what the source counts for it (under the
    lock, as ``drop_move_claim_at_source`` and ``update_usage`` do), with
    the old flavor read on entry (``_delete_stashed_flavor_info`` clears it
    on the way out).
    """

    @functools.wraps(finish)
    def fixed(self, context, instance, migration, request_spec=None):  # type: ignore[no-untyped-def]
        try:
            old_flavor = instance.old_flavor
        except exception.InstanceNotFound:
            old_flavor = None
        try:
            return finish(self, context, instance, migration, request_spec)
        except exception.InstanceNotFound:
            _drop_claim_of_deleted(self.rt, context, instance, migration.source_node, old_flavor, "old_")
            raise

    return fixed


def _conductor_not_reverting_to_deleted(revert: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-mid-move``) for the conductor's ``revert_allocation_for_migration``.

    ``nova.conductor.tasks.migrate.revert_allocation_for_migration`` (the
    rollback of ``MigrationTask`` and ``LiveMigrationTask`` when the
    conductor's part of a move fails after it swapped the source allocation
    to the migration) moves it back to the instance just as
    ``ComputeManager._revert_allocation`` does, deleted or not; the same fix.
    And when the migration holds nothing there is nothing to revert: Nova's
    ``SchedulerReportClient.move_allocations`` raises ``KeyError`` when both
    consumers are empty: the rollback follows the conductor's own failure
    (scheduling, say), and a delete that destroyed the instance meanwhile
    has removed the instance's allocations and, with
    :func:`_deleting_move_allocations`, the migration's too.
    """

    @functools.wraps(revert)
    def fixed(context, source_cn, instance, migration):  # type: ignore[no-untyped-def]
        client = report.report_client_singleton()
        if not client.get_allocs_for_consumer(context, migration.uuid).get("allocations"):
            return None
        revert(context, source_cn, instance, migration)
        if _instance_deleted(context, instance.uuid):
            client.delete_allocation_for_instance(context, instance.uuid, force=True)
        return None

    return fixed


def _not_moving_a_deleted_instance(replace: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-mid-move``) for ``conductor.tasks.migrate.replace_allocation_with_migration``.

    A delete that removed the instance's allocations before the conductor
    reads them leaves nothing on the source node: Nova logs "Unable to find
    existing allocations" and goes on, so the scheduler claims the
    destination for the deleted instance, which holds that allocation until
    the destination's next audit.  Fixed: with nothing to move and the
    instance deleted, the move ends (``InstanceNotFound``).
    """

    @functools.wraps(replace)
    def fixed(context, instance, migration):  # type: ignore[no-untyped-def]
        source_node, held = replace(context, instance, migration)
        if held is None and _instance_deleted(context, instance.uuid):
            raise exception.InstanceNotFound(instance_id=instance.uuid)
        return source_node, held

    return fixed


def _failing_move_of_vanished_source(move_allocations: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-move-racing-delete``) for ``SchedulerReportClient.move_allocations``.

    The conductor starts a resize or cold migration by moving the instance's
    allocation to the migration (``replace_allocation_with_migration``): it
    reads the instance's allocation, then ``move_allocations`` reads both
    consumers again and builds the new allocations from the source's
    ``project_id``.  A delete in between removes the instance's allocation;
    placement then answers ``{"allocations": {}}`` with no ``project_id``, and
    Nova raises ``KeyError`` (an unhandled error logged by the conductor in
    production, where the resize is a cast).  Fixed as "the move did not
    happen": ``False``, which the conductor turns into ``NoValidHost`` and
    puts the instance's state back.
    """

    @functools.wraps(move_allocations)
    def fixed(self, context, source_consumer_uuid, target_consumer_uuid):  # type: ignore[no-untyped-def]
        try:
            return move_allocations(self, context, source_consumer_uuid, target_consumer_uuid)
        except KeyError:
            if self.get_allocs_for_consumer(context, source_consumer_uuid).get("allocations"):
                raise
            return False

    return fixed


def _skipping_unscheduled_migrations(count: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-unscheduled-error-migration``) for ``ResourceTracker._update_usage_from_migration``.

    The audit lists a host's migrations in progress *or in error*
    (``MigrationList.get_in_progress_and_error``) and counts each one whose
    instance is "resizing", a test that includes the rebuild task states.
    A cold migration the scheduler refused ends in ``error`` with a source
    and no destination.  If the instance is later evacuated back onto that
    source, an audit of it between the evacuation's ``rebuilding`` save and
    its rebuild claim counts the old migration as outbound ("usage for a
    possible revert" of the instance's flavor), and the claim then counts
    the instance again.  Fixed: a migration that never had a destination
    holds nothing anywhere; the audit skips it.
    """

    @functools.wraps(count)
    def fixed(self, context, instance, migration, nodename):  # type: ignore[no-untyped-def]
        if migration.dest_compute is None:
            return None
        return count(self, context, instance, migration, nodename)

    return fixed


#: Statuses of an evacuation that ``finish_evacuation`` has not ended yet.
_EVACUATION_UNDER_WAY = ("accepted", "pre-migrating")


def _counting_an_unfinished_evacuation(in_resize_state: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-evacuation-active-early``) for ``resource_tracker._instance_in_resize_state``.

    ``ComputeManager._do_rebuild_instance`` saves the rebuilt instance
    ``vm_state=active, task_state=None`` before ``rebuild_instance`` calls
    ``ResourceTracker.finish_evacuation``, which (under the lock) moves the
    instance to the destination.  An audit of the destination in between
    reads the instance still on its source, and skips the evacuation's
    migration in ``_update_usage_from_migrations`` because the instance is
    "neither resizing nor live-migrating": the destination counts it nowhere
    until its next audit.  Fixed (the audit's side of the same window the
    model closes by saving the instance active in ``finish_evacuation``): an
    instance whose migration context names an evacuation still under way is
    mid-move.
    """

    @functools.wraps(in_resize_state)
    def fixed(instance):  # type: ignore[no-untyped-def]
        if in_resize_state(instance):
            return True
        context = instance.migration_context
        if context is None:
            return False
        migration = objects.Migration.get_by_id(instance._context, context.migration_id)
        return migration.migration_type == "evacuation" and migration.status in _EVACUATION_UNDER_WAY

    return fixed


def _evacuation_residue(context: Any, consumer_uuid: str) -> set[str]:
    """The providers where an instance keeps an evacuation's residue (none for a migration's uuid).

    An evacuation leaves the instance's allocation on its down source host
    until that host restarts: ``ComputeManager._destroy_evacuated_instances``
    then removes it and marks the evacuation ``completed``.  Until then the
    evacuation is ``done`` and its source node holds the residue.
    """
    evacuations = objects.MigrationList.get_by_filters(
        context, {"instance_uuid": consumer_uuid, "migration_type": "evacuation", "status": "done"}
    )
    providers = set()
    for evacuation in evacuations:
        try:
            node = objects.ComputeNode.get_by_host_and_nodename(
                context, evacuation.source_compute, evacuation.source_node
            )
        except exception.ComputeHostNotFound:
            continue
        providers.add(node.uuid)
    return providers


#: How often a split move is tried again when placement reports that another
#: writer changed a provider meanwhile (Nova's own moves are retried the same
#: way, by ``report.retries``).
_MOVE_ATTEMPTS = 4


def _keeping_evacuation_residue(move_allocations: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-move-carries-evacuation-residue``) for ``SchedulerReportClient.move_allocations``.

    A cold migration, resize or live migration of an instance evacuated from
    a host that is still down starts with
    ``conductor.tasks.migrate.replace_allocation_with_migration``, meant to
    hand the source node's allocation to the migration; ``move_allocations``
    moves *all* of the instance's allocations, the evacuation's residue on
    the down host with them.  When that host restarts,
    ``_destroy_evacuated_instances`` removes the residue from the instance,
    which no longer holds it; a revert afterwards
    (``ComputeManager._revert_allocation``, again through
    ``move_allocations``) gives it back to the instance, for good: no audit
    removes allocations of an instance that lives on another host.  Fixed:
    a move between an instance and its migration leaves the residue with the
    instance, in one ``POST /allocations`` as Nova's move does.
    """

    @functools.wraps(move_allocations)
    def fixed(self, context, source_consumer_uuid, target_consumer_uuid):  # type: ignore[no-untyped-def]
        # Read from the database only (no delay site) unless there is a residue,
        # so that the fix adds no checkpoint to the moves of other instances.
        source_residue = _evacuation_residue(context, source_consumer_uuid)
        target_residue = _evacuation_residue(context, target_consumer_uuid)
        if not (source_residue or target_residue):
            return move_allocations(self, context, source_consumer_uuid, target_consumer_uuid)
        for _ in range(_MOVE_ATTEMPTS):
            source = self.get_allocs_for_consumer(context, source_consumer_uuid)
            target = self.get_allocs_for_consumer(context, target_consumer_uuid)
            kept, held = _held_on(source, source_residue), _held_on(target, target_residue)
            if not source.get("allocations") or not (kept or held):
                return move_allocations(self, context, source_consumer_uuid, target_consumer_uuid)
            moved = {rp: a for rp, a in source["allocations"].items() if rp not in kept}
            owner = {"project_id": source["project_id"], "user_id": source["user_id"]}
            response = self.post(
                "/allocations",
                {
                    source_consumer_uuid: {
                        "allocations": kept, **owner, "consumer_generation": source["consumer_generation"]
                    },
                    target_consumer_uuid: {
                        "allocations": {**moved, **held}, **owner,
                        "consumer_generation": target.get("consumer_generation"),
                    },
                },
                version=report.CONSUMER_GENERATION_VERSION,
                global_request_id=context.global_id,
            )
            if response.status_code == 204:
                return True
            if "consumer generation conflict" in response.text:
                raise exception.AllocationMoveFailed(
                    source_consumer=source_consumer_uuid, target_consumer=target_consumer_uuid, error=response.text
                )
            if response.status_code != 409:
                return False
        return False

    return fixed


def _held_on(allocations: dict[str, Any], providers: set[str]) -> dict[str, Any]:
    return {rp: a for rp, a in allocations.get("allocations", {}).items() if rp in providers}


@contextlib.contextmanager
def _saving_through(instance: Any, save: Callable[..., Any]) -> Iterator[None]:
    """``instance.save`` is ``save`` (which wraps the object's own) for this one object, inside only."""
    instance.save = save
    try:
        yield
    finally:
        del instance.save


def _evacuating_only_an_idle_instance(evacuate: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-double-evacuation``) for ``compute.api.API.evacuate``: one evacuation at a time.

    ``check_instance_state`` tests ``task_state is None`` on the instance as
    the request loaded it, and ``evacuate`` then saves
    ``task_state=rebuilding`` with ``expected_task_state=None`` — no check at
    all, where Nova's other actions pass ``[None]``.  Two requests that both
    loaded the instance idle both start a rebuild.  And the rebuild saves
    the instance ``active`` with no task before ``finish_evacuation`` moves
    it off its down host (the window of ``nova-open-evacuation-active-early``):
    a request in between finds it idle on a down host and starts a second
    rebuild, whose spawn meets the first one's guest (``InstanceExists``).
    Fixed: that save expects ``[None]``, so the second of two requests
    saving at once fails with ``UnexpectedTaskStateError``, as a second
    resize does; and a request that finds another evacuation of the instance
    under way, or the instance moved, is refused (``InstanceInvalidState``, a
    409).  That is checked before the save and again after it, putting the
    task back: a ``task_state`` compare-and-swap alone cannot see an
    evacuation between its active save and ``finish_evacuation``, and once
    this request's save has succeeded no other evacuation can pass its own.
    """

    @functools.wraps(evacuate)
    def fixed(self, context, instance, *args, **kwargs):  # type: ignore[no-untyped-def]
        loaded_on = instance.host
        _refuse_if_evacuated_meanwhile(context, instance, loaded_on)
        save = instance.save

        def compare_and_swap(expected_vm_state=None, expected_task_state=None, admin_state_reset=False):  # type: ignore[no-untyped-def]
            if not (expected_task_state is None and instance.task_state == task_states.REBUILDING):
                return save(expected_vm_state=expected_vm_state, expected_task_state=expected_task_state,
                            admin_state_reset=admin_state_reset)
            save(expected_vm_state=expected_vm_state, expected_task_state=[None], admin_state_reset=admin_state_reset)
            try:
                _refuse_if_evacuated_meanwhile(context, instance, loaded_on)
            except exception.InstanceInvalidState:
                instance.task_state = None
                save(expected_task_state=[task_states.REBUILDING])
                raise
            return None

        with _saving_through(instance, compare_and_swap):
            return evacuate(self, context, instance, *args, **kwargs)

    return fixed


def _refuse_if_evacuated_meanwhile(context: Any, instance: Any, loaded_on: str) -> None:
    """``InstanceInvalidState`` if an evacuation of ``instance`` is under way, or it left ``loaded_on``.

    Reads the database only (no delay site), so the check adds no checkpoint.
    """
    under_way = objects.MigrationList.get_by_filters(
        context,
        {"instance_uuid": instance.uuid, "migration_type": "evacuation", "status": list(_EVACUATION_UNDER_WAY)},
    )
    state = "evacuation under way" if under_way else None
    if state is None and objects.Instance.get_by_uuid(context, instance.uuid).host != loaded_on:
        state = "evacuated meanwhile"
    if state is not None:
        raise exception.InstanceInvalidState(
            attr="task_state", instance_uuid=instance.uuid, state=state, method="evacuate"
        )


def _sparing_another_evacuations_allocation(delete: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-double-evacuation``) for ``ResourceTracker.delete_allocation_for_evacuated_instance``.

    A second evacuation of an instance, accepted while the first one has
    saved the rebuilt instance active but not yet moved ``instance.host``,
    fails its claim on the same destination; ``rebuild_instance`` then deletes
    the instance's allocation on that node — the first evacuation's, since
    both use the instance's uuid as consumer.  Fixed: on the destination,
    delete nothing while another evacuation of the instance to this host is
    under way or done (the failing one is already marked ``failed``).
    """

    @functools.wraps(delete)
    def fixed(self, context, instance, node, node_type="source"):  # type: ignore[no-untyped-def]
        if node_type == "destination":
            evacuations = objects.MigrationList.get_by_filters(
                context,
                {"instance_uuid": instance.uuid, "migration_type": "evacuation",
                 "status": ["accepted", "pre-migrating", "done"]},
            )
            if any(evacuation.dest_compute == self.host for evacuation in evacuations):
                return None
        return delete(self, context, instance, node, node_type)

    return fixed


@contextlib.contextmanager
def _compute_resources_locks(*hosts: str) -> Iterator[None]:
    """Several hosts' ``compute_resources`` locks at once, in name order so that no two callers deadlock."""
    with contextlib.ExitStack() as stack:
        for host in sorted(set(hosts)):
            with on_host(host):  # the lock's identity is (host, name), as for each host's own tracker
                stack.enter_context(lockutils.lock(_SEMAPHORE, fair=True, do_log=False))
        yield


def _reverting_with_the_move_back(drop_at_dest: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-revert-window``) for ``ResourceTracker.drop_move_claim_at_dest``.

    ``revert_resize`` on the destination marks the migration ``reverted``,
    drops the claim and reverts the migration context under the
    destination's lock, but the instance stays on the destination (host,
    node, new flavor) until ``finish_revert_resize`` on the source moves it
    back, later and outside any lock.  An audit of the source in between
    forgets the instance (not its host; the migration terminal), and an
    audit of the destination counts it there again (its host), for good:
    no later drop removes it.  Fixed as on the model: the same critical
    section, under the source's lock as well as the destination's, gives
    the instance back to the source (old flavor, source host, node and
    compute node) in the save that ends it.  A real fix would hand the
    instance back through the source; holding both locks states the
    atomicity such a fix must give.  ``finish_revert_resize`` later sets
    the same fields again.
    """

    @functools.wraps(drop_at_dest)
    def fixed(self, context, instance, migration):  # type: ignore[no-untyped-def]
        save = instance.save

        def save_moved_back(expected_vm_state=None, expected_task_state=None, admin_state_reset=False):  # type: ignore[no-untyped-def]
            if expected_task_state == [task_states.RESIZE_REVERTING]:
                # Read from the database only (no delay site), so the fix adds no checkpoint but the locks.
                node = objects.ComputeNode.get_by_host_and_nodename(
                    context, migration.source_compute, migration.source_node
                )
                manager.ComputeManager._set_instance_info(instance, instance.old_flavor)
                instance.host, instance.node, instance.compute_id = node.host, node.hypervisor_hostname, node.id
            return save(expected_vm_state=expected_vm_state, expected_task_state=expected_task_state,
                        admin_state_reset=admin_state_reset)

        with _saving_through(instance, save_moved_back):
            with _compute_resources_locks(self.host, migration.source_compute):
                return drop_at_dest(self, context, instance, migration)

    return fixed


def _telling_the_destination_after_rollback(rollback: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-live-migration-rollback-window``) for ``ComputeManager._rollback_live_migration``.

    An audit of a live migration's destination counts the incoming
    migration while the instance is live-migrating.  ``_rollback_live_migration``
    asks the destination to drop its claim only after a NUMA-aware live
    migration, and before it clears the instance's task state: on every
    other live migration the destination is never told, and after a NUMA
    one an audit between the drop and the task state's save counts the
    migration again.  Either way the destination counts an instance that
    stayed on the source, until its next audit.  Fixed as on the model: once
    the rollback has cleared the task state and failed the migration, the
    source asks the destination to drop what it still tracks for the
    instance (see :func:`_dropping_only_what_is_tracked`).
    """

    @functools.wraps(rollback)
    def fixed(self, context, instance, dest, *args, **kwargs):  # type: ignore[no-untyped-def]
        rollback(self, context, instance, dest, *args, **kwargs)
        self.compute_rpcapi.drop_move_claim_at_destination(context, instance, dest)

    return fixed


def _dropping_only_what_is_tracked(drop_at_destination: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-live-migration-rollback-window``) for ``ComputeManager.drop_move_claim_at_destination``.

    Nova's names the instance's flavor, and ``_drop_move_claim`` subtracts a
    named flavor whether or not the tracker tracks the migration; the call
    the fix above adds, for a migration the destination may never have
    counted, must subtract only what is tracked: no flavor named, so the
    tracker takes it from the tracked migration, or drops nothing.
    """

    @functools.wraps(drop_at_destination)
    def fixed(self, context, instance):  # type: ignore[no-untyped-def]
        self.rt.drop_move_claim(context, instance, self._get_nodename(instance))

    return fixed


#: ``nova-open-*`` switch -> (method, the fix that wraps it).  A bare name is a
#: ``ResourceTracker`` method (a locked one's fix wraps its unlocked body and
#: runs under the lock, like the method itself); a dotted name is another of
#: Nova's methods or functions, by its full path.
OPEN_RACE_FIXES: dict[str, tuple[tuple[str, Callable[[Callable[..., Any]], Callable[..., Any]]], ...]] = {
    "nova-open-delete-after-move": (
        ("update_usage", _tracking_arrived_instances),
        ("update_usage", _removing_counted_flavor),
        ("_drop_move_claim", _keeping_same_node_instance),
        ("_update_usage_from_instances", _forgetting_counted_flavors),
    ),
    "nova-open-delete-pci-leak": (("update_usage", _freeing_untracked_devices),),
    "nova-open-delete-mid-move": (
        ("nova.compute.manager.ComputeManager._delete_instance", _deleting_move_allocations),
        ("nova.compute.manager.ComputeManager._delete_instance", _dropping_move_claims_of_deleted),
        ("nova.compute.manager.ComputeManager.finish_revert_resize", _dropping_source_claim_of_deleted),
        ("nova.compute.manager.ComputeManager._revert_allocation", _not_reverting_to_deleted),
        ("nova.conductor.tasks.migrate.revert_allocation_for_migration", _conductor_not_reverting_to_deleted),
        ("nova.conductor.tasks.migrate.replace_allocation_with_migration", _not_moving_a_deleted_instance),
    ),
    "nova-open-move-racing-delete": (
        ("nova.scheduler.client.report.SchedulerReportClient.move_allocations", _failing_move_of_vanished_source),
    ),
    "nova-open-double-evacuation": (
        ("nova.compute.api.API.evacuate", _evacuating_only_an_idle_instance),
        ("delete_allocation_for_evacuated_instance", _sparing_another_evacuations_allocation),
    ),
    "nova-open-unscheduled-error-migration": (("_update_usage_from_migration", _skipping_unscheduled_migrations),),
    "nova-open-evacuation-active-early": (
        ("nova.compute.resource_tracker._instance_in_resize_state", _counting_an_unfinished_evacuation),
    ),
    "nova-open-move-carries-evacuation-residue": (
        ("nova.scheduler.client.report.SchedulerReportClient.move_allocations", _keeping_evacuation_residue),
    ),
    "nova-open-revert-window": (("drop_move_claim_at_dest", _reverting_with_the_move_back),),
    "nova-open-live-migration-rollback-window": (
        ("nova.compute.manager.ComputeManager._rollback_live_migration", _telling_the_destination_after_rollback),
        ("nova.compute.manager.ComputeManager.drop_move_claim_at_destination", _dropping_only_what_is_tracked),
    ),
}


def _patch_path(method: str) -> str:
    return method if "." in method else f"{RT}.{method}"


def _nova_method(method: str) -> Any:
    """The method ``method`` names (see :data:`OPEN_RACE_FIXES`), as Nova has it now."""
    if "." not in method:
        return getattr(resource_tracker.ResourceTracker, method)
    parts = method.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise ImportError(method)


#: The fixed methods that Nova runs under the ``compute_resources`` lock.
_LOCKED = frozenset({"update_usage"})
#: Locked methods whose fix takes the locks itself (more than the method's own host's).
_LOCKED_BY_THE_FIX = frozenset({"drop_move_claim_at_dest"})


class OpenRaceFixes(fixtures.Fixture):
    """The Nova target's default: Nova 34 with its open races fixed, except those switched on.

    The fixes of one ``ResourceTracker`` method wrap its body in turn (the
    unlocked body of a ``compute_resources``-locked method, locked again
    around the fixes), and one ``fixtures.MonkeyPatch`` per method puts the
    result in place; cleanup restores Nova's method.  Set up by the target,
    after the fault switches.  (The bodies are composed here, not read back
    from the class: a method ``MonkeyPatch`` put on a class hides what it
    wraps, its ``__wrapped__`` naming the method it replaced.)
    """

    def _setUp(self) -> None:
        bodies: dict[str, Callable[..., Any]] = {}
        for name, fixes in OPEN_RACE_FIXES.items():
            if name in _KEPT_OPEN:
                continue
            for method, fix in fixes:
                if method not in bodies:
                    current = _nova_method(method)
                    bodies[method] = _unlocked(current) if method in _LOCKED | _LOCKED_BY_THE_FIX else current
                bodies[method] = fix(bodies[method])
        for method, body in bodies.items():
            fixed = _relocked(body) if method in _LOCKED else body
            self.useFixture(fixtures.MonkeyPatch(_patch_path(method), fixed))


def _nova_open(name: str, where: str, description: str, breaks: tuple[str, ...]) -> Fault:
    """A race in Nova 34's code that the Nova target fixes by default; the switch keeps Nova's code."""
    return Fault(
        name=name,
        target="nova",
        bug="found by this suite in nova 34.0.0: " + where,
        description=description,
        fixture=functools.partial(_KeepNovaOrdering, name),
        breaks=breaks,
    )


FAULTS: list[Fault] = [
    Fault(
        name="lp1896463",
        target="nova",
        bug="https://bugs.launchpad.net/nova/+bug/1896463",
        description="evacuation finishes (instance.host, migration context, status done) outside the RT lock",
        fixture=_EvacuationOutsideLock,
        breaks=("usage-matches-oracle",),
    ),
    Fault(
        name="lp1879878-confirm",
        target="nova",
        bug="https://bugs.launchpad.net/nova/+bug/1879878",
        description="confirm marks the migration confirmed before, and outside the lock of, dropping the source claim",
        fixture=_ConfirmStatusOutsideLock,
        breaks=("no-negative-usage", "usage-not-below-reserved", "usage-matches-oracle"),
    ),
    Fault(
        name="lp1879878-revert",
        target="nova",
        bug="https://bugs.launchpad.net/nova/+bug/1879878",
        description="revert marks the migration reverted before, and outside the lock of, dropping the destination claim",
        fixture=_RevertStatusOutsideLock,
        breaks=("usage-matches-oracle",),
    ),
    _nova_open(
        "nova-open-delete-after-move",
        "update_usage() and _drop_move_claim() (nova/compute/resource_tracker.py)",
        "deleting an instance that arrived by a move, or was resized on its host, before an audit "
        "leaves it counted",
        breaks=("usage-matches-oracle", "terminal-holds-nothing"),
    ),
    _nova_open(
        "nova-open-delete-pci-leak",
        "update_usage frees nothing for an instance an audit already stopped tracking, and "
        "clean_usage spares it (nova/compute/resource_tracker.py, nova/pci/manager.py)",
        "an audit between a delete's 'deleted' save and its update_usage leaves the PCI devices allocated",
        breaks=("terminal-holds-nothing", "usage-matches-oracle"),
    ),
    _nova_open(
        "nova-open-delete-mid-move",
        "ComputeManager._revert_allocation moves a failed move's source allocation back to an instance "
        "that was deleted meanwhile, and ComputeManager._delete_instance removes only what the instance's "
        "host counts as the instance (nova/compute/manager.py)",
        "a delete during a cold migration or resize leaves the source allocation to the deleted instance, "
        "and the move's claims counted on its hosts",
        breaks=("terminal-holds-nothing", "usage-matches-oracle"),
    ),
    _nova_open(
        "nova-open-move-racing-delete",
        "SchedulerReportClient.move_allocations reads project_id from the source consumer's allocations "
        "without checking that any are left (nova/scheduler/client/report.py)",
        "a resize or migrate whose conductor moves the instance's allocation just after a delete removed it "
        "fails with KeyError",
        breaks=("no-unexpected-error",),
    ),
    _nova_open(
        "nova-open-double-evacuation",
        "rebuild_instance's failed claim deletes the instance's allocation on the destination, which another "
        "evacuation of it holds (nova/compute/manager.py, resource_tracker.py)",
        "two evacuations of one instance at once: the failed one deletes the other's allocation on the destination",
        breaks=("placement-matches-oracle",),
    ),
    _nova_open(
        "nova-open-unscheduled-error-migration",
        "_update_usage_from_migrations counts a migration in status error that never had a destination, "
        "whenever its instance is in a resize or rebuild task state (nova/compute/resource_tracker.py)",
        "an audit racing an evacuation back onto the source of a refused cold migration counts the instance "
        "there twice",
        breaks=("usage-matches-oracle",),
    ),
    _nova_open(
        "nova-open-evacuation-active-early",
        "_do_rebuild_instance saves the evacuated instance active before finish_evacuation moves it, and "
        "_update_usage_from_migrations skips the migration of an instance neither resizing nor live-migrating "
        "(nova/compute/manager.py, resource_tracker.py)",
        "an audit of the destination between the rebuilt instance's active save and finish_evacuation counts "
        "it on no host",
        breaks=("usage-matches-oracle",),
    ),
    _nova_open(
        "nova-open-move-carries-evacuation-residue",
        "replace_allocation_with_migration moves all of the instance's allocations to the migration, the "
        "evacuation's residue on its down source host with them (nova/conductor/tasks/migrate.py, "
        "SchedulerReportClient.move_allocations)",
        "migrating an instance evacuated from a host still down, then reverting after that host restarts, "
        "leaves the instance an allocation on the old host for good",
        breaks=("placement-matches-oracle",),
    ),
    _nova_open(
        "nova-open-revert-window",
        "drop_move_claim_at_dest marks the migration reverted while the instance stays on the destination "
        "until finish_revert_resize moves it back, outside any lock (nova/compute/resource_tracker.py, manager.py)",
        "audits between the revert's claim drop and finish_revert_resize: the source forgets the instance, the "
        "destination keeps counting it",
        breaks=("usage-matches-oracle",),
    ),
    _nova_open(
        "nova-open-live-migration-rollback-window",
        "_rollback_live_migration tells the destination nothing unless the live migration was NUMA-aware, and "
        "then before it clears the task state (nova/compute/manager.py)",
        "an audit of the destination during a live migration that is rolled back leaves it counting the instance",
        breaks=("usage-matches-oracle",),
    ),
]

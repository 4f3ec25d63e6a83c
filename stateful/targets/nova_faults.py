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
"""

from __future__ import annotations

from stateful.targets import nova_env  # noqa: F401  (threading mode first)

import functools  # noqa: E402
from typing import Any, Callable  # noqa: E402

import fixtures  # noqa: E402

from nova import utils  # noqa: E402
from nova.compute import resource_tracker  # noqa: E402
from nova.compute import task_states  # noqa: E402
from nova.compute import vm_states  # noqa: E402

from stateful.faults import Fault  # noqa: E402

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
    def _setUp(self) -> None:
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
    """

    @functools.wraps(update_usage)
    def fixed(self, context, instance, nodename):  # type: ignore[no-untyped-def]
        uuid = instance["uuid"]
        if (
            not self.disabled(nodename)
            and uuid not in self.tracked_instances
            and uuid in self.tracked_migrations
            and instance.node == nodename
        ):
            del self.tracked_migrations[uuid]
            self.tracked_instances.add(uuid)
        return update_usage(self, context, instance, nodename)

    return fixed


def _keeping_same_node_instance(drop: Callable[..., Any]) -> Callable[..., Any]:
    """Fix (``nova-open-delete-after-move``) for ``ResourceTracker._drop_move_claim``.

    Nova's ``_drop_move_claim`` always discards the instance from
    ``tracked_instances``.  After a same-node resize is confirmed or
    reverted the instance is still on the node and still counted (with the
    flavor it keeps), so an untracked instance's delete leaves that usage
    behind until the next audit.  The fix: when the dropped claim was a
    tracked same-node migration on this node, the instance stays tracked.
    The model's ``ResourceTracker._stays_after_drop``.
    """

    @functools.wraps(drop)
    def fixed(self, context, instance, nodename, flavor=None, prefix="new_"):  # type: ignore[no-untyped-def]
        migration = self.tracked_migrations.get(instance["uuid"])
        drop(self, context, instance, nodename, flavor=flavor, prefix=prefix)
        if migration is not None and migration.source_node == migration.dest_node == nodename:
            self.tracked_instances.add(instance["uuid"])

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


#: ``nova-open-*`` switch -> (ResourceTracker method, the fix that wraps its unlocked body).
#: A locked method's fix runs under the lock, like the method itself.
OPEN_RACE_FIXES: dict[str, tuple[tuple[str, Callable[[Callable[..., Any]], Callable[..., Any]]], ...]] = {
    "nova-open-delete-after-move": (
        ("update_usage", _tracking_arrived_instances),
        ("_drop_move_claim", _keeping_same_node_instance),
    ),
    "nova-open-delete-pci-leak": (("update_usage", _freeing_untracked_devices),),
}


#: The fixed methods that Nova runs under the ``compute_resources`` lock.
_LOCKED = frozenset({"update_usage"})


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
                    current = getattr(resource_tracker.ResourceTracker, method)
                    bodies[method] = _unlocked(current) if method in _LOCKED else current
                bodies[method] = fix(bodies[method])
        for method, body in bodies.items():
            fixed = _relocked(body) if method in _LOCKED else body
            self.useFixture(fixtures.MonkeyPatch(f"{RT}.{method}", fixed))


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
]

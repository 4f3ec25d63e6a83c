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
"""

from __future__ import annotations

from stateful.targets import nova_env  # noqa: F401  (threading mode first)

import fixtures  # noqa: E402

from nova import utils  # noqa: E402
from nova.compute import resource_tracker  # noqa: E402
from nova.compute import task_states  # noqa: E402

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
]

"""Each fault switch, in the interleaving that exposed it in Nova, breaks the accounting;
the same scenario with the switch off is correct.

Schedules are FixedDelays keyed by (task index, site, nth time the task reached
it, from 0).  All other delays are zero, so task 0 runs first until a delayed
site, the other tasks then run in index order, and so on.
"""

from __future__ import annotations

import pytest

from models import oracle
from models.errors import CPUUnpinningInvalid
from models.faults import FAULTS
from tests.models.helpers import (
    FAULT,
    LARGE,
    MEDIUM,
    assert_broken_if,
    assert_revert_swaps_usage_if,
    assert_consistent,
    audit,
    cloud,
    delete_during_audit,
    errors,
    pci_owners,
    reserved_plus,
    run_concurrently,
    run_switched,
    switched,
    used,
)

#: Usage after the medium flavor was subtracted from the reserved amounts once too often.
BELOW_RESERVED = (1 - 2, 512 - 1024, 1 - 2)


def test_catalogue_is_the_contracts():
    assert sorted(FAULT) == sorted(
        [
            "lp1896463",
            "lp1879878-confirm",
            "lp1879878-revert",
            "lp1879878-stash",
            "lp1818914",
            "lp1834349",
            "lp1095403",
            "lp1600304",
            "lp1707071",
            "lp1729371",
            "lp1849165",
            "nova-open-delete-after-move",
            "nova-open-evacuation-active-early",
            "nova-open-revert-window",
            "nova-open-resize-finish-window",
            "nova-open-delete-pci-leak",
            "nova-open-live-migration-unlocked",
            "nova-open-live-migration-rollback-window",
            "nova-open-live-migration-rollback-pci",
            "nova-open-live-migration-source-audit",
        ]
    )
    for fault in FAULTS:
        assert fault.target == "model"
        if fault.name.startswith("lp"):
            number = fault.name[2:].split("-")[0]
            assert fault.bug == f"https://bugs.launchpad.net/nova/+bug/{number}"


@pytest.mark.parametrize("on", [True, False])
def test_lp1896463_evacuation_finished_outside_the_lock_loses_pci(on):
    """The destination audit reads instances, the evacuation finishes, the audit reads migrations.

    Before the fix the rebuild also saved the instance active before finishing
    the evacuation (Nova still does: nova-open-evacuation-active-early), so
    the audit skips the incoming evacuation and the counters lag until the
    next audit.  The PCI claim is what the fix protects, and its loss
    outlives that next audit.
    """
    c = cloud()
    uuid = c.create("pci", "host1")
    c.set_host_down("host1", True)
    with switched("lp1896463", on):
        result = run_concurrently(
            [("evacuate", lambda: c.evacuate(uuid, "host2")), audit(c, "host2")],
            {(0, "compute.rebuild", 0): 1, (1, "db.migration.get_in_progress_and_error", 0): 10},
        )
        assert errors(result) == [None, None]
        assert c.db.instances[uuid].host == "host2"
        # counted nowhere until the next audit with the fault; counted at once without
        assert used(c, "host2") == (reserved_plus() if on else reserved_plus((1, 512, 1)))
        c.update_available_resource("host2")
    assert used(c, "host2") == reserved_plus((1, 512, 1))
    assert pci_owners(c, "host2") == ({} if on else {"0000:81:00.0": [uuid]})
    assert_broken_if(on, c, "usage-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_lp1879878_confirm_status_saved_before_the_drop(on):
    """An audit of the source between 'confirmed' and the claim drop."""
    c = cloud()
    uuid = c.create("medium", "host1")
    c.resize(uuid, "large", "host2")
    result = run_switched(
        "lp1879878-confirm",
        on,
        [("confirm", lambda: c.confirm_resize(uuid)), audit(c, "host1")],
        {(0, "lock:compute_resources:acquire", 0): 10},
    )
    assert errors(result) == [None, None]
    # with the fault: counted to the reserved amounts by the audit, then the old flavor subtracted again
    assert used(c, "host1") == (BELOW_RESERVED if on else reserved_plus())
    assert_broken_if(on, c, "no-negative-usage", "usage-not-below-reserved")


@pytest.mark.parametrize("on", [True, False])
def test_lp1879878_revert_status_saved_before_the_drop(on):
    """Audits of both hosts between 'reverted' (and the context reverted) and the claim drop."""
    assert_revert_swaps_usage_if("lp1879878-revert", on, {(0, "lock:compute_resources:acquire", 0): 10})


@pytest.mark.parametrize("on", [True, False])
def test_lp1879878_stash_cleared_before_the_migration_ends(on):
    """A source audit after confirm cleared old_flavor, before the drop: CPUs unpinned twice."""
    c = cloud()
    uuid = c.create("pinned", "host1")
    c.resize(uuid, "pinned-large", "host2")
    result = run_switched(
        "lp1879878-stash",
        on,
        [("confirm", lambda: c.confirm_resize(uuid)), audit(c, "host1")],
        {(0, "compute.confirm_migration", 0): 10},
    )
    if on:
        confirm_error, audit_error = errors(result)
        assert isinstance(confirm_error, CPUUnpinningInvalid)
        assert audit_error is None
        assert used(c, "host1") == BELOW_RESERVED
    else:
        assert errors(result) == [None, None]
        assert used(c, "host1") == reserved_plus()
        assert oracle.observe(c)["usage"]["host1"]["pinned_cpus"] == 0
        assert_consistent(c)


@pytest.mark.parametrize("on", [True, False])
def test_lp1818914_confirm_without_an_audit_keeps_the_old_flavor(on):
    """No concurrency: create, resize to another host, confirm, no audit anywhere."""
    c = cloud()
    uuid = c.create("medium", "host1")
    with switched("lp1818914", on):
        c.resize(uuid, "large", "host2")
        c.confirm_resize(uuid)
    assert used(c, "host1") == (reserved_plus(MEDIUM) if on else reserved_plus())
    assert_broken_if(on, c, "usage-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_lp1834349_audit_meets_an_outbound_migration_without_old_flavor(on):
    """As lp1879878-stash's schedule, with a flavor that pins nothing: the audit itself crashes."""
    c = cloud()
    uuid = c.create("medium", "host1")
    c.resize(uuid, "large", "host2")
    result = run_switched(
        "lp1834349",
        on,
        [("confirm", lambda: c.confirm_resize(uuid)), audit(c, "host1")],
        {(0, "compute.confirm_migration", 0): 10},
    )
    confirm_error, audit_error = errors(result)
    assert confirm_error is None
    if on:
        # the audit crashed after resetting the counters, so the drop went below them
        assert isinstance(audit_error, AttributeError)
        assert used(c, "host1") == BELOW_RESERVED
    else:
        assert audit_error is None
        assert used(c, "host1") == reserved_plus()
        assert_consistent(c)


@pytest.mark.parametrize("on", [True, False])
def test_lp1095403_audit_subtracts_a_deleted_instance(on):
    """An audit between the delete's 'deleted' save and its update_usage."""
    c, _ = delete_during_audit("lp1095403", on, "medium")
    assert used(c, "host1") == (BELOW_RESERVED if on else reserved_plus())
    assert_broken_if(on, c, "no-negative-usage", "usage-not-below-reserved")


@pytest.mark.parametrize("on", [True, False])
def test_lp1600304_stale_migration_double_counts(on):
    """A live migration to host3 rolls back, but before it marks its migration failed the
    instance is resized to host2; host3's audit then meets the stale migration.

    Nova's rollback marks the migration failed last, after the task state is cleared
    (the model's fix does it before: see nova-open-live-migration-rollback-window, whose
    switch is on here so that the resize can start)."""
    c = cloud()
    uuid = c.create("medium", "host1")
    with switched("nova-open-live-migration-rollback-window", True):
        result = run_switched(
            "lp1600304",
            on,
            [
                ("live migration", lambda: c.live_migrate(uuid, "host3", fail=True)),
                ("resize", lambda: c.resize(uuid, "large", "host2")),
                audit(c, "host3"),
            ],
            # the migration's saves: the claim's, the conductor's, queued, preparing,
            # running, then (delayed) the rollback's last step, failed
            {(0, "db.migration.save", 5): 10},
        )
    assert errors(result) == [None, None, None]
    live_migration = list(c.db.migrations_of(uuid))[0]
    assert live_migration.status == "failed"
    if on:
        assert used(c, "host3") == reserved_plus(LARGE)
    else:
        assert used(c, "host3") == reserved_plus()
        assert used(c, "host2") == reserved_plus(LARGE)
        assert used(c, "host1") == reserved_plus(MEDIUM)
    assert_broken_if(on, c, "usage-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_lp1707071_source_audit_rewrites_the_instance_allocation(on):
    """The source audits while the resize is between its claim and the source's power-off."""
    c = cloud()
    uuid = c.create("medium", "host1")
    result = run_switched(
        "lp1707071",
        on,
        [("resize", lambda: c.resize(uuid, "large", "host2")), audit(c, "host1")],
        {(0, "compute.migrate_disk_and_power_off", 0): 10},
    )
    assert errors(result) == [None, None]
    held = c.placement.allocations[uuid]
    if on:
        # the instance lives on host2 with the large flavor but holds medium on host1
        assert held == {"host1": {"VCPU": 2, "MEMORY_MB": 1024, "DISK_GB": 2}}
    else:
        assert held == {"host2": {"VCPU": 4, "MEMORY_MB": 2048, "DISK_GB": 4}}
    assert_broken_if(on, c, "placement-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_lp1729371_audit_deletes_a_building_instances_allocation(on):
    """The host audits after the scheduler allocated but before the instance row exists."""
    c = cloud()
    result = run_switched(
        "lp1729371",
        on,
        [("create", lambda: c.create("medium", "host1")), audit(c, "host1")],
        {(0, "db.instance.create", 0): 10},
    )
    assert errors(result) == [None, None]
    uuid = result.outcomes[0].value
    assert c.db.instances[uuid].host == "host1"
    if on:
        assert uuid not in c.placement.allocations
    else:
        assert c.placement.allocations[uuid] == {"host1": {"VCPU": 2, "MEMORY_MB": 1024, "DISK_GB": 2}}
    assert_broken_if(on, c, "placement-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_lp1849165_audit_reads_a_missing_migration_context(on):
    """The destination audits after post_live_migration_at_destination dropped the context
    (written at once) and before it saved the instance on its new host."""
    c = cloud()
    uuid = c.create("medium", "host1")
    result = run_switched(
        "lp1849165",
        on,
        [("live migration", lambda: c.live_migrate(uuid, "host2")), audit(c, "host2")],
        # the live migration's instance saves: the API's task state, the claim's
        # migration context, then post_live_migration_at_destination's move
        {(0, "db.instance.save", 2): 10},
    )
    live_migration_error, audit_error = errors(result)
    assert live_migration_error is None
    assert c.db.instances[uuid].host == "host2"
    if on:
        assert isinstance(audit_error, AttributeError)
    else:
        assert audit_error is None
        assert_consistent(c)


@pytest.mark.parametrize("on", [True, False])
def test_nova_open_delete_after_move_leaves_usage(on):
    """No concurrency: resize to another host, confirm, delete; a same-host resize, confirm, delete."""
    c = cloud()
    moved = c.create("medium", "host1")
    stayed = c.create("small", "host3")
    with switched("nova-open-delete-after-move", on):
        c.resize(moved, "large", "host2")
        c.confirm_resize(moved)
        c.delete(moved)
        c.resize(stayed, "medium", "host3")
        c.confirm_resize(stayed)
        c.delete(stayed)
    if on:
        assert (used(c, "host2"), used(c, "host3")) == (reserved_plus(LARGE), reserved_plus(MEDIUM))
    else:
        assert (used(c, "host2"), used(c, "host3")) == (reserved_plus(), reserved_plus())
    assert_broken_if(on, c, "usage-matches-oracle")

"""Races in Nova's current code (nova 34.0.0), found with the model: the nova-open switches.

The model fixes each by default (see the method the switch patches); the switch
restores Nova's current code.  Each test pins the interleaving with FixedDelays:
with the switch on the accounting breaks as it would in Nova (read off
resource_tracker.py and manager.py, not seen in production), with it off the
same schedule is correct.  Most heal at the host's next audit; the PCI losses
do not.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from models import oracle
from models.errors import CPUPinningInvalid, InstanceInvalidState
from models.service import Cloud
from models.topology import small_topology
from tests.models.helpers import (
    LARGE,
    MEDIUM,
    PINNED,
    PINNED_LARGE,
    SMALL,
    assert_broken_if,
    assert_revert_swaps_usage_if,
    assert_consistent,
    audit,
    cloud,
    delete_during_audit,
    cpu_owners,
    errors,
    pci_owners,
    reserved_plus,
    run_concurrently,
    run_switched,
    switched,
    used,
)


@pytest.mark.parametrize("on", [True, False])
def test_revert_window_after_the_claim_drop_swaps_usage(on):
    """drop_move_claim_at_dest marks the migration reverted while the instance stays on
    the destination until finish_revert_resize; audits of both hosts in between: the
    source forgets the instance, the destination counts it."""
    assert_revert_swaps_usage_if(
        "nova-open-revert-window",
        on,
        # instance saves: the API's task state, the claim drop's, then (delayed)
        # finish_revert_resize's flavor/host/node
        {(0, "db.instance.save", 2): 10},
    )


@pytest.mark.parametrize("on", [True, False])
def test_revert_window_pins_the_sources_cpus_on_the_destination(on):
    """The same window with pinned flavors: the destination counts the instance with the
    reverted pinning, the source's CPU ids (which another instance there may hold)."""
    c = cloud()
    uuid = c.create("pinned", "host1")
    c.resize(uuid, "pinned-large", "host3")
    result = run_switched(
        "nova-open-revert-window",
        on,
        [("revert", lambda: c.revert_resize(uuid)), audit(c, "host3", "audit dest")],
        {(0, "db.instance.save", 2): 10},
    )
    assert errors(result) == [None, None]
    if on:
        # host3 counts the large flavor with host1's CPUs 8 and 9
        assert cpu_owners(c, "host3") == {"8": [uuid], "9": [uuid]}
        assert used(c, "host3") == reserved_plus(PINNED_LARGE)
    else:
        assert cpu_owners(c, "host3") == {}
    assert_broken_if(on, c, "usage-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_resize_finish_window_counts_the_old_flavor(on):
    """resize_instance moves the instance to the destination before finish_resize switches
    its flavor, and finish_resize tells the RT nothing: a destination audit between counts
    the old flavor until the next audit."""
    c = cloud()
    uuid = c.create("medium", "host1")
    result = run_switched(
        "nova-open-resize-finish-window",
        on,
        [("resize", lambda: c.resize(uuid, "large", "host2")), audit(c, "host2")],
        # instance saves: API, prep_resize's new_flavor, the claim's context,
        # resize_instance's two; then (delayed) finish_resize's
        {(0, "db.instance.save", 5): 10},
    )
    assert errors(result) == [None, None]
    assert used(c, "host2") == (reserved_plus(MEDIUM) if on else reserved_plus(LARGE))
    assert_broken_if(on, c, "usage-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_delete_during_an_audit_leaks_pci_devices(on):
    """The audit skips the deleted (not yet destroyed) instance, so update_usage finds it
    untracked and frees nothing, and clean_usage spares every instance it read: the devices
    stay allocated to the deleted instance until an audit after the row is gone."""
    c, uuid = delete_during_audit("nova-open-delete-pci-leak", on, "pci")
    assert pci_owners(c, "host1") == ({"0000:81:00.0": [uuid]} if on else {})
    assert_broken_if(on, c, "terminal-holds-nothing")


@pytest.mark.parametrize("on", [True, False])
def test_live_migration_finished_outside_the_lock_loses_pci(on):
    """Bug 1896463's race, for live migration: post_live_migration_at_destination moves the
    instance without the RT lock, between the destination audit's instance read and its
    migration read (completed by then).  The audit counts the instance nowhere and frees
    its PCI allocation for good."""
    c = cloud()
    uuid = c.create("pci", "host1")
    with switched("nova-open-live-migration-unlocked", on):
        result = run_concurrently(
            [("live migration", lambda: c.live_migrate(uuid, "host2")), audit(c, "host2")],
            {
                (0, "compute.post_live_migration_at_destination", 0): 1,
                (1, "db.migration.get_in_progress_and_error", 0): 10,
            },
        )
        assert errors(result) == [None, None]
        assert c.db.instances[uuid].host == "host2"
        c.update_available_resource("host2")
    assert used(c, "host2") == reserved_plus(SMALL)
    assert pci_owners(c, "host2") == ({} if on else {"0000:81:00.0": [uuid]})
    assert_broken_if(on, c, "usage-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_live_migration_drops_its_context_before_moving_the_instance(on):
    """drop_migration_context is written at once, before the save that moves the instance:
    a destination audit between counts the incoming live migration without its pinning."""
    c = cloud()
    uuid = c.create("pinned", "host1")
    result = run_switched(
        "nova-open-live-migration-unlocked",
        on,
        [("live migration", lambda: c.live_migrate(uuid, "host2")), audit(c, "host2")],
        {(0, "db.instance.save", 2): 10},
    )
    assert errors(result) == [None, None]
    assert used(c, "host2") == reserved_plus(PINNED)
    assert oracle.observe(c)["usage"]["host2"]["pinned_cpus"] == (0 if on else 2)
    assert_broken_if(on, c, "usage-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_evacuation_clears_its_task_state_before_finish_evacuation(on):
    """Nova saves the rebuilt instance active with no task state before finish_evacuation
    moves it: a destination audit between skips the incoming evacuation (the instance is
    neither resizing, rebuilding nor migrating)."""
    c = cloud()
    uuid = c.create("medium", "host1")
    c.set_host_down("host1", True)
    result = run_switched(
        "nova-open-evacuation-active-early",
        on,
        [("evacuate", lambda: c.evacuate(uuid, "host2")), audit(c, "host2")],
        # the lock's first taking is the rebuild claim's, the second (delayed) finish_evacuation's
        {(0, "lock:compute_resources:acquire", 1): 10},
    )
    assert errors(result) == [None, None]
    assert used(c, "host2") == (reserved_plus() if on else reserved_plus(MEDIUM))
    assert_broken_if(on, c, "usage-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_audit_during_a_same_host_resize_of_a_pinned_instance_pins_twice(on):
    """Step 3 applies the incoming migration context but not the flavor, so the same-node
    branch counts the new side again: its CPUs are pinned twice and the audit raises,
    until finish_resize switches the flavor."""
    topology = small_topology()
    c = Cloud(
        replace(topology, hosts=tuple(replace(h, pinnable_cpus=tuple(range(8, 16))) for h in topology.hosts))
    )
    uuid = c.create("pinned", "host1")
    result = run_switched(
        "nova-open-resize-finish-window",
        on,
        [("resize", lambda: c.resize(uuid, "pinned-large", "host1")), audit(c, "host1")],
        {(0, "db.instance.save", 5): 10},
    )
    resize_error, audit_error = errors(result)
    assert resize_error is None
    if on:
        assert isinstance(audit_error, CPUPinningInvalid)
    else:
        assert audit_error is None
        assert used(c, "host1") == reserved_plus(PINNED, PINNED_LARGE)
        assert_consistent(c)


@pytest.mark.parametrize("on", [True, False])
def test_live_migration_rollback_after_a_destination_audit_leaks_pci(on):
    """A destination audit during the live migration counts the incoming migration, which
    allocates its claimed PCI devices; the rollback frees claims only."""
    c = cloud()
    uuid = c.create("pci", "host1")
    result = run_switched(
        "nova-open-live-migration-rollback-pci",
        on,
        [("live migration", lambda: c.live_migrate(uuid, "host2", fail=True)), audit(c, "host2")],
        {(0, "compute.pre_live_migration", 0): 10},
    )
    assert errors(result) == [None, None]
    assert c.db.instances[uuid].host == "host1"
    assert pci_owners(c, "host2") == ({"0000:81:00.0": [uuid]} if on else {})
    assert_broken_if(on, c, "usage-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_live_migration_rollback_window_counts_the_instance_again(on):
    """The destination drops its claim; before the source clears the instance's task state,
    a destination audit sees the instance still live migrating there and counts it again."""
    c = cloud()
    uuid = c.create("medium", "host1")
    result = run_switched(
        "nova-open-live-migration-rollback-window",
        on,
        [("live migration", lambda: c.live_migrate(uuid, "host2", fail=True)), audit(c, "host2")],
        # instance saves: the API's task state, the claim's context, then (delayed)
        # the save that ends the live migration
        {(0, "db.instance.save", 2): 10},
    )
    assert errors(result) == [None, None]
    assert used(c, "host2") == (reserved_plus(MEDIUM) if on else reserved_plus())
    assert_broken_if(on, c, "usage-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_live_migration_rollback_window_counts_the_running_migration_once_another_move_starts(on):
    """Nova marks a rolled-back live migration failed last, after the task state is
    cleared: a second live migration can start in between, and a destination audit then
    sees the instance live migrating again and counts the first, still running, migration.
    The fix marks it failed in the destination's critical section that ends it."""
    c = cloud()
    uuid = c.create("small", "host1")
    result = run_switched(
        "nova-open-live-migration-rollback-window",
        on,
        [
            ("live migration", lambda: c.live_migrate(uuid, "host2", fail=True)),
            ("second live migration", lambda: c.live_migrate(uuid, "host3", fail=True)),
            audit(c, "host2"),
        ],
        # the first pauses at its last migration save (Nova: after the task state is
        # cleared; the fix: inside the destination's lock), the second once it has set
        # its own task state, just before its claim on host3 saves a migration context
        {(0, "db.migration.save", 5): 1, (1, "db.instance.save", 1): 1},
    )
    first, second, audit_error = errors(result)
    assert first is None and audit_error is None
    # with the fix the first still holds its task state there: the second is refused
    assert second is None if on else isinstance(second, InstanceInvalidState)
    assert used(c, "host2") == (reserved_plus(SMALL) if on else reserved_plus())
    assert_broken_if(on, c, "usage-matches-oracle")


@pytest.mark.parametrize("on", [True, False])
def test_a_move_started_as_a_live_migration_ends_is_counted_at_the_source(on):
    """Nova's _post_live_migration audits the source before it marks the migration
    completed.  Once post_live_migration_at_destination cleared the task state, a migrate
    back can start: the instance is in resize_prep with no migration context, so the
    source audit counts the still-running live migration as an outbound move, and the
    migrate's claim on that host then counts the instance a second time."""
    c = cloud()
    uuid = c.create("small", "host1")
    result = run_switched(
        "nova-open-live-migration-source-audit",
        on,
        [("live migration", lambda: c.live_migrate(uuid, "host2")), ("migrate back", lambda: c.migrate(uuid, "host1"))],
        # the source audit pauses after its instance read; the migrate runs up to host1's lock
        {(0, "db.instance.get_by_host_and_node", 0): 1},
    )
    assert errors(result) == [None, None]
    assert c.db.instances[uuid].host == "host1"
    assert used(c, "host1") == (reserved_plus(SMALL, SMALL) if on else reserved_plus(SMALL))
    assert used(c, "host2") == reserved_plus(SMALL)  # the migrate's source, until confirm
    assert_broken_if(on, c, "usage-matches-oracle")

"""Races the model reproduces in Nova's current code (nova 34.0.0), with every fix in place.

The model follows Nova's current code; these interleavings break the
accounting there too (read off resource_tracker.py and manager.py, not seen
in production).  Each test pins the interleaving with FixedDelays and asserts
the broken invariant, so the model stays faithful to them.  Most heal at the
host's next audit; the PCI losses do not.
"""

from __future__ import annotations

from dataclasses import replace

from models import oracle
from models.errors import CPUPinningInvalid
from models.service import Cloud
from models.topology import small_topology
from tests.models.helpers import LARGE, MEDIUM, PINNED, SMALL, cloud, problems, reserved_plus, run_concurrently, used


def broken(c: Cloud) -> set[str]:
    return {name for name, _ in problems(c)}


def test_revert_window_after_the_claim_drop_swaps_usage():
    """drop_move_claim_at_dest marks the migration reverted (and saves the reverted
    context) while the instance's host is still the destination; audits of both
    hosts before finish_revert_resize moves it back: the source forgets the
    instance, the destination counts it."""
    c = cloud()
    uuid = c.create("medium", "host1")
    c.resize(uuid, "large", "host2")
    result = run_concurrently(
        [
            ("revert", lambda: c.revert_resize(uuid)),
            ("audit source", lambda: c.update_available_resource("host1")),
            ("audit dest", lambda: c.update_available_resource("host2")),
        ],
        # instance saves: the API's task state, the reverted context, then (delayed)
        # finish_revert_resize's flavor/host/node
        {(0, "db.instance.save", 2): 10},
    )
    assert [o.error for o in result.outcomes] == [None, None, None]
    assert used(c, "host1") == reserved_plus()
    assert used(c, "host2") == reserved_plus(LARGE)
    assert "usage-matches-oracle" in broken(c)


def test_resize_finish_window_counts_the_old_flavor():
    """resize_instance moves the instance to the destination before finish_resize
    switches its flavor, and finish_resize tells the RT nothing: a destination
    audit between counts the old flavor until the next audit."""
    c = cloud()
    uuid = c.create("medium", "host1")
    result = run_concurrently(
        [("resize", lambda: c.resize(uuid, "large", "host2")), ("audit", lambda: c.update_available_resource("host2"))],
        # instance saves: API, prep_resize's new_flavor, the claim's context,
        # resize_instance's two; then (delayed) finish_resize's
        {(0, "db.instance.save", 5): 10},
    )
    assert [o.error for o in result.outcomes] == [None, None]
    assert used(c, "host2") == reserved_plus(MEDIUM)
    assert "usage-matches-oracle" in broken(c)


def test_delete_during_an_audit_leaks_pci_devices():
    """The audit skips the deleted (not yet destroyed) instance, so update_usage
    finds it untracked and frees nothing; clean_usage keeps the devices of every
    instance it read.  They stay allocated to the deleted instance until an audit
    after the row is gone."""
    c = cloud()
    uuid = c.create("pci", "host1")
    result = run_concurrently(
        [("delete", lambda: c.delete(uuid)), ("audit", lambda: c.update_available_resource("host1"))],
        {(0, "lock:compute_resources:acquire", 0): 10},
    )
    assert [o.error for o in result.outcomes] == [None, None]
    assert oracle.observe(c)["pci_owners"]["host1"] == {"0000:81:00.0": [uuid]}
    assert "terminal-holds-nothing" in broken(c)
    c.update_available_resource("host1")
    assert not problems(c)


def test_live_migration_finished_outside_the_lock_loses_pci():
    """bug 1896463's race, for live migration: post_live_migration_at_destination
    moves the instance without the RT lock, between the destination audit's
    instance read and its migration read (by then completed).  The audit counts
    the instance nowhere and frees its PCI allocation."""
    c = cloud()
    uuid = c.create("pci", "host1")
    result = run_concurrently(
        [("live migration", lambda: c.live_migrate(uuid, "host2")), ("audit", lambda: c.update_available_resource("host2"))],
        {
            (0, "compute.post_live_migration_at_destination", 0): 1,
            (1, "db.migration.get_in_progress_and_error", 0): 10,
        },
    )
    assert [o.error for o in result.outcomes] == [None, None]
    assert c.db.instances[uuid].host == "host2"
    assert used(c, "host2") == reserved_plus()
    assert oracle.observe(c)["pci_owners"]["host2"] == {}
    c.update_available_resource("host2")
    assert used(c, "host2") == reserved_plus(SMALL)
    assert oracle.observe(c)["pci_owners"]["host2"] == {}  # lost for good
    assert "usage-matches-oracle" in broken(c)


def test_evacuation_clears_its_task_state_before_finish_evacuation():
    """The rebuild saves the instance active with no task state before
    finish_evacuation moves it: a destination audit between skips the incoming
    evacuation (the instance is neither resizing, rebuilding nor migrating)."""
    c = cloud()
    uuid = c.create("medium", "host1")
    c.set_host_down("host1", True)
    result = run_concurrently(
        [("evacuate", lambda: c.evacuate(uuid, "host2")), ("audit", lambda: c.update_available_resource("host2"))],
        # the lock's first taking is the rebuild claim's, the second (delayed) finish_evacuation's
        {(0, "lock:compute_resources:acquire", 1): 10},
    )
    assert [o.error for o in result.outcomes] == [None, None]
    assert used(c, "host2") == reserved_plus()
    assert "usage-matches-oracle" in broken(c)


def test_audit_during_a_same_host_resize_of_a_pinned_instance_pins_twice():
    """Step 3 applies the incoming migration context to the instance, then the
    same-node branch counts the new pinning again: the audit raises until
    finish_resize switches the flavor."""
    topology = small_topology()
    c = Cloud(replace(topology, hosts=tuple(replace(h, pinnable_cpus=tuple(range(8, 16))) for h in topology.hosts)))
    uuid = c.create("pinned", "host1")
    result = run_concurrently(
        [("resize", lambda: c.resize(uuid, "pinned-large", "host1")), ("audit", lambda: c.update_available_resource("host1"))],
        {(0, "db.instance.save", 5): 10},
    )
    resize_error, audit_error = (o.error for o in result.outcomes)
    assert resize_error is None
    assert isinstance(audit_error, CPUPinningInvalid)


def test_live_migration_drops_its_context_before_moving_the_instance():
    """drop_migration_context is written at once, before the save that moves the
    instance: a destination audit between counts the incoming live migration
    without its pinning."""
    c = cloud()
    uuid = c.create("pinned", "host1")
    result = run_concurrently(
        [("live migration", lambda: c.live_migrate(uuid, "host2")), ("audit", lambda: c.update_available_resource("host2"))],
        {(0, "db.instance.save", 2): 10},
    )
    assert [o.error for o in result.outcomes] == [None, None]
    assert used(c, "host2") == reserved_plus(PINNED)
    assert oracle.observe(c)["usage"]["host2"]["pinned_cpus"] == 0
    assert "usage-matches-oracle" in broken(c)

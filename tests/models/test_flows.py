"""Every operation's accounting, run alone, against hand-computed numbers.

small_topology: three hosts, each reserving 1 vCPU, 512 MB and 1 GB, with two
PCI devices (0000:81:00.0 and .1) and dedicated CPUs 8-11.
"""

from __future__ import annotations

from dataclasses import replace

from models import oracle
from models.placement import DISK_GB, MEMORY_MB, PCI_DEVICE, PCPU, VCPU
from models.records import ACTIVE, ERROR, RESIZED
from models.service import Cloud
from models.topology import small_topology
from tests.models.helpers import (
    LARGE,
    MEDIUM,
    PINNED,
    PINNED_LARGE,
    SMALL,
    assert_consistent,
    audit_all,
    cloud,
    cpu_owners,
    pci_owners,
    reserved_plus,
    used,
)

MEDIUM_ALLOCATION = {VCPU: 2, MEMORY_MB: 1024, DISK_GB: 2}
LARGE_ALLOCATION = {VCPU: 4, MEMORY_MB: 2048, DISK_GB: 4}


def migration_of(c, uuid):
    return list(c.db.migrations_of(uuid))[-1]


def check_with_and_without_audit(c):
    """The oracle agrees before and after every host's audit, and the audit changes nothing."""
    assert_consistent(c)
    before = oracle.observe(c)
    audit_all(c)
    assert_consistent(c)
    after = oracle.observe(c)
    assert after["usage"] == before["usage"]
    assert after["allocations"] == before["allocations"]


def test_create_and_delete():
    c = cloud()
    uuid = c.create("medium", "host1")
    assert used(c, "host1") == reserved_plus(MEDIUM)
    assert used(c, "host2") == reserved_plus()
    assert c.placement.allocations == {uuid: {"host1": MEDIUM_ALLOCATION}}
    row = c.db.instances[uuid]
    assert (row.host, row.vm_state, row.task_state) == ("host1", ACTIVE, None)
    check_with_and_without_audit(c)

    c.delete(uuid)
    assert used(c, "host1") == reserved_plus()
    assert c.placement.allocations == {}
    assert c.db.instances[uuid].deleted
    assert uuid in oracle.observe(c)["terminal_consumers"]
    check_with_and_without_audit(c)


def test_scheduler_picks_first_host_that_fits():
    c = cloud()
    first = c.create("large")
    assert c.db.instances[first].host == "host1"
    # each host has 7 usable vCPUs: one large (4) each
    second = c.create("large")
    third = c.create("large")
    assert [c.db.instances[u].host for u in (second, third)] == ["host2", "host3"]
    check_with_and_without_audit(c)


def test_resize_to_another_host_then_confirm():
    c = cloud()
    uuid = c.create("medium", "host1")
    c.resize(uuid, "large", "host2")
    migration = migration_of(c, uuid)
    assert migration.status == "finished"
    assert c.db.instances[uuid].vm_state == RESIZED
    # until confirm: the source keeps the old flavor, the destination holds the new one
    assert used(c, "host1") == reserved_plus(MEDIUM)
    assert used(c, "host2") == reserved_plus(LARGE)
    assert c.placement.allocations == {
        migration.uuid: {"host1": MEDIUM_ALLOCATION},
        uuid: {"host2": LARGE_ALLOCATION},
    }
    check_with_and_without_audit(c)

    c.confirm_resize(uuid)
    assert migration_of(c, uuid).status == "confirmed"
    assert used(c, "host1") == reserved_plus()
    assert used(c, "host2") == reserved_plus(LARGE)
    assert c.placement.allocations == {uuid: {"host2": LARGE_ALLOCATION}}
    row = c.db.instances[uuid]
    assert (row.vm_state, row.old_flavor, row.new_flavor, row.migration_context) == (ACTIVE, None, None, None)
    check_with_and_without_audit(c)


def test_resize_to_another_host_then_revert():
    c = cloud()
    uuid = c.create("medium", "host1")
    c.resize(uuid, "large", "host2")
    c.revert_resize(uuid)
    assert migration_of(c, uuid).status == "reverted"
    assert used(c, "host1") == reserved_plus(MEDIUM)
    assert used(c, "host2") == reserved_plus()
    assert c.placement.allocations == {uuid: {"host1": MEDIUM_ALLOCATION}}
    row = c.db.instances[uuid]
    assert (row.host, row.flavor.name, row.vm_state) == ("host1", "medium", ACTIVE)
    check_with_and_without_audit(c)


def test_same_host_resize_counts_both_flavors_until_confirm():
    c = cloud()
    uuid = c.create("medium", "host1")
    c.resize(uuid, "large", "host1")
    migration = migration_of(c, uuid)
    assert used(c, "host1") == reserved_plus(MEDIUM, LARGE)
    assert c.placement.allocations == {
        migration.uuid: {"host1": MEDIUM_ALLOCATION},
        uuid: {"host1": LARGE_ALLOCATION},
    }
    check_with_and_without_audit(c)
    c.confirm_resize(uuid)
    assert used(c, "host1") == reserved_plus(LARGE)
    assert c.placement.allocations == {uuid: {"host1": LARGE_ALLOCATION}}
    check_with_and_without_audit(c)


def test_same_host_resize_then_revert():
    c = cloud()
    uuid = c.create("medium", "host1")
    c.resize(uuid, "large", "host1")
    c.revert_resize(uuid)
    assert used(c, "host1") == reserved_plus(MEDIUM)
    assert c.placement.allocations == {uuid: {"host1": MEDIUM_ALLOCATION}}
    check_with_and_without_audit(c)


def test_cold_migrate_then_confirm():
    c = cloud()
    uuid = c.create("small", "host2")
    c.migrate(uuid)
    assert migration_of(c, uuid).migration_type == "migration"
    assert c.db.instances[uuid].host == "host1"  # the first other host that fits
    assert used(c, "host2") == reserved_plus(SMALL)
    assert used(c, "host1") == reserved_plus(SMALL)
    check_with_and_without_audit(c)
    c.confirm_resize(uuid)
    assert used(c, "host2") == reserved_plus()
    assert used(c, "host1") == reserved_plus(SMALL)
    check_with_and_without_audit(c)


def test_pci_devices_follow_the_instance():
    c = cloud()
    uuid = c.create("pci", "host1")
    assert pci_owners(c, "host1") == {"0000:81:00.0": [uuid]}
    assert c.placement.allocations[uuid] == {"host1": {VCPU: 1, MEMORY_MB: 512, DISK_GB: 1, PCI_DEVICE: 1}}
    c.migrate(uuid, "host2")
    # the source keeps its device for a revert until confirm
    assert pci_owners(c, "host1") == {"0000:81:00.0": [uuid]}
    assert pci_owners(c, "host2") == {"0000:81:00.0": [uuid]}
    check_with_and_without_audit(c)
    c.confirm_resize(uuid)
    assert pci_owners(c, "host1") == {}
    assert pci_owners(c, "host2") == {"0000:81:00.0": [uuid]}
    check_with_and_without_audit(c)
    c.migrate(uuid, "host3")
    c.revert_resize(uuid)
    assert pci_owners(c, "host3") == {}
    assert pci_owners(c, "host2") == {"0000:81:00.0": [uuid]}
    assert c.db.instances[uuid].pci_devices == ("0000:81:00.0",)
    check_with_and_without_audit(c)
    c.delete(uuid)
    assert pci_owners(c, "host2") == {}
    check_with_and_without_audit(c)


def test_pinned_cpus_follow_the_instance():
    c = cloud()
    uuid = c.create("pinned", "host1")
    assert cpu_owners(c, "host1") == {"8": [uuid], "9": [uuid]}
    assert c.placement.allocations[uuid] == {"host1": {PCPU: 2, MEMORY_MB: 1024, DISK_GB: 2}}
    c.resize(uuid, "pinned-large", "host2")
    assert cpu_owners(c, "host1") == {"8": [uuid], "9": [uuid]}
    assert cpu_owners(c, "host2") == {str(cpu): [uuid] for cpu in (8, 9, 10, 11)}
    assert used(c, "host2") == reserved_plus(PINNED_LARGE)
    check_with_and_without_audit(c)
    c.revert_resize(uuid)
    assert cpu_owners(c, "host1") == {"8": [uuid], "9": [uuid]}
    assert cpu_owners(c, "host2") == {}
    assert c.db.instances[uuid].pinned_cpus == (8, 9)
    check_with_and_without_audit(c)
    c.resize(uuid, "pinned-large", "host3")
    c.confirm_resize(uuid)
    assert cpu_owners(c, "host1") == {}
    assert used(c, "host1") == reserved_plus()
    assert c.db.instances[uuid].pinned_cpus == (8, 9, 10, 11)
    check_with_and_without_audit(c)


def test_same_host_resize_of_a_pinned_instance_pins_both():
    topology = small_topology()
    roomy = replace(
        topology, hosts=tuple(replace(h, pinnable_cpus=tuple(range(8, 16))) for h in topology.hosts)
    )
    for finish, kept in (("confirm_resize", (10, 11, 12, 13)), ("revert_resize", (8, 9))):
        c = Cloud(roomy)
        uuid = c.create("pinned", "host1")
        c.resize(uuid, "pinned-large", "host1")
        assert cpu_owners(c, "host1") == {str(cpu): [uuid] for cpu in range(8, 14)}
        assert used(c, "host1") == reserved_plus(PINNED, PINNED_LARGE)
        check_with_and_without_audit(c)
        getattr(c, finish)(uuid)
        assert cpu_owners(c, "host1") == {str(cpu): [uuid] for cpu in kept}
        assert c.db.instances[uuid].pinned_cpus == kept
        check_with_and_without_audit(c)


def test_evacuate_then_the_source_comes_back():
    c = cloud()
    uuid = c.create("pci", "host1")
    c.set_host_down("host1", True)
    c.evacuate(uuid, "host2")
    migration = migration_of(c, uuid)
    assert migration.status == "done"
    assert c.db.instances[uuid].host == "host2"
    assert used(c, "host2") == reserved_plus(SMALL)
    assert pci_owners(c, "host2") == {"0000:81:00.0": [uuid]}
    assert "host1" not in oracle.observe(c)["usage"]  # a dead service's counters are not compared
    pci = {VCPU: 1, MEMORY_MB: 512, DISK_GB: 1, PCI_DEVICE: 1}
    assert c.placement.allocations == {uuid: {"host1": pci, "host2": pci}}
    check_with_and_without_audit(c)

    c.set_host_down("host1", False)
    assert migration_of(c, uuid).status == "completed"
    assert c.placement.allocations == {uuid: {"host2": pci}}
    assert used(c, "host1") == reserved_plus()
    assert pci_owners(c, "host1") == {}
    check_with_and_without_audit(c)


def test_live_migration():
    c = cloud()
    uuid = c.create("pinned", "host1")
    plain = c.create("pci", "host1")
    c.live_migrate(uuid, "host2")
    c.live_migrate(plain, "host2")
    assert [m.status for m in c.db.migrations.values()] == ["completed", "completed"]
    assert used(c, "host1") == reserved_plus()
    assert used(c, "host2") == reserved_plus(PINNED, SMALL)
    assert cpu_owners(c, "host2") == {"8": [uuid], "9": [uuid]}
    assert pci_owners(c, "host2") == {"0000:81:00.0": [plain]}
    assert pci_owners(c, "host1") == {}
    assert set(c.placement.allocations) == {uuid, plain}
    assert c.placement.allocations[uuid] == {"host2": {PCPU: 2, MEMORY_MB: 1024, DISK_GB: 2}}
    assert c.db.instances[plain].pci_devices == ("0000:81:00.0",)
    check_with_and_without_audit(c)


def test_live_migration_rollback():
    c = cloud()
    uuid = c.create("pinned", "host1")
    plain = c.create("pci", "host1")
    c.live_migrate(uuid, "host2", fail=True)
    c.live_migrate(plain, "host2", fail=True)
    assert [m.status for m in c.db.migrations.values()] == ["failed", "failed"]
    assert used(c, "host1") == reserved_plus(PINNED, SMALL)
    assert used(c, "host2") == reserved_plus()
    assert cpu_owners(c, "host2") == {}
    assert pci_owners(c, "host2") == {}
    assert c.placement.allocations[uuid] == {"host1": {PCPU: 2, MEMORY_MB: 1024, DISK_GB: 2}}
    row = c.db.instances[uuid]
    assert (row.host, row.task_state, row.migration_context) == ("host1", None, None)
    check_with_and_without_audit(c)


def test_deleting_a_resized_instance_confirms_first():
    c = cloud()
    uuid = c.create("medium", "host1")
    c.resize(uuid, "large", "host2")
    c.delete(uuid)
    assert migration_of(c, uuid).status == "confirmed"
    assert used(c, "host1") == reserved_plus()
    assert used(c, "host2") == reserved_plus()
    assert c.placement.allocations == {}
    check_with_and_without_audit(c)


def test_failed_spawn_aborts_the_claim():
    c = cloud()
    uuid = c.create("pinned", "host1", fail=True)
    row = c.db.instances[uuid]
    assert (row.vm_state, row.host, row.pinned_cpus) == (ERROR, None, ())
    assert used(c, "host1") == reserved_plus()
    assert cpu_owners(c, "host1") == {}
    assert c.placement.allocations == {}
    check_with_and_without_audit(c)
    c.delete(uuid)
    check_with_and_without_audit(c)


def test_local_delete_on_a_down_host():
    c = cloud()
    uuid = c.create("pci", "host1")
    c.set_host_down("host1", True)
    c.delete(uuid)
    assert c.placement.allocations == {}
    c.set_host_down("host1", False)
    assert used(c, "host1") == reserved_plus()
    assert pci_owners(c, "host1") == {}
    check_with_and_without_audit(c)


def test_an_audit_with_nothing_in_flight_changes_nothing():
    c = cloud()
    for flavor, host in (("medium", "host1"), ("pci", "host1"), ("pinned", "host2"), ("small", "host3")):
        c.create(flavor, host)
    before = oracle.observe(c)
    assert before["in_flight"] == 0
    audit_all(c)
    assert oracle.observe(c) == before

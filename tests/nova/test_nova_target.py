"""Real Nova (in process) as a target: the accounting at each stage, and known races with their faults.

Skipped unless Nova is installed (``pip install -e '.[test,nova]'``, which
``dev.py`` does).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable

import pytest

pytest.importorskip("nova")

from stateful.errors import Finding  # noqa: E402
from stateful.faults import select_faults  # noqa: E402
from stateful.session import Session, StepResult  # noqa: E402
from stateful.strategies import FixedDelays  # noqa: E402
from stateful.target import Op  # noqa: E402
from stateful.targets import target_factory  # noqa: E402
from stateful.topology import example_topology  # noqa: E402

# The Nova target is imported when a test first needs it, not at collection:
# Hypothesis draws constants from the project's own imported modules, so
# importing stateful.targets.nova* before the model's derandomized tests run
# changes which examples those tests see (and what they find in their budget).


def op(name: str, **args: str) -> Op:
    return Op(name, args)


def session(*fault_names: str, hosts: int = 2) -> Session:
    return Session(target_factory("nova")(), example_topology(hosts), select_faults("nova", list(fault_names)))


def assert_consistent(target) -> None:  # type: ignore[no-untyped-def]
    actual, expected = target.observe(), target.expected()
    assert actual.usage == expected.usage
    assert actual.allocations == expected.allocations
    assert actual.in_flight == expected.in_flight


def test_create_resize_confirm_audit_keeps_accounting_consistent() -> None:
    with session() as s:
        target = s.target
        s.apply([op("create", instance="vm1", flavor="small", host="host1")])
        assert_consistent(target)
        observed = target.observe()
        assert observed.usage["host1"]["vcpus"] == 1
        assert observed.servers["vm1"] == {"host": "host1", "vm_state": "active", "task_state": None}

        s.apply([op("resize", instance="vm1", flavor="medium", host="host2")])
        assert_consistent(target)
        observed = target.observe()
        assert observed.servers["vm1"]["vm_state"] == "resized"
        assert observed.usage["host1"]["vcpus"] == 1 and observed.usage["host2"]["vcpus"] == 2
        assert observed.in_flight == 1
        assert sorted(target.describe(c) for c in observed.allocations) == ["migration of vm1", "vm1"]

        for host in ("host1", "host2"):  # audits mid-resize change nothing (the session checks it too)
            s.apply([op("audit", host=host)])
            assert_consistent(target)

        s.apply([op("confirm", instance="vm1")])
        assert_consistent(target)
        observed = target.observe()
        assert observed.usage["host1"]["vcpus"] == 0 and observed.usage["host2"]["vcpus"] == 2
        assert observed.in_flight == 0 and len(observed.terminal_consumers) == 1

        for host in ("host1", "host2"):
            s.apply([op("audit", host=host)])
            assert_consistent(target)


def test_refusals_are_rejections() -> None:
    with session() as s:
        s.apply([op("create", instance="vm1", flavor="small", host="host1")])
        (outcome,) = s.apply([op("confirm", instance="vm1")]).outcomes  # not resized: Nova says 409
        assert isinstance(outcome.error, s.target.rejections)
        (outcome,) = s.apply([op("evacuate", instance="vm1", host="host2")]).outcomes  # host1 is up
        assert isinstance(outcome.error, s.target.rejections)
        # What would cast to the finished resize's down source compute (which, in process,
        # would wait for ever for the stopped service) is refused, as the model refuses it.
        s.apply([op("resize", instance="vm1", flavor="medium", host="host2")])
        s.apply([op("host_down", host="host1")])
        for action in ("confirm", "revert", "delete"):
            (outcome,) = s.apply([op(action, instance="vm1")]).outcomes
            assert isinstance(outcome.error, s.target.rejections), action
            assert "the resize's source compute host1 is down" in str(outcome.error)


# The evacuation of a PCI instance from a down host1 to host2, racing an audit
# of host2.  The evacuating task pauses at its instance.save inside
# finish_evacuation (its 9th instance.save); the audit then reads host2's
# instances (not yet including the instance) and pauses before reading the
# migrations while the evacuation finishes.
LP1896463_SCHEDULE = {
    (0, "nova.instance.save:before", 8): 1,
    (1, "nova.migration_list.get_in_progress_and_error:before", 0): 10,
}


def _evacuate_racing_audit(s: Session, schedule: dict[tuple[int, str, int], int] = LP1896463_SCHEDULE) -> None:
    s.apply([op("create", instance="vm1", flavor="pci", host="host1")])
    s.apply([op("host_down", host="host1")])
    s.apply(
        [op("evacuate", instance="vm1", host="host2"), op("audit", host="host2")],
        FixedDelays(schedule),
    )


# The same evacuation and audit, the evacuation paused just after its rebuild
# claim: its active save then runs before the audit reads the destination's
# instances, and finish_evacuation after the audit.
ACTIVE_EARLY_SCHEDULE = {
    (0, "lock:compute_resources:release", 0): 1,
    (1, "nova.migration_list.get_in_progress_and_error:before", 0): 10,
}


def _evacuate_racing_audit_after_the_active_save(s: Session) -> None:
    _evacuate_racing_audit(s, ACTIVE_EARLY_SCHEDULE)


def finding_of(scenario: Callable[[Session], Any], *switches: str, hosts: int = 2) -> Finding:
    """The finding ``scenario`` ends in with the fault ``switches`` on (it must end in one)."""
    with session(*switches, hosts=hosts) as s:
        with pytest.raises(Finding) as finding:
            scenario(s)
    return finding.value


def test_lp1896463_fault_frees_the_evacuated_instances_pci_device() -> None:
    finding = finding_of(_evacuate_racing_audit, "lp1896463")
    assert finding.invariant == "usage-matches-oracle"
    assert "host2 pci_devices: tracked 0" in str(finding)


def test_lp1896463_fixed_nova_keeps_the_pci_device() -> None:
    with session() as s:
        _evacuate_racing_audit(s)  # raises Finding if any invariant breaks
        observed = s.target.observe()
        assert observed.usage["host2"]["pci_devices"] == 1
        assert observed.servers["vm1"]["host"] == "host2"
        # with the fix the audit had to wait for the evacuation to finish
        trace = s.recording.traces[-1]
        assert any(e.kind == "block" and e.task == 1 for e in trace)


def test_nova_open_evacuation_active_early_counts_the_evacuated_instance_nowhere() -> None:
    finding = finding_of(_evacuate_racing_audit_after_the_active_save, "nova-open-evacuation-active-early")
    assert finding.invariant == "usage-matches-oracle"
    assert "host2 vcpus: tracked 0" in str(finding)


def test_the_target_counts_an_evacuation_under_way_by_default() -> None:
    with session() as s:
        _evacuate_racing_audit_after_the_active_save(s)  # raises Finding if an invariant breaks
        assert s.target.observe().usage["host2"]["vcpus"] == 1


def _confirm_or_revert_racing_audit(s: Session, action: str, audited: str) -> None:
    s.apply([op("create", instance="vm1", flavor="small", host="host1")])
    s.apply([op("migrate", instance="vm1", host="host2")])
    # pause right after the migration's status is saved (its 2nd save; the API saved the 1st)
    s.apply([op(action, instance="vm1"), op("audit", host=audited)], FixedDelays({(0, "nova.migration.save:after", 1): 1}))


@pytest.mark.parametrize(
    "fault, action, audited, invariant",
    [
        ("lp1879878-confirm", "confirm", "host1", "no-negative-usage"),
        ("lp1879878-revert", "revert", "host2", "usage-matches-oracle"),
    ],
)
def test_lp1879878(fault: str, action: str, audited: str, invariant: str) -> None:
    with session(fault) as s:
        with pytest.raises(Finding) as finding:
            _confirm_or_revert_racing_audit(s, action, audited)
        assert finding.value.invariant == invariant
    with session() as s:
        _confirm_or_revert_racing_audit(s, action, audited)


# Nova's open races (docs/findings.md): the target fixes them by default, and
# each nova-open-* switch brings Nova's own code back.


def _revert_racing_audit(s: Session, audited: str) -> None:
    """vm1 resized host1 -> host2 and reverted; the audit runs just after the destination drops its claim."""
    s.apply([op("create", instance="vm1", flavor="small", host="host1")])
    s.apply([op("resize", instance="vm1", flavor="medium", host="host2")])
    s.apply(
        [op("revert", instance="vm1"), op("audit", host=audited)],
        FixedDelays({(0, "lock:compute_resources:release", 0): 1}),
    )


@pytest.mark.parametrize(
    "audited, message",
    [
        ("host1", "host1 vcpus: tracked 0, but the database's instances and migrations imply 1"),  # forgotten
        ("host2", "host2 vcpus: tracked 2, but the database's instances and migrations imply 0"),  # kept
    ],
)
def test_nova_open_revert_window_swaps_usage_between_the_hosts(audited: str, message: str) -> None:
    finding = finding_of(functools.partial(_revert_racing_audit, audited=audited), "nova-open-revert-window")
    assert finding.invariant == "usage-matches-oracle"
    assert message in str(finding)


@pytest.mark.parametrize("audited", ["host1", "host2"])
def test_the_target_reverts_with_the_move_back_by_default(audited: str) -> None:
    with session() as s:
        _revert_racing_audit(s, audited)  # raises Finding if an invariant breaks
        observed = s.target.observe()
        assert observed.servers["vm1"] == {"host": "host1", "vm_state": "active", "task_state": None}
        assert observed.usage["host1"]["vcpus"] == 1 and observed.usage["host2"]["vcpus"] == 0


def _delete_after_cross_host_move(s: Session) -> None:
    """A PCI instance migrated to host2, confirmed and deleted with no audit of host2 in between."""
    s.apply([op("create", instance="vm1", flavor="pci", host="host1")])
    s.apply([op("migrate", instance="vm1", host="host2")])
    s.apply([op("confirm", instance="vm1")])
    s.apply([op("delete", instance="vm1")])


def _delete_after_same_host_resize(s: Session) -> None:
    """An instance resized on its own host (small to medium), confirmed and deleted with no audit."""
    s.apply([op("create", instance="vm2", flavor="small", host="host1")])
    s.apply([op("resize", instance="vm2", flavor="medium", host="host1")])
    s.apply([op("confirm", instance="vm2")])
    s.apply([op("delete", instance="vm2")])


def _delete_racing_audit(s: Session) -> None:
    """A PCI instance's delete pauses after its vm_state=deleted save (its 2nd instance.save)
    while an audit of its host runs: the audit stops tracking it, and spares its device."""
    s.apply([op("create", instance="vm3", flavor="pci", host="host1")])
    s.apply(
        [op("delete", instance="vm3"), op("audit", host="host1")],
        FixedDelays({(0, "nova.instance.save:after", 1): 10}),
    )


@pytest.mark.parametrize(
    "scenario, message",
    [
        (_delete_after_cross_host_move, "host2 vcpus: tracked 1, but the database's instances and migrations imply 0"),
        (_delete_after_same_host_resize, "host1 vcpus: tracked 2, but the database's instances and migrations imply 0"),
    ],
    ids=["cross-host", "same-host"],
)
def test_nova_open_delete_after_move_keeps_a_deleted_instance_counted(scenario, message: str) -> None:  # type: ignore[no-untyped-def]
    with session("nova-open-delete-after-move") as s:
        with pytest.raises(Finding) as finding:
            scenario(s)
    assert finding.value.invariant == "usage-matches-oracle"
    assert message in str(finding.value)


def test_nova_open_delete_pci_leak_leaves_the_device_to_a_deleted_instance() -> None:
    with session("nova-open-delete-pci-leak") as s:
        with pytest.raises(Finding) as finding:
            _delete_racing_audit(s)
        uuid = s.target.env.deleted_instances()[0]
    assert finding.value.invariant == "terminal-holds-nothing"
    assert f"{uuid} is finished but still owns PCI device 0000:81:00.0 on host1" in str(finding.value)


#: A cold migration host1 -> host2 pauses inside prep_resize's claim on host2 (after its 3rd
#: instance.save) while a delete of the instance runs to the end on host1.
DELETE_TO_THE_END = {(0, "nova.instance.save:after", 2): 10}
#: The same pause, but the delete pauses too, once it removed the instance's allocations and
#: before it destroys the row (seed-23 campaign): the migration's error handler then saves the
#: instance ``error`` over the delete's ``deleted``.
DELETE_BEFORE_THE_DESTROY = {
    (0, "nova.instance.save:before", 2): 1,
    (1, "nova.placement.delete_allocation_for_instance:after", 0): 1,
}
DELETE_SCHEDULES = pytest.mark.parametrize(
    "schedule", [DELETE_TO_THE_END, DELETE_BEFORE_THE_DESTROY], ids=["delete-first", "delete-around-the-revert"]
)


def _delete_racing_migration(s: Session, schedule: dict[tuple[int, str, int], int] = DELETE_TO_THE_END) -> str:
    """A cold migration racing a delete: the migration fails on the deleted (or deleting)
    instance, and resize_instance on host1 reverts the migration's allocation to it."""
    s.apply([op("create", instance="vm1", flavor="medium", host="host1")])
    uuid = s.target.uuids["vm1"]
    s.apply([op("migrate", instance="vm1", host="host2"), op("delete", instance="vm1")], FixedDelays(schedule))
    return uuid


@DELETE_SCHEDULES
def test_nova_open_delete_mid_move_leaves_the_source_allocation_to_the_deleted_instance(
    schedule: dict[tuple[int, str, int], int],
) -> None:
    with session("nova-open-delete-mid-move") as s:
        with pytest.raises(Finding) as finding:
            _delete_racing_migration(s, schedule)
        env = s.target.env
        uuid = env.deleted_instances()[0]
        held = {"host1": {"VCPU": 2, "MEMORY_MB": 1024, "DISK_GB": 2}}
        assert {host: dict(r) for host, r in s.target.observe().allocations[uuid].items()} == held
        (migration,) = s.target._migrations()
        assert migration.status == "error" and env.allocations(migration.uuid) == {}
        env.audit("host1")  # the source's next audit heals it (_remove_deleted_instances_allocations)
        assert uuid not in s.target.observe().allocations
    assert finding.value.invariant == "terminal-holds-nothing"
    assert f"{uuid} is finished but still holds allocations {held}" in str(finding.value)


def _delete_racing_revert(s: Session, host: str) -> None:
    """vm2 resized small -> medium onto ``host``, then reverted; the revert pauses after
    drop_move_claim_at_dest released its first lock (with the revert-window fix, the
    destination's, across hosts: the delete then waits for the source's, released next)
    and the delete gets in, so finish_revert_resize then fails on the deleted instance
    before it reverts the allocation."""
    s.apply([op("create", instance="vm2", flavor="small", host="host1")])
    s.apply([op("resize", instance="vm2", flavor="medium", host=host)])
    s.apply(
        [op("revert", instance="vm2"), op("delete", instance="vm2")],
        FixedDelays({(0, "lock:compute_resources:release", 0): 10}),
    )


@pytest.mark.parametrize("host", ["host2", "host1"], ids=["cross-host", "same-host"])
def test_nova_open_delete_mid_move_leaves_a_reverted_migrations_allocation_for_good(host: str) -> None:
    with session("nova-open-delete-mid-move") as s:
        with pytest.raises(Finding) as finding:
            _delete_racing_revert(s, host)
        (migration,) = s.target._migrations()
        held = {"host1": {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}
        assert s.target.observe().allocations[migration.uuid] == held
        for audited in ("host1", host):  # no audit frees it: Nova's audit skips a migration in error
            s.target.env.audit(audited)
        assert migration.status == "error" and s.target.observe().allocations[migration.uuid] == held
    assert finding.value.invariant == "terminal-holds-nothing"
    assert f"{migration.uuid} is finished but still holds allocations {held}" in str(finding.value)


@DELETE_SCHEDULES
def test_the_target_fixes_delete_mid_move_by_default(schedule: dict[tuple[int, str, int], int]) -> None:
    with session() as s:
        uuid = _delete_racing_migration(s, schedule)  # raises Finding if an invariant breaks
        observed = s.target.observe()
        (migration,) = s.target._migrations()
        assert migration.status == "error"
        assert uuid in s.target.env.deleted_instances()
        assert observed.allocations == {}
        assert observed.usage == {"host1": RESERVED_ONLY, "host2": RESERVED_ONLY}


RESERVED_ONLY = {"vcpus": 0, "memory_mb": 512, "disk_gb": 0, "pci_devices": 0}


def _delete_racing_resize(s: Session, host: str = "host2", saves: int = 5) -> StepResult:
    """Seed 26 of a campaign (``host`` host2, 5 saves): a resize host1 -> host2 pauses before its 6th instance
    save (finish_resize's first, after resize_instance saved the instance on host2, the old flavor still its
    own) and the delete runs on host2; finish_resize then fails on the destroyed instance.  Pausing before
    the 7th save instead, finish_resize has switched the flavor and marked the migration finished, but not
    the instance resized, so the delete does not confirm the resize first."""
    s.apply([op("create", instance="vm1", flavor="small", host="host1")])
    return s.apply(
        [op("resize", instance="vm1", flavor="medium", host=host), op("delete", instance="vm1")],
        FixedDelays({(0, "nova.instance.save:before", saves): 1}),
    )


def test_nova_open_delete_mid_move_leaves_both_hosts_counting_the_deleted_instance() -> None:
    """The destination keeps the resize's claim (the new flavor), the source the instance (the old one)."""
    finding = finding_of(_delete_racing_resize, "nova-open-delete-mid-move")
    assert finding.invariant == "usage-matches-oracle"
    assert "host1 vcpus: tracked 1, but" in str(finding) and "host2 vcpus: tracked 2, but" in str(finding)


@pytest.mark.parametrize(
    "host, saves", [("host2", 5), ("host2", 6), ("host1", 6)],
    ids=["seed-26", "finished", "same-host-finished"],
)
def test_the_target_drops_the_claims_of_a_resize_a_delete_destroyed_by_default(host: str, saves: int) -> None:
    """Seed 26 first.  When the target ran casts as calls, finish_resize's failure came back through the casts
    into prep_resize's claim context, which dropped host2's claim a second time (host2's vCPUs at -1)."""
    with session() as s:
        # raises Finding if an invariant breaks
        resize, delete = _delete_racing_resize(s, host, saves).outcomes
        assert isinstance(resize.error, s.target.rejections) and delete.error is None
        assert "InstanceNotFound" in str(resize.error)
        observed = s.target.observe()
        assert observed.allocations == {}
        assert observed.usage == {"host1": RESERVED_ONLY, "host2": RESERVED_ONLY}


@pytest.mark.parametrize("host", ["host2", "host1"], ids=["cross-host", "same-host"])
def test_the_target_fixes_delete_mid_revert_by_default(host: str) -> None:
    with session() as s:
        _delete_racing_revert(s, host)  # raises Finding if an invariant breaks
        observed = s.target.observe()
        assert observed.allocations == {}
        assert observed.usage == {"host1": RESERVED_ONLY, "host2": RESERVED_ONLY}


def test_the_target_fixes_novas_open_races_by_default() -> None:
    """The same three scenarios with no switch on: nothing stays counted or allocated."""
    with session() as s:
        _delete_after_cross_host_move(s)
        _delete_after_same_host_resize(s)
        _delete_racing_audit(s)  # each step raises Finding if an invariant breaks
        observed = s.target.observe()
        reserved = {"vcpus": 0, "memory_mb": 512, "disk_gb": 0, "pci_devices": 0}
        assert observed.usage == {"host1": reserved, "host2": reserved}
        assert observed.pci_owners == {"host1": {}, "host2": {}}
        assert s.target.env.counters()[1] == {"host1": {}, "host2": {}}


def test_open_race_switches_restore_novas_methods() -> None:
    """A switch leaves its fix out, so Nova's own method runs; cleanup restores every method."""
    from stateful.targets.nova_faults import _KEPT_OPEN, OPEN_RACE_FIXES, OpenRaceFixes, _nova_method  # threading

    from nova.compute.resource_tracker import ResourceTracker  # noqa: I100

    patched = {method for fixes in OPEN_RACE_FIXES.values() for method, _ in fixes}
    revert = "nova.compute.manager.ComputeManager._revert_allocation"
    conductor_revert = "nova.conductor.tasks.migrate.revert_allocation_for_migration"
    deletion = "nova.compute.manager.ComputeManager._delete_instance"
    finish_revert = "nova.compute.manager.ComputeManager.finish_revert_resize"
    conductor_replace = "nova.conductor.tasks.migrate.replace_allocation_with_migration"
    mid_move = {deletion, finish_revert, revert, conductor_revert, conductor_replace}
    move_allocations = "nova.scheduler.client.report.SchedulerReportClient.move_allocations"
    evacuated = "delete_allocation_for_evacuated_instance"
    rt_methods = {
        "update_usage", "_drop_move_claim", "_update_usage_from_instances", "_update_usage_from_migration", evacuated,
        "drop_move_claim_at_dest",
    }
    in_resize_state = "nova.compute.resource_tracker._instance_in_resize_state"
    api_evacuate = "nova.compute.api.API.evacuate"
    rollback = {
        "nova.compute.manager.ComputeManager._rollback_live_migration",
        "nova.compute.manager.ComputeManager.drop_move_claim_at_destination",
    }
    assert patched == rt_methods | {move_allocations, in_resize_state, api_evacuate} | mid_move | rollback
    nova = {method: _nova_method(method) for method in patched}
    assert nova["update_usage"] is ResourceTracker.update_usage

    def methods_kept(*switches: str) -> set[str]:
        faults = select_faults("nova", list(switches))
        with contextlib.ExitStack() as stack:
            for fault in faults:
                stack.enter_context(fault.fixture())
            with OpenRaceFixes():
                return {m for m in patched if _nova_method(m) is nova[m]}

    assert methods_kept() == set()
    # update_usage keeps the PCI fix
    assert methods_kept("nova-open-delete-after-move") == {"_drop_move_claim", "_update_usage_from_instances"}
    assert methods_kept("nova-open-delete-pci-leak") == set()
    assert methods_kept("nova-open-delete-mid-move") == mid_move
    assert methods_kept("nova-open-move-racing-delete") == set()  # the residue's fix wraps it too
    residue = "nova-open-move-carries-evacuation-residue"
    assert methods_kept("nova-open-move-racing-delete", residue) == {move_allocations}
    assert methods_kept("nova-open-double-evacuation") == {evacuated, api_evacuate}
    assert methods_kept("nova-open-evacuation-active-early") == {in_resize_state}
    assert methods_kept("nova-open-unscheduled-error-migration") == {"_update_usage_from_migration"}
    assert methods_kept("nova-open-revert-window") == {"drop_move_claim_at_dest"}
    assert methods_kept("nova-open-live-migration-rollback-window") == rollback
    with select_faults("nova", ["lp1879878-revert"])[0].fixture():  # it replaces the method the fix wraps
        assert "nova-open-revert-window" in _KEPT_OPEN
    assert methods_kept("nova-open-delete-after-move", "nova-open-delete-pci-leak") == {
        "update_usage", "_drop_move_claim", "_update_usage_from_instances",
    }
    assert methods_kept(*OPEN_RACE_FIXES) == patched
    assert all(_nova_method(m) is nova[m] for m in patched)


def test_counters_read_the_same_records_as_novas_objects() -> None:
    """observe_counters reads the cell database directly; it must see what Nova's objects see."""
    from nova import objects

    with session() as s:
        s.apply([op("create", instance="vm1", flavor="pci", host="host1")])
        s.apply([op("migrate", instance="vm1", host="host2")])  # a PCI device on each host
        target = s.target
        counters = target.observe_counters()
        ctx = target._ctx()
        for host in target.hosts:
            node = objects.ComputeNode.get_by_nodename(ctx, host)
            owners: dict[str, list[str]] = {}
            for device in objects.PciDeviceList.get_by_compute_node(ctx, node.id):
                if device.status in ("claimed", "allocated") and device.instance_uuid:
                    owners.setdefault(device.address, []).append(device.instance_uuid)
            assert counters.usage[host] == {
                "vcpus": node.vcpus_used,
                "memory_mb": node.memory_mb_used,
                "disk_gb": node.local_gb_used,
                "pci_devices": sum(len(uuids) for uuids in owners.values()),
            }
            assert counters.pci_owners[host] == owners
        uuid = target.uuids["vm1"]
        assert counters.pci_owners == {"host1": {"0000:81:00.0": [uuid]}, "host2": {"0000:81:00.0": [uuid]}}


def test_only_the_resource_trackers_lock_is_a_delay_site() -> None:
    """Nova's other locks park a task that would wait, but draw no delay (QuietLocks)."""
    with session("lp1896463") as s:
        with pytest.raises(Finding):
            _evacuate_racing_audit(s)
        lock_sites = {e.site for e in s.recording.traces[-1] if e.kind == "reach" and e.site.startswith("lock:")}
    assert lock_sites == {"lock:compute_resources:acquire", "lock:compute_resources:release"}


def test_an_instance_evacuates_back_to_the_host_it_live_migrated_from() -> None:
    """The fake hypervisor forgets a live-migrated guest on its source, as a real one does.

    Found by a campaign: with the guest left behind, the evacuation's spawn on
    the old host raised InstanceExists.
    """
    with session() as s:
        s.apply([op("create", instance="vm1", flavor="medium", host="host1")])
        s.apply([op("live_migrate", instance="vm1", host="host2")])
        s.apply([op("host_down", host="host2")])
        s.apply([op("evacuate", instance="vm1", host="host1")])  # raises Finding on an error
        assert s.target.observe().servers["vm1"]["host"] == "host1"
        assert_consistent(s.target)


def test_two_deletes_of_one_instance_at_once_are_no_harness_error() -> None:
    """Found by a campaign: the second delete to finish forgot an instance the first had already forgotten."""
    with session() as s:
        s.apply([op("create", instance="vm1", flavor="pci", host="host1")])
        s.apply([op("resize", instance="vm1", flavor="large", host="host2")])
        # the first delete pauses before its last allocation delete; the second runs meanwhile
        pause = FixedDelays({(0, "nova.placement.delete_allocation_for_instance:before", 2): 1})
        s.apply([op("delete", instance="vm1"), op("delete", instance="vm1")], pause)  # raises Finding on an error
        assert "vm1" not in s.target.observe().servers


def _resize_racing_delete(s: Session) -> StepResult:
    s.apply([op("create", instance="vm1", flavor="small", host="host1")])
    # the conductor reads the instance's allocation and pauses; the delete runs
    # to its end; then move_allocations reads the (now empty) source consumer
    pause = FixedDelays({(0, "nova.placement.get_allocs_for_consumer:after", 0): 2})
    return s.apply([op("resize", instance="vm1", flavor="medium", host="host2"), op("delete", instance="vm1")], pause)


def test_nova_open_move_racing_delete_fails_the_resize_with_a_key_error() -> None:
    finding = finding_of(_resize_racing_delete, "nova-open-move-racing-delete")
    assert finding.invariant == "no-unexpected-error"
    assert "KeyError" in str(finding)


def _migrate_overtaken_by_a_delete(s: Session) -> StepResult:
    s.apply([op("create", instance="vm1", flavor="medium", host="host2")])
    # the conductor pauses before reading the instance's allocation; the delete runs to its end
    pause = FixedDelays({(0, "nova.placement.get_allocs_for_consumer:before", 0): 1})
    return s.apply([op("migrate", instance="vm1", host="host1"), op("delete", instance="vm1")], pause)


def test_nova_open_delete_mid_move_lets_the_scheduler_claim_for_a_deleted_instance() -> None:
    finding = finding_of(_migrate_overtaken_by_a_delete, "nova-open-delete-mid-move")
    assert finding.invariant == "terminal-holds-nothing"
    assert "still holds allocations {'host1'" in str(finding)


def test_a_migrate_that_a_delete_overtook_before_its_first_read_is_refused() -> None:
    with session() as s:
        migrate, delete = _migrate_overtaken_by_a_delete(s).outcomes  # raises Finding if an invariant breaks
        assert isinstance(migrate.error, s.target.rejections) and delete.error is None
        assert s.target.observe().allocations == {}


def test_a_resize_that_a_delete_overtook_is_refused_with_the_fix() -> None:
    with session() as s:
        # raises Finding on an unexpected error: the resize's error here is a refusal
        resize, delete = _resize_racing_delete(s).outcomes
        assert resize.error is not None and delete.error is None
        assert "vm1" not in s.target.observe().servers
        assert_consistent(s.target)


def test_an_instance_evacuated_twice_leaves_nothing_on_the_middle_host_once_it_restarts() -> None:
    """Found by a campaign: the oracle kept a done evacuation's destination, which the instance had left."""
    with Session(target_factory("nova")(), example_topology(3)) as s:
        s.apply([op("create", instance="vm1", flavor="medium", host="host1")])
        s.apply([op("host_down", host="host1")])
        s.apply([op("evacuate", instance="vm1", host="host2")])
        s.apply([op("host_down", host="host2")])
        s.apply([op("evacuate", instance="vm1", host="host3")])
        s.apply([op("host_up", host="host2")])  # raises Finding if an invariant breaks
        uuid = s.target.uuids["vm1"]
        assert sorted(s.target.observe().allocations[uuid]) == ["host1", "host3"]  # host1 has not restarted


def _migrate_evacuated_then_revert_after_restart(s: Session) -> None:
    s.apply([op("create", instance="vm1", flavor="small", host="host1")])
    s.apply([op("resize", instance="vm1", flavor="medium", host="host3")])
    s.apply([op("confirm", instance="vm1")])
    s.apply([op("host_down", host="host3")])
    s.apply([op("evacuate", instance="vm1", host="host2")])  # leaves its residue on host3 until it restarts
    s.apply([op("migrate", instance="vm1", host="host1")])
    s.apply([op("host_up", host="host3")])
    s.apply([op("revert", instance="vm1")])


def test_nova_open_move_carries_evacuation_residue_hands_the_down_hosts_allocation_to_the_migration() -> None:
    finding = finding_of(_migrate_evacuated_then_revert_after_restart, "nova-open-move-carries-evacuation-residue",
                         hosts=3)
    assert finding.invariant == "placement-matches-oracle"
    assert "after migrate(vm1, host1)" in str(finding)


def test_a_reverted_migration_of_an_evacuated_instance_leaves_nothing_on_the_restarted_host() -> None:
    """Found by a campaign: with Nova's move, the revert gives host3's cleaned-up residue back for good."""
    with session(hosts=3) as s:
        _migrate_evacuated_then_revert_after_restart(s)  # raises Finding if an invariant breaks
        for host in ("host1", "host2", "host3"):
            s.apply([op("audit", host=host)])
        assert s.target.observe().allocations == {s.target.uuids["vm1"]: {"host2": {"VCPU": 2, "MEMORY_MB": 1024,
                                                                                     "DISK_GB": 2}}}


def test_a_resize_of_an_evacuated_instance_leaves_the_old_flavor_on_the_down_host() -> None:
    """Found by a campaign: the oracle expected the evacuation's residue in the instance's new flavor."""
    small, large = {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}, {"VCPU": 4, "MEMORY_MB": 2048, "DISK_GB": 4}
    with session(hosts=3) as s:
        s.apply([op("create", instance="vm1", flavor="small", host="host1")])
        s.apply([op("host_down", host="host1")])
        s.apply([op("evacuate", instance="vm1", host="host2")])
        s.apply([op("resize", instance="vm1", flavor="large", host="host3")])  # raises Finding if wrong
        s.apply([op("confirm", instance="vm1")])
        uuid = s.target.uuids["vm1"]
        assert s.target.observe().allocations[uuid] == {"host1": small, "host3": large}
        s.apply([op("host_up", host="host1")])
        assert s.target.observe().allocations[uuid] == {"host3": large}


def _evacuate_onto_a_refused_migrations_source(s: Session) -> None:
    s.apply([op("create", instance="vm1", flavor="medium", host="host1")])
    s.apply([op("live_migrate", instance="vm1", host="host2")])
    s.apply([op("create", instance="vm2", flavor="medium", host="host1")])
    (refused,) = s.apply([op("migrate", instance="vm1", host="host1")]).outcomes  # host1 is full
    assert isinstance(refused.error, s.target.rejections)  # ...and leaves a migration in error, no destination
    s.apply([op("delete", instance="vm2")])
    s.apply([op("live_migrate", instance="vm1", host="host1")])
    s.apply([op("host_down", host="host1")])
    # host2's audit holds the lock before reading its instances; the
    # evacuation saves task_state=rebuilding and waits for the lock to claim
    s.apply(
        [op("audit", host="host2"), op("evacuate", instance="vm1", host="host2")],
        FixedDelays({(0, "nova.instance_list.get_by_host_and_node:before", 0): 6,
                     (1, "nova.placement.get_allocs_for_consumer:before", 0): 3}),
    )


def small_host1_session(*switches: str) -> Session:
    topology = example_topology(2)
    topology["hosts"][0]["vcpus"] = 3  # room for one medium instance
    return Session(target_factory("nova")(), topology, select_faults("nova", list(switches)))


def test_nova_open_unscheduled_error_migration_counts_the_evacuated_instance_twice() -> None:
    with small_host1_session("nova-open-unscheduled-error-migration") as s:
        with pytest.raises(Finding) as finding:
            _evacuate_onto_a_refused_migrations_source(s)
    assert finding.value.invariant == "usage-matches-oracle"
    assert "host2 vcpus: tracked 4" in str(finding.value)


def test_the_target_skips_a_migration_that_never_had_a_destination() -> None:
    with small_host1_session() as s:
        _evacuate_onto_a_refused_migrations_source(s)  # raises Finding if an invariant breaks
        assert s.target.observe().usage["host2"]["vcpus"] == 2


def _evacuate_twice(s: Session, destinations: tuple[str, str], schedule: dict[tuple[int, str, int], int]) -> StepResult:
    """vm1 created on host1, host1 down, then two evacuations of vm1 at once."""
    s.apply([op("create", instance="vm1", flavor="small", host="host1")])
    s.apply([op("host_down", host="host1")])
    return s.apply([op("evacuate", instance="vm1", host=host) for host in destinations], FixedDelays(schedule))


def the_one_refusal(s: Session, result: StepResult) -> str:
    """The error of the one operation of ``result`` that Nova refused (there must be exactly one)."""
    refused = [outcome.error for outcome in result.outcomes if outcome.error is not None]
    assert len(refused) == 1 and isinstance(refused[0], s.target.rejections)
    return str(refused[0])


def test_of_two_evacuations_loaded_at_once_the_target_accepts_one() -> None:
    """The first pauses before its API save; the second loads the idle instance, saves first and pauses."""
    with session() as s:
        schedule = {(0, "nova.instance.save:before", 0): 1, (1, "nova.instance.save:after", 0): 5}
        result = _evacuate_twice(s, ("host2", "host2"), schedule)  # raises Finding if an invariant breaks
        assert "UnexpectedTaskStateError" in the_one_refusal(s, result)
        assert s.target.observe().servers["vm1"]["host"] == "host2"


def _evacuate_again_before_finish_evacuation(s: Session) -> StepResult:
    """The first evacuation pauses after its rebuild's active save; the second one's request comes in then."""
    return _evacuate_twice(s, ("host2", "host2"), {(0, "nova.instance.save:before", 6): 1})


def test_nova_open_double_evacuation_spawns_the_guest_twice_after_the_active_save() -> None:
    finding = finding_of(_evacuate_again_before_finish_evacuation, "nova-open-double-evacuation")
    assert finding.invariant == "no-unexpected-error"
    assert "InstanceExists" in str(finding)


def test_the_target_refuses_to_evacuate_an_instance_whose_evacuation_is_under_way() -> None:
    with session() as s:
        result = _evacuate_again_before_finish_evacuation(s)  # raises Finding if an invariant breaks
        assert result.outcomes[0].error is None and "evacuation under way" in the_one_refusal(s, result)
        assert s.target.observe().servers["vm1"]["host"] == "host2"


@pytest.mark.parametrize(
    "first_pauses, refusal",
    [
        ({(0, "nova.instance.save:before", 6): 50}, "evacuation under way"),  # after its rebuild's active save
        ({}, "evacuated meanwhile"),  # the first one ends
    ],
)
def test_a_request_that_checked_before_another_evacuation_saved_is_refused_after_its_own_save(
    first_pauses: dict[tuple[int, str, int], int], refusal: str
) -> None:
    """The second request checks, then pauses before its save until the first evacuation's task is None again.

    The compare-and-swap alone passes; the check after the save sees the
    first evacuation, puts the task back and refuses.
    """
    with session(hosts=3) as s:
        schedule = {(0, "nova.instance.save:before", 0): 3, (1, "nova.instance.save:before", 0): 10, **first_pauses}
        result = _evacuate_twice(s, ("host2", "host3"), schedule)  # raises Finding if an invariant breaks
        assert refusal in the_one_refusal(s, result)
        server = s.target.observe().servers["vm1"]
        assert (server["host"], server["task_state"]) == ("host2", None)


def test_a_rejected_live_migration_leaves_the_other_ones_rollback_armed() -> None:
    """Found by a campaign: the rejected operation disarmed the accepted one's hypervisor failure (a harness bug).

    The first rollback pauses inside its conductor's move_allocations; the
    second, on the same instance, is rejected (task_state migrating).  The
    first must still fail in the hypervisor and roll back.
    """
    with session(hosts=3) as s:
        s.apply([op("create", instance="vm1", flavor="large", host="host3")])
        first, second = s.apply(
            [op("live_migrate_rollback", instance="vm1", host="host1"),
             op("live_migrate_rollback", instance="vm1", host="host2")],
            FixedDelays({(0, "nova.placement.get_allocs_for_consumer:after", 2): 1}),
        ).outcomes  # raises Finding if an invariant breaks
        assert first.error is None and isinstance(second.error, s.target.rejections)
        assert s.target.observe().servers["vm1"]["host"] == "host3"


def test_a_rejected_resize_leaves_the_other_ones_destination() -> None:
    """Review of the same-instance rule: a second resize of the instance redirected the first (a harness bug).

    Nova's resize API takes no host, so the target names the destination to
    the scheduler.  The first resize pauses in its conductor before
    scheduling; the second, to another host, is rejected (task_state
    resize_prep).  The first must still land on its own destination.
    """
    with session(hosts=3) as s:
        s.apply([op("create", instance="vm1", flavor="small", host="host1")])
        first, second = s.apply(
            [op("resize", instance="vm1", flavor="medium", host="host2"),
             op("resize", instance="vm1", flavor="large", host="host3")],
            FixedDelays({(0, "nova.placement.get_allocs_for_consumer:after", 0): 1}),
        ).outcomes  # raises Finding if an invariant breaks
        assert first.error is None and isinstance(second.error, s.target.rejections)
        server = s.target.observe().servers["vm1"]
        assert (server["host"], server["vm_state"]) == ("host2", "resized")


def test_a_live_migration_overtaken_by_a_delete_still_ends_with_the_destinations_audit() -> None:
    """Found by a campaign (seed 18): the operation skipped its closing audit when the instance was gone.

    The live migration pauses at the source's PCI free; an audit of the
    destination counts the incoming migration, and a delete ends meanwhile.
    The destination's periodic audit runs whatever became of the migration.
    """
    with session() as s:
        s.apply([op("create", instance="vm1", flavor="small", host="host1")])
        s.apply(
            [op("live_migrate", instance="vm1", host="host2"), op("audit", host="host2"), op("delete", instance="vm1")],
            FixedDelays({(0, "lock:compute_resources:acquire", 1): 1}),
        )  # raises Finding if an invariant breaks
        assert s.target.observe().usage["host2"]["vcpus"] == 0


def _live_migration_rolled_back_racing_audit(s: Session) -> None:
    """The rollback pauses just before it drops the migration context; the destination's audit runs then."""
    s.apply([op("create", instance="vm1", flavor="small", host="host1")])
    s.apply(
        [op("live_migrate_rollback", instance="vm1", host="host2"), op("audit", host="host2")],
        FixedDelays({(0, "nova.instance.drop_migration_context:before", 0): 1}),
    )


def test_nova_open_live_migration_rollback_window_leaves_the_destination_counting_the_instance() -> None:
    finding = finding_of(_live_migration_rolled_back_racing_audit, "nova-open-live-migration-rollback-window")
    assert finding.invariant == "usage-matches-oracle"
    assert "host2 vcpus: tracked 1, but the database's instances and migrations imply 0" in str(finding)


def test_the_target_tells_the_destination_after_a_rollback_by_default() -> None:
    with session() as s:
        _live_migration_rolled_back_racing_audit(s)  # raises Finding if an invariant breaks
        assert s.target.observe().usage["host2"]["vcpus"] == 0


def test_a_down_hosts_pci_devices_wait_for_its_restart() -> None:
    """An instance evacuated from a down host, then deleted, keeps its device there until the host restarts."""
    with session() as s:
        s.apply([op("create", instance="vm1", flavor="pci", host="host1")])
        s.apply([op("host_down", host="host1")])
        s.apply([op("evacuate", instance="vm1", host="host2")])
        s.apply([op("audit", host="host2")])
        uuid = s.target.uuids["vm1"]
        s.apply([op("delete", instance="vm1")])  # raises Finding if an invariant breaks
        records = dict(s.target._counters()[1])
        assert records["host1"] == {"0000:81:00.0": [uuid]}  # still Nova's record...
        assert "host1" not in s.target.observe().pci_owners  # ...but a down host promises nothing
        s.apply([op("host_up", host="host1")])  # the restarted compute frees it
        assert s.target.observe().pci_owners["host1"] == {}


def test_a_confirm_racing_a_delete_recreates_instance_extra_without_warnings() -> None:
    """Nova's drop_migration_context after the instance was deleted inserts a second instance_extra row.

    ``instance_extra_update_by_uuid`` creates the row when no live one was
    updated.  The fuzzer's reads skip deleted instances' extra rows, so they
    no longer warn ``Multiple rows returned with uselist=False for ...
    Instance.extra`` (docs/findings.md).
    """
    import warnings

    with session() as s:
        s.apply([op("create", instance="vm1", flavor="small", host="host1")])
        s.apply([op("migrate", instance="vm1", host="host2")])
        uuid = s.target.uuids["vm1"]
        # the confirm pauses before dropping the migration context until the delete is done
        delays = FixedDelays({(0, "nova.instance.drop_migration_context:before", 0): 1000})
        try:
            s.apply([op("confirm", instance="vm1"), op("delete", instance="vm1")], delays)
        except Finding as finding:  # host2 still counts vm1 (Nova's code, nova-open-delete-after-move)
            assert finding.invariant == "usage-matches-oracle"
            assert "host2 vcpus: tracked 1" in finding.message
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="Multiple rows returned")
            s.target.observe()
            s.target.expected()
        rows = list(s.target.env.records.execute(
            "SELECT deleted != 0 FROM instance_extra WHERE instance_uuid = ? ORDER BY id", (uuid,)))
    assert rows == [(1,), (0,)]  # the deleted one, and the one the confirm inserted afterwards


@pytest.mark.nightly  # 70 s on CI; the nightly workflow also fuzzes Nova for an hour
def test_a_bounded_campaign_runs_without_harness_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A few seeded examples on real Nova: no harness error, and any finding replays as recorded."""
    from stateful.campaign import Campaign, CampaignOptions
    from stateful.regression import load
    from stateful.replay import replay_case

    options = CampaignOptions(
        target="nova", max_examples=3, seed=0, db="none", profile="ci",
        regressions=str(tmp_path), shrink_seconds=0,
    )
    report = Campaign(options).run()
    assert report.harness_errors == 0, report.harness_error_messages
    assert report.examples >= 1 and report.steps > 0
    for finding in report.findings:
        verdict = replay_case(load(finding.regression_file))
        assert verdict.as_recorded, verdict.message


def test_nova_logs_stay_off_stdout() -> None:
    """``fuzz --target nova --json`` prints the report alone: Nova's import-time log handler writes to stderr."""
    import logging
    import sys

    import stateful.targets.nova_env  # noqa: F401  (its import installs Nova's handler)

    streams = [getattr(h, "stream", None) for h in logging.getLogger().handlers]
    assert sys.stdout not in streams and sys.__stdout__ not in streams


def test_the_target_measures_how_long_its_operations_are() -> None:
    """The default schedule spreads its pauses over whole operations once it knows their lengths."""
    from stateful.target import OPERATIONS

    hints = target_factory("nova")().checkpoint_hints
    assert set(hints) == set(OPERATIONS)
    # an evacuation is deep: a pause in finish_evacuation (bug 1896463) must be reachable
    assert hints["evacuate"] > hints["audit"] > 0

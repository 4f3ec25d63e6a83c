"""Real Nova (in process) as a target: the accounting at each stage, and known races with their faults.

Skipped unless Nova is installed (the project's main venv has no Nova; run
these with the venv that has ``nova==34.*``).
"""

from __future__ import annotations

import pytest

pytest.importorskip("nova")

from stateful.targets import nova_env  # noqa: E402,F401  (threading mode before anything imports eventlet)

from stateful.errors import Finding  # noqa: E402
from stateful.faults import select_faults  # noqa: E402
from stateful.session import Session  # noqa: E402
from stateful.strategies import FixedDelays  # noqa: E402
from stateful.target import Op  # noqa: E402
from stateful.targets.nova import NovaTarget  # noqa: E402
from stateful.topology import example_topology  # noqa: E402


def op(name: str, **args: str) -> Op:
    return Op(name, args)


def session(*fault_names: str) -> Session:
    return Session(NovaTarget(), example_topology(), select_faults("nova", list(fault_names)))


def assert_consistent(target: NovaTarget) -> None:
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
        assert isinstance(outcome.error, NovaTarget.rejections)
        (outcome,) = s.apply([op("evacuate", instance="vm1", host="host2")]).outcomes  # host1 is up
        assert isinstance(outcome.error, NovaTarget.rejections)


# The evacuation of a PCI instance from a down host1 to host2, racing an audit
# of host2.  The evacuating task pauses at its instance.save inside
# finish_evacuation (its 9th instance.save); the audit then reads host2's
# instances (not yet including the instance) and pauses before reading the
# migrations while the evacuation finishes.
LP1896463_SCHEDULE = {
    (0, "nova.instance.save:before", 8): 1,
    (1, "nova.migration_list.get_in_progress_and_error:before", 0): 10,
}


def _evacuate_racing_audit(s: Session) -> None:
    s.apply([op("create", instance="vm1", flavor="pci", host="host1")])
    s.apply([op("host_down", host="host1")])
    s.apply(
        [op("evacuate", instance="vm1", host="host2"), op("audit", host="host2")],
        FixedDelays(LP1896463_SCHEDULE),
    )


def test_lp1896463_fault_frees_the_evacuated_instances_pci_device() -> None:
    with session("lp1896463") as s:
        with pytest.raises(Finding) as finding:
            _evacuate_racing_audit(s)
        assert finding.value.invariant == "usage-matches-oracle"
        assert "host2 pci_devices: tracked 0" in str(finding.value)


def test_lp1896463_fixed_nova_keeps_the_pci_device() -> None:
    with session() as s:
        _evacuate_racing_audit(s)  # raises Finding if any invariant breaks
        observed = s.target.observe()
        assert observed.usage["host2"]["pci_devices"] == 1
        assert observed.servers["vm1"]["host"] == "host2"
        # with the fix the audit had to wait for the evacuation to finish
        trace = s.recording.traces[-1]
        assert any(e.kind == "block" and e.task == 1 for e in trace)


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

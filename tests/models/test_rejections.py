"""What Nova refuses raises a models.errors.Rejected subclass and changes nothing."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import pytest

from models.errors import (
    CannotResizeToSameFlavor,
    ComputeHostNotFound,
    ComputeServiceInUse,
    FlavorNotFound,
    InstanceBusy,
    InstanceInvalidState,
    InstanceNotFound,
    MigrationNotFound,
    NoValidHost,
    Rejected,
    ServiceUnavailable,
    UnableToMigrateToSelf,
)
from models.records import Flavor
from models.service import Cloud
from models.topology import small_topology
from tests.models.helpers import Task, assert_consistent, cloud, errors, run_concurrently, snapshot


def rejected_without_change(c: Cloud, error: type[Rejected], operation: Callable[[], object]) -> None:
    before = snapshot(c)
    with pytest.raises(error):
        operation()
    assert snapshot(c) == before
    assert_consistent(c)


def test_rejections_are_rejected():
    for error in (
        CannotResizeToSameFlavor,
        ComputeHostNotFound,
        ComputeServiceInUse,
        FlavorNotFound,
        InstanceBusy,
        InstanceInvalidState,
        InstanceNotFound,
        MigrationNotFound,
        NoValidHost,
        ServiceUnavailable,
        UnableToMigrateToSelf,
    ):
        assert issubclass(error, Rejected)


def test_create_refusals():
    topology = small_topology()
    c = Cloud(replace(topology, flavors=topology.flavors + (Flavor("huge", 64, 512, 1),)))
    rejected_without_change(c, FlavorNotFound, lambda: c.create("no-such-flavor"))
    rejected_without_change(c, NoValidHost, lambda: c.create("huge"))
    rejected_without_change(c, ComputeHostNotFound, lambda: c.create("small", "host9"))
    c.set_host_down("host2", True)
    rejected_without_change(c, NoValidHost, lambda: c.create("small", "host2"))


def test_pci_and_pinned_capacity_is_placements():
    c = cloud()
    c.create("pci", "host1")
    c.create("pci", "host1")
    rejected_without_change(c, NoValidHost, lambda: c.create("pci", "host1"))
    c.create("pinned", "host2")
    c.create("pinned", "host2")
    rejected_without_change(c, NoValidHost, lambda: c.create("pinned", "host2"))


def test_move_refusals():
    c = cloud()
    uuid = c.create("medium", "host1")
    rejected_without_change(c, CannotResizeToSameFlavor, lambda: c.resize(uuid, "medium", "host2"))
    rejected_without_change(c, UnableToMigrateToSelf, lambda: c.migrate(uuid, "host1"))
    rejected_without_change(c, UnableToMigrateToSelf, lambda: c.live_migrate(uuid, "host1"))
    rejected_without_change(c, ComputeServiceInUse, lambda: c.evacuate(uuid, "host2"))
    rejected_without_change(c, InstanceInvalidState, lambda: c.confirm_resize(uuid))
    rejected_without_change(c, InstanceInvalidState, lambda: c.revert_resize(uuid))
    rejected_without_change(c, ComputeHostNotFound, lambda: c.migrate(uuid, "host9"))
    c.set_host_down("host2", True)
    rejected_without_change(c, NoValidHost, lambda: c.migrate(uuid, "host2"))
    c.set_host_down("host1", True)
    rejected_without_change(c, ServiceUnavailable, lambda: c.resize(uuid, "large"))
    rejected_without_change(c, ServiceUnavailable, lambda: c.update_available_resource("host1"))


def test_resized_instance_refusals():
    c = cloud()
    uuid = c.create("medium", "host1")
    c.resize(uuid, "large", "host2")
    rejected_without_change(c, InstanceInvalidState, lambda: c.resize(uuid, "small"))
    rejected_without_change(c, InstanceInvalidState, lambda: c.live_migrate(uuid, "host3"))
    c.set_host_down("host1", True)
    rejected_without_change(c, ServiceUnavailable, lambda: c.confirm_resize(uuid))
    rejected_without_change(c, ServiceUnavailable, lambda: c.revert_resize(uuid))
    rejected_without_change(c, ServiceUnavailable, lambda: c.delete(uuid))
    c.set_host_down("host1", False)
    c.confirm_resize(uuid)
    rejected_without_change(c, InstanceInvalidState, lambda: c.confirm_resize(uuid))
    rejected_without_change(c, InstanceInvalidState, lambda: c.revert_resize(uuid))


def test_deleted_instance_refusals():
    c = cloud()
    uuid = c.create("small", "host1")
    c.delete(uuid)
    for operation in (
        lambda: c.delete(uuid),
        lambda: c.resize(uuid, "medium"),
        lambda: c.migrate(uuid),
        lambda: c.confirm_resize(uuid),
        lambda: c.revert_resize(uuid),
        lambda: c.evacuate(uuid),
        lambda: c.live_migrate(uuid, "host2"),
    ):
        rejected_without_change(c, InstanceNotFound, operation)


def test_evacuation_refusals():
    c = cloud()
    uuid = c.create("small", "host1")
    c.set_host_down("host1", True)
    rejected_without_change(c, UnableToMigrateToSelf, lambda: c.evacuate(uuid, "host1"))
    c.set_host_down("host2", True)
    c.set_host_down("host3", True)
    rejected_without_change(c, NoValidHost, lambda: c.evacuate(uuid))
    c.set_host_down("host3", False)
    c.evacuate(uuid)
    # moved again before host1 came back to clean up: the model refuses
    rejected_without_change(c, InstanceInvalidState, lambda: c.live_migrate(uuid, "host2"))
    c.set_host_down("host1", False)
    c.live_migrate(uuid, "host1")
    assert_consistent(c)


def test_a_lost_compare_and_swap_is_a_rejection():
    """Two resizes of one instance at once: the one that checked first writes last and loses."""
    c = cloud()
    uuid = c.create("small", "host1")
    before = snapshot(c)
    result = run_concurrently(
        [
            ("resize", lambda: c.resize(uuid, "medium", "host2")),
            ("resize", lambda: c.resize(uuid, "large", "host3")),
        ],
        {(0, "db.instance.save", 0): 5},
    )
    first, second = errors(result)
    assert isinstance(first, InstanceInvalidState)
    assert second is None
    assert c.db.instances[uuid].flavor.name == "large"
    assert snapshot(c) != before
    assert_consistent(c)


def refused_while_in_flight(c: Cloud, first: Task, delayed_at: str, second: Task) -> None:
    """``first`` is held up at ``delayed_at``; ``second``, started meanwhile, finds the instance busy."""
    result = run_concurrently([first, second], {(0, delayed_at, 0): 5})
    first_error, second_error = errors(result)
    assert first_error is None
    assert isinstance(second_error, InstanceBusy)
    assert_consistent(c)


def test_confirming_twice_at_once():
    c = cloud()
    uuid = c.create("small", "host1")
    c.resize(uuid, "medium", "host2")
    confirm = ("confirm", lambda: c.confirm_resize(uuid))
    refused_while_in_flight(c, confirm, "compute.confirm_migration", confirm)


def test_confirm_and_revert_at_once():
    c = cloud()
    uuid = c.create("small", "host1")
    c.resize(uuid, "medium", "host2")
    refused_while_in_flight(
        c,
        ("revert", lambda: c.revert_resize(uuid)),
        "compute.destroy",
        ("confirm", lambda: c.confirm_resize(uuid)),
    )


def test_delete_refuses_while_another_operation_is_in_flight():
    c = cloud()
    uuid = c.create("small", "host1")
    refused_while_in_flight(
        c,
        ("resize", lambda: c.resize(uuid, "medium", "host2")),
        "compute.migrate_disk_and_power_off",
        ("delete", lambda: c.delete(uuid)),
    )

"""The embedded compute service: the facade the fuzzer drives, in the role of nova-api.

:class:`Cloud` builds one compute service per host of a :class:`Topology`,
a database, placement and a conductor.  Each public method is one API
operation run to its end in the calling thread (one scheduler task when run
concurrently); it raises a :class:`models.errors.Rejected` subclass where
Nova would refuse, before changing anything.

Gating is Nova's: a compare-and-swap on ``task_state`` (``expected_task_state``)
for the operations that set one, the migration's status for confirm and
revert.  The model's own restrictions, to stay on accounting paths:

* delete, confirm and revert overlap no other operation on the same instance
  (Nova lets a delete race with anything, and a confirm with a revert);
* the API's compare-and-swap also covers the vm_state and host it checked;
* an instance evacuated from a host that has not come back yet is not moved
  again (Nova would move the leftover source allocation along with it);
* a host does not come back while an evacuation from it, or the API's local
  delete of an instance on it, is still running (Nova's start-up would count
  the instance there, and mark the evacuation completed).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from models.conductor import Conductor
from models.db import Database
from models.errors import (
    CannotResizeToSameFlavor,
    ComputeHostNotFound,
    ComputeServiceInUse,
    FlavorNotFound,
    HostBusy,
    InstanceBusy,
    InstanceInvalidState,
    MigrationNotFound,
    NoValidHost,
    ServiceUnavailable,
    UnableToMigrateToSelf,
    UnexpectedTaskStateError,
)
from models.manager import ComputeManager
from models.placement import DISK_GB, MEMORY_MB, PCI_DEVICE, PCPU, VCPU, Inventory, Placement
from models.records import (
    ACTIVE,
    BUILDING,
    DELETED,
    DELETING,
    ERROR,
    EVACUATION,
    LIVE_MIGRATION,
    MIGRATING,
    REBUILDING,
    RESIZE_PREP,
    RESIZE_REVERTING,
    RESIZED,
    SCHEDULING,
    UNCLEANED_EVACUATION_STATUSES,
    ComputeNode,
    Flavor,
    Instance,
    Migration,
)
from models.topology import HostSpec, Topology

__all__ = ["Cloud", "Topology"]


def _compute_node(spec: HostSpec) -> ComputeNode:
    """The node record a first start creates; usage starts at the reserved amounts."""
    return ComputeNode(
        host=spec.name,
        hypervisor_hostname=spec.name,
        vcpus=spec.vcpus + len(spec.pinnable_cpus),
        memory_mb=spec.memory_mb,
        local_gb=spec.local_gb,
        cpu_allocation_ratio=spec.cpu_allocation_ratio,
        ram_allocation_ratio=spec.ram_allocation_ratio,
        disk_allocation_ratio=spec.disk_allocation_ratio,
        reserved_host_cpus=spec.reserved_host_cpus,
        reserved_host_memory_mb=spec.reserved_host_memory_mb,
        reserved_host_disk_gb=spec.reserved_host_disk_gb,
        pci_addresses=tuple(spec.pci_devices),
        pcpuset=frozenset(spec.pinnable_cpus),
        vcpus_used=spec.reserved_host_cpus,
        memory_mb_used=spec.reserved_host_memory_mb,
        local_gb_used=spec.reserved_host_disk_gb,
    )


def _inventories(spec: HostSpec) -> dict[str, Inventory]:
    return {
        VCPU: Inventory(spec.vcpus, spec.reserved_host_cpus, spec.cpu_allocation_ratio),
        PCPU: Inventory(len(spec.pinnable_cpus)),
        MEMORY_MB: Inventory(spec.memory_mb, spec.reserved_host_memory_mb, spec.ram_allocation_ratio),
        DISK_GB: Inventory(spec.local_gb, spec.reserved_host_disk_gb, spec.disk_allocation_ratio),
        PCI_DEVICE: Inventory(len(spec.pci_devices)),
    }


class Cloud:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.flavors: dict[str, Flavor] = {flavor.name: flavor for flavor in topology.flavors}
        self.hosts: dict[str, HostSpec] = {spec.name: spec for spec in topology.hosts}
        self.db = Database()
        self.placement = Placement()
        #: host -> whether its compute service is down (forced down)
        self.down: dict[str, bool] = {}
        for spec in topology.hosts:
            self.db.compute_node_create(_compute_node(spec))
            self.placement.create_provider(spec.name, _inventories(spec))
            self.down[spec.name] = False
        self.computes: dict[str, ComputeManager] = {host: ComputeManager(host, self) for host in self.hosts}
        self.conductor = Conductor(self)
        #: instance uuid -> (operations on it in flight, whether one is exclusive)
        self._in_flight: dict[str, tuple[int, bool]] = {}
        #: down host -> operations in flight that act in its place (evacuations, local deletes)
        self._acting_for_down: dict[str, int] = {}

    def compute(self, host: str) -> ComputeManager:
        """The compute service an RPC to ``host`` reaches."""
        return self.computes[host]

    # -- operations ------------------------------------------------------------------

    def create(self, flavor_name: str, host: str | None = None, fail: bool = False) -> str:
        """Boot an instance; returns its uuid.  ``fail``: the spawn fails, the build aborts its claim."""
        flavor = self._flavor(flavor_name)
        hosts = self.conductor.select_destinations(flavor, self._candidates(host))
        instance = Instance(
            uuid=self.db.new_uuid(),
            vm_state=BUILDING,
            task_state=SCHEDULING,
            flavor=flavor,
            pinned_cpus=(),
            pci_devices=(),
            deleted=False,
        )
        with self._operation(instance.uuid):
            self.conductor.schedule_and_build_instance(instance, hosts, fail)
        return instance.uuid

    def delete(self, uuid: str) -> None:
        with self._operation(uuid, exclusive=True):
            instance = self.db.instance_get_by_uuid(uuid)
            self._require(instance, task_state=None)
            if instance.vm_state == RESIZED:
                self._confirm_resize_on_deleting(instance)
                instance = self.db.instance_get_by_uuid(uuid)
            if instance.host is None:
                self._local_delete(instance)
                return
            if self.down[instance.host]:
                with self._acting_for(instance.host):
                    self._local_delete(instance)
                return
            self._start_task(instance, DELETING)
            self.compute(instance.host).terminate_instance(instance)

    def resize(self, uuid: str, flavor_name: str, dest_host: str | None = None) -> None:
        """Resize; ``dest_host`` equal to the instance's host is a same-host resize."""
        flavor = self._flavor(flavor_name)
        with self._operation(uuid):
            instance = self._movable(uuid)
            if flavor.name == instance.flavor.name:
                raise CannotResizeToSameFlavor()
            self._migrate(instance, flavor, self._move_candidates(instance, dest_host, same_host_last=True))

    def migrate(self, uuid: str, dest_host: str | None = None) -> None:
        """Cold-migrate to another host."""
        with self._operation(uuid):
            instance = self._movable(uuid)
            self._migrate(instance, instance.flavor, self._move_candidates(instance, dest_host))

    def confirm_resize(self, uuid: str) -> None:
        with self._operation(uuid, exclusive=True):
            instance, migration = self._finished_resize(uuid)
            self._require_up(migration.source_compute)
            migration.status = "confirming"
            migration.save()
            self.compute(migration.source_compute).confirm_resize(instance, migration)

    def revert_resize(self, uuid: str) -> None:
        with self._operation(uuid, exclusive=True):
            instance, migration = self._finished_resize(uuid)
            assert migration.dest_compute is not None
            self._require_up(migration.source_compute)
            self._require_up(migration.dest_compute)
            self._start_task(instance, RESIZE_REVERTING)
            migration.status = "reverting"
            migration.save()
            self.compute(migration.dest_compute).revert_resize(instance, migration)

    def evacuate(self, uuid: str, dest_host: str | None = None) -> None:
        """Rebuild the instance elsewhere; its host's compute service must be down."""
        with self._operation(uuid):
            instance = self.db.instance_get_by_uuid(uuid)
            self._require(instance, task_state=None, vm_states=(ACTIVE, ERROR))
            if instance.host is None:
                raise InstanceInvalidState(f"instance {uuid} has no host to evacuate from")
            source = instance.host
            if not self.down[source]:
                raise ComputeServiceInUse(f"compute service of {source} is still up")
            self._require_no_uncleaned_evacuation(instance)
            with self._acting_for(source):
                candidates = self._move_candidates(instance, dest_host)
                hosts = self.conductor.select_destinations(instance.flavor, candidates)
                self._start_task(instance, REBUILDING)
                migration = self._new_migration(instance, EVACUATION, dest_host)
                self.conductor.rebuild_instance(instance, migration, hosts)

    def live_migrate(self, uuid: str, dest_host: str | None = None, fail: bool = False) -> None:
        """Live-migrate; ``fail``: the hypervisor's migration fails and is rolled back."""
        with self._operation(uuid):
            instance = self._movable(uuid)
            candidates = self._move_candidates(instance, dest_host)
            hosts = self.conductor.select_destinations(instance.flavor, candidates)
            self._start_task(instance, MIGRATING)
            migration = self._new_migration(instance, LIVE_MIGRATION, dest_host)
            self.conductor.live_migrate_instance(instance, migration, hosts, fail)

    def set_host_down(self, host: str, down: bool) -> None:
        """Force a compute service down, or bring it back: a fresh process that starts up."""
        self._host(host)
        if down or not self.down[host]:
            self.down[host] = down
            return
        if self._acting_for_down.get(host):
            raise HostBusy(f"an evacuation or a local delete of an instance on {host} is still running")
        self.down[host] = False
        self.compute(host).restart()

    def update_available_resource(self, host: str) -> None:
        """Run the host's periodic audit."""
        self._require_up(host)
        self.compute(host).update_available_resource()

    # -- lookups for the harness ---------------------------------------------------

    def describe_consumer(self, consumer: str) -> tuple[str, str | None]:
        """``("instance", uuid)``, ``("migration", its instance's uuid)`` or ``("unknown", None)``."""
        if consumer in self.db.instances:
            return "instance", consumer
        for migration in self.db.migrations.values():
            if migration.uuid == consumer:
                return "migration", migration.instance_uuid
        return "unknown", None

    # -- the API's checks ---------------------------------------------------------------

    @contextlib.contextmanager
    def _operation(self, uuid: str, exclusive: bool = False) -> Iterator[None]:
        """Mark an operation on the instance in flight; an exclusive one overlaps no other."""
        running = self._in_flight.get(uuid)
        if running is not None and (exclusive or running[1]):
            raise InstanceBusy(f"instance {uuid} has another operation in flight")
        self._in_flight[uuid] = ((running[0] if running else 0) + 1, exclusive)
        try:
            yield
        finally:
            count, held_exclusive = self._in_flight[uuid]
            if count == 1:
                del self._in_flight[uuid]
            else:
                self._in_flight[uuid] = (count - 1, held_exclusive)

    @contextlib.contextmanager
    def _acting_for(self, down_host: str) -> Iterator[None]:
        """Mark an operation that does a down host's part in its place; the host stays down meanwhile."""
        self._acting_for_down[down_host] = self._acting_for_down.get(down_host, 0) + 1
        try:
            yield
        finally:
            self._acting_for_down[down_host] -= 1

    def _flavor(self, name: str) -> Flavor:
        flavor = self.flavors.get(name)
        if flavor is None:
            raise FlavorNotFound(name)
        return flavor

    def _host(self, host: str) -> HostSpec:
        spec = self.hosts.get(host)
        if spec is None:
            raise ComputeHostNotFound(host)
        return spec

    def _require_up(self, host: str) -> None:
        if self.down[host]:
            raise ServiceUnavailable(f"compute service of {host} is down")

    def _candidates(self, requested: str | None) -> list[str]:
        """Hosts the scheduler may use, in topology order; the ComputeFilter drops down ones."""
        if requested is not None:
            self._host(requested)
        names = [requested] if requested is not None else list(self.hosts)
        return self._up(names)

    def _move_candidates(
        self, instance: Instance, dest_host: str | None, same_host_last: bool = False
    ) -> list[str]:
        source = instance.host
        assert source is not None
        if dest_host is not None:
            if dest_host == source and not same_host_last:
                raise UnableToMigrateToSelf(instance.uuid, source)
            return self._candidates(dest_host)
        others = [host for host in self.hosts if host != source]
        # allow_resize_to_same_host: the source too, as the last choice.
        return self._up(others + [source] if same_host_last else others)

    def _up(self, names: list[str]) -> list[str]:
        up = [host for host in names if not self.down[host]]
        if not up:
            raise NoValidHost(f"no compute service up among {names}")
        return up

    def _require(
        self, instance: Instance, task_state: str | None, vm_states: tuple[str, ...] | None = None
    ) -> None:
        if instance.task_state != task_state:
            raise InstanceInvalidState(
                f"instance {instance.uuid} is busy: task_state {instance.task_state!r}"
            )
        if vm_states is not None and instance.vm_state not in vm_states:
            raise InstanceInvalidState(
                f"instance {instance.uuid} is {instance.vm_state}, not one of {list(vm_states)}"
            )

    def _movable(self, uuid: str) -> Instance:
        """An active, idle instance on an up host that may be moved."""
        instance = self.db.instance_get_by_uuid(uuid)
        self._require(instance, task_state=None, vm_states=(ACTIVE,))
        assert instance.host is not None
        self._require_up(instance.host)
        self._require_no_uncleaned_evacuation(instance)
        return instance

    def _require_no_uncleaned_evacuation(self, instance: Instance) -> None:
        for migration in self.db.migrations_of(instance.uuid):
            if migration.migration_type == EVACUATION and migration.status in UNCLEANED_EVACUATION_STATUSES:
                raise InstanceInvalidState(
                    f"instance {instance.uuid} was evacuated from {migration.source_compute}, "
                    "which has not come back to clean up (a restriction of the model)"
                )

    def _finished_resize(self, uuid: str) -> tuple[Instance, Migration]:
        instance = self.db.instance_get_by_uuid(uuid)
        self._require(instance, task_state=None, vm_states=(RESIZED,))
        migration = self.db.migration_get_by_instance_and_status(uuid, "finished")
        if migration is None:
            raise MigrationNotFound(f"instance {uuid} has no finished migration to confirm or revert")
        return instance, migration

    def _start_task(self, instance: Instance, task_state: str) -> None:
        """The API's compare-and-swap: set the task state only if the instance is as checked."""
        checked_vm_state, checked_host = instance.vm_state, instance.host
        instance.task_state = task_state
        try:
            instance.save(
                expected_task_state=[None], expected_vm_state=checked_vm_state, expected_host=checked_host
            )
        except UnexpectedTaskStateError as error:
            raise InstanceInvalidState(str(error)) from error

    def _migrate(self, instance: Instance, flavor: Flavor, candidates: list[str]) -> None:
        hosts = self.conductor.select_destinations(flavor, candidates)
        self._start_task(instance, RESIZE_PREP)
        self.conductor.migrate_server(instance, flavor, hosts)

    def _new_migration(self, instance: Instance, migration_type: str, dest_host: str | None) -> Migration:
        """Evacuations and live migrations get their record from the API, status 'accepted'."""
        migration = Migration.of_move(
            self.db.new_uuid(), instance, migration_type, "accepted", instance.flavor, dest_compute=dest_host
        )
        self.db.migration_create(migration)
        return migration

    def _confirm_resize_on_deleting(self, instance: Instance) -> None:
        migration = self.db.migration_get_by_instance_and_status(instance.uuid, "finished")
        if migration is None:
            return
        # Nova would cast to a dead source and leak its allocation; refuse instead.
        self._require_up(migration.source_compute)
        migration.status = "confirming"
        migration.save()
        self.compute(migration.source_compute).confirm_resize(instance, migration)

    def _local_delete(self, instance: Instance) -> None:
        """No compute service to ask: the API deletes the records itself."""
        instance.vm_state = DELETED
        instance.task_state = None
        instance.save()
        self.placement.delete_allocation(instance.uuid)
        instance.destroy()

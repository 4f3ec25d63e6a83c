"""Nova's records as the embedded compute service stores them.

Instances and migrations behave like Nova's versioned objects: whoever reads
one holds a private copy, changes it freely, and ``save()`` writes back only
the fields it changed, after which the copy is refreshed from the row (Nova's
``_from_db_object``).  A reader therefore holds stale data exactly where Nova
does, and two writers clobber each other only where Nova's would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from models import sites
from stateful.scheduler import checkpoint

if TYPE_CHECKING:
    from models.db import Database

# vm_states (nova/compute/vm_states.py)
BUILDING = "building"
ACTIVE = "active"
RESIZED = "resized"
ERROR = "error"
DELETED = "deleted"

# task_states (nova/compute/task_states.py)
SCHEDULING = "scheduling"
SPAWNING = "spawning"
DELETING = "deleting"
RESIZE_PREP = "resize_prep"
RESIZE_MIGRATING = "resize_migrating"
RESIZE_MIGRATED = "resize_migrated"
RESIZE_FINISH = "resize_finish"
RESIZE_REVERTING = "resize_reverting"
REBUILDING = "rebuilding"
MIGRATING = "migrating"
RESIZING_STATES = (RESIZE_PREP, RESIZE_MIGRATING, RESIZE_MIGRATED, RESIZE_FINISH)
REBUILD_STATES = (REBUILDING,)

# Migration.migration_type
RESIZE = "resize"
MIGRATION = "migration"
EVACUATION = "evacuation"
LIVE_MIGRATION = "live-migration"

#: Statuses ``MigrationList.get_in_progress_and_error`` leaves out ('error' is kept).
TERMINAL_MIGRATION_STATUSES = ("confirmed", "reverted", "failed", "completed", "cancelled", "done")
#: Evacuations whose source host has not yet cleaned up (``_destroy_evacuated_instances``).
UNCLEANED_EVACUATION_STATUSES = ("accepted", "pre-migrating", "done")

#: Passed as ``expected_task_state`` to mean "no check".
UNSET: Any = object()


@dataclass(frozen=True)
class Flavor:
    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    #: ``hw:cpu_policy=dedicated``: the instance pins host CPUs from the cpu_dedicated_set.
    cpu_dedicated: bool = False
    #: Devices requested through a PCI alias.
    pci_devices: int = 0


@dataclass(frozen=True)
class MigrationContext:
    """What a move claimed on its destination, and what the instance had before."""

    instance_uuid: str
    migration_id: int
    old_pinned_cpus: tuple[int, ...]
    new_pinned_cpus: tuple[int, ...]
    old_pci_devices: tuple[str, ...]
    new_pci_devices: tuple[str, ...]


@dataclass
class ComputeNode:
    """One hypervisor node: capacity, reserved amounts and the usage the RT reports."""

    host: str
    hypervisor_hostname: str
    #: Every host CPU, shared and dedicated, as Nova's ``ComputeNode.vcpus``.
    vcpus: int
    memory_mb: int
    local_gb: int
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    disk_allocation_ratio: float
    reserved_host_cpus: int
    reserved_host_memory_mb: int
    reserved_host_disk_gb: int
    pci_addresses: tuple[str, ...]
    #: The host's cpu_dedicated_set (``NUMACell.pcpuset``).
    pcpuset: frozenset[int]
    vcpus_used: int = 0
    memory_mb_used: int = 0
    local_gb_used: int = 0
    #: ``NUMACell.pinned_cpus``.
    pinned_cpus: frozenset[int] = frozenset()

    def copy(self) -> ComputeNode:
        clone = object.__new__(ComputeNode)
        clone.__dict__.update(self.__dict__)
        return clone

    def usage(self) -> tuple[int, int, int, frozenset[int]]:
        return (self.vcpus_used, self.memory_mb_used, self.local_gb_used, self.pinned_cpus)


class Row:
    """A record an actor holds: its own copy, tracking which fields it changed."""

    FIELDS: ClassVar[tuple[str, ...]] = ()

    _changes: dict[str, None]
    _db: Database | None

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(unknown)}")
        state = self.__dict__
        state.update(dict.fromkeys(self.FIELDS))
        state.update(values)
        state["_changes"] = {}
        state["_db"] = None

    def __setattr__(self, name: str, value: Any) -> None:
        state = self.__dict__
        state[name] = value
        if name[0] != "_":
            state["_changes"][name] = None

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={self.__dict__[name]!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({fields})"

    def copy_for(self, db: Database | None) -> Any:
        """A fresh copy of this row, as a read hands it out (nothing changed yet)."""
        clone = object.__new__(type(self))
        state = clone.__dict__
        state.update(self.__dict__)
        state["_changes"] = {}
        state["_db"] = db
        return clone

    def _write_into(self, row: Row) -> None:
        """Copy the changed fields into the stored row, then refresh from it."""
        mine, stored = self.__dict__, row.__dict__
        for name in self._changes:
            stored[name] = mine[name]
        self._changes.clear()
        for name in self.FIELDS:
            mine[name] = stored[name]


class Instance(Row):
    FIELDS = (
        "uuid",
        "host",
        "node",
        "vm_state",
        "task_state",
        "flavor",
        "old_flavor",
        "new_flavor",
        "migration_context",
        "pinned_cpus",
        "pci_devices",
        "deleted",
    )

    uuid: str
    host: str | None
    node: str | None
    vm_state: str
    task_state: str | None
    flavor: Flavor
    old_flavor: Flavor | None
    new_flavor: Flavor | None
    migration_context: MigrationContext | None
    #: The host CPUs pinned for a dedicated-CPU flavor (Nova keeps them in numa_topology).
    pinned_cpus: tuple[int, ...]
    #: Addresses of the PCI devices on the instance's current node.
    pci_devices: tuple[str, ...]
    #: Soft-deleted row (``instance.destroy()``); vm_state says ``deleted`` earlier.
    deleted: bool

    def save(
        self, expected_task_state: Any = UNSET, expected_vm_state: Any = UNSET, expected_host: Any = UNSET
    ) -> None:
        """Write the changed fields; each ``expected_*`` (one value or a list) must match the row.

        ``expected_host`` is the model's: its API checks an instance and then
        writes it with a delay site between, so its compare-and-swap covers all
        it checked (in Nova the two are a request's milliseconds apart).
        """
        checkpoint(sites.DB_INSTANCE_SAVE)
        expected = {"task_state": expected_task_state, "vm_state": expected_vm_state, "host": expected_host}
        self._database().instance_save(self, {k: v for k, v in expected.items() if v is not UNSET})

    def destroy(self) -> None:
        checkpoint(sites.DB_INSTANCE_DESTROY)
        self._database().instance_destroy(self)

    def drop_migration_context(self) -> None:
        """Written at once, alone, as Nova's ``instance_extra_update_by_uuid``."""
        if self.migration_context is not None:
            checkpoint(sites.INSTANCE_DROP_MIGRATION_CONTEXT)
            self._database().instance_drop_migration_context(self.uuid)
            # Left marked as changed, as in Nova: a later save() destroys the
            # stored context again, whatever was written there meanwhile.
            self.migration_context = None

    def apply_migration_context(self) -> None:
        self._set_migration_context_to_instance("new_")

    def revert_migration_context(self) -> None:
        self._set_migration_context_to_instance("old_")

    def _set_migration_context_to_instance(self, prefix: str) -> None:
        context = self.migration_context
        if context is not None:
            self.pinned_cpus = getattr(context, prefix + "pinned_cpus")
            self.pci_devices = getattr(context, prefix + "pci_devices")

    def _database(self) -> Database:
        if self._db is None:
            raise RuntimeError(f"instance {self.uuid} was never created in a database")
        return self._db


class Migration(Row):
    FIELDS = (
        "id",
        "uuid",
        "instance_uuid",
        "source_compute",
        "source_node",
        "dest_compute",
        "dest_node",
        "status",
        "migration_type",
        "old_flavor",
        "new_flavor",
        "created_at",
        "updated_at",
    )

    id: int
    uuid: str
    instance_uuid: str
    source_compute: str
    source_node: str
    dest_compute: str | None
    dest_node: str | None
    status: str
    migration_type: str
    old_flavor: Flavor
    new_flavor: Flavor
    #: Logical clock ticks (the database's counter), never wall-clock time.
    created_at: int
    updated_at: int | None

    #: The instance the audit paired with this migration (``migration.instance``).
    _instance: Instance | None = None

    @classmethod
    def of_move(
        cls,
        uuid: str,
        instance: Instance,
        migration_type: str,
        status: str,
        new_flavor: Flavor,
        dest_compute: str | None = None,
    ) -> Migration:
        """The record of a move of ``instance`` from where it is now, with the flavor it has now."""
        assert instance.host is not None and instance.node is not None
        return cls(
            uuid=uuid,
            instance_uuid=instance.uuid,
            source_compute=instance.host,
            source_node=instance.node,
            dest_compute=dest_compute,
            status=status,
            migration_type=migration_type,
            old_flavor=instance.flavor,
            new_flavor=new_flavor,
        )

    def save(self) -> None:
        checkpoint(sites.DB_MIGRATION_SAVE)
        if self._db is None:
            raise RuntimeError(f"migration {self.uuid} was never created in a database")
        self._db.migration_save(self)

    @property
    def is_resize(self) -> bool:
        return self.migration_type == RESIZE

    @property
    def is_live_migration(self) -> bool:
        return self.migration_type == LIVE_MIGRATION

    @property
    def in_progress(self) -> bool:
        return self.status not in TERMINAL_MIGRATION_STATUSES and self.status != "error"

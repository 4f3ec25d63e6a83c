"""The cell database: instances, migrations, compute nodes and PCI device rows.

Reads hand out copies (snapshots); writes are explicit.  Each read or write
an actor makes through here is a delay site, checkpointed before it happens.
The queries are Nova's, with its filters: in particular
``migration_get_in_progress_and_error`` leaves out the terminal statuses but
keeps ``error``.  The oracle reads the stored rows directly (``instances``,
``migrations``), without delay sites or copies.

Soft-deleted instances and finished migrations stay stored for ever, so the
queries the services run on every operation read small indexes kept beside
the tables (live instances, open migrations, each instance's migrations),
in the tables' order, instead of scanning every row ever written.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any, Iterable, Mapping

from models import sites
from models.errors import InstanceNotFound, UnexpectedDeletingTaskStateError, UnexpectedTaskStateError
from models.pci import DeviceStates
from models.records import DELETING, TERMINAL_MIGRATION_STATUSES, ComputeNode, Instance, Migration
from stateful.scheduler import checkpoint


class Database:
    def __init__(self) -> None:
        #: uuid -> stored row (soft-deleted rows stay, with ``deleted`` set)
        self.instances: dict[str, Instance] = {}
        #: id -> stored row, in creation order
        self.migrations: dict[int, Migration] = {}
        #: the rows of ``instances`` not deleted, in creation order
        self._live_instances: dict[str, Instance] = {}
        #: the rows of ``migrations`` not in a terminal status, in id order
        self._open_migrations: dict[int, Migration] = {}
        #: instance uuid -> its rows of ``migrations``, oldest first
        self._migrations_by_instance: dict[str, list[Migration]] = {}
        #: nodename -> stored record
        self.compute_nodes: dict[str, ComputeNode] = {}
        #: nodename -> address -> (status, instance uuid)
        self.pci_devices: dict[str, DeviceStates] = {}
        self._clock = 0
        self._uuids = 0

    def new_uuid(self) -> str:
        """A deterministic uuid: the same run always names things the same."""
        self._uuids += 1
        return str(uuidlib.UUID(int=self._uuids))

    def tick(self) -> int:
        """The logical clock used for ``created_at`` / ``updated_at``."""
        self._clock += 1
        return self._clock

    # -- instances ------------------------------------------------------------

    def instance_create(self, instance: Instance) -> None:
        checkpoint(sites.DB_INSTANCE_CREATE)
        row = instance.copy_for(None)
        self.instances[instance.uuid] = row
        self._live_instances[instance.uuid] = row
        instance.__dict__["_db"] = self
        instance._changes.clear()

    def instance_get_by_uuid(self, uuid: str, read_deleted: bool = False) -> Instance:
        checkpoint(sites.DB_INSTANCE_GET_BY_UUID)
        row = self.instances.get(uuid)
        if row is None or (row.deleted and not read_deleted):
            raise InstanceNotFound(uuid)
        copy: Instance = row.copy_for(self)
        return copy

    def instance_get_all_by_host_and_node(self, host: str, node: str) -> list[Instance]:
        checkpoint(sites.DB_INSTANCE_GET_BY_HOST_AND_NODE)
        return [
            row.copy_for(self)
            for row in self._live_instances.values()
            if row.host == host and row.node == node
        ]

    def instance_save(self, instance: Instance, expected: Mapping[str, Any]) -> None:
        """Write the instance's changes if the row's fields match ``expected`` (field -> value or list)."""
        row = self._live_row(instance.uuid)
        for field, wanted in expected.items():
            allowed = wanted if isinstance(wanted, (list, tuple)) else (wanted,)
            found = getattr(row, field)
            if found not in allowed:
                error = (
                    UnexpectedDeletingTaskStateError
                    if field == "task_state" and found == DELETING
                    else UnexpectedTaskStateError
                )
                raise error(f"instance {instance.uuid}: expected {field} in {list(allowed)}, found {found!r}")
        instance._write_into(row)

    def instance_drop_migration_context(self, uuid: str) -> None:
        self._live_row(uuid).__dict__["migration_context"] = None

    def instance_destroy(self, instance: Instance) -> None:
        row = self._live_row(instance.uuid)
        row.__dict__["deleted"] = True
        instance.__dict__["deleted"] = True
        del self._live_instances[instance.uuid]

    def _live_row(self, uuid: str) -> Instance:
        row = self.instances.get(uuid)
        if row is None or row.deleted:
            raise InstanceNotFound(uuid)
        return row

    # -- migrations -----------------------------------------------------------

    def migration_create(self, migration: Migration) -> None:
        checkpoint(sites.DB_MIGRATION_CREATE)
        migration.__dict__["id"] = len(self.migrations) + 1
        migration.__dict__["created_at"] = self.tick()
        migration.__dict__["_db"] = self
        migration._changes.clear()
        row = migration.copy_for(None)
        self.migrations[row.id] = row
        self._migrations_by_instance.setdefault(row.instance_uuid, []).append(row)
        self._index_status(row)

    def migration_save(self, migration: Migration) -> None:
        migration.updated_at = self.tick()
        row = self.migrations[migration.id]
        migration._write_into(row)
        self._index_status(row)

    def _index_status(self, row: Migration) -> None:
        """Keep ``_open_migrations`` in step with the row's status."""
        if row.status in TERMINAL_MIGRATION_STATUSES:
            self._open_migrations.pop(row.id, None)
        elif row.id not in self._open_migrations:
            self._open_migrations[row.id] = row
            if row.id != max(self._open_migrations):
                # Reopened (a stale copy saved 'error' over a terminal status): back into id order.
                self._open_migrations = dict(sorted(self._open_migrations.items()))

    def migration_get_in_progress_and_error(self, host: str, node: str) -> list[Migration]:
        checkpoint(sites.DB_MIGRATION_GET_IN_PROGRESS_AND_ERROR)
        return [
            row.copy_for(self)
            for row in self._open_migrations.values()
            if (
                (row.source_compute == host and row.source_node == node)
                or (row.dest_compute == host and row.dest_node == node)
            )
        ]

    def migration_get_by_instance_and_status(self, instance_uuid: str, status: str) -> Migration | None:
        checkpoint(sites.DB_MIGRATION_GET_BY_INSTANCE_AND_STATUS)
        for row in reversed(self._migrations_by_instance.get(instance_uuid, ())):
            if row.status == status:
                found: Migration = row.copy_for(self)
                return found
        return None

    def migration_get_by_filters(
        self, source_compute: str, statuses: Iterable[str], migration_type: str
    ) -> list[Migration]:
        checkpoint(sites.DB_MIGRATION_GET_BY_FILTERS)
        wanted = tuple(statuses)
        return [
            row.copy_for(self)
            for row in self.migrations.values()
            if row.source_compute == source_compute
            and row.status in wanted
            and row.migration_type == migration_type
        ]

    def migrations_of(self, instance_uuid: str) -> list[Migration]:
        """Stored rows of one instance's migrations, oldest first (no copy, no delay site)."""
        return list(self._migrations_by_instance.get(instance_uuid, ()))

    # -- compute nodes -----------------------------------------------------------

    def compute_node_create(self, node: ComputeNode) -> None:
        self.compute_nodes[node.hypervisor_hostname] = node.copy()

    def compute_node_get(self, nodename: str) -> ComputeNode:
        return self.compute_nodes[nodename].copy()

    def compute_node_save(self, node: ComputeNode) -> None:
        checkpoint(sites.DB_COMPUTE_NODE_SAVE)
        self.compute_nodes[node.hypervisor_hostname] = node.copy()

"""Every delay site the embedded compute service reaches, registered in one place.

A site is checkpointed just *before* the action it names, so a delay there
lets other operations run before the read, write or call happens.  Lock
acquire/release sites (``lock:compute_resources:acquire`` and, for Nova's
per-instance locks, ``lock:<instance uuid>:acquire``) come from the engine's
scheduler-aware locks and are not listed here.
"""

from __future__ import annotations

from stateful.sites import register_site


def _site(name: str, description: str) -> str:
    return register_site(name, description, target="model")


# -- database -----------------------------------------------------------------
DB_INSTANCE_CREATE = _site("db.instance.create", "Instance.create(): the instance row appears (no host yet)")
DB_INSTANCE_GET_BY_UUID = _site("db.instance.get_by_uuid", "Instance.get_by_uuid(): one instance read")
DB_INSTANCE_GET_BY_HOST_AND_NODE = _site(
    "db.instance.get_by_host_and_node", "InstanceList.get_by_host_and_node(): the audit's instance read"
)
DB_INSTANCE_SAVE = _site("db.instance.save", "Instance.save(): the changed fields are written")
DB_INSTANCE_DESTROY = _site("db.instance.destroy", "Instance.destroy(): the row is soft-deleted")
INSTANCE_DROP_MIGRATION_CONTEXT = _site(
    "instance.drop_migration_context", "Instance.drop_migration_context(): the context is deleted at once"
)
DB_MIGRATION_CREATE = _site("db.migration.create", "Migration.create()")
DB_MIGRATION_SAVE = _site("db.migration.save", "Migration.save(): status (and other changed fields) written")
DB_MIGRATION_GET_IN_PROGRESS_AND_ERROR = _site(
    "db.migration.get_in_progress_and_error",
    "MigrationList.get_in_progress_and_error(): the audit's migration read",
)
DB_MIGRATION_GET_BY_INSTANCE_AND_STATUS = _site(
    "db.migration.get_by_instance_and_status", "Migration.get_by_instance_and_status(): the API's lookup"
)
DB_MIGRATION_GET_BY_FILTERS = _site(
    "db.migration.get_by_filters", "MigrationList.get_by_filters(): evacuations a restarted host cleans up"
)
DB_COMPUTE_NODE_SAVE = _site(
    "db.compute_node.save", "ComputeNode.save(): the RT's usage reaches the database"
)
DB_PCI_DEVICE_SAVE = _site("db.pci_device.save", "PciDevTracker.save(): device states reach the database")

# -- placement ----------------------------------------------------------------
PLACEMENT_GET_ALLOCATION_CANDIDATES = _site(
    "placement.get_allocation_candidates", "the scheduler asks which providers fit"
)
PLACEMENT_PUT_ALLOCATIONS = _site("placement.put_allocations", "a consumer's allocations are replaced")
PLACEMENT_MOVE_ALLOCATIONS = _site(
    "placement.move_allocations", "allocations move from one consumer to another"
)
PLACEMENT_DELETE_ALLOCATION = _site("placement.delete_allocation", "a consumer's allocations are deleted")
PLACEMENT_REMOVE_PROVIDER_FROM_ALLOCATION = _site(
    "placement.remove_provider_from_allocation", "one provider is cut out of a consumer's allocations"
)
PLACEMENT_GET_ALLOCATIONS_FOR_PROVIDER = _site(
    "placement.get_allocations_for_provider", "the audit reads every allocation against its provider"
)

# -- compute manager / virt driver boundaries ---------------------------------
COMPUTE_SPAWN = _site("compute.spawn", "driver.spawn() during a build")
COMPUTE_SHUTDOWN_INSTANCE = _site("compute.shutdown_instance", "_shutdown_instance() during a delete")
COMPUTE_MIGRATE_DISK_AND_POWER_OFF = _site(
    "compute.migrate_disk_and_power_off", "resize_instance on the source: power off and copy the disks"
)
COMPUTE_FINISH_MIGRATION = _site("compute.finish_migration", "finish_resize on the destination: driver work")
COMPUTE_CONFIRM_MIGRATION = _site("compute.confirm_migration", "confirm on the source: driver clean-up")
COMPUTE_DESTROY = _site("compute.destroy", "revert_resize on the destination: the guest is destroyed")
COMPUTE_FINISH_REVERT_MIGRATION = _site(
    "compute.finish_revert_migration", "finish_revert_resize on the source: the guest is restarted"
)
COMPUTE_REBUILD = _site("compute.rebuild", "rebuild_instance on the evacuation destination: driver spawn")
COMPUTE_PRE_LIVE_MIGRATION = _site("compute.pre_live_migration", "pre_live_migration on the destination")
COMPUTE_LIVE_MIGRATION = _site("compute.live_migration", "driver.live_migration on the source: memory copy")
COMPUTE_POST_LIVE_MIGRATION_AT_DESTINATION = _site(
    "compute.post_live_migration_at_destination", "post_live_migration_at_destination: driver work"
)
COMPUTE_ROLLBACK_LIVE_MIGRATION_AT_DESTINATION = _site(
    "compute.rollback_live_migration_at_destination",
    "rollback_live_migration_at_destination: driver clean-up",
)

"""The conductor and the scheduler: pick a host, claim it in placement, start the work.

Host selection asks placement which of the candidate hosts fit (the
candidates are already filtered to hosts whose service is up and ordered by
the API), then claims on the first that still fits, falling back to the
next one as Nova's alternates do.  For moves it first creates the migration
record and hands the source allocation to the migration's uuid
(``replace_allocation_with_migration``).  If no host can be claimed after
that, it rolls back as Nova's tasks do: allocations back to the instance,
the migration in ``error``, the task state cleared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.errors import AllocationConflict, ComputeResourcesUnavailable, NoValidHost
from models.placement import resources_for
from models.records import MIGRATION, RESIZE, Flavor, Instance, Migration

if TYPE_CHECKING:
    from models.service import Cloud


class Conductor:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.db = cloud.db
        self.placement = cloud.placement

    def select_destinations(self, flavor: Flavor, candidates: list[str]) -> list[str]:
        """The candidate hosts placement says fit the flavor; NoValidHost if none."""
        hosts = self.placement.get_allocation_candidates(resources_for(flavor), candidates)
        if not hosts:
            raise NoValidHost(f"no host among {candidates} fits flavor {flavor.name!r}")
        return hosts

    def _claim_on_first(self, consumer: str, flavor: Flavor, hosts: list[str], merge: bool = False) -> str:
        resources = resources_for(flavor)
        for host in hosts:
            try:
                self.placement.claim_resources(consumer, host, resources, merge=merge)
            except AllocationConflict:
                continue
            return host
        raise NoValidHost(
            f"every host among {hosts} was taken before flavor {flavor.name!r} could be claimed"
        )

    def schedule_and_build_instance(self, instance: Instance, hosts: list[str], fail: bool) -> None:
        """Allocate first, then create the instance row (no host yet), then build."""
        host = self._claim_on_first(instance.uuid, instance.flavor, hosts)
        self.db.instance_create(instance)
        self.cloud.compute(host).build_and_run_instance(instance, host, fail=fail)

    def migrate_server(self, instance: Instance, flavor: Flavor, hosts: list[str]) -> None:
        """Resize or cold-migrate: migration record, source allocation to it, claim, prep_resize."""
        migration_type = RESIZE if flavor.name != instance.flavor.name else MIGRATION
        migration = Migration.of_move(self.db.new_uuid(), instance, migration_type, "pre-migrating", flavor)
        self.db.migration_create(migration)
        self.placement.move_allocations(instance.uuid, migration.uuid)
        try:
            host = self._claim_on_first(instance.uuid, flavor, hosts)
        except NoValidHost:
            self._rollback(instance, migration)
            raise
        self.cloud.compute(host).prep_resize(instance, flavor, migration)

    def live_migrate_instance(
        self, instance: Instance, migration: Migration, hosts: list[str], fail: bool
    ) -> None:
        """Source allocation to the migration, claim the destination, its checks, then go."""
        self.placement.move_allocations(instance.uuid, migration.uuid)
        try:
            host = self._claim_on_first(instance.uuid, instance.flavor, hosts)
            self.cloud.compute(host).check_can_live_migrate_destination(instance, migration)
        except (NoValidHost, ComputeResourcesUnavailable):
            self._rollback(instance, migration)
            raise
        # Only once the destination's checks (and claim) passed.
        migration.dest_compute = host
        migration.dest_node = host
        migration.save()
        self.cloud.compute(migration.source_compute).live_migration(instance, migration, fail=fail)

    def rebuild_instance(self, instance: Instance, migration: Migration, hosts: list[str]) -> None:
        """Evacuate: the destination is added to the allocation; the dead source's share stays."""
        try:
            host = self._claim_on_first(instance.uuid, instance.flavor, hosts, merge=True)
        except NoValidHost:
            migration.status = "error"
            migration.save()
            instance.task_state = None
            instance.save()
            raise
        self.cloud.compute(host).rebuild_instance(instance, migration)

    def _rollback(self, instance: Instance, migration: Migration) -> None:
        migration.status = "error"
        migration.save()
        # revert_allocation_for_migration: replaces whatever the instance got.
        self.placement.move_allocations(migration.uuid, instance.uuid)
        instance.task_state = None
        instance.save()

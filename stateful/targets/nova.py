"""Real Nova as a :class:`~stateful.target.Target`.

Each example gets a fresh in-process Nova (:class:`stateful.targets.nova_env.NovaEnv`):
one compute service per topology host, each RPC cast run to its end before
the caster goes on (a failure of its callee stays there, as in production),
so an operation returns when Nova is done with it.  Operations go through Nova's
REST API (admin, latest microversion) except the audit, which is the
resource tracker's periodic ``update_available_resource`` run on one compute.

``observe()`` reads Nova's own records: each compute node's
``vcpus_used``/``memory_mb_used``/``local_gb_used`` and its PCI devices, and
placement's allocations.  ``expected()`` is the oracle: the same keys,
computed from the database's instances and migrations alone, following the
accounting rules Nova's resource tracker documents (an instance counts on
its node; an in-progress move also holds the old flavor on the source, the
new one on the destination, both on the node of a same-host resize).

Limits of the in-process setup (see the notes in ``nova_env``): allocation
ratios and reserved amounts are global options in one process, so the first
host's values apply to every host; pinned (``cpu_dedicated``) flavors are not
available (the fake driver has no NUMA topology) and operations using them are
rejected; a stopped (down) compute makes no promise about its record, so the
oracle takes a down host's usage as it is.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import fixtures

from stateful.targets import nova_env  # first: puts Nova in threading mode
from stateful.targets.nova_env import IMAGE_UUID, NovaEnv, QuietLocks, ROLLBACK_LIVE_MIGRATIONS, TARGET_HOSTS

from nova import context as nova_context  # noqa: E402
from nova import objects  # noqa: E402
from nova.compute import vm_states  # noqa: E402
from nova.compute import task_states  # noqa: E402
from nova.tests.functional.api import client as api_client  # noqa: E402

from stateful.lengths import operation_lengths  # noqa: E402
from stateful.scheduler import current_task  # noqa: E402
from stateful.sites import DelaySites, register_site  # noqa: E402
from stateful.target import Observation, Op  # noqa: E402

#: Delay sites at Nova's own methods (site name -> dotted path); each call
#: reaches ``<site>:before`` and ``<site>:after``.  The resource tracker's
#: ``compute_resources`` lock is a site too (``lock:nova-compute_resources:
#: acquire|release``), through :class:`stateful.locks.SchedulerLocks`.
NOVA_SITES: dict[str, str] = {
    "nova.instance.drop_migration_context": "nova.objects.instance.Instance.drop_migration_context",
    "nova.instance.save": "nova.objects.instance.Instance.save",
    "nova.instance_list.get_by_host_and_node": "nova.objects.instance.InstanceList.get_by_host_and_node",
    "nova.migration.save": "nova.objects.migration.Migration.save",
    "nova.migration_list.get_in_progress_and_error":
        "nova.objects.migration.MigrationList.get_in_progress_and_error",
    "nova.placement.claim_resources": "nova.scheduler.client.report.SchedulerReportClient.claim_resources",
    "nova.placement.move_allocations": "nova.scheduler.client.report.SchedulerReportClient.move_allocations",
    "nova.placement.put_allocations": "nova.scheduler.client.report.SchedulerReportClient.put_allocations",
    "nova.placement.delete_allocation_for_instance":
        "nova.scheduler.client.report.SchedulerReportClient.delete_allocation_for_instance",
    "nova.placement.remove_provider_tree_from_instance_allocation":
        "nova.scheduler.client.report.SchedulerReportClient.remove_provider_tree_from_instance_allocation",
    "nova.placement.get_allocs_for_consumer":
        "nova.scheduler.client.report.SchedulerReportClient.get_allocs_for_consumer",
}

for _site, _path in NOVA_SITES.items():  # registered on import, so regression files naming them validate
    for _phase in ("before", "after"):
        register_site(f"{_site}:{_phase}", f"{_phase} {_path}", target="nova")

__all__ = ["NovaTarget", "NovaRejected", "NoValidHost", "Unsupported", "NovaOperationFailed"]


class NovaRejected(Exception):
    """Nova refused the operation (an API 4xx, or a move it cleanly gave up)."""


class NoValidHost(NovaRejected):
    """The scheduler found no host: a create left the instance in ERROR (it is deleted)."""


class Unsupported(NovaRejected):
    """The in-process Nova can't do this (pinned flavors; a host already down/up)."""


class NovaOperationFailed(Exception):
    """The operation ended in a state Nova should not leave it in (not a rejection)."""


#: Migration statuses after which a migration is over (its consumer must hold nothing).
TERMINAL = frozenset({"confirmed", "reverted", "failed", "completed", "cancelled", "done", "error"})
#: Statuses the resource tracker's audit ignores (MigrationList.get_in_progress_and_error).
AUDIT_IGNORES = frozenset({"confirmed", "reverted", "failed", "completed", "cancelled", "done"})
#: Refusals raised on the far side of a cast (production's caster never sees
#: them; the target reads them back, see NovaTarget._api), or by the API
#: itself without a 4xx of its own (a 500): the
#: conductor refusing a live migration, and Nova's compare-and-swap on
#: task_state / existence detecting a concurrent operation (e.g. a revert that a
#: delete overtook) — placement's consumer generations too: the conductor's
#: AllocationMoveFailed when a resize's move of the instance's allocation
#: races its delete (compute.api casts resize_instance, do_cast=True, and the
#: conductor puts the instance's state back); and BuildAbortException, a
#: rebuild's claim failing on the evacuation's destination (rebuild_instance
#: is a cast; the compute fails the migration).  The accounting is still
#: checked after the step.
CAST_REFUSALS = (
    "NoValidHost", "ComputeHostNotFound", "ComputeServiceUnavailable", "InvalidHypervisorType",
    "InvalidCPUInfo", "UnableToMigrateToSelf", "DestinationHypervisorTooOld", "InvalidLocalStorage",
    "InvalidSharedStorage", "HypervisorUnavailable", "InstanceInvalidState", "MigrationPreCheckError",
    "MigrationSchedulerRPCError",
    "UnexpectedDeletingTaskStateError", "UnexpectedTaskStateError", "InstanceNotFound",
    "AllocationMoveFailed", "BuildAbortException",
)


def _refusal(error: BaseException) -> bool:
    """Whether ``error`` is one of :data:`CAST_REFUSALS` (oslo.messaging re-raises a callee's
    ``nova.exception.X`` as a subclass named ``X_Remote``)."""
    return any(cls.__name__ in CAST_REFUSALS for cls in type(error).__mro__)


RESOURCES = ("vcpus", "memory_mb", "disk_gb", "pci_devices")
PLACEMENT_CLASSES = {"vcpus": "VCPU", "memory_mb": "MEMORY_MB", "disk_gb": "DISK_GB"}


def _flavor_usage(flavor: Any) -> dict[str, int]:
    if flavor is None:
        return {}
    pci = 0
    spec = (flavor.extra_specs or {}).get("pci_passthrough:alias")
    if spec:
        pci = sum(int(part.split(":")[1]) for part in spec.split(","))
    return {
        "vcpus": int(flavor.vcpus),
        "memory_mb": int(flavor.memory_mb),
        "disk_gb": int(flavor.root_gb) + int(flavor.ephemeral_gb) + int(flavor.swap) // 1024,
        "pci_devices": pci,
    }


def _placement(usage: Mapping[str, int]) -> dict[str, int]:
    return {rc: usage[key] for key, rc in PLACEMENT_CLASSES.items() if usage.get(key)}


def _add(total: dict[str, int], usage: Mapping[str, int]) -> None:
    for key, amount in usage.items():
        total[key] = total.get(key, 0) + amount


def _in_resize_state(instance: Any) -> bool:
    if instance.vm_state == vm_states.RESIZED:
        return True
    return instance.vm_state in (vm_states.ACTIVE, vm_states.STOPPED) and instance.task_state in (
        task_states.resizing_states + task_states.rebuild_states
    )


def _live_migrating(instance: Any) -> bool:
    return instance.task_state == task_states.MIGRATING and instance.vm_state in (vm_states.ACTIVE, vm_states.PAUSED)


def _is_resize(migration: Any) -> bool:
    return migration.migration_type in ("resize", "migration")


def _moment(migration: Any) -> Any:
    return migration.updated_at or migration.created_at


class _Instrumentation(fixtures.Fixture):
    """What the target changes in Nova's code for its life.

    The delay sites at Nova's methods; only the ``compute_resources`` lock as
    a lock site; and the fixes of Nova's open races whose ``nova-open-*``
    switch is off (:class:`stateful.targets.nova_faults.OpenRaceFixes`).
    """

    def _setUp(self) -> None:
        from stateful.targets.nova_faults import OpenRaceFixes

        self.useFixture(OpenRaceFixes())
        self.useFixture(DelaySites(NOVA_SITES, target="nova"))
        self.useFixture(QuietLocks())


class NovaTarget:
    """Real Nova 34, in process, as a fuzzing target."""

    name = "nova"
    rejections: tuple[type[BaseException], ...] = (NovaRejected,)
    observes_from_any_thread = False  # its counters come from a sqlite connection of the test thread
    #: About how many checkpoints each operation reaches, for the schedule
    #: strategy; measured by :meth:`calibrated`, once per process.
    checkpoint_hints: Mapping[str, int] = {}
    _calibration_error: Exception | None = None

    @classmethod
    def calibrated(cls) -> NovaTarget:
        """A new target, its operations' lengths measured first if not yet in this process.

        The measure runs each operation once in a Nova of its own (a quarter of a
        minute or so), before the session that will use this target has set up
        anything, so with no fault on.  The resize is to a plain flavor: the
        fake driver has no dedicated CPUs.
        """
        if cls._calibration_error is not None:
            raise cls._calibration_error  # once is enough: each try starts a Nova
        if not cls.checkpoint_hints:
            try:
                cls.checkpoint_hints = operation_lengths(cls, resize_to="medium")
            except Exception as error:
                cls._calibration_error = error
                raise
        return cls()

    def __init__(self) -> None:
        self.env: NovaEnv | None = None
        self.hosts: list[str] = []
        self.uuids: dict[str, str] = {}  # machine name -> instance uuid
        self.names: dict[str, str] = {}  # instance uuid -> machine name
        self.down: set[str] = set()
        self.reserved: dict[str, int] = {}
        self.sites: _Instrumentation | None = None

    # -- life cycle -------------------------------------------------------------

    def setup(self, topology: Mapping[str, Any]) -> None:
        self.hosts = [host["name"] for host in topology["hosts"]]
        first = topology["hosts"][0]
        self.reserved = {
            "vcpus": int(first.get("reserved_host_cpus", 0)),
            "memory_mb": int(first.get("reserved_host_memory_mb", 512)),
            "disk_gb": int(first.get("reserved_host_disk_gb", 0)),
        }
        self.sites = _Instrumentation()
        self.sites.setUp()
        try:
            self.env = NovaEnv(topology).start()
        except BaseException:
            self.sites.cleanUp()
            raise

    def teardown(self) -> None:
        env, self.env = self.env, None
        try:
            if env is not None:
                env.stop()
        finally:
            sites, self.sites = self.sites, None
            if sites is not None:
                sites.cleanUp()

    def describe(self, consumer: str) -> str:
        if consumer in self.names:
            return self.names[consumer]
        for migration in self._migrations():
            if migration.uuid == consumer:
                return f"migration of {self.names.get(migration.instance_uuid, migration.instance_uuid)}"
        return consumer

    # -- operations ---------------------------------------------------------------

    def operation(self, op: Op) -> Callable[[], Any]:
        method = getattr(self, f"_op_{op.name}")
        args = dict(op.args)
        return lambda: method(**args)

    @property
    def _env(self) -> NovaEnv:
        if self.env is None:
            raise RuntimeError("NovaTarget used before setup()")
        return self.env

    def _api(self, call: Callable[[], Any]) -> Any:
        """Run an API call; a 4xx answer is Nova refusing (NovaRejected), 5xx is not.

        Then what the call's casts failed with in their callees, which
        production only logs (:class:`~stateful.targets.nova_env.CastAsSynchronousCall`):
        an unhandled error is the operation failing (NovaOperationFailed), a
        refusal (:data:`CAST_REFUSALS`) is Nova giving it up (NovaRejected).
        """
        task = current_task()
        try:
            result = self._answer(call)
        finally:
            failures = nova_env.dropped_cast_failures(task)  # taken even when the answer raised
        for method, error in failures:
            if not _refusal(error):
                raise NovaOperationFailed(f"cast {method} failed: {type(error).__name__}: {error}") from error
        if failures:
            method, error = failures[0]
            raise NovaRejected(f"cast {method} refused: {type(error).__name__}: {error}") from error
        return result

    @staticmethod
    def _answer(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except api_client.OpenStackApiException as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            if status is not None and 400 <= status < 500:
                raise NovaRejected(f"HTTP {status}: {error}") from error
            if status == 500 and any(f"nova.exception.{name}'" in str(error) for name in CAST_REFUSALS):
                # A refusal the API does not translate: e.g. evacuate's
                # compare-and-swap on task_state losing to a concurrent one.
                raise NovaRejected(f"HTTP {status} (a refusal, not translated): {error}") from error
            raise

    def _uuid(self, instance: str) -> str:
        uuid = self.uuids.get(instance)
        if uuid is None:
            raise NovaRejected(f"{instance} does not exist")
        return uuid

    def _flavor(self, flavor: str) -> str:
        flavor_id = self._env.flavors.get(flavor)
        if flavor_id is None:
            raise Unsupported(f"flavor {flavor!r} is not available on in-process Nova")
        return flavor_id

    def _server(self, uuid: str) -> dict[str, Any]:
        # A 404 here: a concurrent delete overtook the operation (a refusal, not an error).
        return self._api(lambda: self._env.api.get_server(uuid))

    def _check_after(self, instance: str, uuid: str, what: str) -> dict[str, Any]:
        """Classify how an operation left the server: ERROR is a failure unless no host fit."""
        server = self._server(uuid)
        if server["status"] == "ERROR":
            fault = (server.get("fault") or {}).get("message", "")
            if "No valid host" in fault:
                raise NoValidHost(f"{what} {instance}: {fault}")
            raise NovaOperationFailed(f"{what} {instance} left it in ERROR: {fault}")
        return server

    def _check_moved(self, instance: str, uuid: str, what: str, host: str) -> None:
        server = self._check_after(instance, uuid, what)
        if server["OS-EXT-SRV-ATTR:host"] != host or server["status"] not in ("VERIFY_RESIZE", "ACTIVE", "SHUTOFF"):
            fault = (server.get("fault") or {}).get("message", "")
            raise NovaRejected(
                f"{what} {instance} to {host} did not happen: {server['status']} on "
                f"{server['OS-EXT-SRV-ATTR:host']} ({fault or 'no fault recorded'})"
            )

    def _op_create(self, instance: str, flavor: str, host: str) -> str:
        env = self._env
        if instance in self.uuids:
            raise NovaRejected(f"{instance} already exists")
        body = env.case._build_server(
            name=instance, image_uuid=IMAGE_UUID, flavor_id=self._flavor(flavor), networks="none", host=host
        )
        server = self._api(lambda: env.api.post_server({"server": body}))
        uuid = server["id"]
        try:
            self._check_after(instance, uuid, "create")
        except NoValidHost:
            self._api(lambda: env.api.delete_server(uuid))
            raise
        self.uuids[instance], self.names[uuid] = uuid, instance
        return uuid

    def _require_up_for_resize(self, uuid: str, what: str, *roles: str) -> None:
        """Refuse what would cast to a down compute about the instance's finished resize.

        Nova's API sends confirm (and a resized instance's delete, which
        confirms first) to the resize's source compute, revert to its
        destination and then its source, without checking that their
        services are up.  In production the message waits in the queue for
        the compute to restart; in process, where a cast waits for its callee,
        the operation would wait for ever for a stopped service.  Refused here as
        the model refuses it (``ServiceUnavailable``).
        """
        finished = [m for m in self._migrations() if m.instance_uuid == uuid and m.status == "finished"]
        for migration in finished:
            for role in roles:
                host = getattr(migration, f"{role}_compute")
                if host in self.down:
                    raise Unsupported(f"{what}: the resize's {role} compute {host} is down")

    def _op_delete(self, instance: str) -> None:
        uuid = self._uuid(instance)
        self._require_up_for_resize(uuid, f"delete {instance}", "source")
        self._api(lambda: self._env.api.delete_server(uuid))
        self.uuids.pop(instance, None)  # a concurrent delete of the same instance may have forgotten it

    def _op_resize(self, instance: str, flavor: str, host: str) -> None:
        uuid, flavor_id = self._uuid(instance), self._flavor(flavor)
        wanted = (uuid, current_task())
        TARGET_HOSTS[wanted] = host
        try:
            self._api(lambda: self._env.api.post_server_action(uuid, {"resize": {"flavorRef": flavor_id}}))
        finally:
            TARGET_HOSTS.pop(wanted, None)
        self._check_moved(instance, uuid, "resize", host)

    def _op_migrate(self, instance: str, host: str) -> None:
        uuid = self._uuid(instance)
        self._api(lambda: self._env.api.post_server_action(uuid, {"migrate": {"host": host}}))
        self._check_moved(instance, uuid, "migrate", host)

    def _op_confirm(self, instance: str) -> None:
        uuid = self._uuid(instance)
        self._require_up_for_resize(uuid, f"confirm {instance}", "source")
        self._api(lambda: self._env.api.post_server_action(uuid, {"confirmResize": None}))
        self._check_after(instance, uuid, "confirm")

    def _op_revert(self, instance: str) -> None:
        uuid = self._uuid(instance)
        self._require_up_for_resize(uuid, f"revert {instance}", "dest", "source")
        self._api(lambda: self._env.api.post_server_action(uuid, {"revertResize": None}))
        self._check_after(instance, uuid, "revert")

    def _op_evacuate(self, instance: str, host: str) -> None:
        uuid = self._uuid(instance)
        self._api(lambda: self._env.api.post_server_action(uuid, {"evacuate": {"host": host}}))
        self._check_moved(instance, uuid, "evacuate", host)

    def _live_migrate(self, instance: str, host: str) -> str:
        uuid = self._uuid(instance)
        body = {"os-migrateLive": {"host": host, "block_migration": "auto"}}
        self._api(lambda: self._env.api.post_server_action(uuid, body))
        return uuid

    def _op_live_migrate(self, instance: str, host: str) -> None:
        """A live migration, then the destination's audit.

        Nova claims nothing on the destination's compute node for a live
        migration (without NUMA or PCI) and updates only the source's record
        when it ends: the destination's record catches up at its next
        periodic audit, which this operation runs (in the same task), so
        that the step ends where a deployment settles.  It runs whatever
        became of the accepted migration: an audit that counted it as
        incoming midway leaves the destination counting it until the next
        one, even when a delete overtook the migration.
        """
        uuid = self._live_migrate(instance, host)
        try:
            self._check_moved(instance, uuid, "live migration", host)
        finally:
            if host not in self.down:
                self._env.audit(host)

    def _op_live_migrate_rollback(self, instance: str, host: str) -> None:
        """A live migration the hypervisor fails: Nova must roll it back onto the source."""
        armed = (self._uuid(instance), host, current_task())
        ROLLBACK_LIVE_MIGRATIONS.add(armed)
        try:
            uuid = self._live_migrate(instance, host)
        finally:
            ROLLBACK_LIVE_MIGRATIONS.discard(armed)
        self._check_after(instance, uuid, "live migration rollback")

    def _op_host_down(self, host: str) -> None:
        if host in self.down:
            raise Unsupported(f"{host} is already down")
        self.down.add(host)
        self._api(lambda: self._env.host_down(host))

    def _op_host_up(self, host: str) -> None:
        if host not in self.down:
            raise Unsupported(f"{host} is not down")
        self._api(lambda: self._env.host_up(host))
        self.down.discard(host)

    def _op_audit(self, host: str) -> None:
        if host in self.down:
            raise Unsupported(f"{host}'s compute service is down: it runs no audit")
        self._env.audit(host)

    # -- records ------------------------------------------------------------------

    def _ctx(self) -> Any:
        ctx = nova_context.get_admin_context(read_deleted="yes")
        nova_context.set_target_cell(ctx, self._env.case.cell_mappings["cell1"])
        return ctx

    def _instances(self) -> list[Any]:
        """The instances that are not deleted, with what the oracle reads.

        Deleted ones are only uuids (:meth:`NovaEnv.deleted_instances`): Nova
        can leave a deleted instance two ``instance_extra`` rows (see
        docs/findings.md, "a confirm racing a delete"), and loading such an
        instance with its flavor warns ``Multiple rows returned with
        uselist=False for ... Instance.extra``.
        """
        return list(
            objects.InstanceList.get_by_filters(
                self._ctx(),
                {"deleted": False, "soft_deleted": True},
                expected_attrs=["flavor", "migration_context", "system_metadata"],
            )
        )

    def _migrations(self) -> list[Any]:
        return list(objects.MigrationList.get_by_filters(self._ctx(), {}))

    def _counters(self) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, list[str]]]]:
        """Each host's usage (PCI devices counted from their owners) and PCI owners."""
        counters, owners = self._env.counters()
        usage = {
            host: {**counters[host], "pci_devices": sum(len(v) for v in owners[host].values())}
            for host in self.hosts
        }
        return usage, {host: owners[host] for host in self.hosts}

    def _common(self, instances: list[Any], migrations: list[Any]) -> dict[str, Any]:
        servers = {
            self.names[i.uuid]: {"host": i.host, "vm_state": i.vm_state, "task_state": i.task_state}
            for i in instances
            if i.uuid in self.names
        }
        terminal = sorted(self._env.deleted_instances() + [m.uuid for m in migrations if m.status in TERMINAL])
        return {
            "reserved": {host: dict(self.reserved) for host in self.hosts},
            "terminal_consumers": terminal,
            "in_flight": sum(1 for m in migrations if m.status not in TERMINAL),
            "servers": servers,
            "down_hosts": sorted(self.down),
        }

    def observe_counters(self) -> Observation:
        """The cheap part of :meth:`observe` for the checks at every checkpoint:
        ``usage``, ``reserved``, ``pci_owners`` and ``down_hosts`` (no placement,
        no instance or migration lists, which are three quarters of the cost).

        A down host's PCI devices are left out of ``pci_owners``: its stopped
        compute service updates none of its records (an instance evacuated
        away, or deleted, keeps its devices there until the service restarts
        and cleans up), so they make no promise until then.
        """
        usage, owners = self._counters()
        pci_owners = {host: owned for host, owned in owners.items() if host not in self.down}
        return Observation(
            usage=usage,
            reserved={host: dict(self.reserved) for host in self.hosts},
            pci_owners=pci_owners,
            down_hosts=sorted(self.down),
        )

    def observe(self) -> Observation:
        env = self._env
        counters = self.observe_counters()
        usage, pci_owners = counters.usage, counters.pci_owners
        allocations: dict[str, dict[str, dict[str, int]]] = {}
        for host in self.hosts:
            body = env.placement.get(f"/resource_providers/{env.provider[host]}/allocations").body
            for consumer, held in body["allocations"].items():
                if held["resources"]:
                    allocations.setdefault(consumer, {})[host] = dict(held["resources"])
        return Observation(
            usage=usage,
            allocations=allocations,
            pci_owners=pci_owners,
            **self._common(self._instances(), self._migrations()),
        )

    def expected(self) -> Observation:
        instances, migrations = self._instances(), self._migrations()
        usage = {host: self._expected_usage(host, instances, migrations) for host in self.hosts}
        return Observation(
            usage=usage,
            allocations=self._expected_allocations(instances, migrations),
            **self._common(instances, migrations),
        )

    # -- the oracle -----------------------------------------------------------------

    def _evacuated_flavor(self, instance: Any, evacuation: Any, moves: list[Any]) -> Any:
        """The flavor ``instance`` had when ``evacuation`` left its allocation on the source.

        A resize since then changed ``instance.flavor``, not that allocation:
        the first later move's ``old_instance_type_id`` names the flavor.
        """
        later = min((m for m in moves if _is_resize(m) and m.id > evacuation.id), key=lambda m: m.id, default=None)
        if later is not None and later.old_instance_type_id is not None:
            return objects.Flavor.get_by_id(self._ctx(), later.old_instance_type_id)
        return instance.flavor

    def _migration_flavor(self, instance: Any, migration: Any, prefix: str) -> Any:
        if _is_resize(migration):
            return getattr(instance, f"{prefix}flavor", None) or (instance.flavor if prefix == "" else None)
        return instance.flavor

    def _expected_usage(self, host: str, instances: list[Any], migrations: list[Any]) -> dict[str, int]:
        if host in self.down:
            # A stopped compute updates nothing: its record stays as it was.
            return self._counters()[0][host]
        total = {key: 0 for key in RESOURCES}
        _add(total, self.reserved)
        tracked = set()
        by_uuid = {i.uuid: i for i in instances}
        for instance in instances:
            if instance.host != host or instance.node != host:
                continue
            if vm_states.allow_resource_removal(instance.vm_state, instance.task_state):
                continue
            tracked.add(instance.uuid)
            _add(total, _flavor_usage(instance.flavor))
        latest: dict[str, Any] = {}
        for migration in migrations:
            if migration.status in AUDIT_IGNORES:
                continue
            if not (
                (migration.source_compute == host and migration.source_node == host)
                or (migration.dest_compute == host and migration.dest_node == host)
            ):
                continue
            instance = by_uuid.get(migration.instance_uuid)
            if instance is None or not (_in_resize_state(instance) or _live_migrating(instance)):
                continue
            other = latest.get(instance.uuid)
            if other is None or _moment(migration) > _moment(other):
                latest[instance.uuid] = migration
        for uuid, migration in latest.items():
            instance = by_uuid[uuid]
            context = instance.migration_context
            if context is not None and context.migration_id != migration.id:
                continue
            incoming = migration.dest_compute == host and migration.dest_node == host
            outbound = migration.source_compute == host and migration.source_node == host
            flavor = None
            if incoming and outbound:
                on_old = instance.instance_type_id == migration.old_instance_type_id
                flavor = self._migration_flavor(instance, migration, "new_" if on_old else "old_")
            elif incoming and uuid not in tracked:
                flavor = self._migration_flavor(instance, migration, "new_")
            elif outbound and uuid not in tracked:
                flavor = self._migration_flavor(instance, migration, "old_")
            _add(total, _flavor_usage(flavor))
        return total

    def _expected_allocations(self, instances: list[Any], migrations: list[Any]) -> dict[str, dict[str, dict[str, int]]]:
        by_instance: dict[str, list[Any]] = {}
        for migration in migrations:
            by_instance.setdefault(migration.instance_uuid, []).append(migration)
        allocations: dict[str, dict[str, dict[str, int]]] = {}

        def hold(consumer: str, host: str | None, flavor: Any) -> None:
            resources = _placement(_flavor_usage(flavor))
            if host and resources:
                allocations.setdefault(consumer, {})[host] = resources

        for instance in instances:
            if not instance.node or instance.vm_state == vm_states.SHELVED_OFFLOADED:
                continue
            moves = sorted(by_instance.get(instance.uuid, []), key=_moment)
            active = [m for m in moves if m.status not in TERMINAL]
            move = active[-1] if active else None
            if move is not None and (_is_resize(move) or move.migration_type == "live-migration"):
                # The move's allocations: the instance on the destination, the migration on the source.
                hold(instance.uuid, move.dest_node, self._migration_flavor(instance, move, "new_"))
                hold(move.uuid, move.source_node, self._migration_flavor(instance, move, "old_"))
            else:
                hold(instance.uuid, instance.node, instance.flavor)
            for evacuation in moves:
                if evacuation.migration_type != "evacuation":
                    continue
                # Evacuated away from a host that has not restarted (and cleaned up) yet...
                if evacuation.status in ("accepted", "pre-migrating", "done"):
                    hold(instance.uuid, evacuation.source_node, self._evacuated_flavor(instance, evacuation, moves))
                # ...and, while it runs, claimed on its destination (once done, the
                # instance's own node; it may have been evacuated on from there since).
                if evacuation.status in ("accepted", "pre-migrating"):
                    hold(instance.uuid, evacuation.dest_node, instance.flavor)
        return allocations

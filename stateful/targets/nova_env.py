"""Real Nova (34.x) in one process, built from a topology dict, outside any test runner.

Importing this module puts Nova in threading mode (``OS_NOVA_DISABLE_EVENTLET_PATCHING=1``)
and imports ``nova.tests.functional`` (which decides the mode) before anything
can import eventlet; import it before any other Nova module.

The environment is Nova's own functional-test fixture stack, set up by
instantiating a small :class:`_NovaCase` (a ``ProviderUsageBaseTestCase``)
programmatically: database, placement, conductor, scheduler, API, one compute
service per topology host, and ``CastAsCallFixture`` so RPC casts run in the
calling thread (as a chain of RPC-server threads, one at a time).

Command line: Nova's own tests with the paste-config fix applied, and a demo
(create, resize to another host, confirm, audit; prints usage and allocations)::

    python -m stateful.targets.nova_env test nova.tests.functional.regressions.test_bug_1896463
    python -m stateful.targets.nova_env demo
"""

from __future__ import annotations

import os
import sys

os.environ["OS_NOVA_DISABLE_EVENTLET_PATCHING"] = "1"

if "eventlet" in sys.modules and "nova.tests.functional" not in sys.modules:  # pragma: no cover
    raise ImportError("stateful.targets.nova_env must be imported before anything that imports eventlet")

import nova.tests.functional  # noqa: E402,F401  (decides the threading mode)

# ---------------------------------------------------------------------------
# [wsgi] api_paste_config: Nova's ConfFixture points it at
# $state_path/etc/nova/api-paste.ini (relative to site-packages' parent); the
# wheel installs <venv>/etc/nova/api-paste.ini.  Point the option's default
# at the installed file whenever ConfFixture sets up.
# ---------------------------------------------------------------------------

API_PASTE_INI = os.path.join(sys.prefix, "etc", "nova", "api-paste.ini")

_paste_fix_installed = False


def install_api_paste_fix() -> None:
    """Make every later ``nova.tests.fixtures.ConfFixture`` use the installed api-paste.ini."""
    global _paste_fix_installed
    if _paste_fix_installed:
        return
    if not os.path.isfile(API_PASTE_INI):
        raise ImportError(f"Nova's api-paste.ini is not at {API_PASTE_INI}")
    from nova.tests.fixtures import conf as conf_fixtures

    original_setup = conf_fixtures.ConfFixture.setUp

    def setUp(self):  # type: ignore[no-untyped-def]
        original_setup(self)
        self.conf.set_default("api_paste_config", API_PASTE_INI, group="wsgi")

    conf_fixtures.ConfFixture.setUp = setUp
    _paste_fix_installed = True


install_api_paste_fix()


# ---------------------------------------------------------------------------
# Per-host fake drivers, PCI devices and a "this instance goes to that host" filter
# ---------------------------------------------------------------------------

import contextlib  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import weakref  # noqa: E402
from typing import Any, Mapping  # noqa: E402

import fixtures  # noqa: E402
from oslo_serialization import jsonutils  # noqa: E402

from nova import context as nova_context  # noqa: E402
from nova import objects  # noqa: E402
from nova.scheduler import filters as scheduler_filters  # noqa: E402
from nova.tests import fixtures as nova_fixtures  # noqa: E402
from nova.tests.functional import integrated_helpers  # noqa: E402
from nova.virt import fake as fake_virt  # noqa: E402

from stateful import scheduler as stateful_scheduler  # noqa: E402
from stateful.locks import on_host  # noqa: E402

#: Nova's own target_cell, before CellDatabases wraps it (see _NovaCase.setUp).
_REAL_TARGET_CELL = nova_context.target_cell

PCI_VENDOR_ID = "8086"
PCI_PRODUCT_ID = "1520"
PCI_ALIAS = "stateful-pci"
#: The image every server boots from (one of GlanceFixture's).
IMAGE_UUID = "155d900f-4e14-4e4c-a73d-069cbf4541e6"


class StatefulFakeDriver(fake_virt.MediumFakeDriver):
    """MediumFakeDriver with a topology host's capacity and plain (type-PCI) devices.

    One subclass per host is made by :func:`driver_class_for` (Nova loads the
    driver by name from CONF, so a host's numbers must live on a class).
    """

    pci_addresses: tuple[str, ...] = ()

    def get_available_resource(self, nodename):  # type: ignore[no-untyped-def]
        status = super().get_available_resource(nodename)
        if status:
            status["pci_passthrough_devices"] = jsonutils.dumps(
                [
                    {
                        "address": address,
                        "product_id": PCI_PRODUCT_ID,
                        "vendor_id": PCI_VENDOR_ID,
                        "status": "available",
                        "dev_type": "type-PCI",
                        "parent_addr": None,
                        "numa_node": None,
                        "label": "label_%s_%s" % (PCI_VENDOR_ID, PCI_PRODUCT_ID),
                    }
                    for address in self.pci_addresses
                ]
            )
        return status


    def live_migration(self, context, instance, dest, post_method, recover_method,  # type: ignore[no-untyped-def]
                       block_migration=False, migrate_data=None):
        if instance.uuid in ROLLBACK_LIVE_MIGRATIONS:
            # The hypervisor fails the migration: Nova rolls back (as libvirt's driver does).
            recover_method(context, instance, dest, migrate_data)
            return
        return super().live_migration(context, instance, dest, post_method, recover_method,
                                      block_migration=block_migration, migrate_data=migrate_data)


#: uuids of instances whose next live migration the fake hypervisor fails.
ROLLBACK_LIVE_MIGRATIONS: set[str] = set()


def driver_class_for(host: Mapping[str, Any]) -> type:
    return type(
        f"StatefulDriver_{host['name']}",
        (StatefulFakeDriver,),
        {
            "vcpus": int(host["vcpus"]),
            "memory_mb": int(host["memory_mb"]),
            "local_gb": int(host["local_gb"]),
            "pci_addresses": tuple(host.get("pci_devices", ())),
        },
    )


#: instance uuid -> the only host the scheduler may pick for it (set by an operation).
TARGET_HOSTS: dict[str, str] = {}


class TargetHostFilter(scheduler_filters.BaseHostFilter):
    """Pass only the host an operation asked for (Nova's resize API takes no host)."""

    RUN_ON_REBUILD = True

    def host_passes(self, host_state, spec_obj):  # type: ignore[no-untyped-def]
        wanted = TARGET_HOSTS.get(spec_obj.instance_uuid)
        return wanted is None or host_state.host == wanted


# ---------------------------------------------------------------------------
# Scheduler tasks across Nova's RPC threads
# ---------------------------------------------------------------------------

#: reply queue of an in-flight RPC call -> the scheduler task that made it
_CALLERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_CALLERS_LOCK = threading.Lock()


class RPCTaskPropagation(fixtures.Fixture):
    """Make the thread that handles an RPC call act as the calling scheduler task.

    With ``CastAsCallFixture`` every cast is a call: the caller blocks on the
    reply queue while an RPC-server thread runs the endpoint.  That thread is
    invisible to the virtual scheduler (its task is thread-local), so its
    checkpoints and lock waits would be lost.  This fixture records, in the
    caller's thread, which task is waiting on each reply queue, and the
    server thread adopts that task for the endpoint's run (dropping it just
    before it replies, when the caller resumes).  The server thread of a
    compute topic also runs inside :func:`stateful.locks.on_host` for its host.
    """

    def _setUp(self) -> None:
        from oslo_messaging._drivers import impl_fake
        from oslo_messaging.rpc import server as rpc_server

        original_deliver = impl_fake.FakeExchange.deliver_message
        original_process = rpc_server.RPCServer._process_incoming

        def deliver_message(exchange, topic, ctxt, message, server=None, fanout=False, reply_q=None):  # type: ignore[no-untyped-def]
            task = stateful_scheduler.current_task()
            if task is not None and reply_q is not None:
                with _CALLERS_LOCK:
                    _CALLERS[reply_q] = task
            return original_deliver(exchange, topic, ctxt, message, server=server, fanout=fanout, reply_q=reply_q)

        def process_incoming(rpc, incoming):  # type: ignore[no-untyped-def]
            message = incoming[0]
            reply_q = getattr(message, "_reply_q", None)
            with _CALLERS_LOCK:
                task = _CALLERS.get(reply_q) if reply_q is not None else None
            target = rpc._target
            host = target.server if target.topic and target.topic.startswith("compute") else None
            if task is None and host is None:
                return original_process(rpc, incoming)
            replied = []
            original_reply = message.reply

            def reply(reply=None, failure=None):  # type: ignore[no-untyped-def]
                replied.append(True)
                stateful_scheduler.hand_over(None)  # the caller resumes now: one thread per task at a time
                return original_reply(reply=reply, failure=failure)

            message.reply = reply
            stateful_scheduler.hand_over(task)
            try:
                with on_host(host) if host else contextlib.nullcontext():
                    return original_process(rpc, incoming)
            except BaseException:
                # e.g. TaskCancelled while the scheduler unwinds: let the caller return too.
                if not replied:
                    original_reply(failure=sys.exc_info())
                raise
            finally:
                stateful_scheduler.hand_over(None)

        self.useFixture(fixtures.MonkeyPatch(
            "oslo_messaging._drivers.impl_fake.FakeExchange.deliver_message", deliver_message))
        self.useFixture(fixtures.MonkeyPatch(
            "oslo_messaging.rpc.server.RPCServer._process_incoming", process_incoming))


class DeterministicUUIDs(fixtures.Fixture):
    """``uuidutils.generate_uuid`` from a counter, so a replay gets the same uuids.

    Instance and migration uuids end up in lock names (``lock:<uuid>:acquire``,
    ``refresh_cache-<uuid>``), so they are delay-site names: random ones would
    make every recorded schedule unreplayable.  Under the virtual scheduler the
    order of calls, and so the uuids, follow from the schedule.
    """

    def _setUp(self) -> None:
        import uuid as uuid_module

        counter = iter(range(1, 1 << 62))
        lock = threading.Lock()

        def generate_uuid(dashed: bool = True) -> str:
            if sys._getframe(1).f_globals.get("__name__") == "oslo_utils.fixture":
                # uuidsentinel: cached for the whole process, so it must never
                # collide with a later environment's counter (real random uuids).
                value = uuid_module.uuid4()
                return str(value) if dashed else value.hex
            with lock:
                n = next(counter)
            value = uuid_module.UUID(int=(0x5747 << 112) | n, version=4)
            return str(value) if dashed else value.hex

        self.useFixture(fixtures.MonkeyPatch("oslo_utils.uuidutils.generate_uuid", generate_uuid))
        # oslo.db caches each ad-hoc database (placement's) by a random ident
        # for the life of the process; Hypothesis seeds ``random`` the same for
        # every example, so the ident repeats and the cache hands the next
        # example the previous one's deleted sqlite file.  Never repeat it.
        self.useFixture(fixtures.MonkeyPatch(
            "oslo_db.sqlalchemy.provision._random_ident", lambda: f"stateful{next(_DB_IDENTS):08d}"))


_DB_IDENTS = iter(range(1, 1 << 62))


# ---------------------------------------------------------------------------
# The environment
# ---------------------------------------------------------------------------


class _NovaCase(integrated_helpers.ProviderUsageBaseTestCase):
    """Nova's functional-test fixture stack, driven by :class:`NovaEnv` (not a test)."""

    compute_driver = "fake.MediumFakeDriver"
    topology: Mapping[str, Any] = {}

    def runTest(self) -> None:  # testtools wants a test method to exist
        pass

    def setUp(self) -> None:
        first = self.topology["hosts"][0]
        self.flags(
            cpu_allocation_ratio=float(first.get("cpu_allocation_ratio", 1.0)),
            ram_allocation_ratio=float(first.get("ram_allocation_ratio", 1.0)),
            disk_allocation_ratio=float(first.get("disk_allocation_ratio", 1.0)),
            reserved_host_cpus=int(first.get("reserved_host_cpus", 0)),
            reserved_host_memory_mb=int(first.get("reserved_host_memory_mb", 512)),
            reserved_host_disk_mb=int(first.get("reserved_host_disk_gb", 0)) * 1024,
            allow_resize_to_same_host=True,
        )
        self.flags(
            available_filters=[
                "nova.scheduler.filters.all_filters",
                f"{__name__}.TargetHostFilter",
            ],
            enabled_filters=[
                "ComputeFilter",
                "ComputeCapabilitiesFilter",
                "ImagePropertiesFilter",
                "PciPassthroughFilter",
                "TargetHostFilter",
            ],
            group="filter_scheduler",
        )
        self.flags(
            device_spec=[jsonutils.dumps({"vendor_id": PCI_VENDOR_ID, "product_id": PCI_PRODUCT_ID})],
            alias=[jsonutils.dumps({
                "name": PCI_ALIAS, "vendor_id": PCI_VENDOR_ID, "product_id": PCI_PRODUCT_ID,
                "device_type": "type-PCI",
            })],
            group="pci",
        )
        super().setUp()
        from nova.pci import request as pci_request

        pci_request.get_alias_from_config.cache_clear()
        # CellDatabases' target_cell switches a process-wide "current cell"
        # under a reader-writer lock held for the whole block: a task paused
        # inside target_cell(cell0) would make every other thread (the
        # fuzzer's observations included) read cell0, or block on that lock
        # while the scheduler waits for it.  Nova's own target_cell only sets
        # the copy's db_connection, which the fixture's get_context_manager
        # honours; untargeted contexts keep the default cell (cell1), as a
        # compute's own database does in production.
        self.useFixture(fixtures.MonkeyPatch("nova.context.target_cell", _REAL_TARGET_CELL))
        self.useFixture(nova_fixtures.CastAsCallFixture(self))
        self.useFixture(nova_fixtures.SpawnIsSynchronousFixture())
        self.useFixture(RPCTaskPropagation())
        for host in self.topology["hosts"]:
            cls = driver_class_for(host)
            self.useFixture(fixtures.MonkeyPatch(f"nova.virt.fake.{cls.__name__}", cls))
            self.flags(compute_driver=f"fake.{cls.__name__}")
            self._start_compute(host["name"])
        self.flags(compute_driver=self.compute_driver)


class NovaEnv:
    """Nova (database, placement, API, conductor, scheduler, computes) for one topology.

    ``start()`` builds it, ``stop()`` tears it down.  Handy attributes: ``api``
    (admin API client, microversion latest), ``placement`` (placement API
    client), ``ctx`` (admin context), ``computes`` (host -> compute service),
    ``flavors`` (flavor name -> flavor id; pinned flavors are skipped: the fake
    driver has no NUMA topology), ``provider`` (host -> resource provider uuid).
    """

    def __init__(self, topology: Mapping[str, Any]) -> None:
        self.topology = topology
        self.case: _NovaCase | None = None
        self.flavors: dict[str, str] = {}
        self.flavor_specs: dict[str, Mapping[str, Any]] = {}
        self.provider: dict[str, str] = {}
        self.service_ids: dict[str, Any] = {}

    def start(self) -> "NovaEnv":
        case_class = type("NovaCase", (_NovaCase,), {"topology": self.topology})
        case = case_class("runTest")
        self.case = case
        self.uuids = DeterministicUUIDs()
        self.uuids.setUp()
        try:
            case.setUp()
            self.ctx = nova_context.get_admin_context()
            for host in self.topology["hosts"]:
                node = objects.ComputeNode.get_by_nodename(self.ctx, host["name"])
                self.provider[host["name"]] = node.uuid
                self.service_ids[host["name"]] = self.api.get_services(
                    host=host["name"], binary="nova-compute")[0]["id"]
            for flavor in self.topology["flavors"]:
                self.flavor_specs[flavor["name"]] = flavor
                if flavor.get("cpu_dedicated"):
                    continue
                extra = {}
                if flavor.get("pci_devices"):
                    extra["pci_passthrough:alias"] = f"{PCI_ALIAS}:{int(flavor['pci_devices'])}"
                self.flavors[flavor["name"]] = case._create_flavor(
                    name=flavor["name"], memory_mb=int(flavor["memory_mb"]), vcpu=int(flavor["vcpus"]),
                    disk=int(flavor["root_gb"]), ephemeral=0, swap=0, extra_spec=extra or None,
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        case, self.case = self.case, None
        if case is None:
            return
        TARGET_HOSTS.clear()
        ROLLBACK_LIVE_MIGRATIONS.clear()
        errors = []
        while case._cleanups:
            function, args, kwargs = case._cleanups.pop()
            try:
                function(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - keep cleaning up
                errors.append(error)
        self.uuids.cleanUp()
        if errors:
            raise errors[0]

    def __enter__(self) -> "NovaEnv":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- conveniences ---------------------------------------------------------

    @property
    def api(self):  # type: ignore[no-untyped-def]
        assert self.case is not None
        return self.case.admin_api

    @property
    def placement(self):  # type: ignore[no-untyped-def]
        assert self.case is not None
        return self.case.placement

    @property
    def computes(self) -> dict[str, Any]:
        assert self.case is not None
        return self.case.computes

    def audit(self, host: str) -> None:
        """The resource audit (the periodic update_available_resource) on one compute."""
        with on_host(host):
            self.computes[host].manager.update_available_resource(self.ctx)

    def host_down(self, host: str) -> None:
        """Stop the compute service and force it down (what evacuation needs)."""
        with on_host(host):
            self.computes[host].stop()
        self.api.put_service(self.service_ids[host], {"forced_down": "true"})

    def host_up(self, host: str) -> None:
        """Unforce and restart the compute service, keeping its hypervisor (a real restart)."""
        from unittest import mock

        assert self.case is not None
        old = self.computes[host]
        # Restart first: the new service completes the 'done' evacuations away
        # from this host, which Nova requires before it lets the host be forced up.
        with on_host(host), mock.patch("nova.virt.driver.load_compute_driver", return_value=old.manager.driver):
            self.computes[host] = self.case.start_service("compute", host=host)
        self.api.put_service(self.service_ids[host], {"forced_down": "false"})

    def allocations(self, consumer: str) -> dict[str, dict[str, int]]:
        body = self.placement.get(f"/allocations/{consumer}").body["allocations"]
        return {rp: dict(alloc["resources"]) for rp, alloc in body.items()}


def run_nova_tests(argv: list[str]) -> None:
    """``python -m testtools.run`` with the fix above in place."""
    from testtools import run

    run.main([sys.argv[0], *argv], sys.stdout)


def demo() -> None:
    """Create a server, resize it to another host, confirm, audit, and print the accounting."""
    from stateful.targets import nova_env as module  # the importable module, also under ``-m``
    from stateful.topology import example_topology

    started = time.time()
    env = module.NovaEnv(example_topology()).start()
    print(f"Nova up in {time.time() - started:.1f}s: computes {sorted(env.computes)}, flavors {sorted(env.flavors)}")
    try:
        began = time.time()
        body = env.case._build_server(
            name="vm1", image_uuid=IMAGE_UUID, flavor_id=env.flavors["small"], networks="none", host="host1")
        uuid = env.api.post_server({"server": body})["id"]
        print("created:", env.api.get_server(uuid)["status"], "on", env.api.get_server(uuid)["OS-EXT-SRV-ATTR:host"])
        module.TARGET_HOSTS[uuid] = "host2"  # Nova's resize API takes no host: the filter picks it
        env.api.post_server_action(uuid, {"resize": {"flavorRef": env.flavors["medium"]}})
        print("resized:", env.api.get_server(uuid)["status"], "on", env.api.get_server(uuid)["OS-EXT-SRV-ATTR:host"])
        env.api.post_server_action(uuid, {"confirmResize": None})
        print("confirmed:", env.api.get_server(uuid)["status"])
        for host in sorted(env.computes):
            env.audit(host)
        print(f"create+resize+confirm+audits: {time.time() - began:.2f}s")
        for host in sorted(env.computes):
            node = objects.ComputeNode.get_by_nodename(env.ctx, host)
            print(f"{host}: vcpus_used={node.vcpus_used} memory_mb_used={node.memory_mb_used} "
                  f"local_gb_used={node.local_gb_used}")
        names = {rp: host for host, rp in env.provider.items()}
        print("placement allocations of vm1:", {names[rp]: r for rp, r in env.allocations(uuid).items()})
    finally:
        env.stop()


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "test":
    run_nova_tests(sys.argv[2:])
elif __name__ == "__main__" and sys.argv[1:] == ["demo"]:
    demo()

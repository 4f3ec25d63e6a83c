"""Real Nova (34.x) in one process, built from a topology dict, outside any test runner.

Importing this module puts Nova in threading mode (``OS_NOVA_DISABLE_EVENTLET_PATCHING=1``)
and imports ``nova.tests.functional`` (which decides the mode) before anything
can import eventlet; import it before any other Nova module.

The environment is Nova's own functional-test fixture stack, set up by
instantiating a small :class:`_NovaCase` (a ``ProviderUsageBaseTestCase``)
programmatically: database, placement, conductor, scheduler, API, one compute
service per topology host, and :class:`CastAsSynchronousCall` so an RPC cast
runs to its end before the caster goes on (as a chain of RPC-server threads,
one at a time), its callee's failure staying with the callee as in production.

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
import logging as std_logging  # noqa: E402
import sqlite3  # noqa: E402
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


def _log_to_stderr() -> None:
    """Move the root log handler nova.test's import installs from stdout to stderr, warnings only.

    ``nova/test.py`` calls ``oslo_log.log.setup`` at import, which logs to
    stdout; Nova's StandardLogging captures its logs only while a target is
    set up, so messages at tear-down (thread pools shutting down) reached
    stdout, where ``fuzz --json`` promises the report and nothing else.  And
    importing Nova's compute manager logs at INFO (periodic tasks skipped),
    which turned a one-line error about a bad Nova regression file into two.
    """
    for handler in std_logging.getLogger().handlers:
        if isinstance(handler, std_logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
            handler.setStream(sys.stderr)
            handler.setLevel(std_logging.WARNING)


_log_to_stderr()

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
        if (instance.uuid, dest, stateful_scheduler.current_task()) in ROLLBACK_LIVE_MIGRATIONS:
            # The hypervisor fails the migration: Nova rolls back (as libvirt's driver does).
            recover_method(context, instance, dest, migrate_data)
            return
        return super().live_migration(context, instance, dest, post_method, recover_method,
                                      block_migration=block_migration, migrate_data=migrate_data)

    def post_live_migration(  # type: ignore[no-untyped-def]
        self, context, instance, block_device_info, migrate_data=None
    ):
        # The guest is gone from the source once it runs on the destination (libvirt
        # undefines it; Nova's FakeLiveMigrateDriver forgets it the same way).  Without
        # this, evacuating the instance back to its old host fails in spawn with
        # InstanceExists: a fake-hypervisor artifact, not a Nova bug.
        self.destroy(context, instance, network_info=None, block_device_info=block_device_info)


#: Live migrations the fake hypervisor fails, as (instance uuid, destination,
#: the scheduler task whose operation asked for it, None outside a concurrent
#: step): keyed by the task so that another operation on the same instance
#: (one that Nova rejects, say) neither disarms nor inherits the failure.
ROLLBACK_LIVE_MIGRATIONS: set[tuple[str, str, Any]] = set()


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


#: (instance uuid, the scheduler task whose operation set it, None outside a
#: concurrent step) -> the only host the scheduler may pick for it.  Keyed by
#: the task as ROLLBACK_LIVE_MIGRATIONS is, so that a second resize of the
#: same instance (one that Nova rejects, say) neither redirects nor clears
#: the accepted one's destination.
TARGET_HOSTS: dict[tuple[str, Any], str] = {}


class TargetHostFilter(scheduler_filters.BaseHostFilter):
    """Pass only the host an operation asked for (Nova's resize API takes no host)."""

    RUN_ON_REBUILD = True

    def host_passes(self, host_state, spec_obj):  # type: ignore[no-untyped-def]
        wanted = TARGET_HOSTS.get((spec_obj.instance_uuid, stateful_scheduler.current_task()))
        return wanted is None or host_state.host == wanted


# ---------------------------------------------------------------------------
# Scheduler tasks across Nova's RPC threads
# ---------------------------------------------------------------------------

#: reply queue of an in-flight RPC call -> the scheduler task that made it
_CALLERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_CALLERS_LOCK = threading.Lock()


class RPCTaskPropagation(fixtures.Fixture):
    """Make the thread that handles an RPC call act as the calling scheduler task.

    With :class:`CastAsSynchronousCall` every cast waits as a call does: the
    caller blocks on the reply queue while an RPC-server thread runs the
    endpoint.  That thread is invisible to the virtual scheduler (its task
    is thread-local), so its checkpoints and lock waits would be lost.  This fixture records, in the
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


#: Failures of casts' callees, stopped at the cast: (the caster's scheduler task, None outside a
#: concurrent step; the method cast; the callee's exception), for the target to read back
#: (:meth:`stateful.targets.nova.NovaTarget._api`).
DROPPED_CAST_FAILURES: list[tuple[Any, str, Exception]] = []


class CastAsSynchronousCall(fixtures.Fixture):
    """RPC casts run to their end before the caster goes on, but the callee's failure stays with the callee.

    Nova's ``CastAsCallFixture`` makes ``cast`` the same function as
    ``call``, so an exception of the callee is raised into the caster, which
    in production returned as soon as the message was queued (the RPC
    server only logs it: "Exception during message handling").  The caster
    then unwinds through code production never runs on that error (e.g.
    ``prep_resize``'s claim context dropping a claim a second time, seed 26).
    Here a cast still waits for its callee (the same order, on the same RPC
    server threads, so a schedule replays), but an ``Exception`` coming back
    is recorded in :data:`DROPPED_CAST_FAILURES` and the caster goes on as
    in production.  A cancelled scheduler task still unwinds: its
    ``TaskCancelled`` reaches the caster as oslo.messaging's ``RemoteError``,
    raised again here.  Fanout casts go to one server, as in Nova's fixture.
    """

    def _setUp(self) -> None:
        from oslo_messaging.rpc import client as rpc_client

        log = std_logging.getLogger(__name__)

        def cast(client, ctxt, method, **kwargs):  # type: ignore[no-untyped-def]
            try:
                client.call(ctxt, method, **kwargs)
            except Exception as error:
                task = stateful_scheduler.current_task()
                if task is not None and task.cancelled:
                    raise stateful_scheduler.TaskCancelled() from error
                DROPPED_CAST_FAILURES.append((task, method, error))
                log.info("cast %s failed in its callee: %s; the caster goes on", method, type(error).__name__)

        for cls in (rpc_client.RPCClient, rpc_client._CallContext):
            self.useFixture(fixtures.MonkeyPatch(
                f"oslo_messaging.rpc.client.{cls.__name__}.prepare", _without_fanout(cls.prepare)))
            self.useFixture(fixtures.MonkeyPatch(f"oslo_messaging.rpc.client.{cls.__name__}.cast", cast))
        self.addCleanup(DROPPED_CAST_FAILURES.clear)


def _without_fanout(prepare: Any) -> Any:
    """``prepare`` with fanout off: a fanout message has no reply queue to wait on."""

    def prepare_one(client, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "fanout" in kwargs:
            kwargs["fanout"] = False
        return prepare(client, *args, **kwargs)

    return prepare_one


def dropped_cast_failures(task: Any) -> list[tuple[str, Exception]]:
    """Take what the casts of ``task`` (None: outside a concurrent step) dropped since the last take."""
    taken = [(method, error) for caster, method, error in DROPPED_CAST_FAILURES if caster is task]
    DROPPED_CAST_FAILURES[:] = [failure for failure in DROPPED_CAST_FAILURES if failure[0] is not task]
    return taken


class PromptFakeRPC(fixtures.Fixture):
    """oslo.messaging's fake driver, with listeners woken by a delivery instead of a 50 ms poll.

    The fake driver's RPC servers look for a message every 50 ms, so every
    hop of an operation (API to conductor, conductor to scheduler, to each
    compute, and each reply) waited 25 ms on average: most of the wall-clock
    time of a create or a resize.  Here a listener waits on a condition that
    every delivery notifies (and still wakes every 50 ms to see if it was
    stopped); which message it takes, and when, is otherwise unchanged.
    """

    def _setUp(self) -> None:
        from oslo_messaging._drivers import base as driver_base
        from oslo_messaging._drivers import impl_fake

        delivered = threading.Condition()
        original_deliver = impl_fake.FakeExchange.deliver_message

        def deliver_message(exchange, *args, **kwargs):  # type: ignore[no-untyped-def]
            original_deliver(exchange, *args, **kwargs)
            with delivered:
                delivered.notify_all()

        @driver_base.batch_poll_helper
        def poll(listener, timeout=None):  # type: ignore[no-untyped-def]
            deadline = None if timeout is None else time.monotonic() + timeout
            while not listener._stopped.is_set():
                with delivered:  # a delivery after the look below notifies the wait below
                    for target in listener._targets:
                        exchange = listener._exchange_manager.get_exchange(target.exchange)
                        ctxt, message, reply_q, requeue = exchange.poll(target, listener._pool)
                        if message is not None:
                            return impl_fake.FakeIncomingMessage(ctxt, message, reply_q, requeue)
                    pause = 0.050
                    if deadline is not None:
                        pause = min(pause, deadline - time.monotonic())
                        if pause < 0:
                            break
                    delivered.wait(pause)
            return None

        self.useFixture(fixtures.MonkeyPatch(
            "oslo_messaging._drivers.impl_fake.FakeExchange.deliver_message", deliver_message))
        self.useFixture(fixtures.MonkeyPatch("oslo_messaging._drivers.impl_fake.FakeListener.poll", poll))


#: The oslo locks whose acquire and release stay delay sites on the Nova target.
#: ``compute_resources`` is the resource tracker's: where an audit and an
#: operation meet, and what every accounting race is about.
DELAY_SITE_LOCKS = frozenset({"compute_resources"})


class QuietLocks(fixtures.Fixture):
    """Every other oslo lock is still the scheduler's (a task that would wait parks), but not a delay site.

    Nova takes some thirty locks per operation that have nothing to do with
    the accounting (``provider-tree-lock`` around every provider-cache
    access, the instance's uuid lock, ``refresh_cache-*``, the scheduler's
    host-state locks): two thirds of an evacuation's checkpoints.  Each
    checkpoint is a place where the virtual scheduler draws a delay, so with
    them an operation's clock runs far ahead of an audit's, and the windows
    the races live in (an audit between two of the operation's database
    writes) are almost never drawn; shrinking is as slow.  Contention on
    these locks still parks the waiting task, so no thread ever blocks
    behind the scheduler's back.  Set up after ``SchedulerLocks``.
    """

    def __init__(self, loud: frozenset[str] = DELAY_SITE_LOCKS) -> None:
        super().__init__()
        self.loud = frozenset(f"lock:{name}:{phase}" for name in loud for phase in ("acquire", "release"))

    def _setUp(self) -> None:
        from stateful import locks

        real_checkpoint = locks.checkpoint

        def checkpoint(site: str) -> None:
            if site in self.loud:
                real_checkpoint(site)

        self.useFixture(fixtures.MonkeyPatch("stateful.locks.checkpoint", checkpoint))


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
        self.useFixture(PromptFakeRPC())  # before the services start listening
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
        self.useFixture(CastAsSynchronousCall())
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
        self.records: sqlite3.Connection | None = None
        self.stopped: set[str] = set()  # hosts whose compute service host_down stopped

    def start(self) -> "NovaEnv":
        case_class = type("NovaCase", (_NovaCase,), {"topology": self.topology})
        case = case_class("runTest")
        self.case = case
        self.uuids = DeterministicUUIDs()
        self.uuids.setUp()
        try:
            case.setUp()
            _RUNNING.append(self)
            self.ctx = nova_context.get_admin_context()
            self.records = self._open_records()
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
        if self in _RUNNING:
            _RUNNING.remove(self)
        records, self.records = self.records, None
        if records is not None:
            records.close()
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

    def _open_records(self) -> sqlite3.Connection:
        """A read-only connection to the cell database, for the fuzzer's observations.

        The fuzzer reads the compute nodes' counters at every checkpoint of a
        concurrent step; through Nova's objects each read opens a new database
        connection (the fixture's engines have no pool) and costs about 10 ms,
        four fifths of a step's time.  One plain connection kept open reads
        the same committed rows (the file is in WAL mode: a reader never waits
        for, nor sees the uncommitted part of, a paused writer) in well under
        a millisecond, and never takes part in Nova's sessions or locks.
        """
        assert self.case is not None
        ctx = nova_context.get_admin_context()
        nova_context.set_target_cell(ctx, self.case.cell_mappings["cell1"])
        from nova.db.main import api as main_db_api

        url = main_db_api.get_engine(context=ctx).url
        if url.get_backend_name() != "sqlite" or not url.database:
            raise RuntimeError(f"the cell database is not a sqlite file: {url}")
        return sqlite3.connect(f"file:{url.database}?mode=ro", uri=True, check_same_thread=False)

    def counters(self) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, list[str]]]]:
        """Per compute node: its usage counters, and its claimed or allocated PCI devices' owners.

        ``({node: {"vcpus", "memory_mb", "disk_gb"}}, {node: {address: [instance uuid, ...]}})``,
        read from the cell database's ``compute_nodes`` and ``pci_devices`` rows.
        """
        assert self.records is not None
        usage: dict[str, dict[str, int]] = {}
        names: dict[int, str] = {}
        rows = self.records.execute(
            "SELECT id, hypervisor_hostname, vcpus_used, memory_mb_used, local_gb_used "
            "FROM compute_nodes WHERE deleted = 0 ORDER BY id"
        )
        for node_id, name, vcpus, memory_mb, disk_gb in rows:
            if name not in usage:
                names[node_id] = name
                usage[name] = {"vcpus": int(vcpus), "memory_mb": int(memory_mb), "disk_gb": int(disk_gb)}
        owners: dict[str, dict[str, list[str]]] = {name: {} for name in usage}
        rows = self.records.execute(
            "SELECT compute_node_id, address, instance_uuid FROM pci_devices "
            "WHERE status IN ('claimed', 'allocated') AND instance_uuid IS NOT NULL ORDER BY id"
        )
        for node_id, address, instance_uuid in rows:
            if node_id in names:
                owners[names[node_id]].setdefault(address, []).append(instance_uuid)
        return usage, owners

    def deleted_instances(self) -> list[str]:
        """The uuids of the cell's deleted instances."""
        assert self.records is not None
        return [uuid for (uuid,) in self.records.execute("SELECT uuid FROM instances WHERE deleted != 0 ORDER BY id")]

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
        self.stopped.add(host)
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
        self.stopped.discard(host)
        self.api.put_service(self.service_ids[host], {"forced_down": "false"})

    def allocations(self, consumer: str) -> dict[str, dict[str, int]]:
        body = self.placement.get(f"/allocations/{consumer}").body["allocations"]
        return {rp: dict(alloc["resources"]) for rp, alloc in body.items()}


#: The environment started and not yet stopped (one at a time in a process).
_RUNNING: list[NovaEnv] = []


def compute_manager(host: str) -> Any:
    """The compute manager of ``host`` in the running environment; None while its service is stopped.

    For the fixes of Nova's open races that reach another host's compute
    directly where a fix in production would send it a message.
    """
    (env,) = _RUNNING
    return None if host in env.stopped else env.computes[host].manager


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
        module.TARGET_HOSTS[uuid, None] = "host2"  # Nova's resize API takes no host: the filter picks it
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

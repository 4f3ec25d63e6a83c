"""What the fuzzer needs from a system under test: operations and observations.

The state machine, the replayer and the campaigns only ever talk to a
:class:`Target`; the embedded compute service (``stateful.targets.model``)
and real Nova (``stateful.targets.nova``) each implement it.  Everything that
crosses this line is plain data — an :class:`Op` is a name and JSON-able
arguments, an :class:`Observation` is nested dicts of numbers — so that steps
can be written to regression files and replayed against either target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

#: Every operation the machine can ask for, with its required arguments.
#: Instances are named by the machine ("vm1"), never by a target's uuid, so
#: that steps mean the same on every target and in every run.
OPERATIONS: dict[str, tuple[str, ...]] = {
    "create": ("instance", "flavor", "host"),
    "delete": ("instance",),
    "resize": ("instance", "flavor", "host"),
    "migrate": ("instance", "host"),
    "confirm": ("instance",),
    "revert": ("instance",),
    "evacuate": ("instance", "host"),
    "live_migrate": ("instance", "host"),
    "live_migrate_rollback": ("instance", "host"),
    "host_down": ("host",),
    "host_up": ("host",),
    "audit": ("host",),
}


@dataclass(frozen=True)
class Op:
    """One operation: a name from :data:`OPERATIONS` and its arguments."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        required = OPERATIONS.get(self.name)
        if required is None:
            raise ValueError(f"unknown operation {self.name!r}")
        missing = [arg for arg in required if arg not in self.args]
        extra = [arg for arg in self.args if arg not in required]
        if missing or extra:
            raise ValueError(f"operation {self.name!r}: missing {missing}, unexpected {extra}")

    @property
    def label(self) -> str:
        """A short human label, e.g. ``resize(vm1, large, host2)``."""
        return f"{self.name}({', '.join(str(v) for v in self.args.values())})"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.name, "args": dict(self.args)}


@dataclass
class Observation:
    """Accounting state as plain data, actual or expected.

    ``usage``: node → resource → amount, for the resources ``vcpus``,
    ``memory_mb``, ``disk_gb``, ``pci_devices`` and ``pinned_cpus`` (counts,
    reserved amounts included where the target counts them so).
    ``reserved``: node → resource → the floor usage can't go below.
    ``allocations``: consumer → provider → resource class → amount.
    ``pci_owners`` / ``cpu_owners``: node → device or CPU → every consumer
    that claims it (more than one is double ownership).
    ``terminal_consumers``: uuids of migrations in a terminal status and of
    deleted instances; they must hold nothing.
    """

    usage: dict[str, dict[str, int]]
    reserved: dict[str, dict[str, int]] = field(default_factory=dict)
    allocations: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    pci_owners: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    cpu_owners: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    terminal_consumers: list[str] = field(default_factory=list)
    #: Migrations in progress (not in a terminal status).
    in_flight: int = 0
    #: The machine's instance name -> {"host", "vm_state", "task_state"}, for
    #: instances that exist and are not deleted.
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Hosts whose compute service is down.
    down_hosts: list[str] = field(default_factory=list)


class Target(Protocol):
    """A system under test, built fresh for each example.

    Optionally, ``checkpoint_hints``: operation name → about how many
    checkpoints that operation reaches, so that the default schedule spreads
    its pauses over whole operations (:class:`~stateful.strategies.VirtualDelays`).
    Optionally, ``tasks_as_greenlets``: true if a concurrent step's
    operations may run as greenlets on one thread
    (:class:`~stateful.scheduler.GreenletCarrier`, far cheaper switches),
    which only holds for code that blocks on nothing but :mod:`stateful.locks`
    and starts no threads; otherwise each runs on its own thread.
    """

    name: str
    #: Exceptions that mean "the system refused the operation", not a bug.
    rejections: tuple[type[BaseException], ...]
    #: Whether :meth:`observe_counters` may be called on any thread (it reads
    #: nothing bound to the thread that built the target).  Then checkpoints
    #: that change nothing in the schedule cost no thread switch.
    observes_from_any_thread: bool

    def setup(self, topology: Mapping[str, Any]) -> None:
        """Build the system for a topology (see :mod:`stateful.topology`)."""

    def operation(self, op: Op) -> Callable[[], Any]:
        """A callable that performs ``op`` when called (as a task or directly)."""

    def observe(self) -> Observation:
        """The accounting the system shows now."""

    def observe_counters(self) -> Observation:
        """A cheap part of :meth:`observe` — ``usage`` and the owner maps — for the
        checks made at every checkpoint while a step is in flight."""

    def expected(self) -> Observation:
        """What the accounting should be, from the database's records alone."""

    def describe(self, consumer: str) -> str:
        """A readable name for a consumer uuid (``vm1``, ``migration of vm1``)."""

    def teardown(self) -> None:
        """Release everything the target built."""

"""The suite's test: a Hypothesis state machine over compute nodes, instances and migrations.

Each rule is one operation on the system under test — create, delete, resize
(to another host or the same one), cold migrate, confirm, revert, evacuate,
live migration (success and rollback), host down and up, an audit — applied
alone, or (the :meth:`AccountingMachine.concurrently` rule) two or three at
once under the scheduler with a Hypothesis-drawn delay at every delay site.
After every step the session checks the accounting invariants
(:mod:`stateful.invariants`); during concurrent steps it checks the
always-true ones at every checkpoint.

The machine talks to a :class:`~stateful.target.Target` only, so the same
rules drive the embedded compute service and real Nova.  Build a machine for
a configuration with :func:`make_machine`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from hypothesis import event, target
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    multiple,
    precondition,
    rule,
)

from stateful.errors import Finding
from stateful.faults import Fault
from stateful.overlaps import interleaving_signature, locked_overlap, overlap_labels
from stateful.scheduler import Strategy
from stateful.session import Recording, Session
from stateful.strategies import VirtualDelays
from stateful.target import Observation, Op, Target
from stateful.topology import topologies

#: Flavors are referred to by index into the topology's list, so that a rule's
#: arguments don't depend on which flavors the topology drew.
flavor_indexes = st.integers(0, 4)


@dataclass(frozen=True)
class MachineConfig:
    """What a machine fuzzes and how it schedules its concurrent steps."""

    target: Callable[[], Target]
    faults: tuple[Fault, ...] = ()
    schedule: Callable[[Any], Strategy] = VirtualDelays
    #: Replay every example and compare traces (a harness error on mismatch).
    self_check: bool = False
    #: Called with the recording of every example that ends (for campaigns).
    on_example: Callable[[Recording], None] | None = None


def must_reject(op: Op, state: Observation) -> str | None:
    """Why Nova must refuse ``op`` in ``state`` (None: it may go either way).

    Only the refusals that follow from the records alone; whether something
    fits on a host depends on more than the machine tracks.
    """
    instance = op.args.get("instance")
    if op.name in ("create", "audit", "host_down", "host_up"):
        return None
    server = state.servers.get(instance)
    if server is None:
        return f"{instance} does not exist"
    if op.name in ("confirm", "revert") and server["vm_state"] != "resized":
        return f"{instance} is {server['vm_state']}, not resized"
    if op.name == "evacuate" and server["host"] not in state.down_hosts:
        return f"{instance}'s host {server['host']} is up"
    if op.name in ("resize", "migrate", "live_migrate", "live_migrate_rollback") and server["vm_state"] != "active":
        return f"{instance} is {server['vm_state']}, not active"
    return None


class AccountingMachine(RuleBasedStateMachine):
    """Compute nodes, instances and migrations, with several operations in flight at once."""

    config: MachineConfig

    hosts = Bundle("hosts")
    instances = Bundle("instances")
    migrations = Bundle("migrations")

    def __init__(self) -> None:
        super().__init__()
        self.session: Session | None = None
        self.state = Observation(usage={})
        self.flavors: list[str] = []
        self.host_names: list[str] = []
        self._names = itertools.count(1)

    # -- set-up and tear-down ------------------------------------------------

    @initialize(target=hosts, topology=topologies())
    def build(self, topology: dict[str, Any]) -> Any:
        self.session = Session(self.config.target(), topology, self.config.faults)
        self.session.setUp()
        self.flavors = [flavor["name"] for flavor in topology["flavors"]]
        self.host_names = [host["name"] for host in topology["hosts"]]
        self.state = self.session.target.observe()
        return multiple(*self.host_names)

    def teardown(self) -> None:
        if self.session is None:
            return
        recording = self.session.recording
        self.session.cleanUp()
        if self.config.on_example is not None:
            self.config.on_example(recording)
        if self.config.self_check:
            from stateful.replay import check_determinism

            check_determinism(recording, self.config.target, self.config.faults)

    # -- stepping ---------------------------------------------------------------

    def step(self, ops: Sequence[Op], schedule: Strategy | None = None) -> list[bool]:
        """Apply a step; returns, per operation, whether it succeeded (was not rejected)."""
        assert self.session is not None
        reasons = [must_reject(op, self.state) for op in ops] if schedule is None else [None]
        try:
            result = self.session.apply(ops, schedule)
            for op, reason, outcome in zip(ops, reasons, result.outcomes):
                if reason is not None and outcome.error is None:
                    raise Finding("rejects-illegal-operation", f"{op.label} succeeded although {reason}")
        except BaseException as error:
            # The last example Hypothesis runs is the shrunk one; whoever
            # catches its failure finds the replayable recording here.
            error.stateful_recording = self.session.recording  # type: ignore[attr-defined]
            raise
        self.state = result.observation
        if schedule is not None:
            self._label(result.trace)
        return [outcome.error is None for outcome in result.outcomes]

    def _label(self, trace: Sequence[Any]) -> None:
        for label in overlap_labels(trace):
            event(label)
        event(f"interleaving {interleaving_signature(trace)}")
        target(float(locked_overlap(trace)), label="sites reached inside another task's locked region")

    def flavor(self, index: int) -> str:
        return self.flavors[index % len(self.flavors)]

    def new_name(self) -> str:
        return f"vm{next(self._names)}"

    # -- one operation at a time ----------------------------------------------

    @rule(target=instances, host=hosts, flavor=flavor_indexes)
    def create(self, host: str, flavor: int) -> Any:
        name = self.new_name()
        (created,) = self.step([Op("create", {"instance": name, "flavor": self.flavor(flavor), "host": host})])
        return name if created else multiple()

    @rule(instance=consumes(instances))
    def delete(self, instance: str) -> None:
        self.step([Op("delete", {"instance": instance})])

    @rule(target=migrations, instance=instances, host=hosts, flavor=flavor_indexes)
    def resize(self, instance: str, host: str, flavor: int) -> Any:
        op = Op("resize", {"instance": instance, "flavor": self.flavor(flavor), "host": host})
        (resized,) = self.step([op])
        return instance if resized else multiple()

    @rule(target=migrations, instance=instances, host=hosts)
    def migrate(self, instance: str, host: str) -> Any:
        (migrated,) = self.step([Op("migrate", {"instance": instance, "host": host})])
        return instance if migrated else multiple()

    @rule(instance=consumes(migrations))
    def confirm(self, instance: str) -> None:
        self.step([Op("confirm", {"instance": instance})])

    @rule(instance=consumes(migrations))
    def revert(self, instance: str) -> None:
        self.step([Op("revert", {"instance": instance})])

    @rule(instance=instances, host=hosts, rollback=st.booleans())
    def live_migrate(self, instance: str, host: str, rollback: bool) -> None:
        name = "live_migrate_rollback" if rollback else "live_migrate"
        self.step([Op(name, {"instance": instance, "host": host})])

    def _stranded(self) -> list[str]:
        """Instances on a down host: what evacuation is for."""
        return sorted(n for n, s in self.state.servers.items() if s["host"] in self.state.down_hosts)

    @precondition(lambda self: bool(self._stranded()))
    @rule(data=st.data(), host=hosts)
    def evacuate(self, data: st.DataObject, host: str) -> None:
        instance = data.draw(st.sampled_from(self._stranded()), label="stranded instance")
        self.step([Op("evacuate", {"instance": instance, "host": host})])

    @precondition(lambda self: len(self.state.down_hosts) < len(self.host_names) - 1)
    @rule(host=hosts)
    def host_down(self, host: str) -> None:
        self.step([Op("host_down", {"host": host})])

    @precondition(lambda self: bool(self.state.down_hosts))
    @rule(host=hosts)
    def host_up(self, host: str) -> None:
        self.step([Op("host_up", {"host": host})])

    @rule(host=hosts)
    def audit(self, host: str) -> None:
        self.step([Op("audit", {"host": host})])

    # -- several at once ----------------------------------------------------------

    @rule(target=instances, data=st.data())
    def concurrently(self, data: st.DataObject) -> Any:
        """Two or three operations in flight at once, under Hypothesis-drawn delays.

        The first is any operation; the others are, more often than not, an
        audit of a host the first one touches — where Nova's races live.
        """
        first = data.draw(self.operations(), label="first operation")
        ops = [first]
        for _ in range(data.draw(st.integers(1, 2), label="more operations")):
            ops.append(data.draw(st.one_of(self.related_audits(first), self.operations()), label="then"))
        self.step(ops, self.config.schedule(data))
        created = [op.args["instance"] for op in ops if op.name == "create"]
        return multiple(*(name for name in created if name in self.state.servers))

    def related_audits(self, op: Op) -> st.SearchStrategy[Op]:
        """Audits of the hosts ``op`` involves: its instance's host and its destination."""
        server = self.state.servers.get(op.args.get("instance", ""), {})
        involved = [h for h in (server.get("host"), op.args.get("host")) if h]
        return st.sampled_from(involved or self.host_names).map(lambda h: Op("audit", {"host": h}))

    def operations(self) -> st.SearchStrategy[Op]:
        """Any one operation on the current state (simplest first, for shrinking)."""
        hosts = st.sampled_from(self.host_names)
        flavors = st.sampled_from(self.flavors)
        live = sorted(self.state.servers)
        audits = hosts.map(lambda h: Op("audit", {"host": h}))
        create = st.builds(
            lambda f, h: Op("create", {"instance": self.new_name(), "flavor": f, "host": h}), flavors, hosts
        )
        if not live:
            return st.one_of(audits, create)
        instances = st.sampled_from(live)

        def on_instance(name: str, *extra: str) -> st.SearchStrategy[Op]:
            fields = {"host": hosts, "flavor": flavors}
            return st.builds(
                lambda instance, **args: Op(name, {"instance": instance, **args}),
                instances,
                **{arg: fields[arg] for arg in extra},
            )

        return st.one_of(
            audits,
            on_instance("confirm"),
            on_instance("revert"),
            on_instance("evacuate", "host"),
            on_instance("resize", "flavor", "host"),
            on_instance("migrate", "host"),
            on_instance("live_migrate", "host"),
            on_instance("live_migrate_rollback", "host"),
            on_instance("delete"),
            create,
        )


def make_machine(config: MachineConfig) -> type[AccountingMachine]:
    """A machine class bound to ``config`` (Hypothesis instantiates it per example)."""
    faults = "+".join(f.name for f in config.faults) or "no-fault"
    return type(f"AccountingMachine[{faults}]", (AccountingMachine,), {"config": config})



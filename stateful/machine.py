"""The suite's test: a Hypothesis state machine over compute nodes, instances and migrations.

Each rule is one operation on the system under test — create, delete, resize
(to another host or the same one), cold migrate, confirm, revert, evacuate,
live migration (success and rollback), host down and up, an audit — applied
alone, or two or three at once under the scheduler with a Hypothesis-drawn
delay at every delay site: any operations
(:meth:`AccountingMachine.concurrently`), or two on one instance
(:meth:`AccountingMachine.concurrently_on_one_instance`); every rule of an
operation on an instance may also run it with an audit of a host it involves.
After every step the session checks the accounting invariants
(:mod:`stateful.invariants`); during concurrent steps it checks the
always-true ones at every checkpoint.

The machine talks to a :class:`~stateful.target.Target` only, so the same
rules drive the embedded compute service and real Nova.  Build a machine for
a configuration with :func:`make_machine`.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

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

from stateful.determinism import NoLocalConstants
from stateful.errors import Finding, StopRequested
from stateful.faults import Fault
from stateful.overlaps import locked_overlap, overlap_labels
from stateful.scheduler import Strategy
from stateful.serializability import check_step
from stateful.session import Recording, Session
from stateful.strategies import VirtualDelays, one_of_these
from stateful.target import Observation, Op, Target
from stateful.topology import FLAVORS, topologies

flavor_names = st.sampled_from([flavor["name"] for flavor in FLAVORS])
#: Built once: Hypothesis validates every new strategy object it draws from.
overlaps = st.sampled_from(["alone", "then audit", "audit first"])
more_operations = st.integers(1, 2)

#: Live instances beyond which ``create`` is off: races need one or two
#: instances, and steps spent creating more are steps not spent moving them.
MAX_INSTANCES = 4

#: Rules that swarm testing may switch off for a whole example (``create``
#: and ``audit`` never are: one of them can always run).
SWARM_RULES = (
    "delete", "resize", "migrate", "confirm", "revert", "live_migrate",
    "evacuate", "host_down", "host_up", "concurrently", "concurrently_on_one_instance",
)


def swarm(name: str) -> Callable[[Any], Any]:
    """Enable a rule only in examples whose swarm configuration keeps it.

    Swarm testing (Groce et al., ISSTA 2012): each example runs a random
    subset of the rules, so some examples are dense in a few operations —
    say, creates and evacuations with overlapping audits — instead of every
    example being a thin mix of everything.  Shrinking turns every rule back
    on, so a shrunk failure reads as a plain sequence of steps.
    """
    return precondition(lambda self: name not in self.disabled)


@dataclass(frozen=True)
class MachineConfig:
    """What a machine fuzzes and how it schedules its concurrent steps."""

    target: Callable[[], Target]
    faults: tuple[Fault, ...] = ()
    schedule: Callable[[Any], Strategy] = VirtualDelays
    #: Replay every example and compare traces (a harness error on mismatch).
    self_check: bool = False
    #: Check each concurrent step's end state against the serial orders of its
    #: operations (:mod:`stateful.serializability`; costs a replay per order).
    check_serializable: bool = False
    #: Called with the recording of every example that ends (for campaigns).
    on_example: Callable[[Recording], None] | None = None
    #: Asked as each example begins (for campaigns): true ends the run there,
    #: by raising :class:`~stateful.errors.StopRequested`.
    should_stop: Callable[[], bool] | None = None


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
    # Nova's API takes an active or a stopped instance for a resize or cold migration, an
    # active one for a live migration.  (The model never stops an instance; Nova's
    # evacuation does, from microversion 2.95, which the Nova target speaks.)
    if op.name in ("resize", "migrate") and server["vm_state"] not in ("active", "stopped"):
        return f"{instance} is {server['vm_state']}, not active or stopped"
    if op.name in ("live_migrate", "live_migrate_rollback") and server["vm_state"] != "active":
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
        self.locked_overlap = 0
        self.disabled: set[str] = set()
        # Torn down in teardown(), which Hypothesis calls however the example ends.
        self.pinned_generation = NoLocalConstants()
        self.pinned_generation.setUp()

    # -- set-up and tear-down ------------------------------------------------

    @initialize(
        target=hosts,
        topology=topologies(),
        switched_off=st.fixed_dictionaries({name: st.booleans() for name in SWARM_RULES}),
    )
    def build(self, topology: dict[str, Any], switched_off: dict[str, bool]) -> Any:
        if self.config.should_stop is not None and self.config.should_stop():
            raise StopRequested()
        self.disabled = {name for name, off in switched_off.items() if off}
        session = Session(self.config.target(), topology, self.config.faults)
        session.setUp()  # on failure fixtures cleans up itself; teardown must not clean again
        self.session = session
        self.flavors = [flavor["name"] for flavor in topology["flavors"]]
        self.host_names = [host["name"] for host in topology["hosts"]]
        self.state = self.session.target.observe()
        return multiple(*self.host_names)

    def teardown(self) -> None:
        self.pinned_generation.cleanUp()
        if self.session is None:
            return
        # target() takes one observation per label per example: the example's total.
        target(float(self.locked_overlap), label="sites reached inside another task's locked region")
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
            if schedule is not None and self.config.check_serializable:
                check_step(self.session, result, self.config.target)
        except BaseException as error:
            # The last example Hypothesis runs is the shrunk one; whoever
            # catches its failure finds the replayable recording here.
            error.stateful_recording = self.session.recording  # type: ignore[attr-defined]
            if isinstance(error, Finding) and self.session.recording.broke is None:
                self.session.recording.broke = error  # one raised here, not by the session
            raise
        self.state = result.observation
        if schedule is not None:
            self._label(result.trace)
        return [outcome.error is None for outcome in result.outcomes]

    def _label(self, trace: Sequence[Any]) -> None:
        for label in overlap_labels(trace):
            event(label)
        self.locked_overlap += locked_overlap(trace)

    def new_name(self) -> str:
        return f"vm{next(self._names)}"

    def perform(self, op: Op, data: st.DataObject) -> bool:
        """Apply ``op`` alone or, as Hypothesis chooses, with an audit of a host it involves.

        Audits overlapping other operations are where Nova's races live, so
        every operation rule offers one.  Returns whether ``op`` succeeded.
        """
        overlap = data.draw(overlaps, label="overlap")
        if overlap == "alone":
            (succeeded,) = self.step([op])
            return succeeded
        audit = data.draw(self.related_audits(op), label="overlapping audit")
        ops = [op, audit] if overlap == "then audit" else [audit, op]
        return self.step(ops, self.config.schedule(data))[ops.index(op)]

    # -- one operation (maybe with an overlapping audit) ------------------------------

    @precondition(lambda self: len(self.state.servers) < MAX_INSTANCES)
    @rule(target=instances, host=hosts, flavor=flavor_names, data=st.data())
    def create(self, host: str, flavor: str, data: st.DataObject) -> Any:
        name = self.new_name()
        created = self.perform(Op("create", {"instance": name, "flavor": flavor, "host": host}), data)
        return name if created else multiple()

    @swarm("delete")
    @rule(instance=consumes(instances), data=st.data())
    def delete(self, instance: str, data: st.DataObject) -> None:
        self.perform(Op("delete", {"instance": instance}), data)

    @swarm("resize")
    @precondition(lambda self: bool(self.movable()))
    @rule(target=migrations, data=st.data())
    def resize(self, data: st.DataObject) -> Any:
        instance, host = self.draw_move(data, same_host_allowed=True)
        flavor = data.draw(mostly_legal(self.other_flavors(instance), tuple(self.flavors)), label="flavor")
        op = Op("resize", {"instance": instance, "flavor": flavor, "host": host})
        return instance if self.perform(op, data) else multiple()

    @swarm("migrate")
    @precondition(lambda self: bool(self.movable()) and len(self.up_hosts()) > 1)
    @rule(target=migrations, data=st.data())
    def migrate(self, data: st.DataObject) -> Any:
        instance, host = self.draw_move(data, same_host_allowed=False)
        return instance if self.perform(Op("migrate", {"instance": instance, "host": host}), data) else multiple()

    @swarm("confirm")
    @rule(instance=consumes(migrations), data=st.data())
    def confirm(self, instance: str, data: st.DataObject) -> None:
        self.perform(Op("confirm", {"instance": instance}), data)

    @swarm("revert")
    @rule(instance=consumes(migrations), data=st.data())
    def revert(self, instance: str, data: st.DataObject) -> None:
        self.perform(Op("revert", {"instance": instance}), data)

    @swarm("live_migrate")
    @precondition(lambda self: bool(self.movable()) and len(self.up_hosts()) > 1)
    @rule(rollback=st.booleans(), data=st.data())
    def live_migrate(self, rollback: bool, data: st.DataObject) -> None:
        instance, host = self.draw_move(data, same_host_allowed=False)
        name = "live_migrate_rollback" if rollback else "live_migrate"
        self.perform(Op(name, {"instance": instance, "host": host}), data)

    @swarm("evacuate")
    @precondition(lambda self: bool(self.state.servers))
    @rule(data=st.data())
    def evacuate(self, data: st.DataObject) -> None:
        """Evacuate a live instance, first stopping its host's compute service if it is up."""
        servers = self.state.servers
        evacuable = newest_first(name for name, s in servers.items() if s["vm_state"] in ("active", "error"))
        instance = data.draw(mostly_legal(evacuable, newest_first(servers)), label="instance")
        source = self.state.servers[instance]["host"]
        if source not in self.state.down_hosts and len(self.up_hosts()) > 1:
            self.step([Op("host_down", {"host": source})])
        destinations = [host for host in self.up_hosts() if host != source] or self.host_names
        host = data.draw(one_of_these(tuple(destinations)), label="destination")
        self.perform(Op("evacuate", {"instance": instance, "host": host}), data)

    @swarm("host_down")
    @precondition(lambda self: len(self.state.down_hosts) < len(self.host_names) - 1)
    @rule(instance=instances)
    def host_down(self, instance: str) -> None:
        """Stop the compute service of an instance's host (what makes evacuation possible)."""
        host = self.state.servers.get(instance, {}).get("host") or self.host_names[0]
        self.step([Op("host_down", {"host": host})])

    @swarm("host_up")
    @precondition(lambda self: bool(self.state.down_hosts))
    @rule(data=st.data())
    def host_up(self, data: st.DataObject) -> None:
        host = data.draw(one_of_these(tuple(self.state.down_hosts)), label="down host")
        self.step([Op("host_up", {"host": host})])

    @rule(host=hosts)
    def audit(self, host: str) -> None:
        self.step([Op("audit", {"host": host})])

    # -- what a move rule moves where ---------------------------------------------

    def draw_move(self, data: st.DataObject, same_host_allowed: bool) -> tuple[str, str]:
        """An instance and a destination for a move: mostly ones Nova accepts.

        Drawn from the state rather than the bundles, because a bundle holds
        instances whatever their state and hosts whatever their instance: most
        moves drawn from them were rejections (a resized instance resized
        again, a live migration to the instance's own host), steps that set
        up no race.  Sometimes any instance and host is drawn, and Nova must
        reject what is illegal.
        """
        servers = self.state.servers
        instance = data.draw(mostly_legal(self.movable(), newest_first(servers)), label="instance")
        source = servers[instance]["host"]
        destinations = tuple(h for h in self.up_hosts() if same_host_allowed or h != source)
        host = data.draw(mostly_legal(destinations, tuple(self.host_names)), label="destination")
        return instance, host

    def movable(self) -> tuple[str, ...]:
        """Instances a move may start from: active, on an up host."""
        down = self.state.down_hosts
        servers = self.state.servers.items()
        return newest_first(name for name, s in servers if s["vm_state"] == "active" and s["host"] not in down)

    def other_flavors(self, instance: str) -> tuple[str, ...]:
        current = self.state.servers[instance].get("flavor")
        return tuple(flavor for flavor in self.flavors if flavor != current)

    # -- several at once ----------------------------------------------------------

    @swarm("concurrently")
    @rule(target=instances, data=st.data())
    def concurrently(self, data: st.DataObject) -> Any:
        """Two or three operations in flight at once, under Hypothesis-drawn delays.

        The first is an operation the current state allows other than an
        audit (two audits of one host only queue on its lock; an audit racing
        one other operation is what every operation rule offers already, see
        :meth:`perform`); each further one is any such operation or an audit
        of a host the first one involves.
        """
        first = self.named(data.draw(self.operations(audits=False), label="first operation"))
        ops = [first]
        for _ in range(data.draw(more_operations, label="more operations")):
            ops.append(self.named(data.draw(audit_or(self.related_audits(first), self.operations()), label="then")))
        self.step(ops, self.config.schedule(data))
        created = [op.args["instance"] for op in ops if op.name == "create"]
        return multiple(*(name for name in created if name in self.state.servers))

    @swarm("concurrently_on_one_instance")
    @precondition(lambda self: bool(self.state.servers))
    @rule(data=st.data())
    def concurrently_on_one_instance(self, data: st.DataObject) -> None:
        """Two operations on one instance at once, maybe with an audit of a host they involve.

        The shape of most of Nova's accounting races: a second move, a delete
        or a confirm of an instance while a first one is still in flight, and
        the audit of its source or a destination reading the records in
        between (bug 1600304 needs all three: a live migration rolling back, a
        second move of the instance, an audit of the first destination).
        :meth:`concurrently` draws such a step only rarely, its operations
        being drawn apart; here they share the instance.  Whichever of the
        two the other makes illegal must be refused cleanly (any other error
        is a finding).
        """
        instance = data.draw(one_of_these(newest_first(self.state.servers)), label="instance")
        first, second = (data.draw(self.operations(of=instance), label="operation") for _ in range(2))
        ops = [first, second]
        overlap = data.draw(overlaps, label="overlap")
        if overlap != "alone":
            audit = data.draw(self.related_audits(*ops), label="overlapping audit")
            ops = [*ops, audit] if overlap == "then audit" else [audit, *ops]
        self.step(ops, self.config.schedule(data))

    def related_audits(self, *ops: Op) -> st.SearchStrategy[Op]:
        """Audits of the up hosts ``ops`` involve: their instances' hosts and their destinations."""
        involved: list[str] = []
        for op in ops:
            server = self.state.servers.get(op.args.get("instance", ""), {})
            for host in (server.get("host"), op.args.get("host")):
                if host and host not in involved and host not in self.state.down_hosts:
                    involved.append(host)
        return audits_of(tuple(involved or self.up_hosts()))

    def up_hosts(self) -> list[str]:
        return [host for host in self.host_names if host not in self.state.down_hosts]

    def operations(self, audits: bool = True, of: str | None = None) -> st.SearchStrategy[Op]:
        """One operation the current state allows (simplest first, for shrinking).

        A create is drawn nameless; :meth:`named` names it once drawn.
        Without ``audits``, audits are left out unless nothing else is allowed.
        With ``of``, only operations on that instance, never a create or an
        audit (any of them, legal or not, if the state allows none).
        """
        servers, down = self.state.servers, self.state.down_hosts

        def instances_where(vm_state: str, host_down: bool = False) -> tuple[str, ...]:
            return newest_first(
                name
                for name, s in servers.items()
                if s["vm_state"] == vm_state and (s["host"] in down) == host_down and of in (None, name)
            )

        active, resized, stopped = (instances_where(state) for state in ("active", "resized", "stopped"))
        evacuable = instances_where("active", host_down=True)
        up, flavors = tuple(self.up_hosts()), tuple(self.flavors)
        if of is not None:
            if not active + resized + stopped + evacuable:
                active = resized = evacuable = (of,)
            return legal_operations(up, flavors, active, resized, stopped, evacuable, False, audits=False)
        may_create = len(servers) < MAX_INSTANCES
        return legal_operations(up, flavors, active, resized, stopped, evacuable, may_create, audits=audits)

    def named(self, op: Op) -> Op:
        return Op("create", {**op.args, "instance": self.new_name()}) if op.name == "create" else op


def newest_first(names: Iterable[str]) -> tuple[str, ...]:
    """The machine's instance names (vm1, vm2, ...), most recently created first.

    Draws shrink towards the first choice; making that the newest instance
    (as Hypothesis's bundles do) lets the shrinker delete the steps that
    created older, irrelevant ones.
    """
    return tuple(sorted(names, key=lambda name: (len(name), name), reverse=True))


#: Extra copies of each legal choice in a draw: a legal choice is 1 + this
#: many times as likely as an illegal one.
LEGAL_WEIGHT = 3


def mostly_legal(legal: tuple[str, ...], anything: tuple[str, ...]) -> st.SearchStrategy[str]:
    """One of ``anything``, with :data:`LEGAL_WEIGHT` extra copies of each of ``legal`` first
    (so draws shrink toward a legal choice)."""
    return one_of_these(legal * LEGAL_WEIGHT + anything)


@functools.lru_cache(maxsize=4096)
def audit_or(audits: st.SearchStrategy[Op], operations: st.SearchStrategy[Op]) -> st.SearchStrategy[Op]:
    return st.one_of(audits, operations)


@functools.lru_cache(maxsize=256)
def audits_of(hosts: tuple[str, ...]) -> st.SearchStrategy[Op]:
    return st.sampled_from(hosts).map(lambda h: Op("audit", {"host": h}))


@functools.lru_cache(maxsize=4096)
def legal_operations(
    up: tuple[str, ...],
    flavors: tuple[str, ...],
    active: tuple[str, ...],
    resized: tuple[str, ...],
    stopped: tuple[str, ...],
    evacuable: tuple[str, ...],
    may_create: bool,
    audits: bool = True,
) -> st.SearchStrategy[Op]:
    """The operations a state allows, as a strategy (cached: states recur across examples).

    A stopped instance (Nova's evacuation leaves one; the model never stops
    one) may be resized, cold migrated or deleted, not live migrated.
    """
    hosts, sizes = st.sampled_from(up), st.sampled_from(flavors)

    def on(name: str, candidates: tuple[str, ...], **extra: st.SearchStrategy[str]) -> list[st.SearchStrategy[Op]]:
        if not candidates:
            return []
        return [
            st.builds(
                lambda instance, **args: Op(name, {"instance": instance, **args}),
                st.sampled_from(candidates),
                **extra,
            )
        ]

    creates = [st.builds(lambda f, h: Op("create", {"instance": "", "flavor": f, "host": h}), sizes, hosts)]
    others = [
        *on("confirm", resized),
        *on("revert", resized),
        *on("evacuate", evacuable, host=hosts),
        *on("resize", active + stopped, flavor=sizes, host=hosts),
        *on("migrate", active + stopped, host=hosts),
        *on("live_migrate", active, host=hosts),
        *on("live_migrate_rollback", active, host=hosts),
        *on("delete", active + resized + stopped),
        *(creates if may_create else []),
    ]
    return st.one_of(audits_of(up), *others) if audits or not others else st.one_of(others)


def make_machine(config: MachineConfig) -> type[AccountingMachine]:
    """A machine class bound to ``config`` (Hypothesis instantiates it per example)."""
    faults = "+".join(f.name for f in config.faults) or "no-fault"
    return type(f"AccountingMachine[{faults}]", (AccountingMachine,), {"config": config})



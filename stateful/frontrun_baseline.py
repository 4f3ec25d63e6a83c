"""frontrun (PyPI) as a detection baseline: the nearest Python peer, on the same model.

frontrun explores the interleavings of a fixed set of threads, either by
random opcode schedules (``random``) or by dynamic partial-order reduction
(``dpor``).  It needs three things, built here for each built-in model fault
from the fixed-schedule scenario that exposes it
(``tests/models/test_faults.py``, ``tests/models/test_open_races.py``):

- ``setup``: a fresh :class:`~stateful.targets.model.ModelTarget` on the
  scenario's topology, with the scenario's serial preparation applied;
- ``workers``: the scenario's concurrent operations, as the machine's own
  :class:`~stateful.target.Op` s, one thread each;
- ``invariant``: the suite's own after-step check, exactly as
  :class:`stateful.session.Session` makes it: no operation raised anything
  but a rejection (``no-unexpected-error``), then every invariant of
  :data:`stateful.invariants.AFTER_STEP` over the target's observation and
  the oracle's expectation.

The fault's fixture is on for the whole exploration.

How frontrun controls threads: it traces every bytecode of code outside the
standard library and site-packages (``trace_packages`` adds ``models`` and
``stateful`` should the project be installed as a wheel), each bytecode a
point where it may switch threads, and while it runs it replaces
``threading.Lock`` and friends with cooperative versions.  So it needs no
switch points of ours -- and that is the catch: it switches inside what the
model keeps atomic, as the real service does (the database's compare-and-swap
of a task state, the API's in-flight mark), and so breaks the model with no
fault on at all (``granularity="opcode"``; e.g. lp1600304's scenario raises
UnexpectedTaskStateError within its first few executions).  By
default (``granularity="checkpoint"``) a :class:`_Gate` lets frontrun's
threads interleave only where our scheduler lets tasks interleave: at
``stateful.checkpoint`` (the model's delay sites) and at the model's locks.
Both then search the same space of interleavings; frontrun's algorithms
choose among them.  The model's oslo.concurrency locks are our scheduler's
own (:class:`stateful.locks.SchedulerLocks`: one per host and name, fair ones
handed to their longest waiter), with the gate as the scheduler that parks
and wakes their waiters.

The comparison is still not entirely fair, and in frontrun's favour: it is
handed the very operations that expose each fault, on a prepared state,
while our machine has to find the operations, their arguments and the
preparation too.

frontrun is optional (the ``bench`` extra); :func:`available` says whether it
can be imported, and nothing here imports it before it is needed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from stateful.faults import Fault
from stateful.invariants import AFTER_STEP, violations
from stateful.locks import SchedulerLocks, per_host
from stateful.scheduler import hand_over
from stateful.target import Op

STRATEGIES = ("random", "dpor")
GRANULARITIES = ("checkpoint", "opcode")
#: The random strategy's schedule length (frontrun's ``max_ops``): a random prefix of
#: up to this many turns, and a hard cap of ten times the prefix plus 10,000.  The
#: scenarios run 2,500 to 13,000 bytecodes of traced code, and a thread waiting for the
#: gate spends turns too, so the default (300) would make most attempts inconclusive.
RANDOM_MAX_OPS = 20_000
#: frontrun's per-execution wall-clock timeouts (see :func:`explore`).
GUARD_SECONDS = 60.0


def available() -> str | None:
    """frontrun's version if it can be imported, else None."""
    try:
        import frontrun  # noqa: F401
    except ImportError:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("frontrun")
    except PackageNotFoundError:
        return "unknown"


# -- the scenarios ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One fault's fixed-schedule test scenario, as a frontrun exploration.

    ``prepare`` runs serially on the fresh target before the workers start;
    ``workers`` are the concurrent operations.  Instances are named as the
    machine names them (``vm``); the model target maps names to uuids.
    """

    fault: str
    prepare: tuple[Op, ...]
    workers: tuple[Op, ...]
    #: the test that pins the same operations with a fixed schedule
    test: str


def _create(flavor: str, host: str = "host1") -> Op:
    return Op("create", {"instance": "vm", "flavor": flavor, "host": host})


def _resize(flavor: str, host: str) -> Op:
    return Op("resize", {"instance": "vm", "flavor": flavor, "host": host})


def _audit(host: str) -> Op:
    return Op("audit", {"host": host})


def _to(kind: str, host: str) -> Op:
    """An operation moving the instance to ``host``."""
    return Op(kind, {"instance": "vm", "host": host})


_CONFIRM = Op("confirm", {"instance": "vm"})
_REVERT = Op("revert", {"instance": "vm"})
_DELETE = Op("delete", {"instance": "vm"})
_HOST1_DOWN = Op("host_down", {"host": "host1"})
#: a medium instance on host1, resized to large on host2 and waiting for a confirm or revert
_RESIZED = (_create("medium"), _resize("large", "host2"))

_FAULTS_TEST = "tests/models/test_faults.py::"
_OPEN_TEST = "tests/models/test_open_races.py::"

# One row per fault: (fault, serial preparation, concurrent workers, the fixed-schedule test).
SCENARIOS: dict[str, Scenario] = {
    fault: Scenario(fault, prepare, workers, test)
    for fault, prepare, workers, test in [
        ("lp1896463", (_create("pci"), _HOST1_DOWN), (_to("evacuate", "host2"), _audit("host2")),
         f"{_FAULTS_TEST}test_lp1896463_evacuation_finished_outside_the_lock_loses_pci"),
        ("lp1879878-confirm", _RESIZED, (_CONFIRM, _audit("host1")),
         f"{_FAULTS_TEST}test_lp1879878_confirm_status_saved_before_the_drop"),
        ("lp1879878-revert", _RESIZED, (_REVERT, _audit("host1"), _audit("host2")),
         f"{_FAULTS_TEST}test_lp1879878_revert_status_saved_before_the_drop"),
        ("lp1879878-stash", (_create("pinned"), _resize("pinned-large", "host2")), (_CONFIRM, _audit("host1")),
         f"{_FAULTS_TEST}test_lp1879878_stash_cleared_before_the_migration_ends"),
        ("lp1834349", _RESIZED, (_CONFIRM, _audit("host1")),
         f"{_FAULTS_TEST}test_lp1834349_audit_meets_an_outbound_migration_without_old_flavor"),
        ("lp1095403", (_create("medium"),), (_DELETE, _audit("host1")),
         f"{_FAULTS_TEST}test_lp1095403_audit_subtracts_a_deleted_instance"),
        ("lp1600304", (_create("medium"),),
         (_to("live_migrate_rollback", "host3"), _resize("large", "host2"), _audit("host3")),
         f"{_FAULTS_TEST}test_lp1600304_stale_migration_double_counts"),
        ("lp1707071", (_create("medium"),), (_resize("large", "host2"), _audit("host1")),
         f"{_FAULTS_TEST}test_lp1707071_source_audit_rewrites_the_instance_allocation"),
        ("lp1729371", (), (_create("medium"), _audit("host1")),
         f"{_FAULTS_TEST}test_lp1729371_audit_deletes_a_building_instances_allocation"),
        ("lp1849165", (_create("medium"),), (_to("live_migrate", "host2"), _audit("host2")),
         f"{_FAULTS_TEST}test_lp1849165_audit_reads_a_missing_migration_context"),
        ("nova-open-evacuation-active-early", (_create("medium"), _HOST1_DOWN),
         (_to("evacuate", "host2"), _audit("host2")),
         f"{_OPEN_TEST}test_evacuation_clears_its_task_state_before_finish_evacuation"),
        ("nova-open-revert-window", _RESIZED, (_REVERT, _audit("host1"), _audit("host2")),
         f"{_OPEN_TEST}test_revert_window_after_the_claim_drop_swaps_usage"),
        ("nova-open-resize-finish-window", (_create("medium"),), (_resize("large", "host2"), _audit("host2")),
         f"{_OPEN_TEST}test_resize_finish_window_counts_the_old_flavor"),
        ("nova-open-delete-pci-leak", (_create("pci"),), (_DELETE, _audit("host1")),
         f"{_OPEN_TEST}test_delete_during_an_audit_leaks_pci_devices"),
        ("nova-open-live-migration-unlocked", (_create("pci"),), (_to("live_migrate", "host2"), _audit("host2")),
         f"{_OPEN_TEST}test_live_migration_finished_outside_the_lock_loses_pci"),
        ("nova-open-live-migration-rollback-window", (_create("medium"),),
         (_to("live_migrate_rollback", "host2"), _audit("host2")),
         f"{_OPEN_TEST}test_live_migration_rollback_window_counts_the_instance_again"),
        ("nova-open-live-migration-rollback-pci", (_create("pci"),),
         (_to("live_migrate_rollback", "host2"), _audit("host2")),
         f"{_OPEN_TEST}test_live_migration_rollback_after_a_destination_audit_leaks_pci"),
        ("nova-open-live-migration-source-audit", (_create("small"),),
         (_to("live_migrate", "host2"), _to("migrate", "host1")),
         f"{_OPEN_TEST}test_a_move_started_as_a_live_migration_ends_is_counted_at_the_source"),
    ]
}

#: Built-in model faults with no frontrun exploration, and why.
NOT_SET_UP: dict[str, str] = {
    "lp1818914": "no concurrency: the scenario is create, resize, confirm in sequence; "
    "with one worker there is no interleaving to explore",
    "nova-open-delete-after-move": "no concurrency: the scenario is resize, confirm, delete in sequence; "
    "with one worker there is no interleaving to explore",
}


def scenario_for(fault: str) -> Scenario | None:
    return SCENARIOS.get(fault)


# -- one exploration ------------------------------------------------------------------------


@dataclass
class Exploration:
    """What one frontrun exploration of one fault found."""

    fault: str
    #: frontrun's exploration strategy, one of :data:`STRATEGIES`
    strategy: str
    seed: int | None
    found: bool
    #: executions (frontrun's interleavings) run, the finding's included
    executions: int
    seconds: float
    #: the invariant broken (``no-unexpected-error`` for a crash), or None
    invariant: str | None = None
    message: str | None = None
    #: frontrun's verdict when nothing was found: "pass", or why it was inconclusive
    verdict: str | None = None
    #: random exploration only: attempts that ran out of schedule turns (counted in
    #: ``executions``), after each of which the search went on with fresh schedules
    restarts: int = 0


class _Gate:
    """Our scheduler's atomicity, for frontrun's threads: one runs at a time between switch points.

    A worker holds the gate while it runs and lets go of it only at a
    checkpoint (``stateful.checkpoint``, reached through :func:`hand_over`
    of a :class:`_GateTask`) and while it is parked on a model lock, which
    are exactly the places our scheduler may switch tasks.  Who takes the
    gate next is frontrun's choice.  The gate is a ``threading.Lock`` made
    while frontrun's patching is on, so frontrun sees (and DPOR orders)
    every taking of it.

    It is the scheduler :class:`stateful.locks.SchedulerLock` talks to
    (``reach``, ``park``, ``wake``), so the model's locks are the very locks
    our scheduler uses, with the same fairness and switch points.
    """

    #: SchedulerLock parks a waiting task only under a scheduler that says so (others
    #: get a plain lock, which would block a worker while it holds the gate: a deadlock).
    virtual = True

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def reach(self, task: _GateTask, site: str) -> None:
        """A switch point: let another worker in, if frontrun schedules one."""
        self.lock.release()
        self.lock.acquire()

    def park(self, task: _GateTask, lock: object) -> None:
        """Wait, without the gate, until a release of ``lock`` wakes ``task``."""
        self.lock.release()
        task.wakeup.acquire()
        self.lock.acquire()

    def wake(self, task: _GateTask) -> None:
        """Let a parked ``task`` go on once it takes the gate again (called by the releaser)."""
        task.wakeup.release()


class _GateTask:
    """What :func:`stateful.scheduler.checkpoint` and the model's locks need of a worker's task."""

    def __init__(self, gate: _Gate, name: str) -> None:
        self.scheduler = gate
        self.name = name
        # a semaphore, not a lock: the task that wakes this one releases it (made while
        # frontrun's patching is on, so a parked worker is one frontrun knows is blocked)
        self.wakeup = threading.Semaphore(0)

    def __repr__(self) -> str:
        return f"_GateTask({self.name!r})"


class _State:
    """One execution's shared state: the target, its gate, what the workers raised."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.errors: list[tuple[Op, BaseException]] = []
        self.gate = _Gate()


def _worker(op: Op, gated: bool) -> Callable[[_State], None]:
    def work(state: _State) -> None:
        if gated:
            # The gate first: what a worker does outside it (here, setting its thread's
            # task) is a race to DPOR, which cannot tell a thread-local from shared state.
            state.gate.lock.acquire()
            hand_over(_GateTask(state.gate, op.label))  # type: ignore[arg-type]
        try:
            state.target.operation(op)()
        except Exception as error:  # noqa: BLE001 - classified by the invariant, as Session does
            if not isinstance(error, state.target.rejections):
                state.errors.append((op, error))
        finally:
            if gated:
                hand_over(None)
                state.gate.lock.release()

    work.__name__ = work.__qualname__ = op.label
    return work


def broken_invariant(state: _State) -> tuple[str, str] | None:
    """Session's after-step check: (the first invariant broken, its message), or None."""
    if state.errors:
        op, error = state.errors[0]
        return "no-unexpected-error", f"{op.label} raised {type(error).__name__}: {error}"
    actual, expected = state.target.observe(), state.target.expected()
    return next(iter(violations(AFTER_STEP, actual, expected)), None)


@contextlib.contextmanager
def _cooperative_locks() -> Iterator[None]:
    """frontrun's own lock patching, on for the exploration (what its pytest plugin does).

    Its entry points refuse to run without it (or its CLI).  While it is on,
    ``threading.Lock()`` makes a cooperative lock, so frontrun's own modules
    are imported first: their module-level locks stay real ones.
    """
    import frontrun._dpor_runtime.explore  # noqa: F401 - imported for its module-level locks
    import frontrun.bytecode  # noqa: F401
    from frontrun._cooperative import patch_locks, unpatch_locks

    patch_locks()
    try:
        yield
    finally:
        unpatch_locks()


def explore(
    fault: Fault | None,
    scenario: Scenario,
    strategy: str,
    *,
    seed: int | None = None,
    max_executions: int = 200,
    total_timeout: float | None = None,
    granularity: str = "checkpoint",
    **frontrun_options: Any,
) -> Exploration:
    """Explore ``scenario``'s workers with frontrun's ``strategy``, ``fault`` on (None: no fault).

    ``seed`` seeds the random strategy's schedules (DPOR takes none: its
    default depth-first order is deterministic).  Stops at the first
    execution that breaks an invariant, after ``max_executions``, or after
    ``total_timeout`` seconds.

    ``granularity``: ``"checkpoint"`` (the default) lets threads interleave
    only where our scheduler lets tasks interleave (see :class:`_Gate`), so
    both explore the same space of interleavings; ``"opcode"`` lets frontrun
    switch threads at any bytecode, inside what the model keeps atomic as
    the real service does (a database compare-and-swap, the API's in-flight
    mark), which breaks the model in ways Nova cannot break (so it reports
    findings with no fault on: see the module's tests).
    """
    import frontrun

    from models.topology import small_topology
    from stateful.targets.model import ModelTarget

    if strategy not in STRATEGIES:
        raise ValueError(f"frontrun strategy {strategy!r}: choose from {STRATEGIES}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r}: choose from {GRANULARITIES}")
    gated = granularity == "checkpoint"
    topology = small_topology().to_dict()
    last_broken: tuple[str, str] | None = None

    def setup() -> _State:
        locks.locks.clear()  # every execution starts with fresh locks: none held, none waited on
        state = _State(ModelTarget())
        state.target.setup(topology)
        for op in scenario.prepare:
            state.target.operation(op)()
        return state

    def invariant(state: _State) -> bool:
        nonlocal last_broken
        last_broken = broken_invariant(state)
        return last_broken is None

    options: dict[str, Any] = {
        "strategy": strategy,
        "reproduce_on_failure": 0,
        "total_timeout": total_timeout,
        "trace_packages": ["models", "models.*", "stateful", "stateful.*"],
        "detect_io": False,
        # Wall-clock guards only (an execution takes well under a second): on a loaded
        # machine frontrun's 5 s defaults would end a slow but sound execution as a failure.
        "timeout_per_run": GUARD_SECONDS,
        "deadlock_timeout": GUARD_SECONDS,
    }
    if strategy == "random":
        options.update(max_attempts=max_executions, seed=seed, max_ops=RANDOM_MAX_OPS)
    else:
        options.update(max_executions=max_executions)
    options.update(frontrun_options)
    started = time.perf_counter()
    executions = restarts = 0
    with _cooperative_locks():
        # The model's oslo.concurrency locks, one per host and name as under our scheduler
        # (setup() above empties them).  On a gated worker they park through the gate;
        # elsewhere (the serial preparation, every thread at opcode granularity) each is a
        # plain lock, a cooperative one since it is made while frontrun's patching is on.
        locks = SchedulerLocks(per_host)
        with locks, fault.fixture() if fault is not None else contextlib.nullcontext():
            while True:
                result = frontrun.explore(
                    setup=setup,
                    workers=[_worker(op, gated) for op in scenario.workers],
                    invariant=invariant,
                    **options,
                )
                executions += result.num_explored
                left = None if total_timeout is None else total_timeout - (time.perf_counter() - started)
                out_of_budget = executions >= max_executions or (left is not None and left <= 0)
                if out_of_budget or not _ran_out_of_turns(result):
                    break
                # Random exploration gives up (inconclusive) on the first attempt whose workers
                # need more turns than its schedule's hard cap; each attempt is an independent
                # sample, so go on with a fresh stream of schedules for the rest of the budget.
                restarts += 1
                options.update(max_attempts=max_executions - executions, total_timeout=left)
                options["seed"] = None if seed is None else seed * 1_000_003 + restarts
    seconds = time.perf_counter() - started
    if result.property_holds is False and last_broken is not None:
        # with reproduce_on_failure=0 the last invariant checked is the failing one
        return Exploration(
            scenario.fault, strategy, seed, True, executions, seconds, *last_broken, restarts=restarts
        )
    if result.property_holds:
        verdict = "pass"
    elif result.property_holds is False:
        # no invariant broke: a deadlock, timeout or crash of frontrun's own, which is not the
        # fault found (a bench row must not count it), so it is a verdict, in frontrun's words
        verdict = "frontrun failed: " + (result.explanation or "no explanation").strip().splitlines()[0]
    else:
        verdict = result.inconclusive_reason or "inconclusive"
    return Exploration(
        scenario.fault, strategy, seed, False, executions, seconds, verdict=verdict, restarts=restarts
    )


def _ran_out_of_turns(result: Any) -> bool:
    return result.property_holds is None and "exhausted max_ops" in (result.inconclusive_reason or "")


def explore_seeds(
    fault: Fault, strategy: str, seeds: Sequence[int | None], max_executions: int, total_timeout: float | None
) -> list[Exploration]:
    """One exploration per seed of ``fault``'s scenario (which must exist)."""
    scenario = SCENARIOS[fault.name]
    return [
        explore(
            fault, scenario, strategy, seed=seed, max_executions=max_executions, total_timeout=total_timeout
        )
        for seed in seeds
    ]

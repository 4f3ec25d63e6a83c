"""Run several operations at once, one at a time, in an order chosen by a strategy.

Each operation is a *task* on a real thread (or, for code under test that
blocks only on the scheduler's own locks and starts no threads, a greenlet on
the caller's thread, where a switch costs a stack swap instead of two OS
thread wake-ups), but exactly one task runs at any moment.  A running task
hands control back only at a named switch point, :func:`checkpoint`, (or
when it would block on a lock, see :mod:`stateful.locks`).  The control
loop, which runs in the caller's thread and is the only place where the
strategy (and so Hypothesis) draws, then decides how long the task sleeps
in *virtual* time and which task runs next.

The default rule, used by :class:`~stateful.strategies.VirtualDelays`, is
trio's ``MockClock`` idea applied to threads: every task has a wake-up time;
the task with the earliest wake-up time runs next, ties going to the task
listed first.  With every delay at zero the operations therefore run in
sequence, in the order given, and each non-zero delay is exactly one
deviation from that order.  That is what makes a shrunk failure readable:
what is left are the delays that matter.

Nothing here sleeps on the wall clock; a wall-clock bound only guards against
a task that never reaches a checkpoint (a harness error, not a finding).
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import greenlet

from stateful.errors import Deadlock, HarnessError, StuckTask

if TYPE_CHECKING:
    from stateful.locks import SchedulerLock

#: Wall-clock seconds a task may run between two checkpoints before the run
#: is abandoned as a harness error.
DEFAULT_STEP_TIMEOUT = 30.0

READY, BLOCKED, DONE = "ready", "blocked", "done"

_local = threading.local()


class TaskCancelled(BaseException):
    """Raised inside a task to unwind it when its run is abandoned.

    A ``BaseException`` so that the code under test, which catches
    ``Exception`` freely, cannot swallow it.
    """


def current_task() -> Task | None:
    """The task running on this thread, or None outside any scheduler."""
    return getattr(_local, "task", None)


def hand_over(task: Task | None) -> None:
    """From now on, this thread runs as ``task`` (None: as no task).

    For code under test that carries one logical operation from thread to
    thread (Nova's RPC servers run a cast's chain on their own threads): the
    thread that carries the operation on reaches checkpoints as the task, and
    hands it back (``hand_over(None)``) before the thread it came from
    resumes.  Only one thread may run as a task at any moment; the scheduler
    relies on it, and the code under test must guarantee it.
    """
    _local.task = task


def checkpoint(site: str) -> None:
    """A named switch point: hand control back to the scheduler.

    Outside a scheduler (plain sequential use of the code under test) this is
    a no-op, so instrumented code costs next to nothing when not fuzzed.
    """
    task = getattr(_local, "task", None)
    if task is not None:
        task.scheduler.reach(task, site)


class Strategy(Protocol):
    """Decides, in the control thread, how long tasks sleep and who runs next."""

    virtual: bool

    def begin(self, names: Sequence[str]) -> None:
        """Called once per run, before any task starts."""

    def delay(self, task: int, site: str, nth: int) -> int:
        """The virtual delay for ``task`` reaching ``site`` for the ``nth`` time."""

    def free_delay(self, task: int, site: str, nth: int) -> int | None:
        """That delay if it needs no draw from Hypothesis, else None (then :meth:`delay` is asked).

        Called on the task's own thread: a checkpoint whose delay is free and
        after which the same task runs on is passed without a thread switch.
        """

    def pick(self, runnable: Sequence[Task]) -> Task:
        """The task that runs next among those ready."""

    # Optional: ``expect_lengths(lengths)``, called before a run with, per task,
    # about how many checkpoints its operation reaches (None: unknown), for
    # strategies that spread their pauses over whole operations.


@dataclass(frozen=True)
class TraceEvent:
    """One thing that happened in a run, in the order it happened.

    ``kind`` is ``start``, ``reach`` (a checkpoint, with the delay drawn for
    it), ``block`` (waiting for a lock held by another task) or ``finish``.
    """

    time: int
    task: int
    op: str
    kind: str
    site: str = ""
    delay: int = 0

    def __str__(self) -> str:
        where = f" {self.site}" if self.site else ""
        pause = f" +{self.delay}" if self.delay else ""
        return f"t={self.time} #{self.task}({self.op}) {self.kind}{where}{pause}"


@dataclass(frozen=True)
class ScheduleEntry:
    """The delay drawn when ``task`` reached ``site`` for the ``nth`` time."""

    task: int
    site: str
    nth: int
    delay: int


@dataclass
class Outcome:
    """How one operation ended: its return value or the exception it raised."""

    name: str
    value: Any = None
    error: BaseException | None = None


@dataclass
class RunResult:
    outcomes: list[Outcome]
    trace: list[TraceEvent]

    @property
    def schedule(self) -> list[ScheduleEntry]:
        return schedule_of(self.trace)

    def raise_first_error(self, expected: tuple[type[BaseException], ...] = ()) -> None:
        """Re-raise, with its own traceback, the first error not of an expected type."""
        for outcome in self.outcomes:
            if outcome.error is not None and not isinstance(outcome.error, expected):
                raise outcome.error


def schedule_of(trace: Sequence[TraceEvent]) -> list[ScheduleEntry]:
    """The schedule a trace followed: the delay at every checkpoint reached."""
    seen: Counter[tuple[int, str]] = Counter()
    entries = []
    for event in trace:
        if event.kind == "reach":
            key = (event.task, event.site)
            entries.append(ScheduleEntry(event.task, event.site, seen[key], event.delay))
            seen[key] += 1
    return entries


@dataclass(eq=False)
class Task:
    """One operation running on its own thread (or greenlet) under a scheduler."""

    index: int
    name: str
    fn: Callable[[], Any]
    scheduler: Scheduler
    wake: int = 0
    state: str = READY
    blocked_on: SchedulerLock | None = None
    cancelled: bool = False
    outcome: Outcome = field(init=False)
    reached: Counter[str] = field(default_factory=Counter)
    _pending_site: str | None = None
    _pending_delay: int | None = None

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.name)

    def __repr__(self) -> str:
        return f"#{self.index}({self.name})"


def earliest_wake(runnable: Sequence[Task]) -> Task:
    """The fixed tie-breaking rule: earliest wake-up time, then lowest index."""
    return min(runnable, key=lambda task: (task.wake, task.index))


def wait_for_cycle(blocked: Sequence[Task]) -> str:
    """Describe why blocked tasks can't proceed: the wait-for cycle if there is one."""
    for start in blocked:
        path: list[Task] = []
        task: Task | None = start
        while task is not None and task not in path and task.blocked_on is not None:
            path.append(task)
            task = task.blocked_on.owner
        if task is not None and task in path:
            cycle = path[path.index(task):]
            return " -> ".join(
                f"{t} waits for {t.blocked_on.name} held by {t.blocked_on.owner}"
                for t in cycle
                if t.blocked_on is not None
            )
    return "; ".join(
        f"{t} waits for {t.blocked_on.name}, never released" for t in blocked if t.blocked_on
    )


class ThreadCarrier:
    """Carries each task on its own thread; control passes through two locks.

    Works for any code under test, including code that hands an operation on
    to threads of its own (:func:`hand_over`), and bounds the wall-clock time
    a task may run between checkpoints (a stuck task is a harness error).
    """

    def __init__(self, step_timeout: float) -> None:
        self.step_timeout = step_timeout
        self._yielded = threading.Lock()
        self._yielded.acquire()
        self._resume: dict[int, threading.Lock] = {}
        self._threads: list[threading.Thread] = []

    def start(self, task: Task, main: Callable[[Task], None]) -> None:
        resume = self._resume[task.index] = threading.Lock()
        resume.acquire()
        thread = threading.Thread(target=main, args=(task,), name=f"stateful-{task!r}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def switch_to(self, task: Task) -> bool:
        """Run ``task`` until it gives control back; False if it did not within the step timeout."""
        self._resume[task.index].release()
        return self._yielded.acquire(timeout=self.step_timeout)

    def await_turn(self, task: Task) -> None:
        self._resume[task.index].acquire()

    def back_to_control(self, task: Task) -> None:
        self._yielded.release()
        self._resume[task.index].acquire()

    def ended(self, task: Task) -> None:
        self._yielded.release()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=self.step_timeout)


class GreenletCarrier:
    """Carries each task as a greenlet on the caller's thread.

    A switch is a stack swap, about a hundred times cheaper than the two
    thread wake-ups of :class:`ThreadCarrier`.  Only for code under test that
    blocks on nothing but :mod:`stateful.locks` and starts no threads: a
    greenlet blocked on a real lock would block every task, and there is no
    wall-clock bound on a task that never reaches a checkpoint.
    """

    def __init__(self) -> None:
        self._control = greenlet.getcurrent()
        self._greenlets: dict[int, greenlet.greenlet] = {}

    def start(self, task: Task, main: Callable[[Task], None]) -> None:
        self._greenlets[task.index] = greenlet.greenlet(functools.partial(main, task), parent=self._control)

    def switch_to(self, task: Task) -> bool:
        try:
            self._greenlets[task.index].switch()
        finally:
            _local.task = None  # the caller's thread is back in the control loop
        return True

    def await_turn(self, task: Task) -> None:
        """A greenlet first runs when switched to: it is its turn already."""

    def back_to_control(self, task: Task) -> None:
        self._control.switch()
        _local.task = task

    def ended(self, task: Task) -> None:
        """Returning from a greenlet switches to its parent, the control loop."""

    def join(self) -> None:
        """Every greenlet has returned once unwound."""


class Scheduler:
    """Runs operations as tasks, one at a time, following a strategy.

    A scheduler is used for one run: create one per concurrent step.
    ``on_checkpoint`` is called after every checkpoint while no task runs, so
    it may inspect the shared state safely (the fuzzer checks its always-true
    invariants there): in the control thread, or with
    ``on_checkpoint_anywhere`` also on the thread of the task that reached
    the checkpoint, which then runs on without a thread switch when the
    strategy lets it (most checkpoints, under sparse delays).
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
        on_checkpoint: Callable[[TraceEvent], None] | None = None,
        on_checkpoint_anywhere: bool = False,
        greenlets: bool = False,
    ) -> None:
        self.strategy = strategy
        self.virtual = strategy.virtual
        self.step_timeout = step_timeout
        self.on_checkpoint = on_checkpoint
        # Checkpoints pass without a thread switch only where on_checkpoint may
        # run on a task's thread (it touches nothing bound to the caller's).
        fast = on_checkpoint is None or on_checkpoint_anywhere
        self._free_delay = getattr(strategy, "free_delay", None) if fast else None
        #: An error raised by on_checkpoint on a task's thread, for the loop to raise.
        self._failure: BaseException | None = None
        self.now = 0
        self.trace: list[TraceEvent] = []
        self.tasks: list[Task] = []
        self._carrier = GreenletCarrier() if greenlets else ThreadCarrier(step_timeout)

    # -- the control loop (caller's thread) ---------------------------------

    def run(self, operations: Sequence[tuple[str, Callable[[], Any]]]) -> RunResult:
        """Run every operation to its end; return their outcomes and the trace.

        Exceptions raised by the operations are returned in the outcomes, not
        raised.  A deadlock raises :class:`~stateful.errors.Deadlock`, a stuck
        task :class:`~stateful.errors.StuckTask`; either way every task thread
        has been unwound before this returns or raises (unless it is stuck
        outside any checkpoint, which no one can interrupt).
        """
        if not self.virtual:
            raise HarnessError(f"{type(self.strategy).__name__} is not a virtual-time strategy")
        self.tasks = [Task(i, name, fn, self) for i, (name, fn) in enumerate(operations)]
        self.strategy.begin([task.name for task in self.tasks])
        for task in self.tasks:
            self._carrier.start(task, self._task_main)
        try:
            self._loop()
        finally:
            self._unwind()
        return RunResult([task.outcome for task in self.tasks], self.trace)

    def _loop(self) -> None:
        while True:
            live = [task for task in self.tasks if task.state != DONE]
            if not live:
                return
            runnable = [task for task in live if task.state == READY]
            if not runnable:
                raise Deadlock(wait_for_cycle(live))
            task = self.strategy.pick(runnable)
            self.now = max(self.now, task.wake)
            self._switch_to(task)
            if self._failure is not None:
                raise self._failure
            site = task._pending_site
            if site is not None:
                task._pending_site = None
                nth = task.reached[site]
                delay = task._pending_delay
                if delay is None:
                    delay = self._delay_for(self.strategy.delay, task, site, nth)
                task._pending_delay = None
                self._account_checkpoint(task, site, nth, delay)

    def _account_checkpoint(self, task: Task, site: str, nth: int, delay: int) -> None:
        task.reached[site] = nth + 1
        event = TraceEvent(self.now, task.index, task.name, "reach", site, delay)
        self.trace.append(event)
        task.wake = self.now + delay
        if self.on_checkpoint is not None:
            self.on_checkpoint(event)

    def _delay_for(self, decide: Callable[[int, str, int], int | None], task: Task, site: str, nth: int) -> int | None:
        """The strategy's delay for this checkpoint, or 0 without asking when no one else is ready."""
        return decide(task.index, site, nth) if self._contended(task) else 0

    def _contended(self, task: Task) -> bool:
        """Whether a delay here can change the interleaving: another task is ready to run.

        When every other task is blocked or done, a delay only shifts this
        task's clock, never the order of events; not drawing one keeps
        schedules short and shrinking fast.
        """
        return any(other.state == READY for other in self.tasks if other is not task)

    def _switch_to(self, task: Task) -> None:
        if not self._carrier.switch_to(task):
            raise StuckTask(
                f"task {task!r} ran for {self.step_timeout:g}s of wall-clock time without "
                f"reaching a checkpoint (last event: {self.trace[-1] if self.trace else 'none'})"
            )

    def _unwind(self) -> None:
        """Cancel every unfinished task and wait for its thread to end."""
        for task in self.tasks:
            if task.state != DONE:
                task.cancelled = True
                task.state = READY
                if not self._carrier.switch_to(task):
                    break  # stuck outside a checkpoint: it cannot be interrupted
        self._carrier.join()

    # -- the task side (task threads or greenlets) ------------------------------

    def _task_main(self, task: Task) -> None:
        _local.task = task
        self._carrier.await_turn(task)
        try:
            if task.cancelled:
                raise TaskCancelled()
            self._record(task, "start")
            task.outcome.value = task.fn()
        except BaseException as error:  # noqa: BLE001 - every error goes back to the caller
            task.outcome.error = error
        finally:
            _local.task = None
            if not task.cancelled:
                self._record(task, "finish")
            task.state = DONE
            self._carrier.ended(task)

    def _record(self, task: Task, kind: str, site: str = "") -> None:
        self.trace.append(TraceEvent(self.now, task.index, task.name, kind, site))

    def _yield(self, task: Task) -> None:
        """Give control back to the loop and wait until it resumes this task."""
        self._carrier.back_to_control(task)
        if task.cancelled:
            raise TaskCancelled()

    def reach(self, task: Task, site: str) -> None:
        """A task reached a checkpoint (called on the task's thread)."""
        if task.cancelled:
            return  # unwinding: finally blocks may pass checkpoints; let them run
        if self._free_delay is not None:
            nth = task.reached[site]
            delay = self._delay_for(self._free_delay, task, site, nth)
            if delay is not None and self._runs_on(task, delay):
                try:
                    self._account_checkpoint(task, site, nth, delay)
                except BaseException as error:  # noqa: BLE001 - raised by the loop, as on_checkpoint's
                    self._failure = error
                    self._yield(task)
                self.now = max(self.now, task.wake)
                return
            task._pending_delay = delay
        task._pending_site = site
        self._yield(task)

    def _runs_on(self, task: Task, delay: int) -> bool:
        """Whether ``task``, delayed by ``delay`` here, is the one the strategy picks next."""
        wake, task.wake = task.wake, self.now + delay
        try:
            return self.strategy.pick([other for other in self.tasks if other.state == READY]) is task
        finally:
            task.wake = wake

    def park(self, task: Task, lock: SchedulerLock) -> None:
        """Block ``task`` on ``lock`` until a release makes it ready again."""
        if task.cancelled:
            raise TaskCancelled()
        task.state = BLOCKED
        task.blocked_on = lock
        self._record(task, "block", lock.site_acquire)
        self._yield(task)
        task.blocked_on = None

    def wake(self, task: Task) -> None:
        """Make a blocked task ready at the current virtual time."""
        task.state = READY
        task.wake = self.now


def run_concurrently(
    strategy: Strategy,
    operations: Sequence[tuple[str, Callable[[], Any]]],
    **options: Any,
) -> RunResult:
    """Run ``operations`` under ``strategy`` in a fresh scheduler of the right kind."""
    from stateful.wallclock import WallClockScheduler

    scheduler_class = Scheduler if strategy.virtual else WallClockScheduler
    return scheduler_class(strategy, **options).run(operations)

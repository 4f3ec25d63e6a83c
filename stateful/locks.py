"""Scheduler-aware oslo.concurrency locks, optionally one per simulated host.

Nova's resource tracker serialises its work with oslo.concurrency's
in-process lock ``compute_resources`` (``fair=True``).  Under the virtual
scheduler a real lock would block a task's thread while the scheduler waits
for it: a hang.  :class:`SchedulerLocks` replaces the in-process lock
primitives that ``lockutils.lock`` and ``lockutils.synchronized`` use, so a
task that would block is *parked* and another task runs; acquire and release
are checkpoints (``lock:<name>:acquire``, ``lock:<name>:release``).

In production every nova-compute is its own process with its own lock; in one
test process all hosts would share one lock, which hides races.  The lock's
identity is therefore ``key(name)``, by default the pair (current host, name)
where the current host is what the running code declared with :func:`on_host`.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections import deque
from typing import Callable, Hashable, Iterator

import fixtures
from oslo_concurrency import lockutils

from stateful.scheduler import Task, checkpoint, current_task

current_host: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stateful_current_host", default=None
)


#: The system under test calls through this module: an error raised here is
#: judged by its caller's frame (:func:`stateful.session.raised_by_the_harness`).
JUDGED_BY_CALLER = True


@contextlib.contextmanager
def on_host(host: str) -> Iterator[None]:
    """Mark the code inside as running on compute host ``host``."""
    token = current_host.set(host)
    try:
        yield
    finally:
        current_host.reset(token)


def per_host(name: str) -> Hashable:
    """Lock identity for production-like isolation: one lock per host and name."""
    return (current_host.get(), name)


def shared(name: str) -> Hashable:
    """Lock identity as in one process: every host shares a lock of the same name."""
    return name


class SchedulerLock:
    """A non-reentrant lock whose waiters are parked by the virtual scheduler.

    Threads that are not tasks of a virtual scheduler (the test thread, the
    wall-clock baseline's free-running threads) use an ordinary lock instead.
    A fair lock hands itself to its longest waiter on release, as oslo's fair
    locks do; an unfair one wakes every waiter and the schedule decides who
    takes it.
    """

    def __init__(self, name: str, fair: bool) -> None:
        self.name = name
        self.fair = fair
        self.owner: Task | None = None
        self.waiters: deque[Task] = deque()
        self.site_acquire = f"lock:{name}:acquire"
        self.site_release = f"lock:{name}:release"
        self._real = threading.Lock()

    def __repr__(self) -> str:
        return f"SchedulerLock({self.name!r}, owner={self.owner!r})"

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        task = current_task()
        if task is None or not task.scheduler.virtual:
            return self._real.acquire(blocking, timeout)
        checkpoint(self.site_acquire)
        while self.owner is not None:
            if not blocking:
                return False
            self.waiters.append(task)
            try:
                task.scheduler.park(task, self)
            finally:
                if task in self.waiters:
                    self.waiters.remove(task)
            if self.owner is task:  # a fair release handed the lock over
                return True
        self.owner = task
        return True

    def release(self) -> None:
        task = current_task()
        if task is None or not task.scheduler.virtual:
            self._real.release()
            return
        if self.owner is not task:
            raise RuntimeError(f"{task!r} released {self!r} that it does not hold")
        self.owner = None
        if self.fair and self.waiters:
            successor = self.waiters.popleft()
            self.owner = successor
            task.scheduler.wake(successor)
        else:
            for waiter in self.waiters:
                task.scheduler.wake(waiter)
            self.waiters.clear()
        checkpoint(self.site_release)

    def __enter__(self) -> SchedulerLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def write_lock(self) -> SchedulerLock:
        """The fasteners ReaderWriterLock interface oslo uses for fair locks."""
        return self


class SchedulerLocks(fixtures.Fixture):
    """Make oslo.concurrency's in-process locks scheduler-aware while in use.

    ``key`` maps a lock name to the lock's identity (see :func:`per_host` and
    :func:`shared`).  External (inter-process) locks and locks with a
    caller-supplied semaphore container keep oslo's own behaviour.
    """

    def __init__(self, key: Callable[[str], Hashable] = per_host) -> None:
        super().__init__()
        self.key = key
        self.locks: dict[Hashable, SchedulerLock] = {}
        self._registry_lock = threading.Lock()

    def get(self, name: str, fair: bool) -> SchedulerLock:
        identity = self.key(name)
        with self._registry_lock:
            lock = self.locks.get(identity)
            if lock is None:
                lock = self.locks[identity] = SchedulerLock(name, fair)
        return lock

    def _setUp(self) -> None:
        original_internal_lock = lockutils.internal_lock

        def internal_lock(name, semaphores=None, blocking=True):  # type: ignore[no-untyped-def]
            if semaphores is not None:
                return original_internal_lock(name, semaphores, blocking)
            lock = self.get(name, fair=False)
            return lock if blocking else _nonblocking(lock, name)

        self.useFixture(fixtures.MonkeyPatch("oslo_concurrency.lockutils.internal_lock", internal_lock))
        self.useFixture(
            fixtures.MonkeyPatch(
                "oslo_concurrency.lockutils.internal_fair_lock", lambda name: self.get(name, fair=True)
            )
        )

    def held(self) -> list[SchedulerLock]:
        """Locks a task still owns (after a run: a lock the code under test leaked)."""
        return [lock for lock in self.locks.values() if lock.owner is not None]


@contextlib.contextmanager
def _nonblocking(lock: SchedulerLock, name: str) -> Iterator[SchedulerLock]:
    if not lock.acquire(blocking=False):
        raise lockutils.AcquireLockFailedException(name)
    try:
        yield lock
    finally:
        lock.release()

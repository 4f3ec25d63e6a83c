"""Independent pieces of work ("cells": one seed's campaign, one exploration) run a few at a time.

``bench`` runs hundreds of campaigns that share nothing; on a machine with
several cores they can run side by side.  Each runs in a *spawned* process
(never forked: the parent has scheduler threads and Hypothesis state), one
pool for the whole batch.  What a cell returns or raises comes back to the
parent; a failure or Ctrl-C stops the batch at once rather than after the
hours of work still queued.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Sequence, TypeVar

from stateful.errors import HarnessError

T = TypeVar("T")

#: a cell: a name for messages, and a picklable callable (a module-level function, or a partial of one)
Cell = tuple[str, Callable[[], T]]


def run_cells(cells: Sequence[Cell[T]], jobs: int, done: Callable[[int, T], None]) -> list[T]:
    """Every cell's result, in the cells' order; ``jobs`` at a time in spawned processes (1: here, in turn).

    ``done(index, result)`` is told of each cell as it finishes, in the order
    they finish.  A cell that raises stops the batch: the cells not started
    are dropped, the running ones killed, and the error raised here -- a
    ``HarnessError`` (or ``KeyboardInterrupt``) as the cell raised it, any
    other exception as a ``HarnessError`` naming the cell.
    """
    if jobs <= 1:
        results = []
        for index, (name, call) in enumerate(cells):
            results.append(_guarded(name, call))
            done(index, results[-1])
        return results
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    futures: dict[Future[T], int] = {
        pool.submit(_guarded, name, call): index for index, (name, call) in enumerate(cells)
    }
    try:
        for future in as_completed(futures):
            done(futures[future], future.result())
    except BrokenProcessPool as error:
        _abandon(pool)
        raise HarnessError(f"a worker process of the batch died: {error}") from None
    except BaseException:
        _abandon(pool)
        raise
    pool.shutdown()
    return [future.result() for future in futures]


def _guarded(name: str, call: Callable[[], T]) -> T:
    """``call()``, its unexpected errors turned into a ``HarnessError`` naming the cell.

    A plain message travels back from a worker process whatever the original
    exception was (some do not survive pickling, and an unpicklable one
    would break the whole pool).
    """
    try:
        return call()
    except (HarnessError, KeyboardInterrupt):
        raise
    except Exception as error:
        raise HarnessError(f"{name}: {type(error).__name__}: {error}") from None


def _abandon(pool: ProcessPoolExecutor) -> None:
    """Drop the queued cells and kill the running ones (a campaign may have a minute left to run).

    Killed, not terminated: a campaign takes SIGTERM as a request to stop
    gracefully, which still shrinks and writes what it found, all of which is
    being thrown away.
    """
    # concurrent.futures has no public way to stop a running task: its processes are the pool's own.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()

"""Free-running threads with real sleeps: the baseline the virtual scheduler replaces.

This is how Nova's own race tests force an interleaving (``time.sleep`` in a
mocked method), generalised to random sleeps at every checkpoint.  It is not
deterministic and costs real time; it exists to be measured against, and as a
fallback for code that starts threads the virtual scheduler cannot see.
Locks are real locks here (see :class:`stateful.locks.SchedulerLock`).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

from stateful.errors import StuckTask
from stateful.scheduler import (
    DEFAULT_STEP_TIMEOUT,
    READY,
    DONE,
    RunResult,
    Task,
    TraceEvent,
    _local,
)
from stateful.strategies import WallClockDelays


class WallClockScheduler:
    """Starts every operation at once on its own thread; checkpoints sleep."""

    virtual = False

    def __init__(
        self,
        strategy: WallClockDelays,
        *,
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
        on_checkpoint: Callable[[TraceEvent], None] | None = None,
    ) -> None:
        self.strategy = strategy
        self.step_timeout = step_timeout
        self.trace: list[TraceEvent] = []
        self._trace_lock = threading.Lock()
        self._started = 0.0

    def run(self, operations: Sequence[tuple[str, Callable[[], Any]]]) -> RunResult:
        tasks = [Task(i, name, fn, self) for i, (name, fn) in enumerate(operations)]  # type: ignore[arg-type]
        self.strategy.begin([task.name for task in tasks])
        self._started = time.perf_counter()
        threads = [
            threading.Thread(target=self._task_main, args=(task,), daemon=True) for task in tasks
        ]
        for thread in threads:
            thread.start()
        for task, thread in zip(tasks, threads):
            thread.join(timeout=self.step_timeout)
            if thread.is_alive():
                raise StuckTask(f"task {task!r} still running after {self.step_timeout:g}s")
        return RunResult([task.outcome for task in tasks], self.trace)

    def _task_main(self, task: Task) -> None:
        _local.task = task
        try:
            self._record(task, "start")
            task.outcome.value = task.fn()
        except BaseException as error:  # noqa: BLE001 - returned to the caller
            task.outcome.error = error
        finally:
            _local.task = None
            self._record(task, "finish")
            task.state = DONE

    def _record(self, task: Task, kind: str, site: str = "", delay: int = 0) -> None:
        micros = int((time.perf_counter() - self._started) * 1e6)
        with self._trace_lock:
            self.trace.append(TraceEvent(micros, task.index, task.name, kind, site, delay))

    def reach(self, task: Task, site: str) -> None:
        pause = self.strategy.sleep_for(task.index)
        self._record(task, "reach", site, int(pause * 1e6))
        if pause:
            time.sleep(pause)

    def park(self, task: Task, lock: Any) -> None:  # locks are real here: never parked
        raise AssertionError("wall-clock tasks block on real locks")

    def wake(self, task: Task) -> None:
        task.state = READY

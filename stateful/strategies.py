"""Schedule strategies: where the delays (and so the interleavings) come from.

* :class:`VirtualDelays` — the suite's own: every delay is Hypothesis data,
  so Hypothesis explores interleavings and shrinks delays toward zero.
* :class:`FixedDelays` — replays a recorded schedule (regression files,
  determinism checks, hand-written scenarios).
* :class:`PCT` — probabilistic concurrency testing (Burckhardt et al.,
  ASPLOS 2010): random task priorities with d-1 priority change points,
  drawn from Hypothesis data too.
* :class:`WallClockDelays` — free-running threads with real, scaled sleeps:
  the method of Nova's hand-written race tests, kept as a baseline and as a
  fallback for code that starts threads the scheduler cannot see.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from hypothesis import strategies as st

from stateful.scheduler import ScheduleEntry, Task, earliest_wake

#: Largest virtual delay drawn at one checkpoint.  A handful of units is
#: enough: what matters is the order of wake-up times, not their size.
DEFAULT_MAX_DELAY = 8


class VirtualDelays:
    """Each checkpoint's delay is drawn from Hypothesis data, in virtual time.

    The drawn integer is in ``[0, 2*max_delay]`` and the delay is what it
    exceeds ``max_delay`` by: about half the checkpoints are not delayed (a
    few deviations from sequential order find races better than noise at
    every site), and shrinking the integer still shrinks the delay.
    """

    virtual = True

    def __init__(self, data: Any, max_delay: int = DEFAULT_MAX_DELAY) -> None:
        self.data = data
        self.max_delay = max_delay
        self.draws = st.integers(0, 2 * max_delay)

    def begin(self, names: Sequence[str]) -> None:
        pass

    def delay(self, task: int, site: str, nth: int) -> int:
        return max(0, self.data.draw(self.draws) - self.max_delay)

    def pick(self, runnable: Sequence[Task]) -> Task:
        return earliest_wake(runnable)


@dataclass
class FixedDelays:
    """Replays a schedule: delays keyed by (task, site, nth occurrence), else zero.

    Keying by occurrence rather than by position keeps a replay meaningful
    when the code under test changed (a bug fixed, a fault switched off) and
    now reaches a different sequence of sites.
    """

    delays: Mapping[tuple[int, str, int], int] = field(default_factory=dict)
    virtual = True

    @classmethod
    def from_schedule(cls, entries: Iterable[ScheduleEntry]) -> FixedDelays:
        return cls({(e.task, e.site, e.nth): e.delay for e in entries if e.delay})

    def begin(self, names: Sequence[str]) -> None:
        pass

    def delay(self, task: int, site: str, nth: int) -> int:
        return self.delays.get((task, site, nth), 0)

    def pick(self, runnable: Sequence[Task]) -> Task:
        return earliest_wake(runnable)


class PCT:
    """Probabilistic concurrency testing, with its random choices drawn from Hypothesis.

    Tasks get distinct initial priorities ``depth .. depth+n-1``; at each of
    ``depth-1`` change points (counted in checkpoints reached) the running
    task drops to a priority below every initial one.  The highest-priority
    ready task always runs.  Time is the count of checkpoints reached.
    """

    virtual = True

    def __init__(self, data: Any, depth: int = 3, max_steps: int = 64) -> None:
        self.data = data
        self.depth = depth
        self.max_steps = max_steps
        self.priority: list[int] = []
        self.change_points: list[int] = []
        self.steps = 0

    def begin(self, names: Sequence[str]) -> None:
        order = self.data.draw(st.permutations(range(len(names))))
        self.priority = [self.depth + rank for rank in order]
        self.change_points = self.data.draw(
            st.lists(
                st.integers(1, self.max_steps),
                min_size=self.depth - 1,
                max_size=self.depth - 1,
            )
        )
        self.steps = 0

    def delay(self, task: int, site: str, nth: int) -> int:
        self.steps += 1
        for level, point in enumerate(self.change_points):
            if point == self.steps:
                self.priority[task] = self.depth - 1 - level
        return 1

    def pick(self, runnable: Sequence[Task]) -> Task:
        return max(runnable, key=lambda task: (self.priority[task.index], -task.index))


class WallClockDelays:
    """Real sleeps at checkpoints on free-running threads (a baseline, not deterministic).

    One seed is drawn in the control thread; each task then sleeps, at about
    half of its checkpoints, a random time up to ``max_sleep`` seconds from its
    own seeded generator.
    """

    virtual = False

    def __init__(self, data: Any, max_sleep: float = 0.002) -> None:
        self.data = data
        self.max_sleep = max_sleep
        self.generators: list[random.Random] = []

    def begin(self, names: Sequence[str]) -> None:
        seed = self.data.draw(st.integers(0, 2**32 - 1))
        self.generators = [random.Random(seed + index) for index in range(len(names))]

    def sleep_for(self, task: int) -> float:
        generator = self.generators[task]
        return generator.random() * self.max_sleep if generator.random() < 0.5 else 0.0

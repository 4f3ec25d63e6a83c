"""Schedule strategies: where the delays (and so the interleavings) come from.

* :class:`VirtualDelays` — the suite's own: sparse delays whose places and
  sizes are Hypothesis data, so Hypothesis explores interleavings and shrinks
  them to the few pauses that matter.
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

import functools
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from hypothesis import strategies as st

from stateful.errors import HarnessError
from stateful.scheduler import ScheduleEntry, Task, earliest_wake

#: Largest virtual delay drawn at one checkpoint.  A handful of units is
#: enough: what matters is the order of wake-up times, not their size.
DEFAULT_MAX_DELAY = 8

#: For an operation of unknown length, the spacings between one task's
#: delays are drawn up to one of these bounds, itself drawn once per run.
#: Operations reach from a handful to a few dozen checkpoints; mixing short
#: and long bounds gives the deep positions some chance too.
GAP_SCALES = (4, 12, 24, 48)


# Strategies built once per argument: Hypothesis validates every new strategy
# object it draws from, which cost more than the draws of a concurrent step.


@functools.lru_cache(maxsize=None)
def up_to(bound: int) -> st.SearchStrategy[int]:
    return st.integers(0, bound)


@functools.lru_cache(maxsize=4096)
def one_of_these(choices: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(choices)


class VirtualDelays:
    """Sparse delays in virtual time, every choice drawn from Hypothesis data.

    Races need one or two well-placed pauses, not noise: a task delayed at
    every other checkpoint hardly ever runs deep into an operation before the
    others overtake it, yet that is where windows such as "between the audit's
    instance read and its migration read" sit.  So each task counts down a
    drawn number of checkpoints (its *gap*) before its next delay; there the
    delay is drawn (0 to ``max_delay``; 0 means "no pause after all") and so
    is the next gap.  All other checkpoints get no delay and cost no draw.

    Shrinking works on the delays: a delay shrinks to 0 (one pause fewer) and
    a gap towards 0 (the pause earlier), so a shrunk failure keeps only the
    pauses that matter.  Only checkpoints where another task is ready to run
    count down (see :meth:`Scheduler._contended`).

    Gaps are drawn up to a bound: the number of checkpoints the task's
    operation reaches, when the target tells (:meth:`expect_lengths`), so
    that every position in it is about as likely to get the pause, the
    deepest too; otherwise one of ``scales``, drawn per run.
    """

    virtual = True

    def __init__(
        self,
        data: Any,
        max_delay: int = DEFAULT_MAX_DELAY,
        scales: Sequence[int] = GAP_SCALES,
        use_lengths: bool = True,
    ) -> None:
        self.data = data
        self.delays = up_to(max_delay)
        self.scales = one_of_these(tuple(scales))
        self.use_lengths = use_lengths
        self.lengths: Sequence[int | None] = ()
        self.gaps: list[st.SearchStrategy[int]] = []
        self.countdown: list[int] = []

    def expect_lengths(self, lengths: Sequence[int | None]) -> None:
        if self.use_lengths:
            self.lengths = lengths

    def begin(self, names: Sequence[str]) -> None:
        lengths, self.lengths = list(self.lengths) or [None] * len(names), ()
        if len(lengths) != len(names):
            raise HarnessError(f"{len(lengths)} operation lengths for {len(names)} tasks")
        run_scale = self.data.draw(self.scales) if None in lengths else 0
        self.gaps = [up_to(run_scale if length is None else length) for length in lengths]
        self.countdown = [self.data.draw(gaps) for gaps in self.gaps]

    def free_delay(self, task: int, site: str, nth: int) -> int | None:
        if self.countdown[task]:
            self.countdown[task] -= 1
            return 0
        return None

    def delay(self, task: int, site: str, nth: int) -> int:
        free = self.free_delay(task, site, nth)
        if free is not None:
            return free
        delay = self.data.draw(self.delays)
        self.countdown[task] = self.data.draw(self.gaps[task])
        return delay

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

    free_delay = delay

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

    free_delay = delay

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

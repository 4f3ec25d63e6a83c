"""The virtual-time scheduler: races found, shrunk, replayed; locks; deadlocks."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Found

from stateful.errors import Deadlock, StuckTask
from stateful.locks import SchedulerLocks
from stateful.scheduler import Scheduler, checkpoint, schedule_of
from stateful.strategies import PCT, FixedDelays, VirtualDelays

from tests.engine.programs import Counter, abba, increments

SEARCH = settings(
    database=None,
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def find_lost_update(make_strategy, locked: bool = False):
    """Search for a run where two increments leave the counter at 1.

    Returns the schedule of the last run Hypothesis made, which after a
    failure is the shrunk failing example; None if no failure was found.
    """
    last: dict = {}

    @SEARCH
    @given(st.data())
    def two_increments(data):
        counter = Counter()
        with SchedulerLocks():
            result = Scheduler(make_strategy(data)).run(increments(counter, locked))
        result.raise_first_error()
        last["schedule"] = result.schedule
        assert counter.value == 2, "lost update"

    try:
        two_increments()
    except AssertionError:
        return last["schedule"]
    return None


def test_sequential_when_every_delay_is_zero():
    counter = Counter()
    result = Scheduler(FixedDelays()).run(increments(counter))
    assert counter.value == 2
    assert [(e.task, e.kind) for e in result.trace] == [
        (0, "start"), (0, "reach"), (0, "reach"), (0, "finish"),
        (1, "start"), (1, "reach"), (1, "reach"), (1, "finish"),
    ]


def test_finds_lost_update_and_shrinks_to_one_delay():
    schedule = find_lost_update(VirtualDelays)
    assert schedule is not None, "the lost update was not found"
    assert [e for e in schedule if e.delay] == [
        e for e in schedule if e.delay and e.site == "counter.read" and e.task == 0
    ]
    assert sum(1 for e in schedule if e.delay) == 1


def test_pct_finds_lost_update():
    assert find_lost_update(PCT) is not None


def test_lock_prevents_lost_update():
    assert find_lost_update(VirtualDelays, locked=True) is None


def test_one_delay_replays_the_race():
    counter = Counter()
    Scheduler(FixedDelays({(0, "counter.read", 0): 1})).run(increments(counter))
    assert counter.value == 1


def test_replaying_a_schedule_gives_the_same_trace_every_time():
    schedule = {(0, "counter.read", 0): 3, (1, "counter.write", 0): 2, (2, "counter.read", 0): 1}

    def trace():
        with SchedulerLocks():
            counter = Counter()
            return Scheduler(FixedDelays(schedule)).run(increments(counter, tasks=3)).trace

    first = trace()
    assert all(trace() == first for _ in range(100))


def test_recorded_schedule_round_trips():
    @SEARCH
    @given(st.data())
    def record_and_replay(data):
        counter = Counter()
        recorded = Scheduler(VirtualDelays(data)).run(increments(counter, tasks=3))
        again = Scheduler(FixedDelays.from_schedule(recorded.schedule)).run(increments(Counter(), tasks=3))
        assert again.trace == recorded.trace
        assert schedule_of(again.trace) == recorded.schedule

    record_and_replay()


def test_abba_is_a_deadlock_with_its_cycle():
    with SchedulerLocks(), pytest.raises(Deadlock) as caught:
        Scheduler(FixedDelays({(0, "abba.between", 0): 1})).run(abba())
    message = str(caught.value)
    assert "no-deadlock" in message
    assert "#0(ab) waits for b held by #1(ba)" in message
    assert "#1(ba) waits for a held by #0(ab)" in message


def test_abba_without_overlap_completes():
    with SchedulerLocks():
        result = Scheduler(FixedDelays()).run(abba())
    assert all(outcome.error is None for outcome in result.outcomes)


def test_fair_lock_serves_waiters_in_arrival_order():
    order = []

    def worker(n):
        def body():
            with __import__("oslo_concurrency").lockutils.lock("fair", fair=True):
                order.append(n)
                checkpoint("inside")
        return body

    # Task 0 takes the lock and sleeps inside; 2 then 1 queue up behind it.
    delays = {(0, "inside", 0): 10, (1, "lock:fair:acquire", 0): 2, (2, "lock:fair:acquire", 0): 1}
    with SchedulerLocks():
        Scheduler(FixedDelays(delays)).run([(f"w{n}", worker(n)) for n in range(3)])
    assert order == [0, 2, 1]


def test_locks_are_per_host_by_default():
    from oslo_concurrency import lockutils

    from stateful.locks import on_host

    inside = []

    def on(host):
        def body():
            with on_host(host), lockutils.lock("compute_resources", fair=True):
                inside.append(host)
                checkpoint("inside")
                inside.append(host)
        return body

    with SchedulerLocks():
        Scheduler(FixedDelays({(0, "inside", 0): 5})).run([("a", on("host1")), ("b", on("host2"))])
    assert inside == ["host1", "host2", "host2", "host1"]


def test_task_exception_reaches_the_caller_with_its_traceback():
    def boom():
        checkpoint("before-boom")
        raise ValueError("inside the task")

    result = Scheduler(FixedDelays()).run([("boom", boom)])
    with pytest.raises(ValueError, match="inside the task") as caught:
        result.raise_first_error()
    assert any(frame.name == "boom" for frame in caught.traceback)


def test_stuck_task_is_a_harness_error():
    release = threading.Event()

    def stuck():
        release.wait()

    try:
        with pytest.raises(StuckTask, match="without reaching a checkpoint"):
            Scheduler(FixedDelays(), step_timeout=0.2).run([("stuck", stuck)])
    finally:
        release.set()
        for thread in stateful_threads():
            thread.join()


def stateful_threads():
    return [t for t in threading.enumerate() if t.name.startswith("stateful-")]


def test_no_thread_outlives_its_example():

    @settings(SEARCH, max_examples=1000)
    @given(st.data())
    def many(data):
        with SchedulerLocks():
            try:
                Scheduler(VirtualDelays(data)).run(abba())
            except Deadlock:
                pass

    many()
    assert stateful_threads() == []


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.dictionaries(
        st.tuples(st.integers(0, 2), st.sampled_from(["counter.read", "counter.write"]), st.just(0)),
        st.integers(1, 5),
    )
)
def test_passing_checkpoints_on_the_task_thread_changes_no_trace(delays):
    """The fast path (on_checkpoint_anywhere) follows exactly the control thread's decisions."""
    seen: list[list[str]] = [[], []]
    traces = []
    for index, anywhere in enumerate((False, True)):
        scheduler = Scheduler(
            FixedDelays(delays),
            on_checkpoint=lambda event: seen[index].append(str(event)),
            on_checkpoint_anywhere=anywhere,
        )
        run = scheduler.run(increments(Counter(), tasks=3))
        traces.append([str(event) for event in run.trace])
    assert traces[0] == traces[1]
    assert seen[0] == seen[1]


def test_an_on_checkpoint_error_on_a_task_thread_is_raised_by_the_run():
    """A failed always-true check is the run's error, never the operation's outcome."""

    class Broken(Exception):
        pass

    def fail(event):
        raise Broken(str(event))

    with pytest.raises(Broken):
        Scheduler(FixedDelays(), on_checkpoint=fail, on_checkpoint_anywhere=True).run(increments(Counter()))
    assert not stateful_threads()


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.dictionaries(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from(["counter.read", "counter.write", "lock:counter:acquire", "lock:counter:release"]),
            st.just(0),
        ),
        st.integers(1, 5),
    ),
    st.booleans(),
)
def test_greenlets_follow_exactly_the_schedule_threads_follow(delays, locked):
    """A target's choice of carrier (threads or greenlets) changes no trace and no outcome."""
    runs = []
    for greenlets in (False, True):
        counter = Counter()
        with SchedulerLocks():
            run = Scheduler(FixedDelays(delays), greenlets=greenlets).run(increments(counter, locked, tasks=3))
        runs.append(([str(event) for event in run.trace], counter.value, [o.error for o in run.outcomes]))
    assert runs[0] == runs[1]


def test_a_deadlock_between_greenlets_is_found_and_unwound():
    with SchedulerLocks():
        with pytest.raises(Deadlock, match="waits for"):
            Scheduler(FixedDelays({(0, "abba.between", 0): 1}), greenlets=True).run(abba())

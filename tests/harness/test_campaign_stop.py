"""A campaign stops between examples, never mid-example; a signal also cuts a shrink short."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable

import fixtures

from stateful.campaign import Campaign, CampaignOptions, Worker
from stateful.regression import load
from stateful.replay import replay_case


def run_worker_stopping(
    options: CampaignOptions, when: Callable[[Worker, Any], bool], by_signal: bool = False
) -> tuple[Worker, list[str]]:
    """Run a worker that is told to stop once ``when(worker, recording)`` holds after an example ends
    (``by_signal``: as a signal tells it, cutting any shrink short).

    Returns the worker and the kinds of the messages it emitted.
    """
    stop, hurry = threading.Event(), threading.Event()
    emitted: list[str] = []
    worker = Worker(options, 0, lambda kind, payload: emitted.append(kind), stop, hurry)
    count = worker.on_example

    def on_example(recording: Any) -> None:
        count(recording)
        if when(worker, recording):
            stop.set()
            if by_signal:
                hurry.set()

    worker.on_example = on_example  # type: ignore[method-assign]
    worker.run()
    return worker, emitted


def test_a_stop_request_ends_the_chunk_before_its_next_example() -> None:
    worker, emitted = run_worker_stopping(CampaignOptions(seed=1, db="none"), lambda w, _: w.examples == 3)
    assert worker.examples == 3  # not the chunk's 20: a Nova example takes many seconds
    assert "finding" not in emitted and "harness_error" not in emitted


def test_a_stop_request_after_a_failure_lets_the_shrink_finish(tmp_path) -> None:  # type: ignore[no-untyped-def]
    options = CampaignOptions(
        faults=["lp1879878-confirm"], seed=0, db="none", regressions=str(tmp_path), shrink_seconds=20
    )
    worker, emitted = run_worker_stopping(options, lambda _, recording: recording.broke is not None)
    assert emitted.count("finding") == 1 and len(list(tmp_path.glob("*.json"))) == 1
    assert worker.first_failure is not None and worker.examples - worker.first_failure[1] > SHRINK_CUT_SHORT


#: Examples a cut-short shrink runs after the failure: its replay as
#: shrinking starts, and Hypothesis's final replay of the smallest failure.
SHRINK_CUT_SHORT = 2


def test_a_signal_after_a_failure_cuts_the_shrink_short(tmp_path) -> None:  # type: ignore[no-untyped-def]
    options = CampaignOptions(
        faults=["lp1879878-confirm"], seed=0, db="none", regressions=str(tmp_path), shrink_seconds=20
    )
    worker, emitted = run_worker_stopping(options, lambda _, recording: recording.broke is not None, by_signal=True)
    assert emitted.count("finding") == 1
    assert worker.first_failure is not None and worker.examples - worker.first_failure[1] <= SHRINK_CUT_SHORT
    (path,) = tmp_path.glob("*.json")
    case = load(path)
    assert "cut short by a stop request" in case.notes
    assert replay_case(case).as_recorded  # what was written is the failure, unshrunk or not


def test_a_ctrl_c_during_the_shrink_keeps_the_failure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One worker runs in the campaign's own process: a first Ctrl-C stops as SIGTERM does
    (the shrink cut short, the failure written), not as a KeyboardInterrupt that loses it."""
    options = CampaignOptions(
        faults=["lp1879878-confirm"], seed=0, db="none", regressions=str(tmp_path), shrink_seconds=20
    )
    count = Worker.on_example

    def press_ctrl_c_at_the_failure(worker: Worker, recording: Any) -> None:
        count(worker, recording)
        if recording.broke is not None and not worker.hurry.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    with fixtures.MonkeyPatch("stateful.campaign.Worker.on_example", press_ctrl_c_at_the_failure):
        report = Campaign(options).run()
    assert len(report.findings) == 1
    (path,) = tmp_path.glob("*.json")
    assert "cut short by a stop request" in load(path).notes

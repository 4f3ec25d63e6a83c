"""Fuzz campaigns: the state machine run for a budget, on one or many processes.

A campaign runs the machine in *chunks* of a few examples, each chunk a
Hypothesis run with its own seed (derived from ``--seed``, the worker's
number and the chunk's number), until the example or wall-clock budget is
spent or a finding is made.  Chunks make a seeded campaign repeatable; a spent
budget or a stop request ends a chunk as its next example would begin
(:class:`~stateful.errors.StopRequested`), never mid-example.  A failure
being shrunk is shrunk to the end, unless the stop came from a signal
(SIGTERM, or a first Ctrl-C; with one worker a second Ctrl-C interrupts at
once): then the shrink ends at its next test case (:class:`ShrinkDeadline`) and the smallest
failure so far is written, so that whoever sent the signal need not wait out
the shrink budget.

Workers are separate processes sharing one Hypothesis example database (a
directory, or Redis for many machines), so a failure one worker found and
shrank is replayed from the database by the others rather than searched for
again.  The first finding stops every worker; its shrunk example is written
as a regression file.
"""

from __future__ import annotations

import datetime
import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import fixtures
from hypothesis import Phase, Verbosity, seed, settings
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
from hypothesis.errors import Flaky, HypothesisException
from hypothesis.stateful import run_state_machine_as_test

from stateful.errors import Finding, StopRequested, UsageError
from stateful.faults import Fault, select_faults
from stateful.machine import MachineConfig, make_machine
from stateful.minimize import minimize
from stateful.overlaps import interleaving_signature
from stateful.profiles import PROFILES
from stateful.regression import case_from_finding, write
from stateful.session import Recording
from stateful.strategies import PCT, FixedDelays, VirtualDelays, WallClockDelays
from stateful.targets import target_factory

#: Examples per Hypothesis run inside a campaign (see the module docstring).
CHUNK = 20
#: Seconds between progress samples sent by a worker.
SAMPLE_EVERY = 0.5

SCHEDULES: dict[str, Callable[[Any], Any]] = {
    "virtual": VirtualDelays,
    "pct": PCT,
    "sequential": lambda data: FixedDelays(),
    "wallclock": WallClockDelays,
}
#: Schedules whose interleavings are not drawn by Hypothesis, so a failure
#: need not happen again when Hypothesis runs its example again: their
#: findings are kept as first seen, neither shrunk nor minimized.
NOT_REPLAYABLE = frozenset({"wallclock"})


@dataclass
class CampaignOptions:
    target: str = "model"
    faults: list[str] = field(default_factory=list)
    faults_from: list[str] = field(default_factory=list)
    max_examples: int | None = None
    duration: float | None = None
    seed: int | None = None
    workers: int = 1
    db: str = ".hypothesis/examples"
    regressions: str = "tests/regressions"
    profile: str = "dev"
    schedule: str = "virtual"
    #: Wall-clock bound on shrinking one finding (Hypothesis's own default is 300).
    shrink_seconds: float = 300.0
    #: Check concurrent steps against the serial orders of their operations.
    serializable: bool = False


@dataclass
class FindingReport:
    invariant: str
    message: str
    regression_file: str
    steps: int
    nonzero_delays: int
    worker: int
    #: Wall-clock seconds and examples until the first failing example (before shrinking).
    first_failure_s: float | None
    first_failure_examples: int | None
    #: Wall-clock seconds until the shrunk regression file was written.
    elapsed_s: float


@dataclass
class Sample:
    """Cumulative counts of one worker at one moment (for progress and plots)."""

    worker: int
    elapsed_s: float
    examples: int
    steps: int
    new_signatures: list[str]


@dataclass
class CampaignReport:
    target: str
    faults: list[str]
    seed: int | None
    examples: int = 0
    steps: int = 0
    elapsed_s: float = 0.0
    steps_per_s: float = 0.0
    findings: list[FindingReport] = field(default_factory=list)
    harness_errors: int = 0
    harness_error_messages: list[str] = field(default_factory=list)
    workers: int = 1
    distinct_interleavings: int = 0
    interrupted: bool = False
    #: (elapsed_s, examples, steps, distinct interleavings, findings) over time.
    timeline: list[tuple[float, int, int, int, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def exit_code(self) -> int:
        if self.findings:
            return 1
        return 2 if self.harness_errors else 0


# -- validation before any work -------------------------------------------------


def open_database(url: str) -> ExampleDatabase | None:
    """The example database for ``--db``; UsageError when it can't be used."""
    if url == "none":
        return None
    if url.startswith("redis://"):
        try:
            import redis
            from hypothesis.extra.redis import RedisExampleDatabase
        except ImportError as error:
            raise UsageError(f"--db {url}: the redis package is not installed (pip install '.[redis]')") from error
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=3)
            client.ping()
        except (redis.RedisError, ValueError) as error:
            raise UsageError(f"--db {url}: cannot reach the database: {error}") from error
        return RedisExampleDatabase(client, expire_after=datetime.timedelta(days=30))
    path = Path(url)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--db {url}: cannot create the database directory: {error.strerror}") from error
    if not os.access(path, os.W_OK):
        raise UsageError(f"--db {url}: the database directory is not writable")
    return DirectoryBasedExampleDatabase(str(path))


def check_regression_dir(directory: str) -> None:
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--regressions {directory}: not writable: {error.strerror or error}") from error


class ShrinkDeadline:
    """Hypothesis's shrinking budget, brought forward by a stop request.

    Hypothesis bounds shrinking by one engine constant, ``MAX_SHRINKING_SECONDS``:
    it adds it to ``time.perf_counter()`` as shrinking starts and compares the
    sum with the clock after each test case.  Patched in as that constant, this
    adds up to a deadline that has passed as soon as ``hurry()`` is true.
    """

    def __init__(
        self, seconds: float, hurry: Callable[[], bool], at: float | None = None, cut: Any = None
    ) -> None:
        self.seconds = seconds
        self.hurry = hurry
        self.at = at
        #: Set once a shrink ended on ``hurry`` (shared with the deadlines this budget makes).
        self.cut = cut if cut is not None else threading.Event()

    def __radd__(self, now: float) -> ShrinkDeadline:
        return ShrinkDeadline(self.seconds, self.hurry, now + self.seconds, self.cut)

    def __lt__(self, now: float) -> bool:
        if self.hurry():
            self.cut.set()
            return True
        return self.at is not None and self.at < now


def validate(options: CampaignOptions) -> None:
    """Every check that can fail on bad input, before any work starts."""
    target_factory(options.target)
    select_faults(options.target, options.faults, options.faults_from)
    if options.profile not in PROFILES:
        raise UsageError(f"--profile {options.profile}: unknown profile (known: {', '.join(PROFILES)})")
    if options.schedule not in SCHEDULES:
        raise UsageError(f"--schedule {options.schedule}: unknown (known: {', '.join(SCHEDULES)})")
    if options.workers < 1:
        raise UsageError("--workers must be at least 1")
    if options.max_examples is not None and options.max_examples < 1:
        raise UsageError("--max-examples must be at least 1")
    if options.duration is not None and options.duration <= 0:
        raise UsageError("--duration must be positive")
    open_database(options.db)
    check_regression_dir(options.regressions)


# -- one worker -------------------------------------------------------------------


class Worker:
    """Runs chunks of examples in this process and reports through ``emit``.

    ``stop`` ends the run between examples; ``hurry`` (set by signals, with
    ``stop``) also cuts a shrink short.  Both are events (``is_set()``).
    """

    def __init__(
        self, options: CampaignOptions, index: int, emit: Callable[[str, Any], None], stop: Any, hurry: Any = None
    ) -> None:
        self.options = options
        self.index = index
        self.emit = emit
        self.stop = stop
        self.hurry = hurry if hurry is not None else threading.Event()
        self.shrink_budget = ShrinkDeadline(options.shrink_seconds, self.hurry.is_set)
        self.started = time.monotonic()
        self.examples = 0
        self.steps = 0
        self.signatures: set[str] = set()
        self.unsent: list[str] = []
        self.last_sample = 0.0
        self.first_failure: tuple[float, int] | None = None
        #: the recording of the first example that broke an invariant
        self.first_broken: Recording | None = None
        self.faults: tuple[Fault, ...] = ()

    def out_of_budget(self) -> bool:
        options = self.options
        if self.stop.is_set():
            return True
        if options.duration is not None and time.monotonic() - self.started >= options.duration:
            return True
        per_worker = options.max_examples
        if per_worker is not None:
            per_worker = -(-per_worker // options.workers)
            return self.examples >= per_worker
        return False

    def stop_between_examples(self) -> bool:
        """Whether to end the chunk before its next example (a Nova example takes many seconds).

        Never once an example has failed: Hypothesis is then shrinking it (or,
        for a schedule that is not replayable, running it again), and the
        failure is what the campaign is for.
        """
        return self.first_failure is None and self.out_of_budget()

    def on_example(self, recording: Recording) -> None:
        self.examples += 1
        if recording.broke is not None and self.first_failure is None:
            self.first_failure = (round(time.monotonic() - self.started, 3), self.examples)
            self.first_broken = recording
        self.steps += len(recording.steps)
        for trace in recording.traces:
            signature = interleaving_signature(trace)
            if signature not in self.signatures:
                self.signatures.add(signature)
                self.unsent.append(signature)
        now = time.monotonic() - self.started
        if now - self.last_sample >= SAMPLE_EVERY:
            self.sample()

    def sample(self) -> None:
        self.last_sample = time.monotonic() - self.started
        self.emit("sample", Sample(self.index, self.last_sample, self.examples, self.steps, self.unsent))
        self.unsent = []

    def run(self) -> None:
        options = self.options
        self.faults = faults = tuple(select_faults(options.target, options.faults, options.faults_from))
        machine = make_machine(
            MachineConfig(
                target_factory(options.target),
                faults,
                SCHEDULES[options.schedule],
                check_serializable=options.serializable,
                on_example=self.on_example,
                should_stop=self.stop_between_examples,
            )
        )
        database = open_database(options.db)
        # Hypothesis has no setting for this bound, only an engine constant.
        shrink_bound = fixtures.MonkeyPatch(
            "hypothesis.internal.conjecture.engine.MAX_SHRINKING_SECONDS", self.shrink_budget
        )
        with shrink_bound:
            self._run_chunks(machine, database)
        self.sample()

    def _run_chunks(self, machine: Any, database: ExampleDatabase | None) -> None:
        options = self.options
        base_seed = options.seed if options.seed is not None else int.from_bytes(os.urandom(4), "big")
        chunk_number = 0
        replayable = options.schedule not in NOT_REPLAYABLE
        while not self.out_of_budget():
            chunk_seed = (base_seed * 1_000_003 + self.index) * 10_007 + chunk_number
            chunk_number += 1
            limit = CHUNK
            if options.max_examples is not None:
                limit = min(limit, -(-options.max_examples // options.workers) - self.examples)
            profile = PROFILES[options.profile]
            chunk_settings = settings(
                profile,
                max_examples=max(1, limit),
                database=database,
                derandomize=False,
                verbosity=Verbosity.quiet,
                report_multiple_bugs=False,
                print_blob=False,
                # shrinking a failure that need not happen again would only run out the shrink budget
                phases=[p for p in profile.phases if replayable or p not in (Phase.shrink, Phase.explain)],
            )
            try:
                run_state_machine_as_test(seed(chunk_seed)(machine), settings=chunk_settings)
            except StopRequested:
                break
            except Finding as finding:
                if replayable:
                    self.report_finding(finding)
                else:
                    self.report_first_failure(finding)
                break
            except Flaky as flaky:
                # Under real sleeps Hypothesis's re-run of a failing example may pass, or even draw other
                # steps (each step's outcome steers the next draws): the failure seen first is the finding.
                if replayable:
                    self.emit("harness_error", f"worker {self.index}: {type(flaky).__name__}: {flaky}")
                else:
                    self.report_first_failure(flaky)
                break
            except (Exception, HypothesisException) as error:  # noqa: BLE001 - the fuzzer broke
                self.emit("harness_error", f"worker {self.index}: {type(error).__name__}: {error}")
                break

    def report_finding(self, finding: Finding) -> None:
        """Minimize the recording the machine attached to ``finding``, write it as a regression file
        and report it."""
        recording: Recording | None = getattr(finding, "stateful_recording", None)
        if recording is None:
            self.emit("harness_error", f"worker {self.index}: a finding without a recording: {finding}")
            return
        recording, finding = minimize(
            recording, finding, target_factory(self.options.target), self.faults,
            self.options.shrink_seconds, stop=self.hurry.is_set,
        )
        cut_short = self.shrink_budget.cut.is_set() or self.hurry.is_set()
        notes = self.notes("shrunk by Hypothesis, then minimized by replay.")
        if cut_short:
            notes += " Shrinking was cut short by a stop request."
        self._write_and_emit(recording, finding, notes)

    def report_first_failure(self, ended_by: BaseException) -> None:
        """Write and report the first example that broke an invariant, as it was seen.

        For a schedule that is not replayable (NOT_REPLAYABLE): its steps ran
        under real sleeps, which no replay brings back, so Hypothesis's re-run
        (``ended_by``: a Finding, maybe of another invariant, or a Flaky) and
        replaying smaller recordings would prove nothing.
        """
        first = self.first_broken
        if first is None or first.broke is None:
            message = f"worker {self.index}: {type(ended_by).__name__} without a failure: {ended_by}"
            self.emit("harness_error", message)
            return
        notes = self.notes(
            f"not shrunk: the {self.options.schedule} schedule is not deterministic, so this is the first "
            "failing example as seen; its replay runs each step's operations in sequence and may not break the "
            "invariant again."
        )
        self._write_and_emit(first, first.broke, notes)

    def _write_and_emit(self, recording: Recording, finding: Finding, notes: str) -> None:
        path = write(case_from_finding(recording, finding, notes), self.options.regressions)
        self.emit(
            "finding",
            FindingReport(
                finding.invariant,
                finding.message,
                str(path),
                len(recording.steps),
                recording.nonzero_delays,
                self.index,
                *(self.first_failure or (None, None)),
                round(time.monotonic() - self.started, 3),
            ),
        )

    def notes(self, how_shrunk: str) -> str:
        """Where a regression file came from, how it was shrunk, and what its fault switches do."""
        options = self.options
        found_by = (
            f"Found by python -m stateful fuzz (target {options.target}, schedule {options.schedule}, "
            f"seed {options.seed}, worker {self.index}); {how_shrunk}"
        )
        return " ".join([found_by, *(f"{fault.name}: {fault.description} ({fault.bug})." for fault in self.faults)])


def _stop_now(stop: Any, hurry: Any) -> None:
    """What a signal asks: stop between examples, and cut any shrink short."""
    hurry.set()
    stop.set()


def _first_ctrl_c_stops(stop: Any, hurry: Any) -> Callable[..., None]:
    """A SIGINT handler: the first Ctrl-C stops as SIGTERM does (what was found is still
    written), a second one raises KeyboardInterrupt where the run is."""

    def handle(*_: Any) -> None:
        if hurry.is_set():
            raise KeyboardInterrupt
        _stop_now(stop, hurry)

    return handle


def _worker_process(options: CampaignOptions, index: int, messages: Any, stop: Any, hurry: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, lambda *_: _stop_now(stop, hurry))
    try:
        Worker(options, index, lambda kind, payload: messages.put((kind, payload)), stop, hurry).run()
    except BaseException as error:  # noqa: BLE001 - reported, never lost
        messages.put(("harness_error", f"worker {index} crashed: {type(error).__name__}: {error}"))
    finally:
        messages.put(("done", index))


# -- the campaign ---------------------------------------------------------------------


class Campaign:
    """Runs the workers and gathers their messages into one report."""

    def __init__(self, options: CampaignOptions, progress: Callable[[CampaignReport], None] | None = None) -> None:
        self.options = options
        self.progress = progress
        self.report = CampaignReport(options.target, list(options.faults), options.seed, workers=options.workers)
        self.per_worker: dict[int, Sample] = {}
        self.signatures: set[str] = set()
        self.started = 0.0

    def receive(self, kind: str, payload: Any) -> None:
        report = self.report
        if kind == "sample":
            self.per_worker[payload.worker] = payload
            self.signatures.update(payload.new_signatures)
        elif kind == "finding":
            if all(f.regression_file != payload.regression_file for f in report.findings):
                report.findings.append(payload)
        elif kind == "harness_error":
            report.harness_errors += 1
            report.harness_error_messages.append(payload)
        self._update_totals()

    def _update_totals(self) -> None:
        report = self.report
        report.examples = sum(s.examples for s in self.per_worker.values())
        report.steps = sum(s.steps for s in self.per_worker.values())
        report.elapsed_s = round(time.monotonic() - self.started, 3)
        report.steps_per_s = round(report.steps / report.elapsed_s, 1) if report.elapsed_s else 0.0
        report.distinct_interleavings = len(self.signatures)
        point = (report.elapsed_s, report.examples, report.steps, report.distinct_interleavings, len(report.findings))
        if not report.timeline or report.timeline[-1][1:] != point[1:]:
            report.timeline.append(point)
        if self.progress is not None:
            self.progress(report)

    def run(self) -> CampaignReport:
        validate(self.options)
        self.started = time.monotonic()
        if self.options.workers == 1:
            self._run_inline()
        else:
            self._run_processes()
        self._update_totals()
        return self.report

    def _run_inline(self) -> None:
        stop, hurry = threading.Event(), threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: _stop_now(stop, hurry))
        previous_interrupt = signal.signal(signal.SIGINT, _first_ctrl_c_stops(stop, hurry))

        def emit(kind: str, payload: Any) -> None:
            self.receive(kind, payload)
            if kind == "finding":
                stop.set()

        try:
            Worker(self.options, 0, emit, stop, hurry).run()
        except KeyboardInterrupt:
            self.report.interrupted = True
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_interrupt)
        self.report.interrupted = self.report.interrupted or (stop.is_set() and not self.report.findings)

    def _run_processes(self) -> None:
        context = multiprocessing.get_context("spawn")
        messages, stop, hurry = context.Queue(), context.Event(), context.Event()
        processes = [
            context.Process(target=_worker_process, args=(self.options, index, messages, stop, hurry), daemon=True)
            for index in range(self.options.workers)
        ]
        for process in processes:
            process.start()
        previous = signal.signal(signal.SIGTERM, lambda *_: _stop_now(stop, hurry))
        running = set(range(len(processes)))
        try:
            while running:
                try:
                    kind, payload = messages.get(timeout=1.0)
                except queue.Empty:
                    self._reap_crashed(processes, running)
                    continue
                except KeyboardInterrupt:
                    _stop_now(stop, hurry)
                    self.report.interrupted = True
                    continue
                if kind == "done":
                    running.discard(payload)
                    continue
                self.receive(kind, payload)
                if kind == "finding":
                    stop.set()
        finally:
            signal.signal(signal.SIGTERM, previous)
            for process in processes:
                process.join(timeout=30)
        self.report.interrupted = self.report.interrupted or (stop.is_set() and not self.report.findings)

    def _reap_crashed(self, processes: list[Any], running: set[int]) -> None:
        for index in list(running):
            process = processes[index]
            # A clean exit's "done" message is still on its way; only a crash is reaped here.
            if not process.is_alive() and process.exitcode != 0:
                running.discard(index)
                self.receive("harness_error", f"worker {index} died with exit code {process.exitcode}")

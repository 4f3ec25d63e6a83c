"""The two kinds of failure, kept apart everywhere.

A *finding* means the thing under test is wrong (an invariant broke, or its
tasks deadlocked).  A *harness error* means the fuzzer itself broke (a task
stuck outside any checkpoint, a non-deterministic replay, a malformed file).
They map to different exit codes (CONTRACT: 1 and 2) and never mix.
"""

from __future__ import annotations


class Finding(AssertionError):
    """The system under test broke an invariant.

    Subclasses ``AssertionError`` so that Hypothesis treats it as a test
    failure and shrinks it.  ``invariant`` is the stable name that appears in
    failures and regression files.
    """

    def __init__(self, invariant: str, message: str) -> None:
        super().__init__(f"[{invariant}] {message}")
        self.invariant = invariant
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[str, ...]]:
        # built again from its two parts (its one exception argument is their sum): copies and pickles work
        return type(self), (self.invariant, self.message)


class Deadlock(Finding):
    """Every live task is blocked: the system under test deadlocked."""

    def __init__(self, message: str) -> None:
        super().__init__("no-deadlock", message)

    def __reduce__(self) -> tuple[type, tuple[str, ...]]:
        return type(self), (self.message,)


class HarnessError(Exception):
    """The fuzzer itself failed; never a statement about the system under test."""


class StuckTask(HarnessError):
    """A task neither finished nor reached a checkpoint within the wall-clock bound."""


class NondeterministicRun(HarnessError):
    """Two runs of the same example produced different traces."""


class UsageError(HarnessError):
    """Bad input from the user: an option, a file, a name (exit code 2)."""


class StopRequested(KeyboardInterrupt):
    """A campaign's budget is spent or it was told to stop: end the run before the next example.

    Raised by the machine as an example begins, so no example is cut short.
    A ``KeyboardInterrupt`` because that is the one exception Hypothesis lets
    through without recording the example as a failure.
    """

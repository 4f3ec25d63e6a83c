"""Test-suite set-up: the Hypothesis profiles, and regression files as test cases.

Every ``*.json`` file under ``tests/regressions/`` is collected as its own
test: it passes while the file still behaves as recorded (a file expected to
fail still fails the same invariant) and fails, saying so, when it doesn't.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import stateful.profiles  # noqa: F401  (registers ci, dev, nightly)

REGRESSIONS = Path(__file__).parent / "regressions"


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix == ".json" and REGRESSIONS in file_path.parents and not file_path.name.startswith("."):
        return RegressionFile.from_parent(parent, path=file_path)
    return None


class RegressionFile(pytest.File):
    def collect(self):  # type: ignore[no-untyped-def]
        yield RegressionItem.from_parent(self, name="replay")


class RegressionItem(pytest.Item):
    def runtest(self) -> None:
        from stateful.regression import load
        from stateful.replay import replay_case

        verdict = replay_case(load(self.path))
        if not verdict.as_recorded:
            raise RegressionChanged(verdict.message)

    def repr_failure(self, excinfo):  # type: ignore[no-untyped-def]
        if isinstance(excinfo.value, RegressionChanged):
            return f"{self.path.name}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):  # type: ignore[no-untyped-def]
        return self.path, None, f"regression {self.path.name}"


class RegressionChanged(Exception):
    """The file no longer replays as recorded."""

"""Test-suite set-up: the Hypothesis profiles, and regression files as test cases.

Every ``*.json`` file under ``tests/regressions/`` is collected as its own
test: it passes while the file still behaves as recorded (a file expected to
fail still fails the same invariant) and fails, saying so, when it doesn't.
A file that fails with fault switches on gets a second test: with them off,
the same steps and schedule must pass.  For a file on real Nova (a Nova
start each, 5-15 s) that second test is in the nightly tier: every change's
CI replays each file as recorded, the nightly run also with its faults off.
"""

from __future__ import annotations

import importlib.util
import json
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
        from stateful.errors import UsageError
        from stateful.regression import load

        yield RegressionItem.from_parent(self, name="replay")
        try:
            case = load(self.path)
        except UsageError:  # reported by the replay item, as that file's failure
            return
        if case.expected == "fail" and case.recording.faults:
            faults_off = RegressionItem.from_parent(self, name="replay with its faults off")
            if case.recording.target == "nova":
                faults_off.add_marker(pytest.mark.nightly)
            yield faults_off


def needs_missing_target(path: Path) -> str | None:
    """Why ``path`` can't be replayed here: its target's package is not installed (else None)."""
    try:
        target = json.loads(path.read_text()).get("target")
    except (OSError, ValueError, AttributeError):
        return None  # malformed: the replay item reports it
    if target == "nova" and importlib.util.find_spec("nova") is None:
        return f"{path.name} replays on real Nova, which is not installed (pip install .[nova])"
    return None


class RegressionItem(pytest.Item):
    def runtest(self) -> None:
        from stateful.regression import load

        missing = needs_missing_target(self.path)
        if missing:
            pytest.skip(missing)
        from stateful.replay import replay_case, replay_case_with_faults_off

        case = load(self.path)
        verdict = replay_case(case) if self.name == "replay" else replay_case_with_faults_off(case)
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

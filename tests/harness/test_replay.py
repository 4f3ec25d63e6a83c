"""Replays are exact: the same file gives the same trace, in this process and in another."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stateful.regression import files_under, load
from stateful.replay import replay_case

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted(files_under([ROOT / "tests" / "regressions"]))


def concurrent_file() -> Path:
    """A committed regression file with at least one concurrent step."""
    return next(path for path in COMMITTED if any(step.concurrent for step in load(path).recording.steps))


def test_replaying_a_file_100_times_gives_the_same_trace():
    case = load(concurrent_file())
    first = replay_case(case).replay.recording.traces
    assert first
    for _ in range(99):
        assert replay_case(case).replay.recording.traces == first


def test_another_process_replays_the_same_trace():
    path = concurrent_file()

    def timeline(hash_seed: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "stateful", "replay", "--timeline", str(path)],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": hash_seed},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert timeline("1") == timeline("2")

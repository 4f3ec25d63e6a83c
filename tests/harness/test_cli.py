"""The command line's contract: exit codes, one-line usage errors, JSON on stdout only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stateful.cli import main
from stateful.faults import builtin_faults

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stateful", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["fuzz", "--fault", "lp0000000"], "--fault lp0000000: unknown fault for target 'model'"),
        (["fuzz", "--target", "mainframe"], "--target: unknown target 'mainframe'"),
        (["fuzz", "--db", "redis://127.0.0.1:1/0"], "--db redis://127.0.0.1:1/0: cannot reach the database"),
        (["fuzz", "--regressions", "/proc/forbidden"], "--regressions /proc/forbidden: not writable"),
        (["fuzz", "--profile", "weekly"], "--profile weekly: unknown profile"),
        (["fuzz", "--faults-from", "no/such/file.py"], "--faults-from no/such/file.py: no such file"),
        (["fuzz", "--max-examples", "many"], "argument --max-examples: invalid int value"),
        (["replay", "no/such/dir"], "no/such/dir: cannot read: No such file or directory"),
        (
            ["replay", "--faults-from", "no/such/file.py", "tests/regressions"],
            "--faults-from no/such/file.py: no such file",
        ),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["bench", "--seeds", "0"], "argument --seeds: must be a positive number, not 0"),
        (["bench", "--seconds", "nan"], "argument --seconds: must be a positive number, not nan"),
        (["bench", "--render", "no/such/bench.json"], "bench --render no/such/bench.json: cannot read a JSON report"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, fragment, tmp_path):
    assert main(argv) == 2
    assert fragment in one_line_error(capsys)


def test_malformed_regression_file_exits_2_naming_it(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "stateful-regression/1"}')
    assert main(["replay", str(bad)]) == 2
    assert f"{bad}: top level: missing key" in one_line_error(capsys)


def test_faults_lists_the_catalogue(capsys):
    assert main(["faults", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {row["name"] for row in rows}
    assert {fault.name for fault in builtin_faults("model")} <= names
    assert all(row["bug"] and row["description"] and row["target"] for row in rows)


def test_user_faults_from_file(capsys, tmp_path):
    user = tmp_path / "mine.py"
    user.write_text(
        "import fixtures\n"
        "from stateful import Fault\n"
        "FAULTS = [Fault('my-suspicion', 'model', 'internal ticket 7', 'does nothing yet', fixtures.Fixture)]\n"
    )
    assert main(["faults", "--target", "model", "--faults-from", str(user)]) == 0
    assert "my-suspicion" in capsys.readouterr().out


def test_fuzz_json_prints_only_the_report(tmp_path):
    result = run_cli(
        "fuzz", "--max-examples", "5", "--seed", "3", "--db", "none",
        "--regressions", str(tmp_path / "found"), "--report-dir", str(tmp_path / "reports"), "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("target", "faults", "seed", "examples", "steps", "elapsed_s", "steps_per_s", "findings", "harness_errors"):
        assert key in report
    assert report["examples"] >= 5 and report["findings"] == [] and report["harness_errors"] == 0
    assert (tmp_path / "reports" / "fuzz-report.html").read_text().startswith("<!doctype html>")


def test_fuzz_with_fault_exits_1_with_a_regression_file_that_replays(tmp_path):
    found = tmp_path / "found"
    result = run_cli(
        "fuzz", "--fault", "lp1879878-confirm", "--seed", "0", "--max-examples", "2000", "--db", "none",
        "--shrink-seconds", "30",
        "--regressions", str(found), "--report-dir", str(tmp_path / "reports"), "--json",
    )
    assert result.returncode == 1, result.stderr
    (finding,) = json.loads(result.stdout)["findings"]
    assert Path(finding["regression_file"]).parent == found
    replayed = run_cli("replay", "--timeline", finding["regression_file"])
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "still fails" in replayed.stdout and "| #1" in replayed.stdout


def test_sigterm_leaves_a_readable_report(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "stateful", "fuzz", "--duration", "120", "--db", "none",
         "--regressions", str(tmp_path / "found"), "--report-dir", str(tmp_path / "reports")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    live_report = tmp_path / "reports" / "fuzz-report.json"
    deadline = time.monotonic() + 120
    while not live_report.exists() and time.monotonic() < deadline:  # the campaign is under way once it reports
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "interrupted" in out
    report = json.loads((tmp_path / "reports" / "fuzz-report.json").read_text())
    assert report["interrupted"] is True and report["examples"] > 0


def test_two_workers_share_a_directory_database(tmp_path):
    result = run_cli(
        "fuzz", "--workers", "2", "--max-examples", "10", "--seed", "4", "--db", str(tmp_path / "db"),
        "--regressions", str(tmp_path / "found"), "--report-dir", str(tmp_path / "reports"), "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["workers"] == 2 and report["examples"] >= 10 and report["harness_errors"] == 0


@pytest.mark.skipif(not os.environ.get("STATEFUL_TEST_REDIS"), reason="no redis-server: .ci/run starts one and sets STATEFUL_TEST_REDIS")
def test_two_workers_share_a_redis_database(tmp_path):
    result = run_cli(
        "fuzz", "--workers", "2", "--max-examples", "10", "--seed", "4", "--db", os.environ["STATEFUL_TEST_REDIS"],
        "--regressions", str(tmp_path / "found"), "--report-dir", str(tmp_path / "reports"), "--json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["examples"] >= 10

"""A plain Python error from the fuzzer's own code is a harness error, not a finding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis.errors import FlakyFailure, FlakyStrategyDefinition

import models
import stateful
from stateful.errors import Finding, HarnessError
from stateful.session import Session, raised_by_the_harness
from stateful.target import Op
from stateful.targets.model import ModelTarget
from stateful.topology import example_topology


def raiser(where: Path, error: str, **module_globals: Any) -> Callable[..., None]:
    """A function whose code lives (as far as tracebacks tell) in the file ``where``
    and whose body is ``raise <error>`` (``error`` may be a call that raises)."""
    namespace: dict[str, Any] = dict(module_globals)
    exec(compile(f"def fail(*args, **kwargs):\n    raise {error}\n", str(where), "exec"), namespace)
    return namespace["fail"]


def caught(fail: Callable[[], None]) -> BaseException:
    with pytest.raises(BaseException) as info:
        fail()
    return info.value


HARNESS_FILE = Path(stateful.__file__).parent / "targets" / "adapter.py"
SYSTEM_FILE = Path(models.__file__).parent / "service.py"


def test_a_builtin_error_raised_in_the_fuzzers_code_is_the_harness() -> None:
    assert raised_by_the_harness(caught(raiser(HARNESS_FILE, "KeyError('vm1')")))


def test_errors_of_the_system_under_test_are_not() -> None:
    assert not raised_by_the_harness(caught(raiser(SYSTEM_FILE, "KeyError('vm1')")))
    # Nova's code copied into a module of ours (the fault switches' pre-fix methods)
    assert not raised_by_the_harness(caught(raiser(HARNESS_FILE, "KeyError('vm1')", SYSTEM_UNDER_TEST_CODE=True)))
    # a target's own report of the system's failure is its own class, not a builtin
    assert not raised_by_the_harness(caught(raiser(HARNESS_FILE, "Finding('x', 'y')", Finding=Finding)))


def test_an_error_in_a_shim_the_system_calls_through_is_judged_by_its_caller() -> None:
    shim = raiser(HARNESS_FILE, "RuntimeError('released a lock it does not hold')", JUDGED_BY_CALLER=True)
    from_the_system = raiser(SYSTEM_FILE, "shim()", shim=shim)
    from_the_harness = raiser(HARNESS_FILE, "shim()", shim=shim)
    assert not raised_by_the_harness(caught(from_the_system))
    assert raised_by_the_harness(caught(from_the_harness))


def test_a_session_reports_the_harness_error_and_a_system_error_as_a_finding(monkeypatch) -> None:
    create = Op("create", {"instance": "vm1", "flavor": "small", "host": "host1"})
    monkeypatch.setattr(ModelTarget, "_create", raiser(HARNESS_FILE, "KeyError('vm1')"))
    with Session(ModelTarget(), example_topology()) as session:
        with pytest.raises(HarnessError, match="the fuzzer's own code raised KeyError"):
            session.apply([create])
    monkeypatch.setattr(ModelTarget, "_create", raiser(SYSTEM_FILE, "KeyError('vm1')"))
    with Session(ModelTarget(), example_topology()) as session:
        with pytest.raises(Finding, match="no-unexpected-error"):
            session.apply([create])


def _campaign_whose_failure_does_not_recur(schedule: str, flaky: type, tmp_path: Path) -> Any:
    """A campaign whose first Hypothesis run ends as one does when a failing example, run again,
    does not fail (FlakyFailure), draws other steps (FlakyStrategyDefinition) or fails otherwise
    (``flaky`` Finding: another invariant)."""
    import fixtures

    from stateful.campaign import Campaign, CampaignOptions
    from stateful.regression import load

    recorded = next(
        path for path in sorted((Path(__file__).parents[1] / "regressions").glob("*.json"))
        if json.loads(path.read_text())["faults"] == ["lp1879878-revert"]
    )
    recording = load(recorded).recording
    recording.broke = Finding("usage-matches-oracle", "host1 vcpus: tracked 2, but ... imply 0")

    def fails_then_not_again(machine: Any, settings: Any) -> None:
        machine.config.on_example(recording)
        if flaky is Finding:  # the re-run failed too, but otherwise
            raise Finding("no-negative-usage", "host2 vcpus: -1")
        raise flaky("Inconsistent results: failed on the first run but now succeeds", [recording.broke])

    options = CampaignOptions(
        faults=["lp1879878-revert"], schedule=schedule, seed=0, db="none", regressions=str(tmp_path)
    )
    with fixtures.MonkeyPatch("stateful.campaign.run_state_machine_as_test", fails_then_not_again):
        return Campaign(options).run()


@pytest.mark.parametrize("flaky", [FlakyFailure, FlakyStrategyDefinition, Finding])
def test_a_wall_clock_failure_that_does_not_recur_is_still_a_finding(tmp_path: Path, flaky: type) -> None:
    """Real sleeps on free-running threads need not interleave the same way twice: that is the
    strategy, not the fuzzer, failing to be deterministic."""
    report = _campaign_whose_failure_does_not_recur("wallclock", flaky, tmp_path)
    assert report.harness_errors == 0
    (finding,) = report.findings
    assert (finding.invariant, finding.first_failure_examples) == ("usage-matches-oracle", 1)
    (written,) = tmp_path.glob("*.json")
    assert "not shrunk: the wallclock schedule is not deterministic" in written.read_text()


@pytest.mark.parametrize("flaky", [FlakyFailure, FlakyStrategyDefinition])
def test_a_virtual_failure_that_does_not_recur_is_the_harness(tmp_path: Path, flaky: type) -> None:
    """Virtual delays are drawn by Hypothesis: the same example must fail the same way again."""
    report = _campaign_whose_failure_does_not_recur("virtual", flaky, tmp_path)
    assert (report.harness_errors, report.findings) == (1, [])
    assert flaky.__name__ in report.harness_error_messages[0]
    assert list(tmp_path.glob("*.json")) == []

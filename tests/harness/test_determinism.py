"""A derandomized machine run gives the same examples whatever the process imported before."""

from __future__ import annotations

import importlib
import sys

from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from stateful.machine import MachineConfig, make_machine
from stateful.profiles import profile
from stateful.session import Recording
from stateful.targets import target_factory


def examples_of_a_derandomized_run(max_examples: int) -> list[tuple]:
    seen: list[Recording] = []
    config = MachineConfig(target_factory("model"), on_example=seen.append)
    budget = settings(profile("ci"), max_examples=max_examples, phases=[Phase.generate])
    run_state_machine_as_test(make_machine(config), settings=budget)
    return [
        (recording.topology, recording.steps, [[str(event) for event in trace] for trace in recording.traces])
        for recording in seen
    ]


def test_importing_a_local_module_does_not_change_the_examples(tmp_path, monkeypatch):
    before = examples_of_a_derandomized_run(12)
    # A project module of literals: Hypothesis collects constants from every
    # local module imported (at most 1,024 a module), and (unpinned) draws some.
    (tmp_path / "module_of_literals.py").write_text(
        "INTEGERS = (" + ", ".join(str(n) for n in range(-50, 3000, 7)) + ")\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "module_of_literals", raising=False)
    importlib.import_module("module_of_literals")
    after = examples_of_a_derandomized_run(12)
    assert after == before


def test_running_tasks_as_greenlets_changes_no_example(monkeypatch):
    """The model runs concurrent steps as greenlets; threads must give the very same examples."""
    from stateful.targets.model import ModelTarget

    assert ModelTarget.tasks_as_greenlets
    on_greenlets = examples_of_a_derandomized_run(25)
    monkeypatch.setattr(ModelTarget, "tasks_as_greenlets", False)
    assert examples_of_a_derandomized_run(25) == on_greenlets
    assert any(r[2] for r in on_greenlets)  # some concurrent steps were run

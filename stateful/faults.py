"""Fault switches: bring a known bug back so the suite can show it finds it.

A fault is data plus a fixture: ``fixture()`` returns a ``fixtures.Fixture``
whose ``setUp`` puts the bug in place and whose cleanup takes it out.  The
built-in catalogue lives with each target's domain code (``models.faults``
for the embedded service); users add their own with ``--faults-from FILE.py``
(a module defining ``FAULTS``, a list of :class:`Fault`).
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import fixtures

from stateful.errors import UsageError

TARGETS = ("model", "nova")
_NAME = re.compile(r"[a-z0-9-]+")


@dataclass(frozen=True)
class Fault:
    """A switch that restores a bug (CONTRACT: name, target, bug, description, fixture)."""

    name: str
    target: str
    bug: str
    description: str
    fixture: Callable[[], fixtures.Fixture]
    #: Invariants the bug is known to break (documentation, and what the
    #: suite's own tests expect the fuzzer to report); optional for user faults.
    breaks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"fault name {self.name!r} must match [a-z0-9-]+")
        if self.target not in TARGETS:
            raise ValueError(f"fault {self.name!r}: target must be one of {TARGETS}")


def builtin_faults(target: str) -> list[Fault]:
    """The package's own catalogue for ``target``."""
    if target == "model":
        from models.faults import FAULTS

        return list(FAULTS)
    if target == "nova":
        try:
            from stateful.targets.nova_faults import FAULTS as NOVA_FAULTS
        except ImportError:
            return []
        return list(NOVA_FAULTS)
    raise UsageError(f"--target: unknown target {target!r} (choose from {', '.join(TARGETS)})")


def load_faults_file(path: str | Path) -> list[Fault]:
    """Import a user's fault module and return its ``FAULTS``; UsageError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--faults-from {path}: no such file")
    spec = importlib.util.spec_from_file_location(f"stateful_user_faults_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - any import failure is bad input
        raise UsageError(f"--faults-from {path}: import failed: {error!r}") from error
    faults = getattr(module, "FAULTS", None)
    if not isinstance(faults, list) or not all(isinstance(f, Fault) for f in faults):
        raise UsageError(f"--faults-from {path}: must define FAULTS, a list of stateful.Fault")
    return faults


def catalogue(target: str, extra_files: Iterable[str | Path] = ()) -> dict[str, Fault]:
    """Every fault available for ``target``: built-in ones and those from files."""
    faults: dict[str, Fault] = {}
    for fault in builtin_faults(target) + [f for p in extra_files for f in load_faults_file(p)]:
        if fault.target != target:
            continue
        if fault.name in faults:
            raise UsageError(f"fault {fault.name!r} is defined twice for target {target!r}")
        faults[fault.name] = fault
    return faults


def select_faults(target: str, names: Sequence[str], extra_files: Iterable[str | Path] = ()) -> list[Fault]:
    """Resolve ``--fault`` names (``all`` for every one); UsageError naming an unknown one."""
    available = catalogue(target, extra_files)
    if "all" in names:
        return list(available.values())
    unknown = [name for name in names if name not in available]
    if unknown:
        raise UsageError(
            f"--fault {unknown[0]}: unknown fault for target {target!r} "
            f"(known: {', '.join(sorted(available)) or 'none'})"
        )
    return [available[name] for name in dict.fromkeys(names)]

"""Regression files (``stateful-regression/1``): a found race, replayable forever.

A file is JSON holding the target, the fault switches on, the topology, the
ordered steps (operations with arguments; for concurrent steps the delay at
every site reached), the finding, the expected outcome, versions and notes.
Nothing in it is Hypothesis's internal encoding, and loading it executes
nothing: every key, operation, site and fault is checked against what this
package knows, and anything else is a :class:`~stateful.errors.UsageError`
naming the file and the offending entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

from stateful.errors import Finding, UsageError
from stateful.invariants import NAMES as INVARIANTS
from stateful.scheduler import ScheduleEntry
from stateful.session import Recording, StepRecord
from stateful.sites import is_known_site
from stateful.target import OPERATIONS, Op
from stateful.targets import target_factory

FORMAT = "stateful-regression/1"
SUFFIX = ".json"
_KEYS = {"format", "target", "faults", "topology", "steps", "expected", "finding", "versions", "notes"}
_REQUIRED = {"format", "target", "faults", "topology", "steps", "expected"}


@dataclass
class RegressionCase:
    """A regression file's content, validated."""

    recording: Recording
    expected: str  # "fail" or "pass"
    invariant: str | None
    message: str = ""
    notes: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.path.name if self.path else "<unsaved>"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("stateful-accounting-fuzz", "hypothesis", "oslo.concurrency", "nova"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def case_from_finding(recording: Recording, finding: Finding, notes: str = "") -> RegressionCase:
    return RegressionCase(recording, "fail", finding.invariant, finding.message, notes, versions())


def to_json(case: RegressionCase) -> dict[str, Any]:
    recording = case.recording
    expected: dict[str, Any] = {"outcome": case.expected}
    if case.invariant:
        expected["invariant"] = case.invariant
    document: dict[str, Any] = {
        "format": FORMAT,
        "target": recording.target,
        "faults": list(recording.faults),
        "topology": recording.topology,
        "steps": [_step_to_json(step) for step in recording.steps],
        "expected": expected,
        "versions": case.versions,
        "notes": case.notes,
    }
    if case.message:
        document["finding"] = {"invariant": case.invariant, "message": case.message}
    return document


def _step_to_json(step: StepRecord) -> dict[str, Any]:
    document: dict[str, Any] = {"ops": [op.to_dict() for op in step.ops]}
    if step.concurrent:
        document["schedule"] = [
            {"task": e.task, "site": e.site, "nth": e.nth, "delay": e.delay} for e in step.schedule
        ]
    return document


def dumps(case: RegressionCase) -> str:
    return json.dumps(to_json(case), indent=2, sort_keys=False) + "\n"


def content_name(text: str) -> str:
    """The file name for a case: its invariant and a hash of its replayable content."""
    document = json.loads(text)
    replayable = {k: document[k] for k in ("target", "faults", "topology", "steps", "expected")}
    digest = hashlib.sha256(json.dumps(replayable, sort_keys=True).encode()).hexdigest()[:16]
    invariant = document["expected"].get("invariant", "pass")
    return f"{invariant}-{digest}{SUFFIX}"


def write(case: RegressionCase, directory: str | Path) -> Path:
    """Write ``case`` atomically under a content-hash name; an identical file is left alone."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = dumps(case)
    path = directory / content_name(text)
    if not path.exists():
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=SUFFIX)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    case.path = path
    return path


# -- loading and validation ------------------------------------------------------


class _Checker:
    """Validates a parsed document, naming the file and the entry in every error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> UsageError:
        return UsageError(f"{self.path}: {where}: {problem}")

    def expect(self, value: Any, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(where, f"expected {names}, found {type(value).__name__}")
        return value

    def keys(self, document: dict[str, Any], allowed: set[str], required: set[str], where: str) -> None:
        unknown = sorted(set(document) - allowed)
        if unknown:
            raise self.fail(where, f"unknown key {unknown[0]!r}")
        missing = sorted(required - set(document))
        if missing:
            raise self.fail(where, f"missing key {missing[0]!r}")


def load(path: str | Path, known_faults: Callable[[str], set[str]] | None = None) -> RegressionCase:
    """Read and validate one regression file (never executes anything from it).

    ``known_faults`` gives a target's fault names; when given, an unknown
    fault is an error here rather than at replay.  (Asked only for the
    targets files name: listing Nova's faults imports Nova.)
    """
    path = Path(path)
    checker = _Checker(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path}: not valid JSON: {error}") from error
    checker.expect(document, dict, "top level")
    checker.keys(document, _KEYS, _REQUIRED, "top level")
    if document["format"] != FORMAT:
        raise checker.fail("format", f"unsupported format {document['format']!r} (this version reads {FORMAT!r})")
    target = checker.expect(document["target"], str, "target")
    try:
        target_factory(target)  # importing the target registers the delay sites it can reach
    except UsageError as error:
        raise checker.fail("target", str(error)) from error
    faults = [checker.expect(f, str, f"faults[{i}]") for i, f in enumerate(checker.expect(document["faults"], list, "faults"))]
    if known_faults is not None:
        for index, fault in enumerate(faults):
            if fault not in known_faults(target):
                raise checker.fail(f"faults[{index}]", f"unknown fault {fault!r} for target {target!r}")
    topology = checker.expect(document["topology"], dict, "topology")
    steps = [_load_step(checker, step, index) for index, step in enumerate(checker.expect(document["steps"], list, "steps"))]
    expected = checker.expect(document["expected"], dict, "expected")
    checker.keys(expected, {"outcome", "invariant"}, {"outcome"}, "expected")
    outcome = expected["outcome"]
    if outcome not in ("fail", "pass"):
        raise checker.fail("expected.outcome", f"must be 'fail' or 'pass', not {outcome!r}")
    invariant = expected.get("invariant")
    if outcome == "fail" and invariant not in INVARIANTS:
        raise checker.fail("expected.invariant", f"unknown invariant {invariant!r}")
    finding = checker.expect(document.get("finding", {}), dict, "finding")
    checker.keys(finding, {"invariant", "message"}, set(), "finding")
    return RegressionCase(
        Recording(target, faults, topology, steps),
        outcome,
        invariant if outcome == "fail" else None,
        checker.expect(finding.get("message", ""), str, "finding.message"),
        checker.expect(document.get("notes", ""), str, "notes"),
        checker.expect(document.get("versions", {}), dict, "versions"),
        path,
    )


def _load_step(checker: _Checker, step: Any, index: int) -> StepRecord:
    where = f"steps[{index}]"
    checker.expect(step, dict, where)
    checker.keys(step, {"ops", "schedule"}, {"ops"}, where)
    raw_ops = checker.expect(step["ops"], list, f"{where}.ops")
    if not raw_ops:
        raise checker.fail(f"{where}.ops", "a step needs at least one operation")
    ops = []
    for position, raw in enumerate(raw_ops):
        at = f"{where}.ops[{position}]"
        checker.expect(raw, dict, at)
        checker.keys(raw, {"op", "args"}, {"op", "args"}, at)
        name = checker.expect(raw["op"], str, f"{at}.op")
        if name not in OPERATIONS:
            raise checker.fail(f"{at}.op", f"unknown rule {name!r}")
        args = checker.expect(raw["args"], dict, f"{at}.args")
        try:
            ops.append(Op(name, args))
        except ValueError as error:
            raise checker.fail(at, str(error)) from error
    schedule = []
    for position, entry in enumerate(checker.expect(step.get("schedule", []), list, f"{where}.schedule")):
        at = f"{where}.schedule[{position}]"
        checker.expect(entry, dict, at)
        checker.keys(entry, {"task", "site", "nth", "delay"}, {"task", "site", "nth", "delay"}, at)
        task = checker.expect(entry["task"], int, f"{at}.task")
        site = checker.expect(entry["site"], str, f"{at}.site")
        if not 0 <= task < len(ops):
            raise checker.fail(f"{at}.task", f"no operation {task} in this step")
        if not is_known_site(site):
            raise checker.fail(f"{at}.site", f"unknown site {site!r}")
        nth, delay = checker.expect(entry["nth"], int, f"{at}.nth"), checker.expect(entry["delay"], int, f"{at}.delay")
        if nth < 0 or delay < 0:
            raise checker.fail(at, "nth and delay must not be negative")
        schedule.append(ScheduleEntry(task, site, nth, delay))
    return StepRecord(tuple(ops), tuple(schedule))


def files_under(paths: list[str | Path]) -> Iterator[Path]:
    """Every regression file named, or found under a named directory, in order."""
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob(f"*{SUFFIX}") if not p.name.startswith("."))
        else:
            yield path

"""Regression files: round trip, content-hash names, atomic writes, and every malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stateful.errors import UsageError
from stateful.regression import FORMAT, RegressionCase, content_name, dumps, load, write
from stateful.scheduler import ScheduleEntry
from stateful.session import Recording, StepRecord
from stateful.sites import register_site
from stateful.target import Op

SITE = register_site("test.regression.site", "a site for these tests", target="engine-test")
TOPOLOGY = {"hosts": [{"name": "host1"}], "flavors": [{"name": "small"}]}


def sample_case() -> RegressionCase:
    steps = [
        StepRecord((Op("create", {"instance": "vm1", "flavor": "small", "host": "host1"}),)),
        StepRecord(
            (Op("confirm", {"instance": "vm1"}), Op("audit", {"host": "host1"})),
            (ScheduleEntry(0, SITE, 0, 0), ScheduleEntry(1, "lock:compute_resources:acquire", 0, 3)),
        ),
    ]
    recording = Recording("model", ["lp1879878-confirm"], TOPOLOGY, steps)
    return RegressionCase(recording, "fail", "no-negative-usage", "host1 vcpus is -2", "why it matters")


def write_document(tmp_path: Path, document: object, name: str = "case.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def valid_document() -> dict:
    return json.loads(dumps(sample_case()))


def test_round_trip(tmp_path):
    path = write(sample_case(), tmp_path)
    loaded = load(path)
    assert loaded.recording.steps == sample_case().recording.steps
    assert loaded.recording.topology == TOPOLOGY
    assert (loaded.expected, loaded.invariant, loaded.notes) == ("fail", "no-negative-usage", "why it matters")
    assert json.loads(path.read_text())["format"] == FORMAT


def test_name_is_a_content_hash_and_rewriting_is_harmless(tmp_path):
    first = write(sample_case(), tmp_path)
    second = write(sample_case(), tmp_path)
    assert first == second
    assert first.name == content_name(first.read_text())
    assert first.name.startswith("no-negative-usage-")
    assert [p.name for p in tmp_path.iterdir()] == [first.name], "no temporary file left behind"


def test_different_content_gets_a_different_name(tmp_path):
    other = sample_case()
    other.recording.steps.append(StepRecord((Op("audit", {"host": "host1"}),)))
    assert write(sample_case(), tmp_path) != write(other, tmp_path)


def mutate(document: dict, path: tuple, value: object) -> dict:
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


MALFORMED = [
    (("format",), "stateful-regression/0", "format: unsupported format 'stateful-regression/0' (this version reads 'stateful-regression/1')"),
    (("surprise",), 1, "top level: unknown key 'surprise'"),
    (("steps",), KeyError, "top level: missing key 'steps'"),
    (("steps",), {}, "steps: expected list, found dict"),
    (("steps", 0, "ops", 0, "op"), "resise", "steps[0].ops[0].op: unknown rule 'resise'"),
    (("steps", 0, "ops", 0, "args", "colour"), "red", "steps[0].ops[0]: operation 'create': missing [], unexpected ['colour']"),
    (("steps", 0, "ops"), [], "steps[0].ops: a step needs at least one operation"),
    (("steps", 1, "schedule", 0, "site"), "no.such.site", "steps[1].schedule[0].site: unknown site 'no.such.site'"),
    (("steps", 1, "schedule", 0, "task"), 7, "steps[1].schedule[0].task: no operation 7 in this step"),
    (("steps", 1, "schedule", 0, "delay"), -1, "steps[1].schedule[0]: nth and delay must not be negative"),
    (("steps", 1, "schedule", 0, "delay"), "1", "steps[1].schedule[0].delay: expected int, found str"),
    (("steps", 1, "schedule", 0, "extra"), 0, "steps[1].schedule[0]: unknown key 'extra'"),
    (("expected", "outcome"), "maybe", "expected.outcome: must be 'fail' or 'pass', not 'maybe'"),
    (("expected", "invariant"), "no-such-invariant", "expected.invariant: unknown invariant 'no-such-invariant'"),
    (("faults",), "lp1896463", "faults: expected list, found str"),
]


@pytest.mark.parametrize("path, value, message", MALFORMED, ids=[m[2].split(":")[0] for m in MALFORMED])
def test_malformed_file_is_one_line_naming_file_and_entry(tmp_path, path, value, message):
    file = write_document(tmp_path, mutate(valid_document(), path, value))
    with pytest.raises(UsageError) as caught:
        load(file)
    assert str(caught.value) == f"{file}: {message}"
    assert "\n" not in str(caught.value)


def test_unknown_fault_is_named(tmp_path):
    file = write_document(tmp_path, valid_document())
    with pytest.raises(UsageError, match=r"faults\[0\]: unknown fault 'lp1879878-confirm' for target 'model'"):
        load(file, known_faults=lambda target: {"lp1896463"})


@pytest.mark.parametrize(
    "content, message",
    [("{not json", "not valid JSON"), ("[1, 2]", "top level: expected dict, found list"), (b"\xff\xfe", "not valid JSON")],
)
def test_unparseable_files(tmp_path, content, message):
    file = tmp_path / "bad.json"
    file.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UsageError, match=message):
        load(file)


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        load(tmp_path / "absent.json")


def test_loading_executes_nothing(tmp_path):
    document = valid_document()
    document["notes"] = "__import__('os').system('touch pwned')"
    document["topology"] = {"hosts": "__import__('os')"}
    load(write_document(tmp_path, document))
    assert not Path("pwned").exists()

"""bench's picture of the detection rows (every fault drawn, faster to the left, misses in their column),
and ``bench --render`` of a saved run."""

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict

import pytest

from stateful import detection_chart
from stateful.bench import Detection
from stateful.cli import main

SVG = "{http://www.w3.org/2000/svg}"


def _row(fault, strategy, found, median=None, worst=None, variant=None, seeds=3):
    return asdict(Detection(fault, "model", strategy, seeds, found, median, worst, 10 if found else None,
                            2 if found else None, 1 if found else None, variant=variant))


ROWS = [
    _row("lp1896463", "virtual", 3, 0.5, 2.0),
    _row("lp1896463", "sequential", 0),
    _row("lp1095403", "virtual", 2, 20.0, 25.0),
    _row("lp1095403", "frontrun", 1, 5.0, 5.0, variant="dpor", seeds=1),
]


def _marks(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {group.find(f"{SVG}title").text: group for group in root.iter(f"{SVG}g")}


def test_every_row_is_a_mark_in_its_fault_s_band() -> None:
    svg = detection_chart.detection_svg(ROWS, cap_s=30.0, title="t")
    marks = _marks(svg)
    assert sorted(title.split(":")[0] for title in marks) == sorted(
        ["lp1896463, virtual", "lp1896463, sequential", "lp1095403, virtual", "lp1095403, frontrun (dpor)"]
    )
    labels = {text.text: float(text.get("y")) for text in ET.fromstring(svg).iter(f"{SVG}text")
              if text.get("class") == "fault"}
    assert list(labels) == ["lp1896463", "lp1095403"]
    band = labels["lp1095403"] - labels["lp1896463"]  # one fault's rows: its lanes and a gap
    for title, group in marks.items():
        y = max(float(element.get("cy") or element.get("y1")) for element in group if element.tag != f"{SVG}title")
        assert abs(y - labels[title.split(",")[0]]) < band / 2, title


def test_faster_is_further_left_and_a_miss_is_a_cross_in_its_own_column() -> None:
    marks = _marks(detection_chart.detection_svg(ROWS, cap_s=30.0))

    def dot(name: str) -> ET.Element:
        (group,) = [g for title, g in marks.items() if title.startswith(name)]
        return group.find(f"{SVG}circle")

    fast, slow = dot("lp1896463, virtual"), dot("lp1095403, virtual")
    assert float(fast.get("cx")) < float(dot("lp1095403, frontrun").get("cx")) < float(slow.get("cx"))
    assert fast.get("fill") != "white" and slow.get("fill") == "white"  # 3/3 found; 2/3 found
    (miss,) = [g for title, g in marks.items() if title.startswith("lp1896463, sequential")]
    assert miss.find(f"{SVG}circle") is None
    assert float(miss.find(f"{SVG}line").get("x1")) > detection_chart.LABEL_WIDTH + detection_chart.PLOT_WIDTH


def test_the_axis_runs_from_a_tenth_of_a_second_to_the_cap() -> None:
    assert detection_chart.x_of(0.01, 30.0) == detection_chart.x_of(0.1, 30.0) == detection_chart.LABEL_WIDTH
    end = detection_chart.LABEL_WIDTH + detection_chart.PLOT_WIDTH
    assert detection_chart.x_of(30.0, 30.0) == detection_chart.x_of(99.0, 30.0) == end
    assert detection_chart.ticks(60.0) == [0.1, 1.0, 10.0, 60.0]
    assert detection_chart.ticks(143.0) == [0.1, 1.0, 10.0, 143.0]  # not 100 s: its label would overlap
    assert detection_chart.ticks(0.1) == [0.01, 0.1]  # a cap under a second still has an axis


def test_a_saved_report_is_drawn_again(tmp_path, capsys) -> None:
    report = {
        "machine": "m", "handoff_ratio": 0.1, "handoff_us": 1.0, "pingpong_us": 10.0, "model_ops_per_s": 1,
        "steps_per_s": 1.0, "plain_steps_per_s": 4.0, "steps_ratio_vs_plain": 0.25, "peak_rss_mb": 1.0,
        "detection": ROWS, "detection_budget": {"seeds": 3, "max_examples": 9, "cap_s": 30.0, "shrink_s": 5.0,
                                                "jobs": 2},
    }
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(report))
    table, picture = tmp_path / "t.md", tmp_path / "d.svg"
    assert main(["bench", "--render", str(saved), "--write-docs", str(table), "--svg", str(picture)]) == 0
    assert "| lp1896463 | sequential | 0/3 | not found |" in table.read_text()
    assert "3 seed(s) per fault and schedule strategy" in table.read_text()
    assert "or 30 s" in table.read_text()
    assert len(_marks(picture.read_text())) == len(ROWS)
    assert capsys.readouterr().out.strip() == table.read_text().removeprefix("# Benchmarks\n\n").strip()


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot read a JSON report: Expecting property name"),
        ("{}", "not a bench --json report (no machine, handoff_ratio,"),
        ("[1]", "not a bench --json report (no machine,"),
    ],
)
def test_a_file_that_is_not_a_saved_report_is_one_line_and_exit_2(tmp_path, capsys, content, message) -> None:
    saved = tmp_path / "bench.json"
    saved.write_text(content)
    assert main(["bench", "--render", str(saved)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: bench --render {saved}: ") and message in line


def test_render_refuses_the_options_of_a_run_and_bad_output_paths(tmp_path, capsys) -> None:
    assert main(["bench", "--render", "x.json", "--jobs", "4"]) == 2
    assert "--render draws a saved run" in capsys.readouterr().err
    assert main(["bench", "--quick", "--svg", str(tmp_path / "no" / "such" / "d.svg")]) == 2
    assert f"--svg {tmp_path}/no/such/d.svg: its directory does not exist" in capsys.readouterr().err

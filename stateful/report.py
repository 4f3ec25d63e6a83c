"""A campaign's report as a page a person would rather look at than read.

Self-contained HTML with inline SVG charts (no plotting dependency): distinct
interleavings explored, steps per second and findings, each over the
campaign's wall-clock time; then the findings with their regression files.
"""

from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path
from typing import Sequence

from stateful.campaign import CampaignReport


def line_chart(points: Sequence[tuple[float, float]], title: str, unit: str, width: int = 560, height: int = 200) -> str:
    """A minimal SVG line chart of (seconds, value) points."""
    pad_left, pad_bottom, pad_top = 55, 30, 25
    inner_w, inner_h = width - pad_left - 15, height - pad_bottom - pad_top
    max_x = max((x for x, _ in points), default=1.0) or 1.0
    max_y = max((y for _, y in points), default=1.0) or 1.0

    def at(x: float, y: float) -> str:
        return f"{pad_left + inner_w * x / max_x:.1f},{pad_top + inner_h * (1 - y / max_y):.1f}"

    path = " ".join(at(x, y) for x, y in points)
    axis_y = pad_top + inner_h
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="chart">'
        f'<text x="{pad_left}" y="16" class="title">{escape(title)}</text>'
        f'<line x1="{pad_left}" y1="{axis_y}" x2="{width - 15}" y2="{axis_y}" class="axis"/>'
        f'<line x1="{pad_left}" y1="{pad_top}" x2="{pad_left}" y2="{axis_y}" class="axis"/>'
        f'<text x="{pad_left - 5}" y="{pad_top + 4}" text-anchor="end">{max_y:g}</text>'
        f'<text x="{pad_left - 5}" y="{axis_y}" text-anchor="end">0</text>'
        f'<text x="{width - 15}" y="{axis_y + 18}" text-anchor="end">{max_x:.0f} s</text>'
        f'<text x="{pad_left}" y="{axis_y + 18}">0 s</text>'
        f'<text x="{pad_left + inner_w / 2}" y="{axis_y + 18}" text-anchor="middle">{escape(unit)}</text>'
        f'<polyline points="{path}" class="line"/></svg>'
    )


def rates(timeline: Sequence[tuple[float, int, int, int, int]]) -> list[tuple[float, float]]:
    """Steps per second between consecutive samples."""
    out = []
    for (t0, _, s0, _, _), (t1, _, s1, _, _) in zip(timeline, timeline[1:]):
        if t1 > t0:
            out.append((t1, round((s1 - s0) / (t1 - t0), 1)))
    return out


def html_report(report: CampaignReport) -> str:
    timeline = report.timeline
    charts = [
        line_chart([(t, d) for t, _, _, d, _ in timeline], "Distinct interleavings explored", "wall-clock time"),
        line_chart(rates(timeline), "Steps per second", "wall-clock time"),
        line_chart([(t, f) for t, _, _, _, f in timeline], "Findings", "wall-clock time"),
    ]
    findings = "".join(
        f"<tr><td>{escape(f.invariant)}</td><td>{escape(f.message)}</td><td>{f.steps}</td>"
        f"<td>{f.nonzero_delays}</td><td>{f.elapsed_s:.1f} s</td><td><code>{escape(f.regression_file)}</code></td></tr>"
        for f in report.findings
    ) or '<tr><td colspan="6">none</td></tr>'
    errors = "".join(f"<li>{escape(message)}</li>" for message in report.harness_error_messages)
    summary = (
        f"target <b>{escape(report.target)}</b>, faults <b>{escape(', '.join(report.faults) or 'none')}</b>, "
        f"seed {report.seed}, {report.workers} worker(s): {report.examples} examples, {report.steps} steps "
        f"in {report.elapsed_s:.1f} s ({report.steps_per_s:g} steps/s), "
        f"{report.distinct_interleavings} distinct interleavings"
        + (", <b>interrupted</b>" if report.interrupted else "")
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>stateful fuzz report</title>
<style>
body{{font:14px sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
.chart{{margin:0 1em 1em 0}} .chart text{{font:11px sans-serif}} .chart .title{{font-weight:bold;font-size:13px}}
.axis{{stroke:#888}} .line{{fill:none;stroke:#2a6fdb;stroke-width:2}}
</style></head><body>
<h1>Fuzz campaign: {"finding" if report.findings else "clean" if not report.harness_errors else "harness error"}</h1>
<p>{summary}</p>
<div>{"".join(charts)}</div>
<h2>Findings</h2>
<table><tr><th>invariant</th><th>message</th><th>steps</th><th>non-zero delays</th><th>found after</th>
<th>regression file (replay with <code>python -m stateful replay --timeline FILE</code>)</th></tr>{findings}</table>
<h2>Harness errors</h2><ul>{errors or "<li>none</li>"}</ul>
</body></html>
"""


def write_reports(report: CampaignReport, directory: str | Path) -> tuple[Path, Path]:
    """Write ``fuzz-report.html`` and ``fuzz-report.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    html_path, json_path = directory / "fuzz-report.html", directory / "fuzz-report.json"
    html_path.write_text(html_report(report), encoding="utf-8")
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return html_path, json_path


class PeriodicReport:
    """Rewrites the report files during a campaign, so a long run can be watched (and killed)."""

    def __init__(self, directory: str | Path, every: float = 5.0) -> None:
        self.directory = directory
        self.every = every
        self.last = 0.0

    def update(self, report: CampaignReport) -> None:
        now = time.monotonic()
        if report.examples and now - self.last >= self.every:
            self.last = now
            write_reports(report, self.directory)

"""The live progress line of a campaign, and its closing summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO

from stateful.campaign import CampaignReport

#: Seconds between redraws of the progress line.
REDRAW_EVERY = 0.25


class ProgressLine:
    """One self-overwriting status line on a terminal; silent on anything else."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.last = 0.0
        self.width = 0

    @classmethod
    def for_stream(cls, stream: TextIO, enabled: bool = True) -> ProgressLine:
        return cls(stream, enabled and stream.isatty())

    def update(self, report: CampaignReport) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < REDRAW_EVERY:
            return
        self.last = now
        line = (
            f"{report.elapsed_s:7.1f}s  {report.examples} examples  {report.steps_per_s:.0f} steps/s  "
            f"{report.distinct_interleavings} interleavings  {len(report.findings)} findings"
            + (f"  {report.harness_errors} harness errors" if report.harness_errors else "")
        )
        self.stream.write("\r" + line.ljust(self.width))
        self.width = len(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.width:
            self.stream.write("\n")
            self.stream.flush()


def summary(report: CampaignReport, html_path: Path) -> str:
    """The human-readable report printed at the end of ``fuzz``."""
    verdict = "FINDING" if report.findings else "HARNESS ERROR" if report.harness_errors else "clean"
    lines = [
        f"fuzz {verdict}: target {report.target}, faults {', '.join(report.faults) or 'none'}, seed {report.seed}",
        f"  {report.examples} examples, {report.steps} steps in {report.elapsed_s:.1f}s "
        f"({report.steps_per_s:g} steps/s, {report.workers} worker(s)), "
        f"{report.distinct_interleavings} distinct interleavings"
        + (" — interrupted" if report.interrupted else ""),
    ]
    for finding in report.findings:
        lines += [
            f"  finding [{finding.invariant}] {finding.message}",
            f"    shrunk to {finding.steps} steps, {finding.nonzero_delays} non-zero delays",
            f"    regression file: {finding.regression_file}",
            f"    see it: python -m stateful replay --timeline {finding.regression_file}",
        ]
    lines += [f"  harness error: {message}" for message in report.harness_error_messages]
    lines.append(f"  report: {html_path}")
    return "\n".join(lines)

"""Draw an interleaving: one column per concurrent operation, rows in virtual-time order.

This is the picture Nova's hand-written race tests draw in their comments,
made from a trace: each row is a delay site one task reached (with the delay
it was given), so a reviewer sees which operation acted inside which.
"""

from __future__ import annotations

from html import escape
from typing import Sequence

from stateful.scheduler import TraceEvent
from stateful.session import Recording

_KIND_TEXT = {"start": "start", "finish": "finish", "block": "blocked on"}


def _cell(event: TraceEvent) -> str:
    text = _KIND_TEXT.get(event.kind, "")
    site = event.site if event.kind != "start" else ""
    cell = f"{text} {site}".strip()
    return f"{cell}  (+{event.delay})" if event.delay else cell


def _columns(trace: Sequence[TraceEvent]) -> list[str]:
    names: dict[int, str] = {}
    for event in trace:
        names.setdefault(event.task, f"#{event.task} {event.op}")
    return [names[task] for task in sorted(names)]


def text_timeline(trace: Sequence[TraceEvent]) -> str:
    """The trace of one concurrent step as a fixed-width table."""
    headers = _columns(trace)
    rows = [(str(event.time), event.task, _cell(event)) for event in trace]
    width = [max([len(h)] + [len(cell) for _, task, cell in rows if task == i]) for i, h in enumerate(headers)]
    time_width = max([4] + [len(t) for t, _, _ in rows])

    def line(time: str, cells: list[str]) -> str:
        return " | ".join([time.rjust(time_width), *(c.ljust(w) for c, w in zip(cells, width))]).rstrip()

    out = [line("time", headers), "-+-".join(["-" * time_width, *("-" * w for w in width)])]
    for time, task, cell in rows:
        cells = [""] * len(headers)
        cells[task] = cell
        out.append(line(time, cells))
    return "\n".join(out)


def recording_timeline(recording: Recording) -> str:
    """Every step of a replayed recording; concurrent steps drawn as tables."""
    traces = iter(recording.traces)
    out = []
    for number, step in enumerate(recording.steps, 1):
        labels = " | ".join(op.label for op in step.ops)
        if not step.concurrent:
            out.append(f"step {number}: {labels}")
            continue
        out.append(f"step {number}: concurrently {labels}")
        trace = next(traces, None)
        if trace:
            out.append(text_timeline(trace))
    return "\n".join(out)


def svg_timeline(recording: Recording, title: str = "") -> str:
    """The same picture as an SVG image: a lane per operation, a row per site reached."""
    row_h, col_w, left, top = 22, 330, 70, 40
    parts: list[str] = []
    y = top
    traces = iter(recording.traces)
    width = left + col_w * 3 + 20
    for number, step in enumerate(recording.steps, 1):
        labels = " | ".join(op.label for op in step.ops)
        if not step.concurrent:
            parts.append(f'<text x="10" y="{y}" class="step">step {number}: {escape(labels)}</text>')
            y += row_h
            continue
        trace = next(traces, [])
        headers = _columns(trace)
        width = max(width, left + col_w * len(headers) + 20)
        parts.append(f'<text x="10" y="{y}" class="step">step {number}: concurrently</text>')
        y += row_h
        for column, header in enumerate(headers):
            x = left + column * col_w
            parts.append(f'<rect x="{x}" y="{y - 15}" width="{col_w - 10}" height="20" class="head"/>')
            parts.append(f'<text x="{x + 5}" y="{y}" class="head">{escape(header)}</text>')
        y += row_h
        lane_top = y - 15
        for event in trace:
            x = left + event.task * col_w
            css = "delayed" if event.delay else event.kind
            parts.append(f'<text x="10" y="{y}" class="time">t={event.time}</text>')
            parts.append(f'<rect x="{x}" y="{y - 15}" width="{col_w - 10}" height="19" class="{css}"/>')
            parts.append(f'<text x="{x + 5}" y="{y}">{escape(_cell(event))}</text>')
            y += row_h
        for column in range(1, len(headers)):
            x = left + column * col_w - 5
            parts.append(f'<line x1="{x}" y1="{lane_top}" x2="{x}" y2="{y - row_h + 5}" class="lane"/>')
        y += row_h // 2
    heading = f'<text x="10" y="20" class="title">{escape(title)}</text>' if title else ""
    style = (
        "text{font:12px monospace}.title{font-weight:bold;font-size:14px}.step{font-weight:bold}"
        ".head{fill:#dde6f0}.reach{fill:#f4f4f4}.delayed{fill:#ffd9a0}.block{fill:#f4b4b4}"
        ".start,.finish{fill:#e4f4e4}.time{fill:#666}.lane{stroke:#bbb}"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 10}">'
        f"<style>{style}</style>{heading}{''.join(parts)}</svg>\n"
    )

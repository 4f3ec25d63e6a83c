"""``bench --svg``: the detection table as a picture, seconds to the first finding per fault and strategy.

One row per fault, one lane per strategy in it. A dot is the median over the
seeds that found the fault, a line runs on to the worst of them; a hollow dot
means some seeds found nothing in their budget, and a cross in the right-hand
column that no seed found anything. The time axis is logarithmic, from a
tenth of a second to the cap each seed had, since the strategies differ by
orders of magnitude.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

#: each strategy's lane colour, in lane order (frontrun's two explorations are lanes of their own);
#: a strategy not named here gets a lane after them, in OTHER_COLOUR
COLOURS = {
    "virtual": "#1b7837",
    "pct": "#762a83",
    "sequential": "#8c8c8c",
    "wallclock": "#d95f02",
    "frontrun (random)": "#2166ac",
    "frontrun (dpor)": "#67a9cf",
}
OTHER_COLOUR = "#000000"
FASTEST_S = 0.1
LABEL_WIDTH, PLOT_WIDTH, MISSED_WIDTH = 300, 520, 110
LANE_HEIGHT, ROW_GAP, TOP = 10, 8, 86
#: the least room between two tick labels on the time axis, in pixels
TICK_ROOM = 40


def lane(row: dict[str, Any]) -> str:
    """The name of a detection row's lane: its strategy, and frontrun's exploration."""
    return f"{row['strategy']} ({row['variant']})" if row.get("variant") else row["strategy"]


def axis_start(cap_s: float) -> float:
    """The axis's left end: a tenth of a second, or less for a cap under a second."""
    return min(FASTEST_S, cap_s / 10)


def x_of(seconds: float, cap_s: float) -> float:
    """Where ``seconds`` falls on the logarithmic time axis (clamped to the axis)."""
    start = axis_start(cap_s)
    share = math.log10(min(max(seconds, start), cap_s) / start) / math.log10(cap_s / start)
    return LABEL_WIDTH + share * PLOT_WIDTH


def ticks(cap_s: float) -> list[float]:
    """Powers of ten on the axis not crowding the cap's own tick, and the cap."""
    start, end = axis_start(cap_s), x_of(cap_s, cap_s)
    powers = [10.0 ** k for k in range(math.floor(math.log10(start)), 6) if start <= 10.0 ** k < cap_s]
    return [power for power in powers if end - x_of(power, cap_s) >= TICK_ROOM] + [cap_s]


def detection_svg(rows: list[dict[str, Any]], cap_s: float, title: str = "") -> str:
    """The picture of ``detection`` rows (CONTRACT's ``bench --json`` shape) whose seeds had ``cap_s`` each."""
    faults = list(dict.fromkeys(row["fault"] for row in rows))
    present = list(dict.fromkeys(lane(row) for row in rows))
    lanes = [name for name in COLOURS if name in present] + [name for name in present if name not in COLOURS]
    row_height = LANE_HEIGHT * len(lanes) + ROW_GAP
    width, plot_bottom = LABEL_WIDTH + PLOT_WIDTH + MISSED_WIDTH, TOP + row_height * len(faults)
    missed_x = LABEL_WIDTH + PLOT_WIDTH + MISSED_WIDTH / 2
    parts = [f'<rect width="{width}" height="{plot_bottom + 10}" fill="white"/>']
    if title:
        parts.append(f'<text x="10" y="18" class="title">{escape(title)}</text>')
    for index, name in enumerate(lanes):
        x = 10 + index * 150
        parts.append(f'<circle cx="{x + 5}" cy="36" r="4" fill="{COLOURS.get(name, OTHER_COLOUR)}"/>'
                     f'<text x="{x + 14}" y="40">{escape(name)}</text>')
    parts.append('<text x="10" y="58" class="note">dot: median over the seeds that found it; line: on to '
                 'the worst; hollow dot: some seeds found nothing; cross: no seed found anything</text>')
    parts += [f'<rect x="0" y="{TOP + index * row_height}" width="{width}" height="{row_height}" class="band"/>'
              for index in range(1, len(faults), 2)]
    for seconds in ticks(cap_s):
        x = x_of(seconds, cap_s)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{plot_bottom}" class="grid"/>'
                     f'<text x="{x:.1f}" y="{TOP - 10}" class="tick">{seconds:g} s</text>')
    parts.append(f'<text x="{missed_x:.1f}" y="{TOP - 10}" class="tick">not found</text>')
    by_cell = {(row["fault"], lane(row)): row for row in rows}
    for index, fault in enumerate(faults):
        top = TOP + index * row_height
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{top + row_height / 2 + 4:.1f}" class="fault">'
                     f"{escape(fault)}</text>")
        for lane_index, name in enumerate(lanes):
            row = by_cell.get((fault, name))
            if row is not None:
                parts.append(_mark(row, cap_s, top + ROW_GAP / 2 + (lane_index + 0.5) * LANE_HEIGHT, missed_x))
    style = (
        "text{font:11px sans-serif;fill:black} .title{font-weight:bold} .tick{text-anchor:middle;fill:#555}"
        " .note{fill:#555} .fault{text-anchor:end;font-family:monospace} .grid{stroke:#ddd} .band{fill:#f4f4f4}"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{plot_bottom + 10}" '
        f'viewBox="0 0 {width} {plot_bottom + 10}">'
        f"<style>{style}</style>{''.join(parts)}</svg>\n"
    )


def _mark(row: dict[str, Any], cap_s: float, y: float, missed_x: float) -> str:
    colour = COLOURS.get(lane(row), OTHER_COLOUR)
    tip = f"{row['fault']}, {lane(row)}: {row['found']}/{row['seeds']} found"
    if not row["found"]:
        return (f'<g stroke="{colour}" stroke-width="1.5"><title>{escape(tip)}</title>'
                f'<line x1="{missed_x - 3}" y1="{y - 3}" x2="{missed_x + 3}" y2="{y + 3}"/>'
                f'<line x1="{missed_x - 3}" y1="{y + 3}" x2="{missed_x + 3}" y2="{y - 3}"/></g>')
    tip += f", median {row['median_s']:g} s, worst {row['worst_s']:g} s"
    median, worst = x_of(row["median_s"], cap_s), x_of(row["worst_s"], cap_s)
    fill = colour if row["found"] == row["seeds"] else "white"
    return (f'<g><title>{escape(tip)}</title>'
            f'<line x1="{median:.1f}" y1="{y:.1f}" x2="{worst:.1f}" y2="{y:.1f}" stroke="{colour}"/>'
            f'<circle cx="{median:.1f}" cy="{y:.1f}" r="3" fill="{fill}" stroke="{colour}"/></g>')

"""What a concurrent step's trace says about the interleaving it explored.

Pure functions over a trace: labels for ``hypothesis.event()`` (which
overlaps were explored), a score for ``hypothesis.target()`` (how much
happened inside another task's locked region), and a signature that
identifies the interleaving (the order of delay sites reached).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from stateful.scheduler import TraceEvent


def op_name(label: str) -> str:
    """``resize(vm1, large, host2)`` -> ``resize``."""
    return label.split("(", 1)[0]


def overlap_labels(trace: Sequence[TraceEvent]) -> list[str]:
    """For each pair of tasks, where in one task's run the other one acted.

    E.g. ``evacuate acted inside audit, after db.instance.get_by_host`` says
    the evacuation reached a site after the audit read its instances and
    before the audit's next site.  Sorted and deduplicated.
    """
    labels: set[str] = set()
    last_site: dict[int, str] = {}
    finished: set[int] = set()
    names = {event.task: op_name(event.op) for event in trace}
    for event in trace:
        if event.kind == "finish":
            finished.add(event.task)
        if event.kind != "reach":
            continue
        for other, site in last_site.items():
            if other != event.task and other not in finished:
                labels.add(f"{names[event.task]} acted inside {names[other]}, after {site}")
        last_site[event.task] = event.site
    return sorted(labels)


def locked_overlap(trace: Sequence[TraceEvent]) -> int:
    """How many sites tasks reached while another task held a lock.

    A task holds a lock from its ``lock:*:acquire`` site (ownership follows at
    once unless it blocks) to its ``lock:*:release`` site.
    """
    holding: dict[int, int] = {}
    blocked: set[int] = set()
    score = 0
    for event in trace:
        if event.kind == "block":
            blocked.add(event.task)
            continue
        if event.kind != "reach":
            continue
        blocked.discard(event.task)
        if any(task != event.task and task not in blocked and depth for task, depth in holding.items()):
            score += 1
        if event.site.startswith("lock:"):
            change = 1 if event.site.endswith(":acquire") else -1
            holding[event.task] = max(0, holding.get(event.task, 0) + change)
    return score


def interleaving_signature(trace: Sequence[TraceEvent]) -> str:
    """A short hash of the order in which tasks reached their sites."""
    order = "|".join(f"{op_name(e.op)}:{e.site}" for e in trace if e.kind == "reach")
    return hashlib.blake2b(order.encode(), digest_size=8).hexdigest()

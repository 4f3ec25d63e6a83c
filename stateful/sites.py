"""Named delay sites: the registry, and a fixture that puts sites into any code.

A *site* is a named place where the scheduler may switch tasks and inject a
delay.  Code we own calls :func:`stateful.scheduler.checkpoint` directly;
code we don't (Nova) gets sites from :class:`DelaySites`, which wraps a
callable found by dotted path so every call checkpoints before and after the
original — the places Nova's own race tests patch in ``time.sleep``.

Every site a target can reach is registered here, so that a regression file
naming an unknown site is rejected instead of silently replayed wrong.
"""

from __future__ import annotations

import functools
import inspect
import pkgutil
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import fixtures

from stateful.scheduler import checkpoint


@dataclass(frozen=True)
class Site:
    name: str
    target: str
    description: str


SITES: dict[str, Site] = {}

#: The system under test calls through this module: an error raised here is
#: judged by its caller's frame (:func:`stateful.session.raised_by_the_harness`).
JUDGED_BY_CALLER = True


_LOCK_SITE = re.compile(r"lock:[\w.-]+:(acquire|release)")


def register_site(name: str, description: str, target: str = "model") -> str:
    """Declare a delay site; returns its name so modules can keep it as a constant."""
    existing = SITES.get(name)
    if existing is not None and existing.target != target:
        raise ValueError(f"site {name!r} already registered for target {existing.target!r}")
    SITES[name] = Site(name, target, description)
    return name


def is_known_site(name: str) -> bool:
    """A registered site, or a lock's acquire/release (lock names are open-ended)."""
    return name in SITES or _LOCK_SITE.fullmatch(name) is not None


def _wrap(site: str, original: Callable[..., Any]) -> Callable[..., Any]:
    before, after = f"{site}:before", f"{site}:after"

    @functools.wraps(original)
    def with_delay_site(*args: Any, **kwargs: Any) -> Any:
        checkpoint(before)
        try:
            return original(*args, **kwargs)
        finally:
            checkpoint(after)

    return with_delay_site


def _raw_attribute(dotted_path: str) -> Any:
    """The attribute a dotted path names, as stored (a staticmethod stays one)."""
    owner_path, _, attribute = dotted_path.rpartition(".")
    return inspect.getattr_static(pkgutil.resolve_name(owner_path), attribute)


class DelaySites(fixtures.Fixture):
    """Wrap callables, by dotted path, so each call checkpoints before and after.

    ``sites`` maps a site name to a dotted path, for example
    ``{"instance.drop_migration_context":
    "nova.objects.instance.Instance.drop_migration_context"}``; the reached
    sites are ``<name>:before`` and ``<name>:after``.  Static and class
    methods keep their kind.  Each site is registered for ``target``.
    """

    def __init__(self, sites: Mapping[str, str], target: str) -> None:
        super().__init__()
        self.sites = dict(sites)
        self.target = target

    def _setUp(self) -> None:
        for site, dotted_path in self.sites.items():
            raw = _raw_attribute(dotted_path)
            for phase in ("before", "after"):
                register_site(f"{site}:{phase}", f"{phase} {dotted_path}", self.target)
            if isinstance(raw, (staticmethod, classmethod)):
                replacement: Any = type(raw)(_wrap(site, raw.__func__))
            else:
                replacement = _wrap(site, raw)
            self.useFixture(fixtures.MonkeyPatch(dotted_path, replacement))

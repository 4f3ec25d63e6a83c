"""The systems the suite can fuzz, by the name ``--target`` uses."""

from __future__ import annotations

from typing import Callable

from stateful.errors import UsageError
from stateful.target import Target


def target_factory(name: str) -> Callable[[], Target]:
    """A zero-argument constructor for the named target (importing it registers its sites;
    the Nova target measures its operations' lengths on its first construction)."""
    if name == "model":
        from stateful.targets.model import ModelTarget

        return ModelTarget
    if name == "nova":
        try:
            from stateful.targets.nova import NovaTarget
        except ImportError as error:
            raise UsageError(
                f"--target nova: real Nova is not available ({error}); install it with: pip install '.[nova]'"
            ) from error
        return NovaTarget.calibrated
    raise UsageError(f"--target: unknown target {name!r} (choose from model, nova)")

"""Keep a derandomized search independent of what else the process has imported.

Hypothesis (6.1xx) sometimes draws a "local constant" instead of a random
value: a literal collected from every project module imported so far
(``hypothesis.internal.conjecture.providers._get_local_constants``).  For
this suite that made the examples of a derandomized run depend on process
history — importing ``stateful.bench`` first turned a fault found at example
14 into one not found in 150 — and on every literal edited anywhere under
``stateful/`` or ``models/``.  The same seed must give the same examples, so
a machine run pins the local constants to none.  The global constants
(0, -1, NaN, ...) stay: they are fixed per Hypothesis version.
"""

from __future__ import annotations

import fixtures

_PROVIDERS = "hypothesis.internal.conjecture.providers"


class NoLocalConstants(fixtures.Fixture):
    """While set up, Hypothesis draws no constants collected from local modules."""

    def _setUp(self) -> None:
        try:
            from hypothesis.internal.conjecture import providers
        except ImportError:  # a Hypothesis without the feature has nothing to pin
            return
        if not hasattr(providers, "_get_local_constants"):
            return
        empty = providers.Constants()
        self.useFixture(fixtures.MonkeyPatch(f"{_PROVIDERS}._get_local_constants", lambda: empty))
        # The cache of permitted constants per choice kind holds local ones
        # from before (and, after us, none): clear it on the way in and out.
        providers.CONSTANTS_CACHE.cache.clear()
        self.addCleanup(providers.CONSTANTS_CACHE.cache.clear)

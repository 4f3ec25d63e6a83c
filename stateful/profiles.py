"""The suite's Hypothesis settings profiles (CONTRACT: ``ci``, ``dev``, ``nightly``).

Registered on import; ``tests/conftest.py`` imports this module so that
``pytest --hypothesis-profile=ci`` finds them, and ``fuzz --profile`` loads
them by name.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

#: Fuzzing threads through a scheduler is slower per example than Hypothesis
#: expects of a unit test, and a concurrent step draws many delays.
_COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    # Races need a few set-up steps (create, resize, host down) before the
    # racing one; longer examples reach more of them per example.
    stateful_step_count=25,
)

PROFILES = {
    # Deterministic and bounded: the same examples on every CI run, no database.
    "ci": settings(derandomize=True, database=None, max_examples=60, print_blob=False, **_COMMON),
    # Local runs: random exploration, the default local example database.
    "dev": settings(max_examples=200, **_COMMON),
    # Long campaigns: no practical cap (the campaign's wall-clock budget ends it).
    "nightly": settings(
        max_examples=10_000_000,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        **_COMMON,
    ),
}

for _name, _profile in PROFILES.items():
    settings.register_profile(_name, _profile)


def profile(name: str) -> settings:
    """A registered profile by name; KeyError if unknown."""
    return PROFILES[name]

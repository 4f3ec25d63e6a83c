"""Registers the suite's Hypothesis profiles (``pytest --hypothesis-profile=ci``)."""

import stateful.profiles  # noqa: F401  (registers ci, dev, nightly)

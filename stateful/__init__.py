"""A Hypothesis-driven stateful fuzzer for compute resource accounting races.

The public surface: :func:`checkpoint` (a named switch point),
:class:`Fault` (a switch that brings a known bug back), and the
:mod:`stateful.profiles` Hypothesis settings profiles.
"""

from stateful.errors import Finding, HarnessError
from stateful.faults import Fault
from stateful.scheduler import checkpoint

__all__ = ["Fault", "Finding", "HarnessError", "checkpoint"]

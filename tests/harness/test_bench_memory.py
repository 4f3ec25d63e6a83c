"""bench's memory measure: RSS sampled at the quarters of one long run.

Only the shape is checked (where samples are taken, what they hold), never
an amount or a duration: bench reports those.  psutil comes with the
``bench`` extra; without it bench reads /proc, and each way is tested where
it is available.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest

from stateful import bench


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            "psutil",
            marks=pytest.mark.skipif(
                not _importable("psutil"),
                reason="psutil is not installed (it comes with the bench extra: pip install -e '.[bench]')",
            ),
        ),
        pytest.param(
            "proc",
            marks=pytest.mark.skipif(
                not os.path.exists("/proc/self/statm"), reason="no /proc/self/statm on this system"
            ),
        ),
    ],
)
def test_rss_is_this_process_resident_size(monkeypatch, source):
    if source == "proc":
        monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError
    rss = bench.rss_mb()
    # resident now is at most the peak so far (getrusage), and a Python process holds some MB
    assert 1 < rss <= bench.peak_rss_mb() + 1
    if source == "psutil":
        import psutil

        assert abs(rss - psutil.Process().memory_info().rss / 2**20) < 5


def test_memory_profile_samples_at_each_quarter_exactly():
    memory = bench.memory_profile(8)
    # at the marks, then at the end (Hypothesis may run an example or two past max_examples)
    assert [sample["examples"] for sample in memory["samples"]] == [2, 4, 6, memory["examples"]]
    assert memory["examples"] >= 8
    for sample in memory["samples"]:
        assert sample["rss_mb"] > 0 and sample["peak_rss_mb"] >= sample["rss_mb"] - 1
    peaks = [sample["peak_rss_mb"] for sample in memory["samples"]]
    assert peaks == sorted(peaks)
    assert memory["growth_mb"] == round(memory["samples"][-1]["rss_mb"] - memory["samples"][0]["rss_mb"], 1)


def test_memory_profile_leaves_the_progress_interval_as_it_was():
    from stateful import campaign

    before = campaign.SAMPLE_EVERY
    bench.memory_profile(1)
    assert campaign.SAMPLE_EVERY == before


def test_markdown_has_the_memory_row():
    memory = {
        "examples": 8, "seconds": 1.0, "start": {"rss_mb": 40.0, "peak_rss_mb": 40.0}, "growth_mb": 0.5,
        "samples": [{"examples": n, "rss_mb": 41.0 + n / 16, "peak_rss_mb": 42.0} for n in (2, 4, 6, 8)],
    }
    (row,) = bench.memory_markdown(memory)
    assert "RSS over one campaign of 8 examples" in row and "41.5 MB after 8" in row and "+0.5 MB" in row

"""The one place the suite reaches into pytest-benchmark's private state.

pytest-benchmark keeps its ``BenchmarkSession`` as ``config._benchmarksession`` (a private attribute): the
plugin reads it to stamp machine info and the baseline compare sets what it loads (``compare``,
``handle_loading``, ``compared_mapping``, ``compare_fail``, ``storage``). Checked against pytest-benchmark
5.1, 5.2 and 5.3.1 (5.2.3 and 5.3.1 on the CPU machine; the pin in requirements.txt and pyproject.toml keeps it
so): a newer version is let in only after this module and tests/test_baseline.py pass on it. The floor is 5.3.1:
pytest 9.2 dropped ``Node._nodeid``, which every benchmark of pytest-benchmark 5.2 reads (pytest-benchmark#321),
and a fresh install takes the newest pytest.
"""

from __future__ import annotations

#: The pytest-benchmark versions this module was checked against (requirements.txt, pyproject.toml).
CHECKED = ">=5.3.1,<5.4"


def benchmark_session(config):
    """pytest-benchmark's ``BenchmarkSession`` of this run, or None (plugin disabled, or not loaded yet)."""
    return getattr(config, "_benchmarksession", None)

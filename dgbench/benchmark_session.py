"""The one place the suite reaches into pytest-benchmark's private state.

pytest-benchmark keeps its ``BenchmarkSession`` as ``config._benchmarksession`` (a private attribute): the
plugin reads it to stamp machine info and the baseline compare sets what it loads (``compare``,
``handle_loading``, ``compared_mapping``, ``compare_fail``, ``storage``). Checked against pytest-benchmark
5.1 and 5.2 (5.2.3 on the CPU machine; the pin in requirements.txt and pyproject.toml keeps it so): a newer
version is let in only after this module and tests/test_baseline.py pass on it.
"""

from __future__ import annotations

#: The pytest-benchmark versions this module was checked against (requirements.txt, pyproject.toml).
CHECKED = ">=5.1,<5.3"


def benchmark_session(config):
    """pytest-benchmark's ``BenchmarkSession`` of this run, or None (plugin disabled, or not loaded yet)."""
    return getattr(config, "_benchmarksession", None)

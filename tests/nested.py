"""The environment of a pytest run started from inside a test (the suite end to end, baseline comparisons)."""

from __future__ import annotations

import os
from pathlib import Path


def nested_pytest_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without what the outer run's plugins set for their own processes, plus ``extra``.

    Under pytest-xdist the outer worker has ``PYTEST_XDIST_WORKER`` set, and pytest-benchmark disables
    every benchmark of a run that sees it: the inner run would then time nothing. ``PYTEST_ADDOPTS``
    would add the outer run's options to the inner one.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k != "PYTEST_ADDOPTS"}
    env.update(extra)
    return env


def benchmark_project(folder: Path, tests: dict[str, str], plugins: list[str], machine: str) -> Path:
    """A pytest project in ``folder`` whose runs save under ``<storage>/<machine>/``: the ``tests`` files (name:
    source) and a conftest.py doing what the root one does, with a fixed machine folder instead of the GPU slug
    and only ``plugins`` of dgbench."""
    for name, source in tests.items():
        (folder / name).write_text(source)
    (folder / "conftest.py").write_text(f"""
import pytest

pytest_plugins = {plugins!r}

@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    bs = session.config._benchmarksession
    bs.machine_id = bs.storage.default_machine_id = {machine!r}
""")
    (folder / "pytest.ini").write_text("[pytest]\n")
    return folder

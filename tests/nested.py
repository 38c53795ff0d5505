"""The environment of a pytest run started from inside a test (the suite end to end, baseline comparisons)."""

from __future__ import annotations

import os


def nested_pytest_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without what the outer run's plugins set for their own processes, plus ``extra``.

    Under pytest-xdist the outer worker has ``PYTEST_XDIST_WORKER`` set, and pytest-benchmark disables
    every benchmark of a run that sees it: the inner run would then time nothing. ``PYTEST_ADDOPTS``
    would add the outer run's options to the inner one.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k != "PYTEST_ADDOPTS"}
    env.update(extra)
    return env

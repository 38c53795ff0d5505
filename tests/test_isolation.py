"""dgbench/isolation.py: a test that leaves a kvdicom constant changed errors in its teardown, naming the constant,
and the tests after it see the value as it was; a constant put back (monkeypatch) passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.nested import nested_pytest_env

ROOT = Path(__file__).resolve().parents[1]

TESTS = """
from kvdicom._series import headers


def test_a_leaves_it_changed():
    headers.POOL_MIN_FILES = 1


def test_b_sees_it_as_it_was():
    assert headers.POOL_MIN_FILES == 64


def test_c_puts_it_back(monkeypatch):
    monkeypatch.setattr(headers, "POOL_MIN_PROCESSES", 1)
"""


def test_a_constant_left_changed_errors_and_is_put_back_for_the_next_test(tmp_path):
    (tmp_path / "test_leak.py").write_text(TESTS)
    (tmp_path / "conftest.py").write_text("import kvdicom._series.headers\npytest_plugins = ['dgbench.isolation']\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = nested_pytest_env(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", "-rA",
                           "test_leak.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "3 passed, 1 error" in out, out
    assert ("test_leak.py::test_a_leaves_it_changed left kvdicom's settings changed" in out
            and "kvdicom._series.headers.POOL_MIN_FILES: 64 -> 1" in out), out
    assert "ERROR at teardown of test_a_leaves_it_changed" in out and "POOL_MIN_PROCESSES" not in out, out

"""kvdicom.configure: one settings object, set for the process or for a block, from the environment too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import kvdicom
from kvdicom import settings
from kvdicom._io import host_read, process_pool
from kvdicom._io import tuning as io_tuning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _restore(monkeypatch):
    monkeypatch.setattr(settings, "_current", settings.Settings())


def test_configure_as_a_context_manager_restores_the_previous_values():
    kvdicom.configure(threads=2)
    with kvdicom.configure(processes=0, threads=3) as inside:
        assert inside == settings.current() == settings.Settings(threads=3, processes=0)
        assert io_tuning.host_threads() == 3 and host_read.pool()._max_workers == 3
        assert process_pool.processes() == 0
    assert settings.current() == settings.Settings(threads=2, processes="auto")
    assert host_read.pool()._max_workers == 2


def test_configure_keeps_what_it_is_not_given():
    kvdicom.configure(threads=4)
    kvdicom.configure(processes=1)
    assert settings.current() == settings.Settings(threads=4, processes=1)


def test_a_bad_value_changes_nothing():
    kvdicom.configure(threads=5)
    with pytest.raises(ValueError, match="processes"):
        kvdicom.configure(threads=6, processes=-1)
    assert settings.current().threads == 5


def test_processes_is_capped_by_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(settings, "cores", lambda: 3)
    assert process_pool.processes() == 3
    with kvdicom.configure(processes=2):
        assert process_pool.processes() == 2
    with kvdicom.configure(processes=64):
        assert process_pool.processes() == 3


@pytest.mark.parametrize(("env", "expected"), [
    ({"KVDICOM_THREADS": "3", "KVDICOM_PROCESSES": "0"},
     "Settings(threads=3, processes=0, max_compression_ratio=1000.0, host_cache_bytes=536870912)"),
    ({"KVDICOM_THREADS": "none"},
     "Settings(threads=None, processes='auto', max_compression_ratio=1000.0, host_cache_bytes=536870912)"),
    ({"KVDICOM_PROCESSES": "Auto", "KVDICOM_HOST_CACHE_BYTES": "0"},
     "Settings(threads='auto', processes='auto', max_compression_ratio=1000.0, host_cache_bytes=0)"),
])
def test_starting_values_come_from_the_environment(env, expected):
    out = subprocess.run([sys.executable, "-c", "import kvdicom; print(kvdicom.settings.current())"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, check=True)
    assert out.stdout.strip() == expected


def test_a_bad_environment_value_names_the_variable():
    out = subprocess.run([sys.executable, "-c", "import kvdicom"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "KVDICOM_PROCESSES": "many"})
    assert out.returncode != 0 and "KVDICOM_PROCESSES='many'" in out.stderr

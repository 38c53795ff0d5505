"""machine_info holds nothing that changes between runs of one machine (so --benchmark-compare stays quiet)."""

from __future__ import annotations

import sys
import types

from dgbench.machine import GpuStatus, kvikio_settings, machine_info, machine_slug, stable_location
from dgbench.report.machines import base_name
from kvdicom._io.tuning import machine_threads


def _fake_kvikio(monkeypatch, pool_threads: int):
    """A KvikIO whose pool has ``pool_threads`` threads right now (1 before kvdicom's warm-up)."""
    defaults = types.ModuleType("kvikio.defaults")
    values = {"num_threads": pool_threads, "task_size": 4 << 20, "bounce_buffer_size": 16 << 20}
    defaults.get = values.__getitem__
    defaults.is_compat_mode_preferred = lambda: True
    kvikio = types.ModuleType("kvikio")
    kvikio.__version__ = "26.10.00"
    kvikio.defaults = defaults
    monkeypatch.setitem(sys.modules, "kvikio", kvikio)
    monkeypatch.setitem(sys.modules, "kvikio.defaults", defaults)


def test_kvikio_threads_is_the_configured_value_not_the_pool_size_now(monkeypatch):
    monkeypatch.delenv("KVIKIO_NTHREADS", raising=False)
    _fake_kvikio(monkeypatch, pool_threads=1)
    before = kvikio_settings()["kvikio_threads"]
    _fake_kvikio(monkeypatch, pool_threads=16)
    after = kvikio_settings()["kvikio_threads"]
    assert before == after == machine_threads()


def test_kvikio_threads_follows_the_users_setting(monkeypatch):
    monkeypatch.setenv("KVIKIO_NTHREADS", "3")
    _fake_kvikio(monkeypatch, pool_threads=1)
    assert kvikio_settings()["kvikio_threads"] == 3


def test_corpus_dir_is_never_an_absolute_path(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".corpus").mkdir(parents=True)
    assert stable_location(repo / ".corpus", repo) == ".corpus"
    assert stable_location(tmp_path / "elsewhere", repo) is None
    info = machine_info(GpuStatus(False, "no GPU"), str(repo / ".corpus"), "quick", repo)
    assert info["corpus_dir"] == ".corpus" and info["corpus_filesystem"]
    other = machine_info(GpuStatus(False, "no GPU"), str(tmp_path / "scratch"), "quick", repo)
    assert other["corpus_dir"] is None and str(tmp_path) not in repr(other)


def test_the_gpu_count_names_multi_gpu_hosts_and_leaves_one_gpu_machines_as_they_were():
    kvikio = {"kvikio_compat_mode": True}
    one = GpuStatus(True, "", "NVIDIA H200", "580.159.04", "13.2", 150 << 30, kvikio)
    eight = GpuStatus(True, "", "NVIDIA H200", "580.159.04", "13.2", 150 << 30, kvikio, count=8)
    assert machine_slug(one) == "nvidia-h200_drv580.159.04_cuda13.2_kvikio-compat"  # a results/ folder today
    assert machine_slug(eight) == "nvidia-h200-x8_drv580.159.04_cuda13.2_kvikio-compat"
    info_one, info_eight = (machine_info(g, "/nowhere", "scaleout") for g in (one, eight))
    assert "gpu_count" not in info_one and info_eight["gpu_count"] == 8
    assert set(info_eight) - set(info_one) == {"gpu_count"}
    assert base_name(info_eight).startswith("8 × NVIDIA H200") and base_name(info_one).startswith("NVIDIA H200")


def test_machine_info_records_which_header_walk_kvdicom_uses(monkeypatch):
    from dgbench.machine import GpuStatus, machine_info
    from kvdicom._header import fast_header

    monkeypatch.setattr(fast_header, "compiled_walk", None)
    assert machine_info(GpuStatus(False, "test"), ".", "quick")["kvdicom_header_walk"] == "python"
    monkeypatch.setattr(fast_header, "compiled_walk", object())
    assert machine_info(GpuStatus(False, "test"), ".", "quick")["kvdicom_header_walk"] == "compiled"


def test_machine_info_records_which_slice_reads_kvdicom_uses(monkeypatch):
    from dgbench.machine import GpuStatus, machine_info
    from kvdicom._io import known_reads

    monkeypatch.setattr(known_reads, "compiled", None)
    assert machine_info(GpuStatus(False, "test"), ".", "quick")["kvdicom_slice_reads"] == "python"
    monkeypatch.setattr(known_reads, "compiled", object())
    assert machine_info(GpuStatus(False, "test"), ".", "quick")["kvdicom_slice_reads"] == "compiled"

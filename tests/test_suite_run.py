"""The suite end to end on this machine: what a user sees and what lands in the results folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dgbench.derived import add_derived_fields
from dgbench.machine import machine_slug, probe_gpu
from dgbench.schema import bench_document
from tests.nested import nested_pytest_env

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0badc0ffee0badc0ffee0badc0ffee0badc0ffee"  # as tools/device_run.sh passes it: wins over the git checkout


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("suite")
    storage, corpus = tmp / "results", tmp / "corpus"
    cmd = [sys.executable, "-m", "pytest", "bench/test_throughput.py", "bench/test_ceilings.py",
           "-k", "f1_64x64", "--profile", "quick", f"--corpus-dir={corpus}",
           f"--benchmark-storage=file://{storage}", "--benchmark-autosave", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=nested_pytest_env(PYTHONDONTWRITEBYTECODE="1", DGB_COMMIT=COMMIT))
    return proc, storage


def test_suite_passes_and_says_why_gpu_parts_did_not_run(suite_run):
    proc, _ = suite_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dicom-gpu-bench: throughput" in proc.stdout
    gpu = probe_gpu()
    if not gpu.available:
        assert f"GPU benchmarks and GPU property tests did not run: {gpu.reason}" in proc.stdout
        assert f"no GPU: {gpu.reason}" in proc.stdout  # each skip carries the reason (-rs)


def test_results_land_in_a_folder_named_after_the_machine(suite_run):
    _, storage = suite_run
    slug = machine_slug(probe_gpu())
    saved = sorted((storage / slug).glob("0001_*.json"))
    assert len(saved) == 1, list(storage.rglob("*"))
    assert saved[0].name.startswith(f"0001_{COMMIT}_")
    doc = json.loads(saved[0].read_text())
    assert doc["commit_info"]["id"] == COMMIT and doc["commit_info"]["dirty"] is False
    info = doc["machine_info"]
    assert info["machine_slug"] == slug and info["profile"] == "quick"
    for key in ("pydicom_version", "numpy_version", "corpus_filesystem", "gpu_name"):
        assert key in info

    assert "/" not in str(info.get("corpus_dir") or "")  # no absolute path: it lies outside the repo here
    # kvdicom runs on the CPU and, on a GPU machine, on CUDA too: the device is part of the key.
    by_loader = {(b["extra_info"]["loader"], b["extra_info"]["device"], b["extra_info"]["page_cache"]): b["extra_info"]
                 for b in doc["benchmarks"]}
    pydicom, kvdicom_cpu = by_loader[("pydicom", "cpu", "warm")], by_loader[("kvdicom", "cpu", "warm")]
    assert pydicom["case"] == kvdicom_cpu["case"] == "f1_64x64_u8_explicit_le"
    assert pydicom["speedup_vs_pydicom"] == 1.0
    assert kvdicom_cpu["matches_pydicom"] is True and kvdicom_cpu["gbps"] > 0
    assert kvdicom_cpu["ceiling"] == "host_read"
    for key in ("case", "loader", "device", "file_bytes", "pixel_bytes", "page_cache", "matches_pydicom",
                "kvikio_threads", "kvikio_task_size", "ceiling"):
        assert key in kvdicom_cpu, key  # the keys committed baselines and the report rely on
    ceiling = by_loader[("ceiling:host_read", "cpu", "warm")]
    assert kvdicom_cpu["pct_of_ceiling"] == pytest.approx(100 * kvdicom_cpu["gbps"] / ceiling["gbps"])


def _bench(case, loader, median, page_cache="warm", **extra):
    if page_cache == "cold":
        extra.setdefault("resident_fraction_max", 0.0)  # a verified drop
    return bench_document(case, loader, median, page_cache=page_cache, **extra)


def test_derived_fields_compare_within_one_case_and_cache_state():
    benches = [
        _bench("a", "pydicom", 1.0),
        _bench("a", "kvdicom", 0.05, device="cuda"),
        _bench("a", "ceiling:h2d_pinned", 0.025),
        _bench("a", "kvdicom", 0.5, page_cache="cold"),
        _bench("a", "ceiling:disk_read_direct", 0.8, page_cache="cold"),
        _bench("a", "ceiling:disk_read_buffered", 0.4, page_cache="cold"),
        _bench("b", "kvdicom", 0.1, device="cuda"),
    ]
    add_derived_fields(benches)
    warm, cold, other = benches[1]["extra_info"], benches[3]["extra_info"], benches[6]["extra_info"]
    assert warm["gbps"] == pytest.approx(20.0) and warm["speedup_vs_pydicom"] == pytest.approx(20.0)
    assert warm["pct_of_ceiling"] == pytest.approx(50.0) and warm["spread"] == pytest.approx(0.1)
    assert cold["pct_of_ceiling"] == pytest.approx(80.0)  # against the faster disk ceiling
    assert "speedup_vs_pydicom" not in cold  # no cold pydicom in this session
    assert "pct_of_ceiling" not in other and "speedup_vs_pydicom" not in other


def test_gbps_counts_pixel_bytes_not_file_bytes():
    benches = [bench_document("a", "kvdicom", 0.5, pixel_bytes=3_000_000_000, file_bytes=3_000_000_000 + 7_340_032)]
    add_derived_fields(benches)
    assert benches[0]["extra_info"]["gbps"] == 6.0  # 3e9 bytes / 0.5 s, exactly


@pytest.mark.parametrize("residency", [None, 0.4])
def test_a_cold_row_whose_drop_was_not_verified_is_never_held_against_the_disk(residency):
    benches = [
        _bench("a", "kvdicom", 0.1, page_cache="cold", resident_fraction_max=residency),
        _bench("a", "ceiling:disk_read_direct", 0.8, page_cache="cold"),
        _bench("a", "ceiling:disk_read_direct", 0.8, page_cache="cold", resident_fraction_max=residency,
               name="unverified ceiling"),
    ]
    add_derived_fields(benches)
    assert "pct_of_ceiling" not in benches[0]["extra_info"]
    assert "ceiling_gbps" not in benches[0]["extra_info"]


def test_dgb_commit_wins_over_the_enclosing_checkout(monkeypatch):
    from dgbench.plugin import pytest_benchmark_update_commit_info

    outer = {"id": "f" * 40, "time": "2020-01-01", "dirty": True, "project": "outer", "branch": "main"}
    monkeypatch.setenv("DGB_COMMIT", "abc1234")
    pytest_benchmark_update_commit_info(None, outer)
    assert outer["id"] == "abc1234" and outer["dirty"] is False and outer["project"] == "dicom-gpu-bench"
    assert outer["time"] is None  # the outer repository's commit time does not describe this tree


def test_a_missing_encoder_is_a_skip_with_its_reason_not_an_error(tmp_path):
    """Raised in a fixture or in the test (as the corpus does when pyjpegls is absent): a skip naming it."""
    (tmp_path / "test_needs_encoder.py").write_text(
        "import pytest\n"
        "from fixtures.encode import EncoderUnavailable\n"
        "@pytest.fixture\n"
        "def corpus_file():\n"
        "    raise EncoderUnavailable('jpegls_lossless fixtures need pyjpegls (pip install pyjpegls)')\n"
        "def test_in_fixture(corpus_file):\n"
        "    pass\n"
        "def test_in_body():\n"
        "    raise EncoderUnavailable('htj2k fixtures need imagecodecs')\n"
        "def test_other_errors_stay_errors():\n"
        "    raise RuntimeError('a real failure')\n")
    env = nested_pytest_env(PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "dgbench.plugin", "-p", "no:cacheprovider", "-rs",
                           "-q", str(tmp_path / "test_needs_encoder.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=env)
    out = proc.stdout + proc.stderr
    assert "1 failed, 2 skipped" in out, out
    assert "need pyjpegls (pip install pyjpegls)" in out and "htj2k fixtures need imagecodecs" in out, out
    assert " error" not in out.split("short test summary")[-1].lower(), out

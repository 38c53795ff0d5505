"""dgbench/baseline.py: which saved run --benchmark-compare uses, the missing-baseline message, the noise rule.

The end-to-end tests run pytest in a subprocess on a one-benchmark file (a fixed
10 ms sleep) against a storage folder in tmp_path, whose saved runs are written
here with chosen medians and IQRs, so the verdicts do not depend on timing luck:
a baseline of 0.1 ms is a ~100x slow-down, far beyond any noise; a baseline of
8 ms with an IQR of 8 ms (spread 100 %, noise band 200 % at k = 2) makes the
~+25 % of a 10 ms sleep a change within noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dgbench.baseline import BASELINE_FILE, missing_message, noise_floor, resolve_baseline, run_fault
from dgbench.schema import bench_document, run_document
from tests.nested import benchmark_project, nested_pytest_env

ROOT = Path(__file__).resolve().parents[1]
MACHINE = "test-machine"
NAME = "test_tiny.py::test_sleep"

TINY_TEST = """
import time

def test_sleep(benchmark):
    benchmark.pedantic(time.sleep, args=(0.01,), rounds=5, iterations=1, warmup_rounds=1)
"""

def saved_run(median: float, iqr: float) -> dict:
    """A pytest-benchmark JSON file holding one run of test_sleep with the given median and IQR."""
    bench = bench_document("sleep", "pydicom", median, iqr=iqr, rounds=5, name="test_sleep", fullname=NAME)
    return run_document({"machine_slug": MACHINE}, [bench], "2026-01-01T00:00:00")


FAST = saved_run(0.0001, 0.000001)     # 100x faster than a 10 ms sleep, 1 % spread
NOISY = saved_run(0.008, 0.008)        # 8 ms, spread 100 %
NOISIER = saved_run(0.008, 0.012)      # 8 ms, spread 150 %: no slow-down can be told from its noise


@pytest.fixture
def project(tmp_path):
    return benchmark_project(tmp_path, {"test_tiny.py": TINY_TEST}, ["dgbench.baseline"], MACHINE)


def machine_folder(project: Path, runs: dict[str, dict], baseline: str | None = None) -> Path:
    folder = project / "store" / MACHINE
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in runs.items():
        (folder / name).write_text(json.dumps(data))
    if baseline is not None:
        (folder / BASELINE_FILE).write_text(baseline + "\n")
    return folder


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = nested_pytest_env(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:warnings",
           f"--benchmark-storage=file://{project / 'store'}", "--benchmark-compare", *args]
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=120)
    proc.output = proc.stdout + proc.stderr
    return proc


# ------------------------------------------------------------------ end to end

def test_baseline_file_is_chosen_over_newer_runs(project):
    machine_folder(project, {"0001_fast.json": FAST, "0002_noisy.json": NOISY}, baseline="0001_fast.json")
    proc = run_pytest(project)
    assert proc.returncode == 0, proc.output           # no --benchmark-compare-fail: report only
    assert f"Comparing against benchmarks from: {MACHINE}/0001_fast.json" in proc.output
    assert "0001_fast.json (BASELINE)" in proc.output


def test_newest_run_without_baseline_file(project):
    machine_folder(project, {"0001_fast.json": FAST, "0002_noisy.json": NOISY})
    proc = run_pytest(project)
    assert proc.returncode == 0, proc.output
    assert f"Comparing against benchmarks from: {MACHINE}/0002_noisy.json" in proc.output
    assert "0002_noisy.json (newest run)" in proc.output


def test_regression_beyond_noise_fails(project):
    machine_folder(project, {"0001_fast.json": FAST, "0002_noisy.json": NOISY}, baseline="0001_fast.json")
    proc = run_pytest(project, "--benchmark-compare-fail=median:10%")
    assert proc.returncode == 1, proc.output
    assert "REGRESSED test_sleep: median +" in proc.output
    assert "performance has regressed beyond noise; exit status 1" in proc.output
    assert "Traceback" not in proc.output


def test_change_within_noise_passes(project):
    machine_folder(project, {"0001_noisy.json": NOISY})
    proc = run_pytest(project, "--benchmark-compare-fail=median:10%")
    assert proc.returncode == 0, proc.output
    assert "noise     test_sleep: median +" in proc.output     # over 10 %, but within the 200 % band
    assert "1 compared, 0 beyond noise, 1 over threshold but within noise" in proc.output


def test_a_baseline_row_noisier_than_its_median_is_named_unjudged_and_the_run_still_compared(project):
    machine_folder(project, {"0001_noisier.json": NOISIER})
    proc = run_pytest(project, "--benchmark-compare-fail=median:10%")
    assert proc.returncode == 0, proc.output
    assert f"Comparing against benchmarks from: {MACHINE}/0001_noisier.json" in proc.output
    assert f"not judged, too noisy in the baseline (IQR above its median): 1: {NAME}" in proc.output
    assert "0 compared, 0 beyond noise" in proc.output and "was NOT applied" not in proc.output


def test_noise_k_zero_keeps_the_plain_threshold(project):
    machine_folder(project, {"0001_noisy.json": NOISY})
    proc = run_pytest(project, "--benchmark-compare-fail=median:10%", "--regression-noise-k=0")
    assert proc.returncode == 1, proc.output
    assert "REGRESSED test_sleep" in proc.output


@pytest.mark.parametrize("layout, reason", [
    ("no folder", "the folder does not exist"),
    ("empty folder", "the folder holds no saved run"),
    ("dangling BASELINE", "BASELINE names 0007_gone.json, which is not there"),
])
def test_missing_baseline_warns_and_passes(project, layout, reason):
    if layout == "empty folder":
        machine_folder(project, {})
    elif layout == "dangling BASELINE":
        machine_folder(project, {"0001_fast.json": FAST}, baseline="0007_gone.json")
    proc = run_pytest(project, "--benchmark-compare-fail=median:10%")
    assert proc.returncode == 0, proc.output
    line = f"dicom-gpu-bench: no baseline in store/{MACHINE}/ ({reason}); this run is not compared."
    assert proc.output.count(line) == 2, proc.output     # at the start and in the terminal summary
    assert "run `./dgb bench` once on this machine and commit its JSON" in proc.output
    assert "--benchmark-compare-fail was NOT applied" in proc.output
    assert "Traceback" not in proc.output and "UsageError" not in proc.output


def _with_stats(**changes) -> dict:
    run = json.loads(json.dumps(FAST))
    stats = run["benchmarks"][0]["stats"]
    for key, value in changes.items():
        if value is None:
            del stats[key]
        else:
            stats[key] = value
    return run


def _write_baseline(folder: Path, fault: str) -> None:
    marker = folder / BASELINE_FILE
    if fault == "directory":
        marker.mkdir()
    elif fault == "binary":
        marker.write_bytes(b"\x00\x01\x89PNG\r\n")
    elif fault == "two lines":
        marker.write_text("0001_fast.json\n0002_noisy.json\n")
    elif fault == "BOM":
        marker.write_bytes(b"\xef\xbb\xbf0001_fast.json\n")
    elif fault == "fifo":
        os.mkfifo(marker)
    else:
        bad = {
            "lacks median": _with_stats(median=None),
            "NaN median": _with_stats(median=float("nan")),
            "negative median": _with_stats(median=-0.5),
            "text median": _with_stats(median="fast"),
        }
        (folder / "0003_bad.json").write_text(json.dumps(bad[fault]) if fault in bad else "{not json")
        marker.write_text("0003_bad.json\n")


BASELINE_FAULTS = {
    "directory": "BASELINE is a directory",
    "binary": "BASELINE is binary",
    "two lines": "BASELINE has 2 lines; it must name one run",
    "BOM": "BASELINE starts with a byte-order mark",
    "fifo": "BASELINE is not a regular file",
    "lacks median": "0003_bad.json: benchmark test_sleep lacks stats.median",
    "NaN median": "0003_bad.json: benchmark test_sleep has a non-numeric or non-finite stats.median (nan)",
    "negative median": "0003_bad.json: benchmark test_sleep has a negative stats.median (-0.5)",
    "text median": "0003_bad.json: benchmark test_sleep has a non-numeric or non-finite stats.median ('fast')",
    "not JSON": "0003_bad.json is not JSON",
}


@pytest.mark.parametrize("fault", ["directory", "BOM", "NaN median"])
def test_a_broken_baseline_is_reported_and_the_run_not_compared(project, fault):
    folder = machine_folder(project, {"0001_fast.json": FAST, "0002_noisy.json": NOISY})
    _write_baseline(folder, fault)
    proc = run_pytest(project, "--benchmark-compare-fail=median:10%")
    assert proc.returncode == 0, proc.output
    line = f"dicom-gpu-bench: no baseline in store/{MACHINE}/ ({BASELINE_FAULTS[fault]}"
    assert proc.output.count(line) == 2, proc.output
    assert "this run is not compared" in proc.output and "Comparing against" not in proc.output
    assert "beyond noise" not in proc.output          # never a silent "no regression"
    assert "Traceback" not in proc.output


# ------------------------------------------------------------------ units


@pytest.mark.parametrize("fault", sorted(BASELINE_FAULTS))
def test_each_baseline_fault_gets_one_clear_reason(tmp_path, fault):
    folder = tmp_path / MACHINE
    folder.mkdir()
    for name, data in {"0001_fast.json": FAST, "0002_noisy.json": NOISY}.items():
        (folder / name).write_text(json.dumps(data))
    _write_baseline(folder, fault)
    chosen, _, reason = resolve_baseline(folder)
    reason = reason or run_fault(chosen)
    assert reason is not None and reason.startswith(BASELINE_FAULTS[fault]), reason
    assert "\n" not in missing_message(folder, reason)


def test_an_unreadable_baseline_names_the_error(tmp_path, monkeypatch):
    folder = tmp_path / MACHINE
    folder.mkdir()
    (folder / BASELINE_FILE).write_text("0001_fast.json\n")
    real = os.open

    def refuse(path, *args, **kwargs):  # root reads any file: the refusal is simulated where the store opens it
        if Path(path).name == BASELINE_FILE:
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert resolve_baseline(folder)[2] == "BASELINE cannot be read (Permission denied)"

def test_resolve_baseline(tmp_path):
    folder = tmp_path / MACHINE
    assert resolve_baseline(folder) == (None, "", "the folder does not exist")
    folder.mkdir()
    assert resolve_baseline(folder) == (None, "", "the folder holds no saved run")
    for name in ("0001_a.json", "0002_b.json", "0010_c.json", "notes.json"):
        (folder / name).write_text("{}")
    assert resolve_baseline(folder) == (folder / "0010_c.json", "newest run", None)
    (folder / BASELINE_FILE).write_text("0002_b.json\n")
    assert resolve_baseline(folder) == (folder / "0002_b.json", "BASELINE", None)
    (folder / BASELINE_FILE).write_text("")
    assert resolve_baseline(folder)[2] == "BASELINE is empty"


def test_missing_message_is_one_line(tmp_path):
    msg = missing_message(tmp_path / "results" / MACHINE, "the folder does not exist")
    assert "\n" not in msg
    assert msg.startswith("dicom-gpu-bench: no baseline in ")
    assert f"{MACHINE}/{BASELINE_FILE}" in msg


def test_noise_floor():
    now = {"median": 1.0, "iqr": 0.05}
    base = {"median": 2.0, "iqr": 0.4}
    assert noise_floor(now, base, 2, percent=True) == pytest.approx(40.0)    # 2 x 100 x 0.4 / 2
    assert noise_floor(now, base, 2, percent=False) == pytest.approx(0.8)    # 2 x the larger IQR, in seconds
    assert noise_floor(now, base, 0, percent=True) == 0

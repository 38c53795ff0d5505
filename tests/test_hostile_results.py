"""Hostile result files (issue 24, items 11 and 12): the report skips or bounds them with a reason, the baseline
compare refuses them by name, and nothing hangs, blows up memory or passes a slow-down as noise."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dgbench.baseline import resolve_baseline
from dgbench.report import main
from dgbench.store import run_fault
from tests.test_report import H100, bench, gpu_run, machine_info, result_document, write_result

SLUG = "nvidia-h100_drv1_cuda13_kvikio-compat"


def _report(tmp_path, capsys, results):
    code = main([str(results), "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    return code, captured.err, tmp_path / "out" / "report.md"


def test_a_non_string_ceiling_skips_its_benchmark_not_the_report(tmp_path, capsys):
    rows = gpu_run(0.002, 0.0005)
    rows[2]["extra_info"]["ceiling"] = {"not": "a name"}
    write_result(tmp_path / "results" / SLUG / "0001_a.json",
                 result_document(machine_info(H100, SLUG), rows, "2026-03-01T02:00:00+00:00", derived=False))
    code, err, report = _report(tmp_path, capsys, tmp_path / "results")
    assert code == 0 and report.exists()
    assert "extra_info ceiling is not a string" in report.read_text()


def test_a_huge_gpu_name_is_cut_and_the_report_stays_small(tmp_path, capsys):
    info = machine_info("NVIDIA " + "X" * 1_300_000, SLUG)
    write_result(tmp_path / "results" / SLUG / "0001_a.json",
                 result_document(info, gpu_run(0.002, 0.0005), "2026-03-01T02:00:00+00:00"))
    started = time.monotonic()
    code, _, report = _report(tmp_path, capsys, tmp_path / "results")
    assert code == 0 and time.monotonic() - started < 60
    total = sum(p.stat().st_size for p in (tmp_path / "out").iterdir())
    assert total < 20 << 20 and "(cut from 1300007)" in report.read_text()


def test_a_json_linked_from_outside_the_results_is_not_a_machine(tmp_path, capsys):
    outside = write_result(tmp_path / "elsewhere" / "0001_x.json",
                           result_document(machine_info("NVIDIA V100", "v100"), gpu_run(0.002, 0.0005),
                                           "2026-03-01T02:00:00+00:00"))
    write_result(tmp_path / "results" / SLUG / "0001_a.json",
                 result_document(machine_info(H100, SLUG), gpu_run(0.002, 0.0005), "2026-03-01T02:00:00+00:00"))
    (tmp_path / "results" / "v100").mkdir()
    os.symlink(outside, tmp_path / "results" / "v100" / "0001_x.json")
    code, _, report = _report(tmp_path, capsys, tmp_path / "results")
    text = report.read_text()
    assert code == 0 and "V100" not in text.split("## Machines")[1].split("##")[0]
    assert "outside" in text


def test_a_run_dated_in_the_future_does_not_replace_a_machines_rows(tmp_path, capsys):
    folder = tmp_path / "results" / SLUG
    write_result(folder / "0001_a.json",
                 result_document(machine_info(H100, SLUG), gpu_run(0.002, 0.0005), "2026-03-01T02:00:00+00:00"))
    write_result(folder / "0002_b.json",
                 result_document(machine_info(H100, SLUG), gpu_run(0.9, 0.9), "9999-01-01T00:00:00+00:00"))
    code, _, report = _report(tmp_path, capsys, tmp_path / "results")
    text = report.read_text()
    assert code == 0 and "in the future" in text and "9999" not in text.split("## Machines")[1].split("##")[0]


def _saved(folder: Path, name: str, stats_change=None, raw: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    document = result_document(machine_info(H100, SLUG), [bench("c", "kvdicom", "cuda", 10**9, 0.01)],
                               "2026-03-01T02:00:00+00:00")
    if stats_change:
        stats_change(document["benchmarks"][0]["stats"])
    path = folder / name
    path.write_text(raw if raw is not None else json.dumps(document))
    return path


def test_baseline_faults_are_named_never_a_traceback_a_hang_or_a_free_pass(tmp_path):
    folder = tmp_path / "m"
    huge = _saved(folder, "0001_huge.json", raw=json.dumps(json.loads(_saved(tmp_path / "t", "x.json").read_text()))
                  .replace('"median": 0.01', '"median": ' + "9" * 400))
    assert "non-finite stats.median" in run_fault(huge)
    assert "lacks stats.outliers" in run_fault(_saved(folder, "0002.json", lambda s: s.pop("outliers")))
    assert "stats.ops" in run_fault(_saved(folder, "0003.json", lambda s: s.update(ops="fast")))
    assert "wider than its rounds' whole range" in run_fault(_saved(folder, "0004.json", lambda s: s.update(iqr=1e300)))
    fifo = folder / "0005_fifo.json"
    os.mkfifo(fifo)
    started = time.monotonic()
    chosen, _, reason = resolve_baseline(folder)
    assert chosen == fifo and "named pipe" in run_fault(fifo) and time.monotonic() - started < 5
    zero = folder / "0006_zero.json"
    os.symlink("/dev/zero", zero)
    assert "character device" in run_fault(zero)

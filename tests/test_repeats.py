"""dgbench.repeats: a slow-down counts only when every head run shows it beyond the noise rule."""

from __future__ import annotations

import json

import pytest

from dgbench import repeats
from dgbench.schema import bench_document, run_document
from tests.test_report import machine_info

INFO = machine_info("NVIDIA H200", "h200")


def run(tmp_path, name: str, medians: dict[str, float], iqr_pct: float = 2.0):
    benches = [bench_document(case, "kvdicom", m, name=f"test_k[{case}]", iqr=m * iqr_pct / 100)
               for case, m in medians.items()]
    path = tmp_path / name
    path.write_text(json.dumps(run_document(INFO, benches)))
    return str(path)


def test_drift_in_one_head_run_is_not_a_regression_but_a_slow_down_in_both_is(tmp_path, capsys):
    base = run(tmp_path, "base.json", {"real": 1.0, "drift": 1.0, "same": 1.0})
    head1 = run(tmp_path, "h1.json", {"real": 1.5, "drift": 1.6, "same": 1.01})
    head2 = run(tmp_path, "h2.json", {"real": 1.45, "drift": 1.02, "same": 0.99})
    assert repeats.main([base, head1, head2]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED test_k[real]: median +45.0% in every head run" in out
    assert "drift" not in out and "3 compared over 2 head run(s), 1 slower beyond noise" in out
    # one head run alone flags the drift too: what the repeat is for
    assert repeats.main([base, head1]) == 1
    assert "REGRESSED test_k[drift]" in capsys.readouterr().out


def test_noise_and_threshold_keep_small_or_noisy_changes(tmp_path, capsys):
    base = run(tmp_path, "base.json", {"small": 1.0, "noisy": 1.0}, iqr_pct=30)
    head = run(tmp_path, "h.json", {"small": 1.08, "noisy": 1.5}, iqr_pct=30)
    assert repeats.main([base, head]) == 0
    assert "2 compared over 1 head run(s), 0 slower" in capsys.readouterr().out


def test_a_broken_file_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SystemExit, match="bad.json: not a saved run"):
        repeats.main([str(bad), str(bad)])

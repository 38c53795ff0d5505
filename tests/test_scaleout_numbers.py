"""Scale-out rows' derived numbers (issue 21): series/s, efficiency against the same loader on 1 GPU of the same
run, and % of the ceiling measured with the same GPU count; rows of each GPU count never mix."""

from __future__ import annotations

import pytest

from dgbench.derived import add_derived_fields
from dgbench.schema import bench_document

CASE = "series256_512x512_i16_htj2k_lossless_ct_ic2026.10.10"
BYTES = 8 * 256 * 512 * 512 * 2


def row(loader: str, gpus: int, median: float, **extra) -> dict:
    ceiling = {} if loader.startswith("ceiling:") else {"ceiling": "dataset_decode"}
    return bench_document(CASE, loader, median, device="cuda", pixel_bytes=BYTES, gpus=gpus, series=8,
                          name=f"test[{loader}-{gpus}gpu]", **ceiling, **extra)


def test_series_rate_efficiency_and_ceiling_per_gpu_count():
    rows = [row("kvdicom", 1, 0.8), row("kvdicom", 2, 0.5), row("kvdicom", 4, 0.25),
            row("kvdicom-loop", 1, 1.0),
            row("ceiling:dataset_decode", 1, 0.4), row("ceiling:dataset_decode", 2, 0.2),
            row("ceiling:dataset_decode", 4, 0.125)]
    add_derived_fields(rows)
    info = {(r["extra_info"]["loader"], r["extra_info"]["gpus"]): r["extra_info"] for r in rows}
    assert info[("kvdicom", 1)]["series_per_s"] == pytest.approx(10.0)
    assert info[("kvdicom", 2)]["series_per_s"] == pytest.approx(16.0)
    assert info[("kvdicom", 1)]["scaling_efficiency"] == pytest.approx(1.0)
    assert info[("kvdicom", 2)]["scaling_efficiency"] == pytest.approx(16.0 / 20.0)
    assert info[("kvdicom", 4)]["scaling_efficiency"] == pytest.approx(32.0 / 40.0)
    # each row against the ceiling of its own GPU count, not the fastest of the run
    assert info[("kvdicom", 1)]["pct_of_ceiling"] == pytest.approx(50.0)
    assert info[("kvdicom", 2)]["pct_of_ceiling"] == pytest.approx(40.0)
    assert info[("kvdicom", 4)]["pct_of_ceiling"] == pytest.approx(50.0)
    # the plain loop is its own loader: its 1-GPU rate does not stand in for map_series' one
    assert info[("kvdicom-loop", 1)]["series_per_s"] == pytest.approx(8.0)
    assert info[("ceiling:dataset_decode", 4)]["scaling_efficiency"] == pytest.approx(64.0 / 80.0)


def test_speedup_is_against_pydicom_cupy_through_dask_on_as_many_gpus():
    rows = [row("kvdicom", 1, 0.8), row("kvdicom", 2, 0.5), row("pydicom+cupy", 1, 16.0),
            row("pydicom+cupy", 2, 9.0)]
    add_derived_fields(rows)
    info = {(r["extra_info"]["loader"], r["extra_info"]["gpus"]): r["extra_info"] for r in rows}
    assert info[("kvdicom", 1)]["speedup_vs_pydicom"] == pytest.approx(20.0)
    assert info[("kvdicom", 2)]["speedup_vs_pydicom"] == pytest.approx(18.0)


def test_without_a_one_gpu_row_there_is_no_efficiency():
    rows = [row("kvdicom", 2, 0.5)]
    add_derived_fields(rows)
    assert rows[0]["extra_info"]["series_per_s"] == pytest.approx(16.0)
    assert "scaling_efficiency" not in rows[0]["extra_info"]

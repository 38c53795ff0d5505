"""Ceilings of compressed cases and stage rows of series loads: the derived numbers, and one short run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dgbench.derived import add_derived_fields, summary_rows
from dgbench.schema import bench_document, decode_ceiling_for
from tests.nested import nested_pytest_env

ROOT = Path(__file__).resolve().parents[1]


def _row(case, loader, median, device="cpu", **extra):
    return bench_document(case, loader, median, device=device, pixel_bytes=10**8, **extra)


def test_a_compressed_row_gets_pct_of_the_fastest_decode_ceiling_of_its_device():
    benches = [
        _row("j", "kvdicom", 0.5, ceiling=decode_ceiling_for("cpu")),
        _row("j", "kvdicom", 0.1, "cuda", ceiling=decode_ceiling_for("cuda")),
        _row("j", "ceiling:decode_host", 0.4),
        _row("j", "ceiling:decode_host_openjph", 0.2),
        _row("j", "ceiling:decode_gpu", 0.05, "cuda"),
        _row("small", "kvdicom", 0.02, "cuda", ceiling=decode_ceiling_for("cuda")),
        _row("small", "ceiling:decode_host", 0.01),
        _row("small", "ceiling:decode_gpu", 0.04, "cuda"),
    ]
    add_derived_fields(benches)
    cpu, cuda, small = (benches[i]["extra_info"] for i in (0, 1, 5))
    assert cpu["pct_of_ceiling"] == pytest.approx(40.0)  # against OpenJPH, the faster host decoder; never the GPU
    assert cuda["pct_of_ceiling"] == pytest.approx(50.0)  # against the GPU batch, the fastest of all
    assert small["pct_of_ceiling"] == pytest.approx(50.0)  # a small file: the host decodes it faster than the GPU
    shown = {(r[0], r[1], r[2]): r[5] for r in summary_rows(benches)}  # the terminal table shows it
    assert shown[("j", "kvdicom", "cuda")] == pytest.approx(50.0)


def test_a_stage_row_gets_its_share_of_the_whole_load_on_its_own_device():
    benches = [
        _row("s", "kvdicom", 0.04, "cuda", ceiling="series_h2d"),
        _row("s", "kvdicom", 0.2, ceiling="series_host_read"),
        _row("s", "kvdicom+rescale", 0.3),
        _row("s", "stage:headers", 0.01, "cuda", ceiling=None, stage="headers"),
        _row("s", "stage:read", 0.1, ceiling=None, stage="read"),
        _row("t", "stage:read", 0.1, ceiling=None, stage="read"),  # no whole load of this case in the run
    ]
    add_derived_fields(benches)
    headers, read, alone = (benches[i]["extra_info"] for i in (3, 4, 5))
    assert headers["pct_of_load"] == pytest.approx(25.0) and read["pct_of_load"] == pytest.approx(50.0)
    assert "pct_of_load" not in alone and "pct_of_ceiling" not in headers
    assert "pct_of_load" not in benches[0]["extra_info"]


def test_ceilings_and_stages_land_beside_kvdicom_in_the_saved_run(tmp_path):
    """One short session: a compressed case with its host ceiling, a series with its stage rows; the saved JSON holds
    the % of ceiling and the share of the load, and each ceiling and stage says it checked its pixels."""
    from fixtures.encode import unavailable

    for syntax in ("jpegls_lossless", "htj2k_lossless"):  # the cases it selects need their encoders
        if (why := unavailable(syntax)) is not None:
            pytest.skip(why)
    out = tmp_path / "run.json"
    select = ("(f2_128x128_i16_jpegls and (compressed_kvdicom_cpu or ceiling_cpu)) or "
              "(series16_64x64 and (stage_read or stage_open or series_kvdicom_cpu)) or "
              "(series16_128x128_i16_htj2k and (cseries_kvdicom_cpu or cseries_ceiling_cpu or stage_decode))")
    cmd = [sys.executable, "-m", "pytest", "bench/test_compressed.py", "bench/test_series.py",
           "bench/test_compressed_series.py", "bench/test_series_stages.py", "-k", select, "--profile", "quick",
           f"--corpus-dir={ROOT / '.corpus'}", f"--benchmark-json={out}", "--benchmark-min-rounds=1",
           "--benchmark-max-time=0.001", "--benchmark-warmup=off", "-p", "no:cacheprovider", "-q"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=nested_pytest_env(PYTHONDONTWRITEBYTECODE="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = [b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]]

    def row(case: str, loader: str) -> dict:
        (found,) = [i for i in saved if i["case"].startswith(case) and i["loader"] == loader and i["device"] == "cpu"]
        return found

    kv, ceiling = row("f2_128x128_i16_jpegls", "kvdicom"), row("f2_128x128_i16_jpegls", "ceiling:decode_host")
    assert kv["ceiling"] == "decode_host" and ceiling["matches_pydicom"] is True
    assert kv["pct_of_ceiling"] == pytest.approx(100 * kv["gbps"] / ceiling["gbps"])
    htj2k = "series16_128x128_i16_htj2k"
    assert row(htj2k, "kvdicom")["pct_of_ceiling"] > 0 and row(htj2k, "ceiling:decode_host_openjph")
    read, opened = row("series16_64x64", "stage:read"), row("series16_64x64", "stage:open")
    assert read["matches_pydicom"] is True and read["stage_covers"] and opened["stage_part_of"] == "read"
    assert read["pct_of_load"] > 0 and opened["pct_of_load"] > 0
    assert row(htj2k, "stage:decode")["matches_pydicom"] is True

"""dgbench.schema: the one description of extra_info, written by bench/ and read by the report."""

from __future__ import annotations

import pytest

from dgbench.schema import ExtraInfo, bench_document, bench_extra, ceiling_for, run_document

#: The keys every loader benchmark has written since the first committed results (CONTRACTS.md).
LOADER_KEYS = {"case", "loader", "device", "file_bytes", "pixel_bytes", "page_cache", "matches_pydicom",
               "kvikio_threads", "kvikio_task_size", "ceiling"}


def test_a_loader_row_has_the_committed_keys_and_its_ceiling():
    info = bench_extra("c", "kvdicom", "cuda", 1362 + 8, 8, matches_pydicom=True, kvikio_threads=16)
    assert set(info) == LOADER_KEYS
    assert info["ceiling"] == "h2d_pinned" and info["kvikio_threads"] == 16
    assert bench_extra("c", "kvdicom", "cpu", 9, 8)["ceiling"] == "host_read"
    assert bench_extra("c", "pydicom", "cpu", 9, 8, "cold")["ceiling"] == "disk_read"
    assert set(LOADER_KEYS) <= set(ExtraInfo.__annotations__)


def test_a_ceiling_row_names_no_ceiling_of_its_own():
    info = bench_extra("c", "ceiling:disk_read_direct", "cpu", 9, 8, "cold", direct_io=True, bytes_read=8)
    assert set(info) == {"case", "loader", "device", "file_bytes", "pixel_bytes", "page_cache", "direct_io",
                         "bytes_read"}


def test_unknown_keys_and_page_cache_states_are_refused():
    with pytest.raises(TypeError, match="gpbs"):
        bench_extra("c", "kvdicom", "cpu", 9, 8, gpbs=1.0)
    with pytest.raises(ValueError, match="page_cache"):
        bench_extra("c", "kvdicom", "cpu", 9, 8, "lukewarm")


def test_ceiling_for():
    pairs = (("cuda", "warm"), ("cpu", "warm"), ("cuda", "cold"), ("cpu", "unverified"))
    assert [ceiling_for(d, c) for d, c in pairs] == ["h2d_pinned", "host_read", "disk_read", "disk_read"]


def test_documents_have_pytest_benchmarks_shape():
    doc = run_document({"machine_slug": "m"}, [bench_document("c", "kvdicom", 0.5, iqr=0.1)])
    stats = doc["benchmarks"][0]["stats"]
    assert (stats["median"], stats["iqr"], stats["q3"] - stats["q1"]) == (0.5, 0.1, pytest.approx(0.1))
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(doc)


def test_a_compressed_row_is_held_against_the_fastest_decode_its_device_can_use():
    from dgbench.schema import decode_ceiling_for

    assert decode_ceiling_for("cpu") == "decode_host"  # decode_host, decode_host_openjph, ...
    assert decode_ceiling_for("cuda") == "decode"  # decode_gpu and every decode_host variant
    info = bench_extra("c", "kvdicom", "cuda", 9, 8, matches_pydicom=True, ceiling=decode_ceiling_for("cuda"))
    assert info["ceiling"] == "decode"


def test_a_decode_ceiling_records_its_own_check_and_no_ceiling():
    info = bench_extra("c", "ceiling:decode_gpu", "cuda", 9, 8, matches_pydicom=True, decoder="nvimgcodec")
    assert info["matches_pydicom"] is True and "ceiling" not in info
    assert "matches_pydicom" not in bench_extra("c", "ceiling:host_read", "cpu", 9, 8)


def test_stage_rows_are_named_apart_from_loaders_and_ceilings():
    from dgbench.schema import is_ceiling, is_stage, stage_loader

    info = bench_extra("c", stage_loader("read"), "cuda", 9, 8, ceiling=None, stage="read",
                       stage_of="kvdicom.load_series", stage_covers="reads", stage_part_of=None)
    assert info["loader"] == "stage:read" and is_stage(info["loader"]) and not is_ceiling(info["loader"])
    assert info["ceiling"] is None and not is_stage("kvdicom")

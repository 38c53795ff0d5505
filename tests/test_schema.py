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

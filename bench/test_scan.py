"""Benchmarks: a dataset planned from its headers alone (``kvdicom.dask.scan``), page cache warm, and cold.

A Dask user plans from headers before any pixel is read (README, "Dask"). For each series of the profile:
``kvdicom.dask.scan`` of its folder against what a plan without kvdicom reads, pydicom's
``dcmread(stop_before_pixels=True)`` of every file; warm, and cold (``-m cold``: every file dropped before each
round and the drop verified, ``bench.ceilings.time_cold``). A cold scan must not read the pixel data either: the
cold kvdicom row records ``resident_fraction_after``, the share of the files' pages in the page cache right after
a cold scan (one whose header workers read whole files ahead cached all of them: 100% against 3% for 384 CT
slices, docs/loader.md). Rows use the case id
``<series case>:scan``; ``pixel_bytes`` holds the headers' bytes (each file's pixel data offset), so GB/s is the
rate the headers are planned at; no ceiling. Both must find the series: kvdicom one row of every file with the
volume's shape, pydicom every file an image of its rows and columns.
"""

from __future__ import annotations

import os

import pydicom
import pytest

import kvdicom
from bench import peers
from bench.ceilings import drop_page_cache, resident_fraction, time_cold
from dgbench.schema import bench_extra


@pytest.fixture(scope="session")
def scan_files(series_dir):
    """The folder's files and each one's header bytes (its pixel data offset), found once (untimed)."""
    files = [str(p) for p in peers.series_files(series_dir)]
    return files, sum(kvdicom.inspect(p).offset for p in files)


def _record(benchmark, spec, scan_files, loader, page_cache, **extra):
    files, header_bytes = scan_files
    file_bytes = sum(os.path.getsize(p) for p in files)
    benchmark.extra_info.update(bench_extra(f"{spec.case_id}:scan", loader, "cpu", file_bytes, header_bytes,
                                            page_cache, ceiling=None, slices=spec.slices, files=len(files), **extra))


def _kvdicom_scan(series_dir):
    from kvdicom import dask as kvdask

    return kvdask.scan(series_dir)


def _check_plan(spec, rows, files):
    assert len(rows) == 1 and rows[0].problem is None, rows
    assert len(rows[0].paths) == len(files) and rows[0].shape[:3] == (spec.slices, spec.rows, spec.cols), rows[0]


def _pydicom_scan(files):
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in files]


def _check_headers(spec, datasets):
    assert all(ds.Rows == spec.rows and ds.Columns == spec.cols and "PixelData" not in ds for ds in datasets)


def test_scan_kvdicom(benchmark, series_spec, series_dir, scan_files):
    _record(benchmark, series_spec, scan_files, "kvdicom", "warm")
    _check_plan(series_spec, benchmark(_kvdicom_scan, series_dir), scan_files[0])


def test_scan_pydicom(benchmark, series_spec, scan_files):
    _record(benchmark, series_spec, scan_files, "pydicom", "warm")
    _check_headers(series_spec, benchmark(_pydicom_scan, scan_files[0]))


@pytest.mark.cold
def test_scan_kvdicom_cold(benchmark, series_spec, series_dir, scan_files):
    files = scan_files[0]
    for path in files:
        drop_page_cache(path)
    _check_plan(series_spec, _kvdicom_scan(series_dir), files)
    readings = [resident_fraction(p) for p in files]
    after = None if None in readings else sum(readings) / len(readings)
    _record(benchmark, series_spec, scan_files, "kvdicom", "cold", resident_fraction_after=after)
    time_cold(benchmark, files, lambda: _kvdicom_scan(series_dir))


@pytest.mark.cold
def test_scan_pydicom_cold(benchmark, series_spec, scan_files):
    _record(benchmark, series_spec, scan_files, "pydicom", "cold")
    time_cold(benchmark, scan_files[0], lambda: _pydicom_scan(scan_files[0]))

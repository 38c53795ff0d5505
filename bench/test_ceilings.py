"""Benchmarks of the machine's ceilings, on the same byte counts as the loaders, in the same session.

``ceiling:h2d_pinned`` is what a GPU loader with a warm page cache is held
against (the bytes must cross PCIe at least once), ``ceiling:host_read`` what a
CPU loader is held against, ``ceiling:disk_read`` what a cold load is held
against. ``h2d_pageable`` shows what an unpinned copy (``cupy.asarray``) costs.
"""

from __future__ import annotations

import pytest

import kvdicom
from bench.ceilings import DiskRead, HostToDevice, PageCacheRead, drop_page_cache, time_cold
from dgbench.schema import bench_extra, ceiling_loader


def _describe(benchmark, spec, path, name, device, nbytes, page_cache="warm", **extra):
    benchmark.extra_info.update(
        bench_extra(spec.case_id, ceiling_loader(name), device, path.stat().st_size, nbytes, page_cache, **extra)
    )


@pytest.mark.gpu
@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "pageable"])
def test_host_to_device_copy(benchmark, cuda, spec, spec_file, pinned):
    nbytes = kvdicom.inspect(spec_file).nbytes
    copy = HostToDevice(nbytes, pinned)
    copy()
    _describe(benchmark, spec, spec_file, "h2d_pinned" if pinned else "h2d_pageable", "cuda", nbytes)
    benchmark(copy)


def test_page_cache_read(benchmark, spec, spec_file):
    layout = kvdicom.inspect(spec_file)
    read = PageCacheRead(spec_file, layout.offset, layout.nbytes)
    assert read() == layout.nbytes
    _describe(benchmark, spec, spec_file, "host_read", "cpu", layout.nbytes)
    benchmark(read)


@pytest.mark.cold
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
def test_disk_read(benchmark, spec, spec_file, direct):
    read = DiskRead(spec_file, direct=direct)
    drop_page_cache(spec_file)
    assert read() == read.nbytes
    # Held against the pixel bytes the loaders read, at the whole file's speed.
    pixel_bytes = kvdicom.inspect(spec_file).nbytes
    name = "disk_read_direct" if read.direct else "disk_read_buffered"
    _describe(benchmark, spec, spec_file, name, "cpu", pixel_bytes, page_cache="cold",
              direct_io=read.direct, bytes_read=read.nbytes)
    time_cold(benchmark, spec_file, read)

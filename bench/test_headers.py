"""Benchmarks: the header alone, where the files carry real headers (issue 8's ``inspect`` target).

For each file of the profile whose header is not the minimal one (the ``ct``
slice, and in ``full`` the ``enhanced_mr`` and ``seed`` files), page cache warm:
``pydicom.dcmread(stop_before_pixels=True)`` against ``kvdicom.inspect`` (the
fast header walk, and the layout checks a load does before it reads). Rows use
the case id ``<file case>:header`` so their ``speedup_vs_pydicom`` is inspect's
time against dcmread's; ``pixel_bytes`` holds the header's bytes (up to the
pixel data), so GB/s is the rate at which the header is parsed. Both must agree
on the layout: kvdicom's ``nbytes`` and ``offset`` must be where pydicom finds
the Pixel Data element.
"""

from __future__ import annotations

import pydicom
import pytest

import kvdicom
from dgbench.schema import bench_extra
from fixtures.profiles import profile_specs


def pytest_generate_tests(metafunc):
    if "header_spec" in metafunc.fixturenames:
        specs = [s for s in profile_specs(metafunc.config.getoption("profile")) if s.header != "minimal"]
        metafunc.parametrize("header_spec", specs, ids=[s.case_id for s in specs], scope="session")


@pytest.fixture(scope="session")
def header_file(corpus, header_spec):
    return corpus.ensure(header_spec)


def _record(benchmark, spec, path, loader):
    layout = kvdicom.inspect(path)
    benchmark.extra_info.update(bench_extra(f"{spec.case_id}:header", loader, "cpu", path.stat().st_size,
                                            layout.offset, "warm", ceiling=None))
    return layout


def test_header_pydicom(benchmark, header_spec, header_file):
    _record(benchmark, header_spec, header_file, "pydicom")
    ds = benchmark(pydicom.dcmread, header_file, stop_before_pixels=True)
    assert "PixelData" not in ds and ds.Rows == header_spec.rows


def test_header_kvdicom_inspect(benchmark, header_spec, header_file):
    layout = _record(benchmark, header_spec, header_file, "kvdicom")
    got = benchmark(kvdicom.inspect, header_file)
    assert got == layout
    # the layout points where pydicom finds the pixel data: its value starts at the offset kvdicom reads from
    with pydicom.dcmread(header_file, defer_size=1) as ds:
        element = ds["PixelData"]
        assert element.file_tell == layout.offset and got.nbytes == header_spec.pixel_bytes

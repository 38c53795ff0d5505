"""Benchmarks: a series (a folder of single-frame files) into one volume, page cache warm, and cold.

Each loader reads the whole folder, sorts the slices (GDCM's rule: position on
the slice normal) and returns one volume; ``extra_info['matches_pydicom']``
says whether that volume equals the pydicom loop's, sorted and stacked. Peers
not installed are skipped with the reason. dicomsdl first reads the same files
in a child process, so a native crash becomes a skip, not the session's end.
The I/O ceiling reads every file's pixel range (offsets found beforehand)
concurrently: that is what is left once header work costs nothing.

Cold (``-m cold``, series of at least ``COLD_MIN_BYTES`` of pixels): every file's page cache is dropped
before each round (``bench.ceilings.time_cold``, verified per file, else the row is ``unverified``) for
pydicom and kvdicom, held against every file read whole from the disk with O_DIRECT, in the same session
(``bench.series_disk.time_disk_ceiling``; ``dgbench.schema.series_ceiling_for`` names each row's ceiling).
"""

from __future__ import annotations

import numpy as np
import pytest

import kvdicom
from bench import peers
from bench.ceilings import SeriesRead, time_cold
from bench.rounds import timed
from bench.series_disk import time_disk_ceiling
from dgbench.schema import bench_extra, ceiling_loader, series_ceiling_for
from fixtures.oracle import mismatch, to_host

RESCALE = pytest.mark.parametrize("rescale", [False, True], ids=["stored", "rescaled"])


@pytest.fixture(scope="session")
def series_layouts(series_dir):
    """(path, layout) of every file, in the reference's slice order, found once per session (untimed)."""
    files = peers.series_files(series_dir)
    layouts = {p: kvdicom.inspect(p) for p in files}
    order = sorted(files, key=lambda p: _sort_key(p))
    return [(p, layouts[p]) for p in order]


def _sort_key(path):
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return peers.slice_sort_key(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"),
                                ds.get("InstanceNumber"))


@pytest.fixture(scope="session")
def series_reference(series_dir):
    """The pydicom loop's volume, stored values, computed once per session."""
    return peers.pydicom_series(series_dir)


@pytest.fixture(scope="session")
def series_reference_rescaled(series_dir):
    """The same with each slice's modality LUT applied (``apply_modality_lut``)."""
    return peers.pydicom_series(series_dir, rescale=True)


def _reference(request, rescale: bool):
    return request.getfixturevalue("series_reference_rescaled" if rescale else "series_reference")


def _record(benchmark, spec, layouts, loader, device, output, reference, page_cache="warm", **extra):
    """Describe this benchmark in ``extra_info``; return why its volume differs from pydicom's, if it does."""
    problem = None if output is None else mismatch(output, reference)
    benchmark.extra_info.update(bench_extra(
        spec.case_id, loader, device, sum(p.stat().st_size for p, _ in layouts),
        sum(layout.nbytes for _, layout in layouts), page_cache,
        matches_pydicom=None if output is None else problem is None,
        ceiling=series_ceiling_for(device, page_cache),
        slices=spec.slices, files=len(layouts), **extra,
    ))
    return problem


def _values_match(output, reference) -> bool:
    """Same values and shape, whatever the dtype (for peers that rescale into their own dtype)."""
    host = to_host(output)
    return host.shape == reference.shape and bool(np.array_equal(host.astype(np.float64), reference.astype(np.float64)))


def _sitk():
    try:
        import SimpleITK  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"SimpleITK is not installed ({exc})")


# --- pydicom: the reference loop ----------------------------------------------------------------


@RESCALE
def test_series_pydicom_cpu(benchmark, request, series_spec, series_dir, series_layouts, rescale):
    ref = _reference(request, rescale)
    _record(benchmark, series_spec, series_layouts, "pydicom+rescale" if rescale else "pydicom", "cpu",
            peers.pydicom_series(series_dir, rescale), ref, rescale=rescale)
    benchmark(peers.pydicom_series, series_dir, rescale)


@pytest.mark.gpu
def test_series_pydicom_to_cupy(benchmark, cuda, series_spec, series_dir, series_layouts, series_reference):
    _record(benchmark, series_spec, series_layouts, "pydicom+cupy", "cuda",
            peers.pydicom_series_to_cupy(series_dir), series_reference)
    benchmark(peers.synced(cuda, peers.pydicom_series_to_cupy, series_dir))


# --- kvdicom.load_series --------------------------------------------------------------------------


@RESCALE
def test_series_kvdicom_cpu(benchmark, request, series_spec, series_dir, series_layouts, rescale):
    load_series = peers.load_series_or_skip()
    volume, info = load_series(series_dir, "cpu", rescale=rescale)
    problem = _record(benchmark, series_spec, series_layouts, "kvdicom+rescale" if rescale else "kvdicom", "cpu",
                      volume, _reference(request, rescale), rescale=rescale, sort_rule=info.sort_rule)
    assert problem is None, problem
    benchmark(load_series, series_dir, "cpu", rescale=rescale)


@pytest.mark.gpu
@RESCALE
def test_series_kvdicom_gpu(benchmark, request, cuda, series_spec, series_dir, series_layouts, rescale):
    load_series = peers.load_series_or_skip()
    volume, info = load_series(series_dir, "cuda", rescale=rescale)
    problem = _record(benchmark, series_spec, series_layouts, "kvdicom+rescale" if rescale else "kvdicom", "cuda",
                      volume, _reference(request, rescale), rescale=rescale, sort_rule=info.sort_rule)
    assert problem is None, problem
    del volume
    benchmark(peers.synced(cuda, load_series, series_dir, "cuda", rescale=rescale))


# --- peers ----------------------------------------------------------------------------------------


def test_series_dicomsdl_cpu(benchmark, series_spec, series_dir, series_layouts, series_reference):
    peers.skip_unless_dicomsdl_reads_series(series_dir)
    _record(benchmark, series_spec, series_layouts, "dicomsdl", "cpu", peers.dicomsdl_series(series_dir),
            series_reference)
    benchmark(peers.dicomsdl_series, series_dir)


@pytest.mark.gpu
def test_series_dicomsdl_to_cupy(benchmark, cuda, series_spec, series_dir, series_layouts, series_reference):
    peers.skip_unless_dicomsdl_reads_series(series_dir)
    _record(benchmark, series_spec, series_layouts, "dicomsdl+cupy", "cuda",
            peers.dicomsdl_series_to_cupy(series_dir), series_reference)
    benchmark(peers.synced(cuda, peers.dicomsdl_series_to_cupy, series_dir))


def test_series_sitk_cpu(benchmark, series_spec, series_dir, series_layouts, series_reference_rescaled):
    _sitk()
    out = peers.sitk_series(series_dir)
    # SimpleITK rescales into a dtype of its choosing: compared by value with pydicom's rescaled volume.
    _record(benchmark, series_spec, series_layouts, "sitk", "cpu", None, series_reference_rescaled,
            rescale=True, matches_pydicom_values=_values_match(out, series_reference_rescaled),
            output_dtype=str(out.dtype))
    benchmark(peers.sitk_series, series_dir)


@pytest.mark.gpu
def test_series_sitk_to_cupy(benchmark, cuda, series_spec, series_dir, series_layouts, series_reference_rescaled):
    _sitk()
    out = peers.sitk_series_to_cupy(series_dir)
    _record(benchmark, series_spec, series_layouts, "sitk+cupy", "cuda", None, series_reference_rescaled,
            rescale=True, matches_pydicom_values=_values_match(out, series_reference_rescaled),
            output_dtype=str(out.dtype))
    del out
    benchmark(peers.synced(cuda, peers.sitk_series_to_cupy, series_dir))


def test_series_monai_cpu(benchmark, series_spec, series_dir, series_layouts, series_reference):
    try:
        load = peers.monai_series_loader()
    except ImportError as exc:
        pytest.skip(f"MONAI is not installed ({exc})")
    timed(benchmark, load, str(series_dir))  # 4.2 s a call on the 256-slice CT series (H200): three rounds
    # MONAI returns its own layout (spatial axes transposed, rescale applied): no element-wise verdict.
    _record(benchmark, series_spec, series_layouts, "monai", "cpu", None, series_reference, rescale=True)


# --- the I/O ceiling --------------------------------------------------------------------------------


def _ceiling(benchmark, spec, layouts, device, reference=None):
    ranges = [(str(p), layout.offset, layout.nbytes) for p, layout in layouts]
    read = SeriesRead(ranges, device)
    try:
        assert read() == read.nbytes
        if reference is not None and spec.transfer_syntax != "explicit_be" and spec.bits_stored == spec.bits_allocated:
            # The ranges really are the volume's pixels, in slice order.
            got = np.frombuffer(read.host, dtype=reference.dtype.newbyteorder("<")).reshape(reference.shape)
            assert np.array_equal(got, reference), "the ceiling read other bytes than the volume's pixels"
        benchmark.extra_info.update(bench_extra(
            spec.case_id, ceiling_loader(series_ceiling_for(device, "warm")), device,
            sum(p.stat().st_size for p, _ in layouts), read.nbytes, "warm", slices=spec.slices, files=len(layouts),
        ))
        benchmark(read)
    finally:
        read.close()


def test_series_io_ceiling_cpu(benchmark, series_spec, series_layouts, series_reference):
    _ceiling(benchmark, series_spec, series_layouts, "cpu", series_reference)


@pytest.mark.gpu
def test_series_io_ceiling_gpu(benchmark, cuda, series_spec, series_layouts):
    _ceiling(benchmark, series_spec, series_layouts, "cuda")


# --- cold page cache: every file of the series dropped before each round ----------------------------


def _paths(layouts) -> list:
    return [p for p, _ in layouts]


@pytest.mark.cold
def test_series_pydicom_cpu_cold(benchmark, series_spec, series_dir, series_layouts, series_reference):
    _record(benchmark, series_spec, series_layouts, "pydicom", "cpu", peers.pydicom_series(series_dir),
            series_reference, page_cache="cold", rescale=False)
    time_cold(benchmark, _paths(series_layouts), lambda: peers.pydicom_series(series_dir))


@pytest.mark.cold
def test_series_kvdicom_cpu_cold(benchmark, series_spec, series_dir, series_layouts, series_reference):
    load_series = peers.load_series_or_skip()
    volume, info = load_series(series_dir, "cpu")
    problem = _record(benchmark, series_spec, series_layouts, "kvdicom", "cpu", volume, series_reference,
                      page_cache="cold", rescale=False, sort_rule=info.sort_rule)
    assert problem is None, problem
    time_cold(benchmark, _paths(series_layouts), lambda: load_series(series_dir, "cpu"))


@pytest.mark.gpu
@pytest.mark.cold
def test_series_kvdicom_gpu_cold(benchmark, cuda, series_spec, series_dir, series_layouts, series_reference):
    load_series = peers.load_series_or_skip()
    volume, info = load_series(series_dir, "cuda")
    problem = _record(benchmark, series_spec, series_layouts, "kvdicom", "cuda", volume, series_reference,
                      page_cache="cold", rescale=False, sort_rule=info.sort_rule)
    assert problem is None, problem
    del volume
    time_cold(benchmark, _paths(series_layouts), peers.synced(cuda, load_series, series_dir, "cuda"))


def _disk_ceiling(benchmark, spec, layouts, device, direct=True):
    time_disk_ceiling(benchmark, spec.case_id, _paths(layouts), sum(layout.nbytes for _, layout in layouts), device,
                      direct=direct, slices=spec.slices, files=len(layouts))


@pytest.mark.cold
def test_series_io_ceiling_cpu_cold(benchmark, series_spec, series_layouts):
    _disk_ceiling(benchmark, series_spec, series_layouts, "cpu")


@pytest.mark.cold
def test_series_io_ceiling_cpu_cold_buffered(benchmark, series_spec, series_layouts):
    """The same files read whole through the page cache: the bound of a loader that reads as kvdicom does
    (buffered), beside the O_DIRECT read its cold rows are held against."""
    _disk_ceiling(benchmark, series_spec, series_layouts, "cpu", direct=False)


@pytest.mark.gpu
@pytest.mark.cold
def test_series_io_ceiling_gpu_cold(benchmark, cuda, series_spec, series_layouts):
    _disk_ceiling(benchmark, series_spec, series_layouts, "cuda")

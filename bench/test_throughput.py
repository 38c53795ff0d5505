"""Benchmarks: each loader on each file of the profile, page cache warm, and cold on the larger files.

Every benchmark loads its file once before timing (warming the page cache,
CuPy's pool and KvikIO) and records in ``extra_info`` whether that output
equals pydicom's, so a fast wrong loader shows up as wrong, not just fast.
GPU rounds end with a device synchronize inside the timed call.
"""

from __future__ import annotations

import pytest

import kvdicom
from bench import peers
from bench.ceilings import time_cold
from dgbench.schema import bench_extra
from fixtures.oracle import mismatch, pydicom_pixels


@pytest.fixture(scope="session")
def reference(spec_file):
    """pydicom's array for the current file, computed once per session."""
    return pydicom_pixels(spec_file)


def _record(benchmark, spec, path, loader, device, output, reference, page_cache="warm", **extra):
    """Describe this benchmark in ``extra_info``; return why its output differs from pydicom's, if it does.

    ``output=None`` records no verdict (for loaders whose layout differs by design).
    """
    problem = None if output is None else mismatch(output, reference)
    benchmark.extra_info.update(bench_extra(
        spec.case_id, loader, device, path.stat().st_size, kvdicom.inspect(path).nbytes, page_cache,
        matches_pydicom=None if output is None else problem is None, **extra,
    ))
    return problem


def _kvikio_plan(path):
    from kvdicom._io.tuning import plan_read

    plan = plan_read(kvdicom.inspect(path).nbytes)
    return {"kvikio_threads": plan.threads, "kvikio_task_size": plan.task_size}


# --- warm page cache -------------------------------------------------------------------------


def test_pydicom_cpu(benchmark, spec, spec_file, reference):
    _record(benchmark, spec, spec_file, "pydicom", "cpu", peers.pydicom_cpu(spec_file), reference)
    benchmark(peers.pydicom_cpu, spec_file)


def test_kvdicom_cpu(benchmark, spec, spec_file, reference):
    problem = _record(benchmark, spec, spec_file, "kvdicom", "cpu", kvdicom.load(spec_file, "cpu"), reference)
    assert problem is None, problem
    benchmark(kvdicom.load, spec_file, "cpu")


@pytest.mark.gpu
def test_kvdicom_gpu(benchmark, cuda, spec, spec_file, reference):
    out = kvdicom.load(spec_file, "cuda")
    problem = _record(benchmark, spec, spec_file, "kvdicom", "cuda", out, reference, **_kvikio_plan(spec_file))
    assert problem is None, problem
    del out
    benchmark(peers.synced(cuda, kvdicom.load, spec_file, "cuda"))


def test_kvdicom_cpu_out(benchmark, spec, spec_file, reference):
    """kvdicom CPU into one reused array (``out=``): no fresh pages to fault in on each load."""
    import numpy as np

    layout = kvdicom.inspect(spec_file)
    out = np.empty(layout.shape, dtype=layout.dtype)
    problem = _record(benchmark, spec, spec_file, "kvdicom_out", "cpu", kvdicom.load(spec_file, "cpu", out=out),
                      reference)
    assert problem is None, problem
    benchmark(kvdicom.load, spec_file, "cpu", out=out)


@pytest.mark.gpu
def test_kvdicom_gpu_out(benchmark, cuda, spec, spec_file, reference):
    """kvdicom GPU into one reused CuPy array (``out=``)."""
    layout = kvdicom.inspect(spec_file)
    out = cuda.empty(layout.shape, dtype=layout.dtype)
    problem = _record(benchmark, spec, spec_file, "kvdicom_out", "cuda", kvdicom.load(spec_file, "cuda", out=out),
                      reference, **_kvikio_plan(spec_file))
    assert problem is None, problem

    def run():
        kvdicom.load(spec_file, "cuda", out=out)
        cuda.cuda.Device().synchronize()

    benchmark(run)


@pytest.mark.gpu
def test_pydicom_to_cupy(benchmark, cuda, spec, spec_file, reference):
    _record(benchmark, spec, spec_file, "pydicom+cupy", "cuda", peers.pydicom_to_cupy(spec_file), reference)
    benchmark(peers.synced(cuda, peers.pydicom_to_cupy, spec_file))


@pytest.mark.gpu
def test_seed_notebook_gpu(benchmark, cuda, spec, spec_file, reference):
    import kvikio.defaults

    with kvikio.defaults.set({"num_threads": peers.SEED_KVIKIO_THREADS}):
        try:
            out = peers.seed_notebook_gpu(spec_file)
        except ValueError as exc:
            pytest.skip(f"the seed loader cannot read {spec.case_id}: {exc}")
        _record(benchmark, spec, spec_file, "seed", "cuda", out, reference, kvikio_threads=peers.SEED_KVIKIO_THREADS)
        del out
        benchmark(peers.synced(cuda, peers.seed_notebook_gpu, spec_file))


@pytest.mark.gpu
def test_monai_gpu(benchmark, cuda, spec, spec_file, reference):
    try:
        reader = peers.monai_reader(to_gpu=True)
    except ImportError as exc:
        pytest.skip(f"MONAI is not installed ({exc})")
    peers.monai_gpu(reader, spec_file)
    # MONAI returns its own layout (spatial axes transposed, optional rescale), so
    # its output is not compared element by element with pydicom's.
    _record(benchmark, spec, spec_file, "monai", "cuda", None, reference)
    benchmark(peers.synced(cuda, peers.monai_gpu, reader, spec_file))


def _dicomsdl_or_skip(spec, path):
    try:
        import dicomsdl  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"dicomsdl is not installed ({exc})")
    crash = peers.dicomsdl_crash([path])
    if crash:
        pytest.skip(f"{spec.case_id}: {crash}")


def test_dicomsdl_cpu(benchmark, spec, spec_file, reference):
    _dicomsdl_or_skip(spec, spec_file)
    _record(benchmark, spec, spec_file, "dicomsdl", "cpu", peers.dicomsdl_cpu(spec_file), reference)
    benchmark(peers.dicomsdl_cpu, spec_file)


@pytest.mark.gpu
def test_dicomsdl_to_cupy(benchmark, cuda, spec, spec_file, reference):
    _dicomsdl_or_skip(spec, spec_file)
    _record(benchmark, spec, spec_file, "dicomsdl+cupy", "cuda", peers.dicomsdl_to_cupy(spec_file), reference)
    benchmark(peers.synced(cuda, peers.dicomsdl_to_cupy, spec_file))


# --- cold page cache ------------------------------------------------------------------------


@pytest.mark.cold
def test_pydicom_cpu_cold(benchmark, spec, spec_file, reference):
    _record(benchmark, spec, spec_file, "pydicom", "cpu", peers.pydicom_cpu(spec_file), reference, page_cache="cold")
    time_cold(benchmark, spec_file, lambda: peers.pydicom_cpu(spec_file))


@pytest.mark.cold
def test_kvdicom_cpu_cold(benchmark, spec, spec_file, reference):
    problem = _record(benchmark, spec, spec_file, "kvdicom", "cpu", kvdicom.load(spec_file, "cpu"), reference,
                      page_cache="cold")
    assert problem is None, problem
    time_cold(benchmark, spec_file, lambda: kvdicom.load(spec_file, "cpu"))


@pytest.mark.gpu
@pytest.mark.cold
def test_kvdicom_gpu_cold(benchmark, cuda, spec, spec_file, reference):
    out = kvdicom.load(spec_file, "cuda")
    problem = _record(benchmark, spec, spec_file, "kvdicom", "cuda", out, reference, page_cache="cold",
                      **_kvikio_plan(spec_file))
    assert problem is None, problem
    del out
    time_cold(benchmark, spec_file, peers.synced(cuda, kvdicom.load, spec_file, "cuda"))

"""Benchmarks: each loader on each file of the profile, page cache warm.

Every benchmark loads its file once before timing (warming the page cache,
CuPy's pool and KvikIO) and records in ``extra_info`` whether that output
equals pydicom's, so a fast wrong loader shows up as wrong, not just fast.
"""

from __future__ import annotations

import pytest

import kvdicom
from bench import peers
from bench.reference import mismatch, pydicom_pixels


@pytest.fixture(scope="session")
def reference(spec_file):
    """pydicom's array for the current file, computed once per session."""
    return pydicom_pixels(spec_file)


def _record(benchmark, spec, path, loader, device, output, reference, **extra):
    layout = kvdicom.inspect(path)
    problem = mismatch(output, reference)
    benchmark.extra_info.update(
        case=spec.case_id,
        loader=loader,
        device=device,
        file_bytes=path.stat().st_size,
        pixel_bytes=layout.nbytes,
        page_cache="warm",
        matches_pydicom=problem is None,
        kvikio_threads=None,
        kvikio_task_size=None,
    )
    benchmark.extra_info.update(extra)
    return problem


def _kvikio_extra(nbytes):
    from kvdicom.io_tuning import plan_read

    plan = plan_read(nbytes)
    return {"kvikio_threads": plan.threads, "kvikio_task_size": plan.task_size, "ceiling": "h2d_pinned"}


def test_pydicom_cpu(benchmark, spec, spec_file, reference):
    out = peers.pydicom_cpu(spec_file)
    _record(benchmark, spec, spec_file, "pydicom", "cpu", out, reference)
    benchmark(peers.pydicom_cpu, spec_file)


def test_kvdicom_cpu(benchmark, spec, spec_file, reference):
    out = kvdicom.load(spec_file, "cpu")
    problem = _record(benchmark, spec, spec_file, "kvdicom", "cpu", out, reference)
    assert problem is None, problem
    benchmark(kvdicom.load, spec_file, "cpu")


@pytest.mark.gpu
def test_kvdicom_gpu(benchmark, cuda, spec, spec_file, reference):
    out = kvdicom.load(spec_file, "cuda")
    layout = kvdicom.inspect(spec_file)
    problem = _record(benchmark, spec, spec_file, "kvdicom", "cuda", out, reference, **_kvikio_extra(layout.nbytes))
    assert problem is None, problem
    del out

    def load_and_sync():
        arr = kvdicom.load(spec_file, "cuda")
        cuda.cuda.Device().synchronize()
        return arr

    benchmark(load_and_sync)


@pytest.mark.gpu
def test_seed_notebook_gpu(benchmark, cuda, spec, spec_file, reference):
    import kvikio.defaults

    with kvikio.defaults.set({"num_threads": peers.SEED_KVIKIO_THREADS}):
        try:
            out = peers.seed_notebook_gpu(spec_file)
        except ValueError as exc:
            pytest.skip(f"the seed loader cannot read {spec.case_id}: {exc}")
        _record(benchmark, spec, spec_file, "seed", "cuda", out, reference,
                kvikio_threads=peers.SEED_KVIKIO_THREADS, ceiling="h2d_pinned")
        del out

        def load_and_sync():
            arr = peers.seed_notebook_gpu(spec_file)
            cuda.cuda.Device().synchronize()
            return arr

        benchmark(load_and_sync)

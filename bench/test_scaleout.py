"""A dataset of series through Dask-CUDA (``kvdicom.dask.map_series``) on 1, 2, … G GPUs of one host.

Profile ``scaleout`` only (``./dgb bench --profile scaleout -k scaleout``): the dataset is :data:`SERIES_COUNT`
loads of the profile's CT series (page cache warm), the user function a reduction on the GPU. Rows per GPU
count G: kvdicom through Dask, the same Dask job with pydicom + ``cupy.asarray`` in the task (the baseline
peer), and, on one GPU, the plain ``load_series`` loop the Dask path is held against. ``extra_info`` records
``gpus`` and ``series``; series/s and GB/s follow from the median. The machine id records the GPU model; runs
on machines of several GPUs carry ``gpus`` per row.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bench import peers
from dgbench.schema import bench_extra
from fixtures.profiles import series_profile_specs

#: Series loads in the dataset (the same folder, warm: the GPUs' rate, not the disk's, is what scales).
SERIES_COUNT = 8


def _gpu_counts() -> list[int]:
    try:
        import cupy

        visible = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001  no GPU stack: the tests skip on the cuda fixture
        visible = 1
    return sorted({1, 2, 4, visible} & set(range(1, visible + 1)))


def pytest_generate_tests(metafunc):
    if "scaleout_gpus" in metafunc.fixturenames:
        metafunc.parametrize("scaleout_gpus", _gpu_counts(), ids=lambda g: f"{g}gpu", scope="module")


@pytest.fixture(scope="module")
def scaleout_dir(request, corpus):
    if request.config.getoption("profile") != "scaleout":
        pytest.skip("scale-out rows run in their own profile: --profile scaleout")
    spec = max(series_profile_specs("full"), key=lambda s: s.pixel_bytes)
    return spec, corpus.ensure_series(spec)


@pytest.fixture(scope="module")
def cluster(cuda, scaleout_gpus):
    dask_cuda = pytest.importorskip("dask_cuda", reason="dask-cuda is not installed (../shared/device/wheels.sh dask)")
    distributed = pytest.importorskip("distributed")
    devices = ",".join(str(i) for i in range(scaleout_gpus))
    with dask_cuda.LocalCUDACluster(CUDA_VISIBLE_DEVICES=devices, dashboard_address=None, silence_logs=40) as c, \
            distributed.Client(c) as client:
        yield client


def _gpu_sum(volume) -> float:
    return float(volume.sum(dtype="float64"))


def _pydicom_cupy(row) -> float:
    import cupy

    volume = cupy.asarray(peers.pydicom_series(row.folder))
    return float(volume.sum(dtype="float64"))


def _record(benchmark, spec, folder, loader, gpus, rows):
    files = peers.series_files(folder)
    benchmark.extra_info.update(bench_extra(
        spec.case_id, loader, "cuda", sum(p.stat().st_size for p in files) * len(rows),
        rows[0].decoded_bytes * len(rows), "warm", matches_pydicom=None, slices=spec.slices, files=len(files),
        gpus=gpus, series=len(rows)))


def test_scaleout_kvdicom_map_series(benchmark, scaleout_dir, cluster, scaleout_gpus):
    from kvdicom import dask as kvdask

    spec, folder = scaleout_dir
    rows = [r for r in kvdask.scan(folder) if r.problem is None] * SERIES_COUNT
    got = benchmark.pedantic(kvdask.map_series, args=(_gpu_sum, rows), kwargs={"client": cluster}, rounds=3,
                             warmup_rounds=1)
    expected = float(peers.pydicom_series(folder).astype(np.float64).sum())
    assert got == [expected] * len(rows)
    _record(benchmark, spec, folder, "kvdicom", scaleout_gpus, rows)


def test_scaleout_pydicom_cupy_in_dask(benchmark, scaleout_dir, cluster, scaleout_gpus):
    from kvdicom import dask as kvdask

    spec, folder = scaleout_dir
    rows = [r for r in kvdask.scan(folder) if r.problem is None] * SERIES_COUNT
    benchmark.pedantic(lambda: cluster.gather(cluster.map(_pydicom_cupy, rows, pure=False)), rounds=1,
                       warmup_rounds=0)
    _record(benchmark, spec, folder, "pydicom+cupy", scaleout_gpus, rows)


def test_scaleout_plain_load_series_loop(benchmark, scaleout_dir, cuda):
    import kvdicom
    from kvdicom import dask as kvdask

    spec, folder = scaleout_dir
    rows = [r for r in kvdask.scan(folder) if r.problem is None] * SERIES_COUNT

    def loop():
        return [_gpu_sum(kvdicom.load_series(folder, "cuda")[0]) for _ in rows]

    benchmark.pedantic(loop, rounds=3, warmup_rounds=1)
    _record(benchmark, spec, folder, "kvdicom", 1, rows)
    benchmark.extra_info["decoder"] = f"plain load_series loop in one process (pid {os.getpid()})"

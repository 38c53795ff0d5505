"""A dataset of series through Dask-CUDA (``kvdicom.dask.map_series``) on 1, 2, … G GPUs of one host.

Profile ``scaleout`` only (``./dgb bench --profile scaleout -k scaleout``). Two datasets, each
:data:`SERIES_COUNT` loads of one of the full profile's 256 × 512² CT series, page cache warm: uncompressed
(``ct``) and HTJ2K lossless (``htj2k``). The user function is a reduction on the GPU. Rows per GPU count G
(``extra_info``: ``gpus``, ``series``; derived: ``series_per_s``, ``scaling_efficiency`` against the same
loader on 1 GPU of the same run):

* ``kvdicom``: ``map_series`` on a ``LocalCUDACluster`` of G workers;
* ``pydicom+cupy``: the same Dask job with pydicom + ``cupy.asarray`` in the task (the baseline peer);
* ``kvdicom-loop`` (1 GPU): the plain ``load_series`` loop in this process, which the Dask path is held against;
* ``ceiling:dataset_host_read``: every file of the dataset read whole from the page cache by the G worker
  processes, one series a task, each series' files read side by side by the worker's share of the host's
  cores (the uncompressed bound; read one after the other, as before run 0056, it was slower than
  ``load_series``, whose header workers read the files side by side);
* ``ceiling:dataset_decode`` (HTJ2K): each series' codestreams, already in its worker's memory, decoded by
  nvImageCodec in one batch on that worker's GPU (the compressed bound).

The machine id records the GPU count (``dgbench.machine``), so 1-, 2- and 4-GPU hosts are separate machines.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bench import peers
from dgbench.schema import bench_extra, ceiling_loader
from fixtures.profiles import compressed_series_specs, series_profile_specs

#: Series loads in the dataset (the same folder, warm: the GPUs' rate, not the disk's, is what scales): the
#: issue's own example of a dataset, 32 x 256 x 512². Runs 0055 and before had 8, where Dask's fixed cost of a
#: job (about 20 ms from ``client.map`` to the first task's start on the H200 device's LocalCUDACluster, then
#: about 1.1 ms between tasks; 8 empty tasks took 29 ms) was 10-15% of an 8-series CT job.
SERIES_COUNT = 32
DATASETS = ("ct", "htj2k")


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
    if "dataset" in metafunc.fixturenames:
        metafunc.parametrize("dataset", DATASETS, scope="module")


def dataset_spec(dataset: str):
    """The full profile's largest series of the dataset's kind."""
    if dataset == "ct":
        return max(series_profile_specs("full"), key=lambda s: s.pixel_bytes)
    return max((s for s in compressed_series_specs("full") if s.transfer_syntax == "htj2k_lossless"),
               key=lambda s: s.pixel_bytes)


@pytest.fixture(scope="module")
def scaleout_dir(request, corpus, dataset):
    if request.config.getoption("profile") != "scaleout":
        pytest.skip("scale-out rows run in their own profile: --profile scaleout")
    spec = dataset_spec(dataset)
    return spec, corpus.ensure_series(spec)


@pytest.fixture(scope="module")
def cluster(cuda, scaleout_gpus):
    dask_cuda = pytest.importorskip("dask_cuda", reason="dask-cuda is not installed (../shared/device/wheels.sh dask)")
    distributed = pytest.importorskip("distributed")
    devices = ",".join(str(i) for i in range(scaleout_gpus))
    with dask_cuda.LocalCUDACluster(CUDA_VISIBLE_DEVICES=devices, dashboard_address=None, silence_logs=40) as c, \
            distributed.Client(c) as client:
        yield client


def _rows(folder):
    from kvdicom import dask as kvdask

    return [r for r in kvdask.scan(folder) if r.problem is None] * SERIES_COUNT


def _gpu_sum(volume) -> float:
    return float(volume.sum(dtype="float64"))


def _pydicom_cupy(row) -> float:
    import cupy

    volume = cupy.asarray(peers.pydicom_series(row.folder))
    return float(volume.sum(dtype="float64"))


def _ceiling_name(dataset: str) -> str:
    return "dataset_decode" if dataset == "htj2k" else "dataset_host_read"


def _record(benchmark, spec, folder, loader, gpus, rows, dataset, **extra):
    files = peers.series_files(folder)
    if not loader.startswith("ceiling:"):
        extra.setdefault("ceiling", _ceiling_name(dataset))
    benchmark.extra_info.update(bench_extra(
        spec.case_id, loader, "cuda", sum(p.stat().st_size for p in files) * len(rows),
        rows[0].decoded_bytes * len(rows), "warm", slices=spec.slices, files=len(files), gpus=gpus,
        series=len(rows), **extra))


def _expected_sum(folder) -> float:
    return float(peers.pydicom_series(folder).astype(np.float64).sum())


def test_scaleout_kvdicom_map_series(benchmark, dataset, scaleout_dir, cluster, scaleout_gpus):
    from kvdicom import dask as kvdask

    spec, folder = scaleout_dir
    rows = _rows(folder)
    got = benchmark.pedantic(kvdask.map_series, args=(_gpu_sum, rows), kwargs={"client": cluster}, rounds=3,
                             warmup_rounds=1)
    assert got == [_expected_sum(folder)] * len(rows)
    _record(benchmark, spec, folder, "kvdicom", scaleout_gpus, rows, dataset, matches_pydicom=True)


def test_scaleout_pydicom_cupy_in_dask(benchmark, dataset, scaleout_dir, cluster, scaleout_gpus):
    spec, folder = scaleout_dir
    rows = _rows(folder)
    got = benchmark.pedantic(lambda: cluster.gather(cluster.map(_pydicom_cupy, rows, pure=False)), rounds=1,
                             warmup_rounds=0)
    assert got == [_expected_sum(folder)] * len(rows)
    _record(benchmark, spec, folder, "pydicom+cupy", scaleout_gpus, rows, dataset, matches_pydicom=True)


def test_scaleout_plain_load_series_loop(benchmark, dataset, scaleout_dir, cuda):
    import kvdicom

    spec, folder = scaleout_dir
    rows = _rows(folder)

    def loop():
        return [_gpu_sum(kvdicom.load_series(folder, "cuda")[0]) for _ in rows]

    got = benchmark.pedantic(loop, rounds=3, warmup_rounds=1)
    assert got == [_expected_sum(folder)] * len(rows)
    _record(benchmark, spec, folder, "kvdicom-loop", 1, rows, dataset, matches_pydicom=True,
            decoder=f"plain load_series loop in one process (pid {os.getpid()})")


class WholeFiles:
    """A series' files and, built in the worker on first use (untimed: the benchmark's warm-up round), the
    reader of all of them at once with ``threads`` threads (:class:`bench.ceilings.SeriesRead` of whole
    files into one host buffer); the reader stays in the worker, never sent back."""

    def __init__(self, paths: list[str], threads: int):
        self.paths, self.threads, self.read = paths, threads, None

    def __getstate__(self):
        return {"paths": self.paths, "threads": self.threads, "read": None}


def _whole_files(paths: list[str], threads: int) -> WholeFiles:
    return WholeFiles(paths, threads)


def _read_whole_files(files: WholeFiles) -> int:
    """Every file of the series read whole from the page cache, side by side (one worker's share)."""
    from bench.ceilings import SeriesRead

    if files.read is None:
        files.read = SeriesRead([(p, 0, os.stat(p).st_size) for p in files.paths], "cpu", threads=files.threads)
    return files.read()


def _threads_per_worker(workers: int) -> int:
    """A worker's share of this host's cores, as kvdicom.dask gives each task (at most MAX_THREADS)."""
    from kvdicom.settings import MAX_THREADS

    return max(1, min(MAX_THREADS, len(os.sched_getaffinity(0)) // max(1, workers)))


def test_scaleout_ceiling_host_read(benchmark, dataset, scaleout_dir, cluster, scaleout_gpus):
    """The uncompressed bound: the dataset's bytes read from the page cache by the cluster's G processes."""
    spec, folder = scaleout_dir
    rows = _rows(folder)
    threads = _threads_per_worker(scaleout_gpus)
    files = cluster.map(_whole_files, [[str(p) for p in row.paths] for row in rows], threads=threads, pure=False)
    expected = sum(os.stat(p).st_size for row in rows for p in row.paths)
    got = benchmark.pedantic(lambda: sum(cluster.gather(cluster.map(_read_whole_files, files, pure=False))),
                             rounds=3, warmup_rounds=1)
    assert got == expected
    _record(benchmark, spec, folder, ceiling_loader("dataset_host_read"), scaleout_gpus, rows, dataset,
            decoder=f"every file read whole by {threads} threads per series, one series a task on {scaleout_gpus} "
                    f"worker processes")


class Codestreams:
    """A series' codestreams and their batch plan, held in one worker's memory; the nvImageCodec decode of them
    is built there on first use (untimed) and kept with them, never sent back (it holds CUDA objects)."""

    def __init__(self, frames: list, how):
        self.frames, self.how, self.decode = frames, how, None

    def __getstate__(self):
        return {"frames": self.frames, "how": self.how, "decode": None}


def _load_codestreams(paths: list[str]) -> Codestreams:
    """A series' codestreams read into this worker's memory (untimed), with the GPU plan of their batch."""
    import kvdicom
    from kvdicom._codecs import gpu_codec, route
    from kvdicom._header import compressed

    layouts = [kvdicom.inspect(p) for p in paths]
    frames, infos = [], []
    for layout in layouts:
        _, found = compressed.read_frames(layout)
        # uint8 arrays: what nvImageCodec's CodeStream takes, and what pickles to the worker
        frames += [np.frombuffer(bytes(f), dtype=np.uint8) for f in found]
        infos += compressed.check_frames(layout, found)
    return Codestreams(frames, gpu_codec.plan(route.as_batch(layouts[0], len(frames)), infos))


def _decode_in_memory(loaded: Codestreams) -> int:
    """One nvImageCodec batch of a series' codestreams into this worker's GPU, synchronized (bench.ceilings)."""
    from bench.ceilings import GpuDecode

    if loaded.decode is None:
        loaded.decode = GpuDecode(loaded.frames, loaded.how)
    return loaded.decode()


def test_scaleout_ceiling_decode(benchmark, dataset, scaleout_dir, cluster, scaleout_gpus):
    """The compressed bound: each series' codestreams, in its worker's memory, decoded in one batch on its GPU."""
    if dataset != "htj2k":
        pytest.skip("the decode ceiling is for the compressed dataset")
    spec, folder = scaleout_dir
    rows = _rows(folder)
    loaded = cluster.map(_load_codestreams, [[str(p) for p in row.paths] for row in rows], pure=False)
    plan = cluster.gather(loaded[0]).how
    if plan.route != "gpu":
        pytest.skip(f"nvImageCodec does not decode this dataset: {plan.reason}")
    cluster.gather(cluster.map(_decode_in_memory, loaded, pure=False))  # code streams built, decoder warm

    def decode_all():
        return sum(cluster.gather(cluster.map(_decode_in_memory, loaded, pure=False)))

    got = benchmark.pedantic(decode_all, rounds=3, warmup_rounds=1)
    assert got == len(rows) * spec.slices
    _record(benchmark, spec, folder, ceiling_loader("dataset_decode"), scaleout_gpus, rows, dataset,
            decoder=f"nvimgcodec: one Decoder.decode of {spec.slices} frames a series, codestreams in the "
                    f"memory of each of {scaleout_gpus} workers")

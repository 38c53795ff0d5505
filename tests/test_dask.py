"""kvdicom.dask on a real Dask cluster of worker processes (daemonic, as Dask's are): scan, from_series and
map_series equal load_series per series; a refused series is a row, then the DicomLoadError of its task; a
worker killed mid-job is retried by Dask, never a wrong result. GPU variants run on a LocalCUDACluster."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import kvdicom
from fixtures.series import SeriesSpec, write_series
from fixtures.spec import DicomSpec
from fixtures.writer import write_dicom

distributed = pytest.importorskip("distributed", reason="Dask is not installed (pip install 'kvdicom[dask]')")
pytest.importorskip("dask.array", reason="dask[array] is not installed")

from kvdicom import dask as kvdask  # noqa: E402

SPECS = [SeriesSpec(slices=5, rows=12, cols=10, seed=1), SeriesSpec(slices=7, rows=12, cols=10, seed=2),
         SeriesSpec(slices=4, rows=8, cols=8, header="mr", signed=False, bits_stored=12, seed=3)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("studies")
    for i, spec in enumerate(SPECS):
        folder = root / f"study{i}" / "series"
        folder.mkdir(parents=True)
        write_series(spec, folder)
    bad = root / "broken"  # two files at one position (a second echo): load_series refuses the series
    bad.mkdir()
    write_series(SeriesSpec(slices=3, rows=8, cols=8, seed=4, duplicates=1), bad)
    multi = root / "multiframe"
    multi.mkdir()
    write_dicom(DicomSpec(frames=3, rows=6, cols=6, bits_allocated=16, bits_stored=16, signed=True), multi / "mf.dcm")
    (root / "notes.txt").write_text("not dicom")
    return root


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as c:
        yield c


def _expected(row):
    if row.multiframe:
        return kvdicom.load(row.paths[0], "cpu")
    return kvdicom.load_series(row.folder, "cpu")[0]


def test_scan_plans_every_series_from_headers_and_names_what_it_cannot_load(tree):
    rows = kvdask.scan(tree)
    good = [r for r in rows if r.problem is None]
    assert len(good) == len(SPECS) + 1  # the series and the multi-frame file
    for row in good:
        expected = _expected(row)
        assert row.shape == expected.shape and np.dtype(row.dtype) == expected.dtype
        assert row.decoded_bytes == expected.nbytes and row.file_bytes == sum(os.path.getsize(p) for p in row.paths)
    refused = [r for r in rows if r.problem is not None]
    assert len(refused) == 1 and refused[0].folder == str(tree / "broken") and refused[0].shape is None
    with pytest.raises(kvdicom.DicomLoadError) as by_kvdicom:
        kvdicom.load_series(tree / "broken", "cpu")
    assert refused[0].problem == str(by_kvdicom.value)


def test_scan_of_a_relative_folder_gives_rows_that_load_from_any_working_directory(tree, monkeypatch, tmp_path):
    """Rows travel to Dask workers and kvdicom's header processes, neither started in the caller's directory:
    on the 16-core device a relative root left every file of a 256-slice folder 'unreadable' (FileNotFoundError)."""
    monkeypatch.chdir(tree)
    rows = [r for r in kvdask.scan("study0") if r.problem is None]
    assert len(rows) == 1 and os.path.isabs(rows[0].folder) and all(os.path.isabs(p) for p in rows[0].paths)
    monkeypatch.chdir(tmp_path)  # where a worker might run
    np.testing.assert_array_equal(kvdask._load(rows[0], "cpu"), kvdicom.load_series(tree / "study0" / "series",
                                                                                      "cpu")[0])


def test_from_series_and_map_series_equal_load_series_on_daemonic_workers(tree, client):
    rows = [r for r in kvdask.scan(tree) if r.problem is None]
    arrays = kvdask.from_series(rows, device="cpu")
    for row, computed in zip(rows, client.compute(arrays, sync=True)):
        np.testing.assert_array_equal(computed, _expected(row))
    sums = kvdask.map_series(lambda v: float(np.asarray(v, np.float64).sum()), rows, client=client, device="cpu")
    assert sums == [float(_expected(r).astype(np.float64).sum()) for r in rows]


def test_a_refused_series_raises_its_dicom_load_error_in_the_task(tree, client):
    refused = [r for r in kvdask.scan(tree) if r.problem is not None]
    with pytest.raises(kvdicom.DicomLoadError, match="broken"):
        kvdask.map_series(np.sum, refused, client=client, device="cpu")
    with pytest.raises(kvdicom.DicomLoadError):
        client.compute(kvdask.from_series(refused, device="cpu"), sync=True)


def _kill_once(marker: str):
    def fn(volume):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker dies mid-job
        return float(np.asarray(volume, np.float64).sum())
    return fn


def test_a_worker_killed_mid_job_is_retried_to_the_right_result(tree, client, tmp_path):
    rows = [r for r in kvdask.scan(tree) if r.problem is None and not r.multiframe][:1]
    got = kvdask.map_series(_kill_once(str(tmp_path / "killed")), rows, client=client, device="cpu")
    assert (tmp_path / "killed").exists()
    assert got == [float(_expected(rows[0]).astype(np.float64).sum())]


def test_on_a_local_cuda_cluster_each_gpu_loads_cupy_volumes(tree, cuda):
    dask_cuda = pytest.importorskip("dask_cuda", reason="dask-cuda is not installed")
    rows = [r for r in kvdask.scan(tree) if r.problem is None]
    with dask_cuda.LocalCUDACluster(dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as gpu_client:
        types = kvdask.map_series(lambda v: type(v).__module__.split(".")[0], rows, client=gpu_client)
        volumes = gpu_client.compute(kvdask.from_series(rows, device="cuda"), sync=True)
    assert set(types) == {"cupy"}
    for row, volume in zip(rows, volumes):
        np.testing.assert_array_equal(cuda.asnumpy(volume), _expected(row))


def _load_on_kvdicom_workers(row):
    """In a Dask worker: load_series with kvdicom's worker processes forced on; (volume, whether they ran)."""
    from kvdicom._io import process_pool
    from tests.worker_targets import force_workers

    force_workers()  # any series length, any core count: headers on kvdicom's worker processes
    volume = kvdicom.load_series(list(row.paths), "cpu")[0]
    return volume, process_pool._pool is not None and not process_pool.broken()


def test_load_series_uses_kvdicoms_worker_processes_inside_dask_workers(tree, client):
    rows = [r for r in kvdask.scan(tree) if r.problem is None and not r.multiframe]
    answers = client.gather(client.map(_load_on_kvdicom_workers, rows, pure=False))
    for row, (volume, used) in zip(rows, answers):
        np.testing.assert_array_equal(volume, _expected(row))
        assert used, "the Dask worker did not load on kvdicom's worker processes"

"""The scale-out host-read ceiling (bench/test_scaleout.py): each series' files read side by side in its
worker. Read one after the other (before run 0056) it was slower than ``load_series`` itself on the H200
device (259.7 ms for 8 series against 193.2 ms through ``map_series``), so it bounded nothing."""

from __future__ import annotations

import os
import pickle

from fixtures.series import SeriesSpec, write_series


def test_whole_files_reads_every_byte_side_by_side_and_travels_without_its_reader(tmp_path, monkeypatch):
    from bench import ceilings
    from bench.test_scaleout import WholeFiles, _read_whole_files, _threads_per_worker, _whole_files

    write_series(SeriesSpec(slices=5, rows=16, cols=16, seed=3), tmp_path)
    paths = sorted(str(p) for p in tmp_path.iterdir())
    made = []
    real = ceilings.SeriesRead
    monkeypatch.setattr(ceilings, "SeriesRead", lambda *a, **k: (made.append(k.get("threads")), real(*a, **k))[1])
    files = pickle.loads(pickle.dumps(_whole_files(paths, 3)))  # as Dask sends it to the worker
    assert isinstance(files, WholeFiles) and files.read is None
    total = sum(os.path.getsize(p) for p in paths)
    assert _read_whole_files(files) == total
    assert _read_whole_files(files) == total  # the reader is kept: built once
    assert made == [3]
    assert bytes(files.read.host[: os.path.getsize(paths[0])]) == open(paths[0], "rb").read()
    assert pickle.loads(pickle.dumps(files)).read is None  # never sent back with its buffers
    files.read.close()
    cores = len(os.sched_getaffinity(0))
    assert _threads_per_worker(1) == min(16, cores) and _threads_per_worker(cores * 2) == 1


def test_the_ceilings_dask_flow_reads_every_file_on_worker_processes(tmp_path):
    """As bench/test_scaleout.py runs it (there on a LocalCUDACluster): readers made in the workers from
    kwargs, then timed calls on the futures, twice, every byte each time."""
    import pytest

    distributed = pytest.importorskip("distributed", reason="Dask is not installed (pip install 'kvdicom[dask]')")
    from bench.test_scaleout import _read_whole_files, _whole_files

    folders = []
    for seed in (1, 2):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        write_series(SeriesSpec(slices=4, rows=16, cols=16, seed=seed), folder)
        folders.append(sorted(str(p) for p in folder.iterdir()))
    expected = sum(os.path.getsize(p) for paths in folders for p in paths)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        files = client.map(_whole_files, folders, threads=2, pure=False)
        for _ in range(2):
            assert sum(client.gather(client.map(_read_whole_files, files, pure=False))) == expected

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

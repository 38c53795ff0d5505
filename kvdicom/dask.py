"""A dataset of studies through Dask: plan from headers, load each series in one task, reduce where it loaded.

Built on Dask and Dask-CUDA, not a scheduler of kvdicom's own: :func:`scan` walks a tree once and plans
from headers only; :func:`from_series` gives one ``dask.array`` per series (CuPy chunks on the GPU);
:func:`map_series` runs a function on each volume on the worker that loaded it and gathers its (small)
result, so volumes never travel. Any ``distributed.Client`` works: a ``LocalCUDACluster`` (one worker per
GPU: each task uses its worker's GPU), a CPU ``LocalCluster``, or a cluster of many machines. Each task
sizes kvdicom's threads and worker processes to its worker's share of the host's cores.

Dask is optional (``pip install 'kvdicom[dask]'``); ``import kvdicom`` does not import it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

import kvdicom
from kvdicom import settings
from kvdicom._io.readahead import Readahead
from kvdicom._series import headers as series_headers
from kvdicom._series import order as series_order


@dataclass(frozen=True)
class SeriesRow:
    """One loadable unit of a tree: a series of single-frame slices, or one multi-frame file."""

    folder: str
    series_uid: str | None
    paths: tuple[str, ...]
    shape: tuple[int, ...] | None  #: the array kvdicom returns (None where it would refuse the series)
    dtype: str | None
    transfer_syntax: str | None
    file_bytes: int  #: on disk
    decoded_bytes: int  #: of the returned array
    multiframe: bool = False  #: one multi-frame file, loaded with kvdicom.load
    problem: str | None = None  #: why kvdicom would refuse it (the DicomLoadError's text), else None


def _plan_series(folder: str, group: list, file_bytes: dict) -> SeriesRow:
    """A row for ``group`` (headers of one series in one folder): the checks load_series makes, headers only."""
    uid = group[0].keys.series_uid if group[0].keys else None
    paths = tuple(h.path for h in group)
    total = sum(file_bytes[p] for p in paths)
    try:
        series_order.check_stackable(group)
        ordered, _, _ = series_order.order(group)
    except kvdicom.DicomLoadError as exc:
        return SeriesRow(folder, uid, paths, None, None, None, total, 0, problem=str(exc))
    first = ordered[0].layout
    shape = (len(ordered),) + tuple(first.shape)
    return SeriesRow(folder, uid, tuple(h.path for h in ordered), shape, first.dtype.str, str(first.transfer_syntax),
                     total, int(np.prod(shape)) * first.dtype.itemsize)


def scan(root: str | os.PathLike) -> list[SeriesRow]:
    """Every series (and multi-frame file) under ``root``, from headers only: no pixel is read.

    Headers are parsed as ``load_series`` parses them (on kvdicom's worker processes for long folders);
    a series ``load_series`` would refuse is a row with its ``problem``, never an exception of the scan.
    Files that are not DICOM images are left out, as ``load_series`` skips them.
    """
    rows = []
    # absolute: a row's paths are opened by kvdicom's header processes (started in another directory) and by
    # Dask workers, whose working directory need not be the caller's
    for folder, _, names in sorted(os.walk(os.path.abspath(os.fspath(root)))):
        paths = [os.path.join(folder, n) for n in sorted(names)]
        paths = [p for p in paths if os.path.isfile(p)]
        if not paths:
            continue
        file_bytes = {p: os.stat(p).st_size for p in paths}
        by_series: dict = defaultdict(list)
        with Readahead(paths, whole=False):  # cold: every head asked of the kernel at once, no pixel data
            headers = series_headers.read_headers(paths, pixels=False)
        for header in headers:
            if header.error is not None:
                rows.append(SeriesRow(folder, None, (header.path,), None, None, None, file_bytes[header.path], 0,
                                      problem=f"{header.path}: {header.error}"))
            elif header.layout is None:
                continue  # not an image: load_series skips it too
            elif header.layout.number_of_frames > 1:
                layout = header.layout
                rows.append(SeriesRow(folder, header.keys.series_uid if header.keys else None, (header.path,),
                                      tuple(layout.shape), layout.dtype.str, str(layout.transfer_syntax),
                                      file_bytes[header.path], layout.decoded_nbytes, multiframe=True))
            else:
                by_series[header.keys.series_uid if header.keys else None].append(header)
        rows += [_plan_series(folder, group, file_bytes) for group in by_series.values()]
    return rows


def _share_of_cores(workers_here: int) -> int:
    return max(1, len(os.sched_getaffinity(0)) // max(1, workers_here))


def _load(row: SeriesRow, device: str, workers_here: int = 1):
    """The task: load ``row`` with this worker's share of the host's cores (its GPU: the worker's own)."""
    share = _share_of_cores(workers_here)
    with kvdicom.configure(threads=min(share, settings.MAX_THREADS), processes=share if share > 1 else 0):
        if row.multiframe:
            return kvdicom.load(row.paths[0], device)
        volume, _ = kvdicom.load_series(list(row.paths), device, series_uid=row.series_uid)
        return volume


def _meta(device: str):
    if device == "cuda":
        import cupy

        return cupy.empty((0,), dtype=np.float32)
    return np.empty((0,), dtype=np.float32)


def from_series(rows: list[SeriesRow], device: str = "cuda") -> list:
    """One ``dask.array`` per row, each one chunk loaded by one task (CuPy chunks with ``device="cuda"``).

    A row scan found unloadable raises its ``DicomLoadError`` in the task, naming the file.
    """
    import dask
    import dask.array as da

    arrays = []
    for row in rows:
        if row.shape is None:
            arrays.append(da.from_delayed(dask.delayed(_refuse)(row), shape=(0,), dtype=np.float32,
                                          meta=_meta(device)))
            continue
        meta = _meta(device).astype(row.dtype)
        arrays.append(da.from_delayed(dask.delayed(_load)(row, device), shape=row.shape, dtype=np.dtype(row.dtype),
                                      meta=meta))
    return arrays


def _refuse(row: SeriesRow):
    path, _, reason = (row.problem or "").partition(": ")
    raise kvdicom.DicomLoadError(path or row.paths[0], reason or "scan found this series unloadable")


def _apply(row: SeriesRow, fn, device: str, workers_per_host: dict):
    """The task of :func:`map_series`: load, apply, return the small result; the volume stays here."""
    from distributed import get_worker

    try:
        host = get_worker().address.rsplit(":", 1)[0]
    except ValueError:  # not on a worker (a local scheduler)
        host = None
    if row.shape is None:
        _refuse(row)
    return fn(_load(row, device, workers_per_host.get(host, 1)))


def map_series(fn, rows: list[SeriesRow], client=None, device: str = "cuda") -> list:
    """``fn(volume)`` for each row, on the worker that loaded the volume; the results, in row order.

    ``client``: a ``distributed.Client`` (default: the current one). Tasks that fail (a worker killed mid-job)
    are retried by Dask; a row kvdicom refuses raises its ``DicomLoadError`` here.
    """
    from distributed import get_client

    client = client or get_client()
    workers_per_host: dict = defaultdict(int)
    for address in client.scheduler_info()["workers"]:
        workers_per_host[address.rsplit(":", 1)[0]] += 1
    futures = client.map(_apply, rows, fn=fn, device=device, workers_per_host=dict(workers_per_host), pure=False)
    return client.gather(futures)

"""Where the time of a series load goes: headers (fast walk, pydicom, pool), reads, the whole load.

Run on any machine from the repository root: ``python3 tools/profile_series.py [--slices 256] [--size 512]
[--folder DIR]``.
It writes a ``ct`` series with the fixtures (once), then prints best-of-N
times, page cache warm, for: ``pydicom.dcmread(stop_before_pixels=True)``,
``kvdicom.inspect`` (fast walk), kvdicom's pydicom path, header reading
in-process and in the process pool, the concurrent pixel reads, headers
and reads overlapped as ``device="cuda"`` runs them (NumPy staging here), and
``load_series`` against the pydicom loop + sort + ``np.stack`` (plus
``cupy.asarray`` and ``device="cuda"`` where CuPy is installed). The defaults
in ``kvdicom/series.py`` and ``kvdicom/fast_header.py`` cite its output.
``--sweep-chunks 1,2,4,8`` instead times the pooled headers and the whole load
(best and median) for each ``series_headers.CHUNKS_PER_WORKER``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import best, gpu, times_ms

import kvdicom
from fixtures.series import SeriesSpec, write_series
from kvdicom._header.inspect import inspect_dataset
from kvdicom._series import headers as series_headers
from kvdicom._series import loader as series
from kvdicom._series import stage as series_stage


def pydicom_loop(paths, to_gpu=False):
    datasets = [pydicom.dcmread(p) for p in paths]
    datasets.sort(key=lambda d: float(np.dot(np.asarray(d.ImagePositionPatient, float),
                                             np.cross(np.asarray(d.ImageOrientationPatient[:3], float),
                                                      np.asarray(d.ImageOrientationPatient[3:], float)))))
    volume = np.stack([d.pixel_array for d in datasets])
    if to_gpu:
        import cupy

        volume = cupy.asarray(volume)
        cupy.cuda.get_current_stream().synchronize()
    return volume


def synced_load(folder: str, cupy, **kw) -> None:
    """``load_series`` on the GPU where ``cupy`` is given (returned once the device has finished), else the CPU."""
    kvdicom.load_series(folder, "cuda" if cupy is not None else "cpu", **kw)
    if cupy is not None:
        cupy.cuda.get_current_stream().synchronize()


def sweep_chunks(folder: str, paths: list[str], values: list[int], repeat: int) -> None:
    """The pool's chunking against its per-task cost: each chunk is one ProcessPoolExecutor task (about
    0.2 ms of hand-over each on the 2-core CPU dev machine), fewer chunks start the staged reads later."""
    cupy = gpu()
    device = "cuda" if cupy is not None else "cpu"
    default = series_headers.CHUNKS_PER_WORKER
    print(f"{len(paths)} files, {series_headers.header_processes()} header processes, load on {device}")
    try:
        for chunks in values:
            series_headers.CHUNKS_PER_WORKER = chunks
            heads = times_ms(lambda: series_headers.read_headers(paths, parallel=True), repeat, warm_up=True)
            loads = times_ms(lambda: synced_load(folder, cupy), repeat, warm_up=True)
            print(f"chunks per worker {chunks:3d}: headers in the pool best {min(heads):7.1f} median "
                  f"{statistics.median(heads):7.1f} ms; load_series best {min(loads):7.1f} median "
                  f"{statistics.median(loads):7.1f} ms")
    finally:
        series_headers.CHUNKS_PER_WORKER = default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=256)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--folder", default="/tmp/dgb-profile-series")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sweep-chunks", default="",
                        help="comma-separated values of series_headers.CHUNKS_PER_WORKER: for each, time the pooled "
                             "headers and the whole load (cuda where CuPy works, else cpu), best and median")
    args = parser.parse_args()

    spec = SeriesSpec(slices=args.slices, rows=args.size, cols=args.size)
    folder = os.path.join(args.folder, spec.case_id)
    if not os.path.isdir(folder):
        os.makedirs(folder)
        write_series(spec, folder)
    paths = sorted(os.path.abspath(os.path.join(folder, f)) for f in os.listdir(folder))
    r = args.repeat
    if args.sweep_chunks:
        sweep_chunks(folder, paths, [int(v) for v in args.sweep_chunks.split(",")], max(r, 9))
        return
    print(f"{len(paths)} files of {os.path.getsize(paths[0])} bytes, "
          f"{series_headers.header_processes()} header processes")
    dcmread_ms = best(lambda: [pydicom.dcmread(p, stop_before_pixels=True) for p in paths], r)
    print(f"dcmread(stop_before_pixels)   {dcmread_ms:8.1f} ms")
    print(f"kvdicom.inspect (fast walk)    {best(lambda: [kvdicom.inspect(p) for p in paths], r):8.1f} ms")
    print(f"kvdicom pydicom path           {best(lambda: [inspect_dataset(p) for p in paths], min(r, 2)):8.1f} ms")
    series_headers.read_headers(paths, parallel=True)  # start the pool
    in_process_ms = best(lambda: series_headers.read_headers(paths, parallel=False), r)
    print(f"headers in-process             {in_process_ms:8.1f} ms")
    pool_ms = best(lambda: series_headers.read_headers(paths, parallel=True), r)
    print(f"headers in the pool            {pool_ms:8.1f} ms")
    layouts = [h.layout for h in series_headers.read_headers(paths, parallel=False)]
    starts = np.concatenate([[0], np.cumsum([layout.nbytes for layout in layouts])]).tolist()
    buffer = np.empty(starts[-1], np.uint8)
    print(f"pixel reads (host)             {best(lambda: series._read_all(layouts, buffer, starts), r):8.1f} ms")
    host = series_stage.Backend(allocate=lambda n: np.empty(n, np.uint8), read=series._submit_read,
                                copy=lambda *a: None)

    def overlapped():
        staging = series_stage.stage(paths, series_headers.header_batches(paths, parallel=True), host)
        assert len(staging.slots) == len(paths) and not staging.errors

    print(f"headers + reads overlapped     {best(overlapped, r):8.1f} ms   (pool headers, staged reads; cuda's path)")
    print(f"load_series cpu                {best(lambda: kvdicom.load_series(folder, 'cpu'), r):8.1f} ms")
    print(f"load_series cpu rescale        {best(lambda: kvdicom.load_series(folder, 'cpu', rescale=True), r):8.1f} ms")
    print(f"pydicom loop + sort + stack    {best(lambda: pydicom_loop(paths), min(r, 3)):8.1f} ms")
    cupy = gpu()
    if cupy is None:
        return
    synced_load(folder, cupy)
    print(f"load_series cuda (overlapped)  {best(lambda: synced_load(folder, cupy), r):8.1f} ms")
    print(f"load_series cuda rescale       {best(lambda: synced_load(folder, cupy, rescale=True), r):8.1f} ms")
    print(f"pydicom loop + cupy.asarray    {best(lambda: pydicom_loop(paths, to_gpu=True), min(r, 3)):8.1f} ms")


if __name__ == "__main__":
    main()

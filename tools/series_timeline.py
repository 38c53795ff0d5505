"""Where a series load's time goes across processes: the header workers' chunks against the parent (docs/loader.md).

    python3 tools/series_timeline.py FOLDER cpu|cuda [--loads N] [--chunks-per-worker K] [--pool] [--cold]
                                     [--stand-in]

Per load, in ms from the call (medians over ``--loads`` loads after two warm ones): when the first worker chunk
began and the last ended (each worker's clock: CLOCK_MONOTONIC, shared by the processes), the workers' busy time
per process, when the parent had the first and the last chunk, when the compressed decode began and ended (on
``cuda`` synced) and when the load returned; and the parent's main-thread CPU. ``--pool`` puts the headers on the
worker processes whatever the machine (two of them where it has fewer cores), ``--cold`` drops every file's page
cache before each load, ``--stand-in`` runs the ``cuda`` path on the CPU with NumPy stand-ins and a decode that does
nothing (the parent's own work, on a machine without a GPU). The kvdicom timed is the one on ``PYTHONPATH``
where there is one (``PYTHONPATH=.wt/base`` times the baseline commit's tree), else this tree's.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLOCKS = "KVDICOM_TIMELINE_DIR"  # where the workers write their chunks' clocks, one file per process


def _log(start: int, files: int) -> None:
    with open(os.path.join(os.environ[CLOCKS], str(os.getpid())), "a") as f:
        f.write(f"{start} {time.monotonic_ns()} {files}\n")


def chunk_shared(*args):
    """In a worker: ``_read_chunk_shared``, clocked (imported here by name: this folder is on the workers' path)."""
    from kvdicom._series import headers

    start = time.monotonic_ns()
    out = headers._read_chunk_shared(*args)
    _log(start, len(out))
    return out


def chunk_packed(*args):
    """In a worker: ``_read_chunk_packed``, clocked."""
    from kvdicom._series import headers

    start = time.monotonic_ns()
    out = headers._read_chunk_packed(*args)
    _log(start, len(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("device", choices=("cpu", "cuda"))
    parser.add_argument("--loads", type=int, default=12)
    parser.add_argument("--chunks-per-worker", type=int)
    parser.add_argument("--pool", action="store_true")
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--stand-in", action="store_true")
    args = parser.parse_args()

    os.environ[CLOCKS] = clocks = tempfile.mkdtemp()
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
    sys.path.append(os.path.dirname(HERE))  # last: a kvdicom on PYTHONPATH (another commit's tree) wins
    sys.path.insert(0, HERE)
    import numpy as np
    import series_timeline  # this file as the workers import it: its chunk functions pickle by that name

    import kvdicom
    from bench.ceilings import drop_page_cache
    from kvdicom._series import decode as series_decode
    from kvdicom._series import headers, loader

    headers._read_chunk_shared = series_timeline.chunk_shared
    headers._read_chunk_packed = series_timeline.chunk_packed
    if args.chunks_per_worker:
        headers.CHUNKS_PER_WORKER = args.chunks_per_worker
    if args.pool or args.stand_in:
        headers.use_pool = lambda count: True
        if kvdicom.settings.cores() < 4:
            kvdicom.configure(processes=2)
    if args.stand_in:
        from kvdicom._codecs import gpu_codec

        gpu_codec.nvimgcodec_problem = lambda: None
        series_decode._decode_gpu = lambda batch, stored: ([], "")
    sync = lambda: None  # noqa: E731
    if args.device == "cuda" and not args.stand_in:
        import cupy

        sync = cupy.cuda.runtime.deviceSynchronize
    marks: dict = {}
    batches, decode_into = headers.header_batches, series_decode.decode_into

    def clocked_batches(*a, **k):
        for batch in batches(*a, **k):
            marks.setdefault("got", []).append(time.monotonic_ns())
            yield batch

    def clocked_decode(*a, **k):
        sync()
        marks["decode_start"] = time.monotonic_ns()
        out = decode_into(*a, **k)
        sync()
        marks["decode_end"] = time.monotonic_ns()
        return out

    headers.header_batches, series_decode.decode_into = clocked_batches, clocked_decode

    rows = []
    for i in range(args.loads + 2):
        for name in glob.glob(os.path.join(clocks, "*")):
            os.remove(name)
        marks.clear()
        resident = None
        if args.cold:  # as the harness's cold rows: every file dropped, what stayed measured (mincore)
            left = [drop_page_cache(os.path.join(args.folder, name)) for name in os.listdir(args.folder)]
            resident = max((x for x in left if x is not None), default=None)
        cpu0, t0 = time.thread_time_ns(), time.monotonic_ns()
        if args.stand_in:
            _, info = loader._load(args.folder, np, "cuda", False, None, None, None)
        else:
            _, info = kvdicom.load_series(args.folder, args.device)
        sync()
        t1, cpu1 = time.monotonic_ns(), time.thread_time_ns()
        if i < 2:
            continue
        chunks, processes = [], glob.glob(os.path.join(clocks, "*"))
        for name in processes:
            with open(name) as f:
                chunks += [tuple(map(int, line.split())) for line in f]
        ms = lambda t: (t - t0) / 1e6  # noqa: E731
        row = {"end": ms(t1), "parent_cpu": (cpu1 - cpu0) / 1e6}
        if resident is not None:
            row["resident_before"] = resident  # the largest fraction of a file still cached after the drop
        if chunks:
            row.update(workers_first=ms(min(c[0] for c in chunks)), workers_last=ms(max(c[1] for c in chunks)),
                       workers_busy=sum(c[1] - c[0] for c in chunks) / 1e6 / len(processes),
                       chunks=len(chunks), processes=len(processes))
        if marks.get("got"):
            row.update(got_first=ms(marks["got"][0]), got_last=ms(marks["got"][-1]))
        if "decode_start" in marks:
            row.update(decode_start=ms(marks["decode_start"]), decode_end=ms(marks["decode_end"]))
        rows.append(row)
    print(os.path.basename(args.folder.rstrip("/")), args.device, "(stand-in)" if args.stand_in else "",
          "(cold)" if args.cold else "", "; ".join(info.decoders), "| kvdicom from", os.path.dirname(kvdicom.__file__))
    for key in rows[0]:
        values = [r[key] for r in rows if key in r]
        print(f"  {key:15s} median {statistics.median(values):8.2f}   min {min(values):8.2f}   max {max(values):8.2f}")


if __name__ == "__main__":
    main()

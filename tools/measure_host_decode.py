"""Time kvdicom's host decoding of compressed files in one process against the frame-parallel process pool.

``python tools/measure_host_decode.py [--profile full] [--rounds N] [--budget S] [--match TEXT] [--corpus-dir DIR]``

For each compressed case whose CPU load decodes through pydicom's plugins
(``kvdicom._header.compressed.host_decode``: JPEG-LS, lossless JPEG, JPEG, JPEG 2000,
HTJ2K; RLE has its own path, ``tools/measure_rle.py``), prints the median (and
best) milliseconds, warm, of: pydicom ``pixel_array`` (reference plugin
pinned), kvdicom CPU with every frame decoded in this process, kvdicom CPU on
the process pool (forced, whatever the thresholds say), and kvdicom CPU by
default, with the speed-ups. Where CuPy sees a GPU, the GPU load of files
whose GPU route decodes on the host (``gpu_codec.plan``) is timed the same
ways. Every route is first checked equal to ``pixel_array``. The thresholds
in ``kvdicom/host_parallel.py`` (POOL_MIN_FRAMES, POOL_MIN_DECODED_BYTES,
POOL_MIN_PROCESSES) are chosen from its output. Rounds of all routes are
interleaved so that drift hits them alike; a case stops after ``--budget``
seconds (at least 3 rounds). The pool is started once before timing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import timing  # noqa: E402

import kvdicom  # noqa: E402
from kvdicom._codecs import host_parallel
from kvdicom._header import compressed
from kvdicom._io import process_pool  # noqa: E402

#: route: (POOL_MIN_FRAMES, POOL_MIN_DECODED_BYTES, POOL_MIN_PROCESSES); None keeps the defaults
ROUTES = {
    "one process": (1 << 62, 1 << 62, 1 << 62),
    "pool": (1, 0, 1),
    "default": None,
}


@contextlib.contextmanager
def route(name: str):
    saved = host_parallel.POOL_MIN_FRAMES, host_parallel.POOL_MIN_DECODED_BYTES, host_parallel.POOL_MIN_PROCESSES
    if ROUTES[name] is not None:
        host_parallel.POOL_MIN_FRAMES, host_parallel.POOL_MIN_DECODED_BYTES, host_parallel.POOL_MIN_PROCESSES = \
            ROUTES[name]
    try:
        yield
    finally:
        host_parallel.POOL_MIN_FRAMES, host_parallel.POOL_MIN_DECODED_BYTES, host_parallel.POOL_MIN_PROCESSES = saved


def _with(name, load, *args):
    with route(name):
        return load(*args)


def _gpu_on_host(path) -> bool:
    from kvdicom._codecs import gpu_codec

    layout = kvdicom.inspect(path)
    _, frames = compressed.read_frames(layout)
    return gpu_codec.plan(layout, compressed.check_frames(layout, frames)).route == "host" \
        or gpu_codec.nvimgcodec_problem() is not None


def main() -> None:
    from bench.compressed_peers import pydicom_pinned
    from fixtures.encode import EncoderUnavailable
    from fixtures.profiles import compressed_specs
    from kvdicom._codecs import rle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--budget", type=float, default=40.0, help="seconds of timing per case at most")
    parser.add_argument("--match", default="", help="only cases whose id contains this")
    timing.add_corpus_option(parser)
    args = parser.parse_args()
    cupy = timing.gpu()
    started = time.perf_counter()
    process_pool.pool().submit(int).result()  # start the workers before any timing
    print(f"cores {len(os.sched_getaffinity(0))}, pool processes {process_pool.processes()} "
          f"(started in {(time.perf_counter() - started) * 1e3:.0f} ms), GPU {'yes' if cupy else 'no'}; "
          f"thresholds: frames >= {host_parallel.POOL_MIN_FRAMES}, decoded bytes >= "
          f"{host_parallel.POOL_MIN_DECODED_BYTES}, cores >= {host_parallel.POOL_MIN_PROCESSES}", flush=True)
    corpus = timing.corpus(args)
    for spec in compressed_specs(args.profile):
        if args.match not in spec.case_id:
            continue
        try:
            path = corpus.ensure(spec)
        except EncoderUnavailable as exc:
            print(f"{spec.case_id}: skipped ({exc})")
            continue
        layout = kvdicom.inspect(path)
        if rle.problem(layout) is None:
            continue  # kvdicom/rle.py's own path
        ref = pydicom_pinned(path)
        runs = {"pydicom": functools.partial(pydicom_pinned, path)}
        for name in ROUTES:
            runs[f"kvdicom cpu {name}"] = functools.partial(_with, name, kvdicom.load, path, "cpu")
        if cupy is not None and _gpu_on_host(path):
            for name in ROUTES:
                runs[f"kvdicom gpu {name}"] = functools.partial(_with, name, timing.gpu_load, cupy, path)
        for name, run in runs.items():
            got = run()
            got = got.get() if hasattr(got, "get") else got
            assert got.shape == ref.shape and got.dtype == ref.dtype and np.array_equal(got, ref), \
                f"{spec.case_id}: {name} differs from pydicom"
        times: dict[str, list[float]] = {name: [] for name in runs}
        case_start = time.perf_counter()
        for done in range(args.rounds):
            if done >= 3 and time.perf_counter() - case_start > args.budget:
                break
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["pydicom"])
        print(f"{spec.case_id}: {layout.number_of_frames} frames, {layout.decoded_nbytes} decoded bytes, "
              f"{len(times['pydicom'])} rounds; default: {compressed.host_decoder(layout)}")
        for name, values in times.items():
            median = statistics.median(values)
            same = name.replace("default", "one process").replace("pool", "one process")
            one = statistics.median(times[same]) if same in times else median
            print(f"  {name:28s} {median * 1e3:9.2f} ms (best {min(values) * 1e3:9.2f})  "
                  f"x pydicom {base / median:5.2f}  x one process {one / median:5.2f}", flush=True)


if __name__ == "__main__":
    main()

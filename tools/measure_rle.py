"""Time each RLE decode route of kvdicom against pydicom on the full profile's RLE cases (warm).

``python tools/measure_rle.py [--rounds N] [--corpus-dir DIR]`` prints, per case, the median (and best)
milliseconds of: pydicom ``pixel_array`` (reference plugin pinned), kvdicom CPU by default, with
imagecodecs on one thread, on kvdicom's pool (whatever the core count), with pylibjpeg-rle only, and,
where CuPy works, kvdicom GPU (synchronised) the same ways. Every route's array is first checked equal
to pydicom's. The defaults in ``kvdicom/rle.py`` (CONCURRENT_MIN_CPUS, CONCURRENT_MIN_BYTES) are chosen
from its output; rounds of all routes are interleaved so that drift hits them alike.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import timing  # noqa: E402

import kvdicom  # noqa: E402
from bench.compressed_peers import pydicom_pinned  # noqa: E402
from fixtures.profiles import compressed_specs  # noqa: E402
from kvdicom import settings
from kvdicom._codecs import rle  # noqa: E402
from kvdicom._io import tuning as io_tuning

ROUTES = {  # name: (imagecodecs, CONCURRENT_MIN_BYTES, CONCURRENT_MIN_CPUS)
    "default": None,
    "imagecodecs-1-thread": (True, 1 << 62, 1),
    "imagecodecs-pool": (True, 0, 1),
    "pylibjpeg-rle": (False, 1 << 62, 1),
}


@contextlib.contextmanager
def route(name: str):
    saved = rle._HAVE_IMAGECODECS, settings.RLE_CONCURRENT_MIN_BYTES, settings.RLE_CONCURRENT_MIN_CPUS
    if ROUTES[name] is not None:
        rle._HAVE_IMAGECODECS, settings.RLE_CONCURRENT_MIN_BYTES, settings.RLE_CONCURRENT_MIN_CPUS = ROUTES[name]
    try:
        yield
    finally:
        rle._HAVE_IMAGECODECS, settings.RLE_CONCURRENT_MIN_BYTES, settings.RLE_CONCURRENT_MIN_CPUS = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41)
    timing.add_corpus_option(parser)
    args = parser.parse_args()
    cupy = timing.gpu()
    print(f"cores {os.cpu_count()}, kvdicom pool threads {io_tuning.host_threads()}, "
          f"imagecodecs {'yes' if rle._HAVE_IMAGECODECS else 'no'}, GPU {'yes' if cupy else 'no'}")
    corpus = timing.corpus(args)
    for spec in compressed_specs("full"):
        if spec.transfer_syntax != "rle":
            continue
        path = corpus.ensure(spec)
        ref = pydicom_pinned(path)
        runs = {"pydicom": functools.partial(pydicom_pinned, path)}
        for name in ROUTES:
            if name != "default" and ROUTES[name][0] and not rle._HAVE_IMAGECODECS:
                continue
            runs[f"kvdicom cpu {name}"] = functools.partial(_with, name, kvdicom.load, path, "cpu")
            if cupy is not None:
                runs[f"kvdicom gpu {name}"] = functools.partial(_with, name, timing.gpu_load, cupy, path)
        for name, run in runs.items():
            got = run()
            got = got.get() if hasattr(got, "get") else got
            assert np.array_equal(got, ref), f"{spec.case_id}: {name} differs from pydicom"
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["pydicom"])
        print(f"{spec.case_id} ({rle.decoder(kvdicom.inspect(path))} by default)")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:32s} {median * 1e3:8.2f} ms (best {min(values) * 1e3:.2f})  x pydicom {base / median:.2f}")


def _with(name, load, *args):
    with route(name):
        return load(*args)


if __name__ == "__main__":
    main()

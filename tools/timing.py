"""What the timing tools share: a best-of-N timer and CuPy where a GPU is usable."""

from __future__ import annotations

import os
import time


def times_ms(fn, repeat: int, warm_up: bool = False) -> list[float]:
    """``repeat`` timed runs of ``fn`` (after one untimed run with ``warm_up``), in ms, in run order."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def best(fn, repeat: int, warm_up: bool = False) -> float:
    """Fastest of ``repeat`` runs of ``fn`` (after one untimed run with ``warm_up``), in ms."""
    return min(times_ms(fn, repeat, warm_up))


def gpu():
    """CuPy, where it can use a GPU here; else None."""
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except (ImportError, RuntimeError):  # no CuPy; CUDARuntimeError is a RuntimeError
        return None
    return cupy


def gpu_load(cupy, path):
    """``kvdicom.load(path, "cuda")``, returned once the device has finished it (for timing)."""
    import kvdicom

    out = kvdicom.load(path, "cuda")
    cupy.cuda.Device().synchronize()
    return out


def gpu_decoding():
    """CuPy where kvdicom's GPU decode (nvImageCodec) can run here; else None, with the reason printed."""
    from kvdicom._codecs import gpu_codec

    cupy = gpu()
    problem = gpu_codec.nvimgcodec_problem() or (None if cupy is not None else "no usable GPU")
    if problem:
        print(f"no GPU decode here: {problem}")
        return None
    return cupy


def add_corpus_option(parser) -> None:
    """``--corpus-dir``, defaulting as the suite's own option does (``DGB_CORPUS_DIR``, else the checkout's
    ``.corpus``): a tool reuses the files ``./dgb bench`` generated."""
    from dgbench import config

    parser.add_argument("--corpus-dir", default=os.environ.get("DGB_CORPUS_DIR", str(config.DEFAULT_CORPUS_DIR)))


def corpus(args):
    """The corpus at ``args.corpus_dir`` (:func:`add_corpus_option`), with the suite's default size cap."""
    from dgbench import config
    from fixtures.cache import Corpus

    return Corpus(args.corpus_dir, int(config.DEFAULT_CORPUS_CAP_GB * 2**30))

"""Time kvdicom's GPU load of the JPEG baseline cases with nvImageCodec's decoder on each back end.

``python tools/profile_jpeg_backends.py [--repeat N] [--corpus-dir DIR]``

Hopper GPUs (H100, H200) have NVJPG hardware JPEG engines beside nvJPEG's CUDA
decoder and its hybrid (CPU Huffman) path; nvImageCodec's ``Decoder()``
chooses among them itself. For each JPEG baseline case of the full profile,
this builds one decoder per back-end choice, puts it where
``kvdicom._codecs.gpu_codec`` takes its decoder from, and prints the median and best
of ``--repeat`` warm ``kvdicom.load(path, "cuda")`` calls (synchronised), the
largest difference from pydicom's ``pixel_array`` (the suite allows 5 for JPEG
baseline) and ``pixel_array``'s own median, so the default in
``kvdicom/gpu_codec.py`` can be chosen from measured numbers. Rounds of all
choices are interleaved so that drift hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import timing  # noqa: E402

import kvdicom  # noqa: E402
from kvdicom._codecs import gpu_codec  # noqa: E402


def decoders() -> dict:
    """name: a ready nvImageCodec Decoder, or the error building it gave."""
    from nvidia import nvimgcodec

    kinds = nvimgcodec.BackendKind
    choices = {"default": None, "hw_gpu_only": [kinds.HW_GPU_ONLY], "gpu_only": [kinds.GPU_ONLY],
               "hybrid_cpu_gpu": [kinds.HYBRID_CPU_GPU], "hw+gpu": [kinds.HW_GPU_ONLY, kinds.GPU_ONLY]}
    built = {}
    for name, chosen in choices.items():
        try:
            built[name] = nvimgcodec.Decoder() if chosen is None else nvimgcodec.Decoder(
                backends=[nvimgcodec.Backend(k) for k in chosen])
        except Exception as exc:  # noqa: BLE001  reported, not fatal
            built[name] = f"{type(exc).__name__}: {exc}"
    # The decoder's own worker threads: in a probe on an H100 (two states of one lease), one thread gave a
    # median load about 5% below the default's in both (2.06 -> 1.95 ms, 2.77 -> 2.64 ms): a candidate for
    # the default once a benchmark agrees.
    try:
        built["default, 1 thread"] = nvimgcodec.Decoder(max_num_cpu_threads=1)
    except Exception as exc:  # noqa: BLE001  reported, not fatal
        built["default, 1 thread"] = f"{type(exc).__name__}: {exc}"
    return built


def main() -> int:
    from bench.compressed_peers import pydicom_pinned
    from fixtures.profiles import compressed_specs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    timing.add_corpus_option(parser)
    args = parser.parse_args()
    cupy = timing.gpu()
    if cupy is None:
        print("no GPU here")
        return 1
    corpus = timing.corpus(args)
    built = decoders()
    for name, dec in built.items():
        if isinstance(dec, str):
            print(f"{name}: cannot build ({dec})")
    usable = {name: dec for name, dec in built.items() if not isinstance(dec, str)}
    original = gpu_codec._decoder
    try:
        for spec in compressed_specs("full"):
            if spec.transfer_syntax != "jpeg_baseline":
                continue
            path = corpus.ensure(spec)
            ref = pydicom_pinned(path)
            diffs, times = {}, {name: [] for name in usable}
            for name, dec in usable.items():
                gpu_codec._decoder = lambda dec=dec: dec
                got = timing.gpu_load(cupy, path).get()
                diffs[name] = int(np.abs(got.astype(np.int64) - ref.astype(np.int64)).max())
            for _ in range(args.repeat):
                for name, dec in usable.items():
                    gpu_codec._decoder = lambda dec=dec: dec
                    times[name] += timing.times_ms(lambda: timing.gpu_load(cupy, path), 1)
            base = statistics.median(timing.times_ms(lambda: pydicom_pinned(path), max(5, args.repeat // 3)))
            print(f"{spec.case_id}: pixel_array median {base:.2f} ms")
            for name, values in times.items():
                median = statistics.median(values)
                print(f"  {name:16s} median {median:7.3f} ms  best {min(values):7.3f} ms  x pixel_array "
                      f"{base / median:6.1f}  max diff {diffs[name]}", flush=True)
    finally:
        gpu_codec._decoder = original
    print(f"kvdicom {kvdicom.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

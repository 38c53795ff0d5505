"""Where the time goes in the cases whose targets were missed: enhanced MR on the CPU, JPEG baseline, RLE, JPEG-LS.

``--only small``: the compressed files small enough for the host route, kvdicom against pydicom round-robin.

Run from the repository root (on the device for the GPU rows): ``python3 tools/profile_targets.py
[--corpus DIR] [--repeat N]``. Prints best-of-N warm times in ms, step by step, next to
``pixel_array`` on the same file, so a missed target comes with its breakdown (header, allocation,
read, decode, copy). Rows needing CuPy, nvImageCodec or an encoder are left out with the reason.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import timing  # noqa: E402

import kvdicom  # noqa: E402
from fixtures.cache import Corpus  # noqa: E402
from fixtures.profiles import ENHANCED_MR, compressed_specs  # noqa: E402
from kvdicom import settings
from kvdicom._header import compressed
from kvdicom._io import host_read  # noqa: E402


def best(fn, repeat: int) -> float:
    """Fastest of ``repeat`` runs of ``fn`` after one warm-up, in ms."""
    return timing.best(fn, repeat, warm_up=True)


def row(name: str, ms: float, ref: float | None = None) -> None:
    ratio = f"  ({ref / ms:5.1f}x pixel_array)" if ref else ""
    print(f"  {name:<46} {ms:8.3f} ms{ratio}", flush=True)


def _sync():
    try:
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    except ImportError:
        pass


def enhanced_mr(corpus: Corpus, r: int) -> None:
    path = str(corpus.ensure(ENHANCED_MR))
    layout = kvdicom.inspect(path)
    size = layout.nbytes
    print(f"enhanced_mr {ENHANCED_MR.case_id}: {os.path.getsize(path)} bytes, pixels {size} at {layout.offset}")
    ref = best(lambda: pydicom.dcmread(path).pixel_array, r)
    row("pydicom pixel_array", ref)
    row("kvdicom.inspect", best(lambda: kvdicom.inspect(path), r), None)
    row("np.empty + first touch (page faults)", best(lambda: np.empty(size, np.uint8).fill(0), r))
    fresh = lambda: host_read.read_into(path, np.empty(size, np.uint8), layout.offset)  # noqa: E731
    row("read into a new array, one thread", best(fresh, r))
    buf = np.empty(size, np.uint8)
    row("read into the same array, one thread", best(lambda: host_read.read_into(path, buf, layout.offset), r))
    fd = os.open(path, os.O_RDONLY)
    try:
        for chunk in (1 << 20, 2 << 20, 4 << 20):
            view = memoryview(buf)
            par = lambda c=chunk: host_read.read_chunks(fd, view, layout.offset, c, parallel_from=0)  # noqa: E731
            row(f"read, same array, pool, {chunk >> 20} MiB chunks", best(par, r))
            new = lambda c=chunk: host_read.read_chunks(  # noqa: E731
                fd, memoryview(np.empty(size, np.uint8)), layout.offset, c, parallel_from=0)
            row(f"read, new array, pool, {chunk >> 20} MiB chunks", best(new, r))
        for mib in (2, 4, 8, 16, 25):  # the one-thread / pool threshold (settings.READ_PARALLEL_BYTES)
            view = memoryview(buf)[: min(mib << 20, size)]
            chunk = host_read.chunk_for(len(view))
            one = best(lambda v=view: host_read.read_chunks(fd, v, layout.offset, parallel_from=1 << 40), r)
            par = best(lambda v=view, c=chunk: host_read.read_chunks(fd, v, layout.offset, c, parallel_from=0), r)
            row(f"{mib:>2} MiB: one thread {one:.3f} ms, pool ({chunk >> 20} MiB chunks)", par)
    finally:
        os.close(fd)
    arr = buf.view(layout.dtype)
    row("unused-bits mask (one AND pass)", best(lambda: np.bitwise_and(arr, (1 << 12) - 1, out=arr), r))
    row("kvdicom.load cpu", best(lambda: kvdicom.load(path, device="cpu"), r), ref)
    out = np.empty(layout.shape, layout.dtype)
    row("kvdicom.load cpu, out=", best(lambda: kvdicom.load(path, device="cpu", out=out), r), ref)
    try:
        import cupy

        gref = best(lambda: (cupy.asarray(pydicom.dcmread(path).pixel_array), _sync()), r)
        row("pydicom + cupy.asarray", gref)
        row("kvdicom.load cuda", best(lambda: (kvdicom.load(path), _sync()), r), gref)
    except ImportError as exc:
        print(f"  (GPU rows left out: {exc})")


def compressed_case(corpus: Corpus, spec, r: int) -> None:
    try:
        path = str(corpus.ensure(spec))
    except Exception as exc:  # an encoder missing here
        print(f"{spec.case_id}: not written ({type(exc).__name__}: {exc})")
        return
    layout = kvdicom.inspect(path)
    print(f"{spec.case_id}: {os.path.getsize(path)} bytes -> {layout.decoded_nbytes} decoded, "
          f"{layout.number_of_frames} frame(s)")
    ref = best(lambda: pydicom.dcmread(path).pixel_array, r)
    row("pydicom pixel_array", ref)
    row("kvdicom.inspect", best(lambda: kvdicom.inspect(path), r))
    row("read_frames", best(lambda: compressed.read_frames(layout), r))
    value, frames = compressed.read_frames(layout)
    row("check_frames (codestream headers)", best(lambda: compressed.check_frames(layout, frames), r))
    row("kvdicom.load cpu", best(lambda: kvdicom.load(path, device="cpu"), r), ref)
    try:
        import cupy
    except ImportError as exc:
        print(f"  (GPU rows left out: {exc})")
        return
    from kvdicom._codecs import gpu_codec

    how = gpu_codec.plan(layout, compressed.check_frames(layout, frames))
    print(f"  route: {how.route} {how.reason}")
    gref = best(lambda: (cupy.asarray(pydicom.dcmread(path).pixel_array), _sync()), r)
    row("pydicom + cupy.asarray", gref)
    if how.route == "gpu" and not gpu_codec.nvimgcodec_problem():
        from nvidia import nvimgcodec

        color = nvimgcodec.ColorSpec.SRGB if how.color == "srgb" else nvimgcodec.ColorSpec.UNCHANGED
        params = nvimgcodec.DecodeParams(allow_any_depth=True, color_spec=color)
        streams = lambda: [nvimgcodec.CodeStream(np.ascontiguousarray(f)) for f in frames]  # noqa: E731
        row("CodeStream objects", best(streams, r))
        cs = streams()
        dec = gpu_codec._decoder()
        row("Decoder.decode (batch), synced", best(lambda: (dec.decode(cs, params=params), _sync()), r))
        row("_decode_batch (decode + copies)", best(lambda: (gpu_codec._decode_batch(frames, layout, how), _sync()), r))
        raw, _ = gpu_codec._decode_batch(frames, layout, how)
        row("finish", best(lambda: (gpu_codec.finish(raw, layout, how), _sync()), r))
        out = gpu_codec.finish(raw, layout, how)
        per = out.reshape((len(frames), -1))
        row("blank-frame check (.get)", best(lambda: cupy.flatnonzero(~per.any(axis=1)).get(), r))
    row("kvdicom.load cuda", best(lambda: (kvdicom.load(path), _sync()), r), gref)


def small_cases(corpus: Corpus, r: int) -> None:
    """Compressed files below ``GPU_MIN_DECODED_BYTES`` (host route on both devices): pydicom and kvdicom timed
    round-robin, so drift between benchmark sessions cannot pass for a difference; best and median."""

    cupy = timing.gpu()
    for spec in compressed_specs("full"):
        try:
            path = str(corpus.ensure(spec))
        except Exception as exc:  # an encoder missing here
            print(f"{spec.case_id}: not written ({type(exc).__name__}: {exc})")
            continue
        if kvdicom.inspect(path).decoded_nbytes >= settings.GPU_MIN_DECODED_BYTES:
            continue
        loaders = {"pixel_array": lambda: pydicom.dcmread(path).pixel_array,
                   "kvdicom cpu": lambda: kvdicom.load(path, device="cpu")}
        if cupy is not None:
            loaders["pydicom + cupy.asarray"] = lambda: (cupy.asarray(pydicom.dcmread(path).pixel_array), _sync())
            loaders["kvdicom cuda"] = lambda: timing.gpu_load(cupy, path)
        times = {name: [] for name in loaders}
        for fn in loaders.values():
            fn()  # warm
        for _ in range(r):
            for name, fn in loaders.items():
                times[name] += timing.times_ms(fn, 1)
        print(f"{spec.case_id}:")
        for name, ts in times.items():
            ref = times["pixel_array" if "cuda" not in name and "cupy" not in name else "pydicom + cupy.asarray"]
            print(f"  {name:<26} best {min(ts):7.3f} ms  median {np.median(ts):7.3f} ms"
                  f"  (median {np.median(ref) / np.median(ts):4.2f}x)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=os.environ.get("DGB_CORPUS_DIR", "/tmp/dgb-profile-targets"))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", default="", help="comma-separated: enhanced_mr, jpeg, rle, jpegls, small")
    args = parser.parse_args()
    corpus = Corpus(args.corpus, 1 << 34)
    only = set(filter(None, args.only.split(",")))
    if not only or "enhanced_mr" in only:
        enhanced_mr(corpus, args.repeat)
    if "small" in only:
        small_cases(corpus, args.repeat)
    wanted = {"jpeg_baseline": "jpeg", "rle": "rle", "jpegls_lossless": "jpegls"}
    for spec in compressed_specs("full"):
        kind = wanted.get(spec.transfer_syntax)
        if kind and (not only or kind in only) and spec.pixel_bytes >= 1 << 20:
            compressed_case(corpus, spec, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

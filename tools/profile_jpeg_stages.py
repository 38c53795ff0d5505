"""Where kvdicom's GPU load of the JPEG baseline 30 × 240 × 320 file spends its time, in its fast and slow calls.

``python tools/profile_jpeg_stages.py [--calls N] [--corpus-dir DIR]``

On the H100, ``kvdicom.load`` of this file is bimodal: in one lease, one minute
gave a median of 2.00 ms and the next 2.77 ms (p10 about 1.95 ms both times),
while pydicom went from 144 to 114 ms, so the "≥ 50× pydicom" target came and
went with the machine's state. This times ``--calls`` warm loads, each with
its stages (frame reads, codestream checks, the batch around the decoder, the
decoder call, the decode on the GPU by CUDA events, the blank-frame check),
and prints the stage means of the faster and the slower half, so a slow
state can be pinned on a stage when it comes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import timing  # noqa: E402

from kvdicom._codecs import gpu_codec  # noqa: E402
from kvdicom._header import compressed

STAGES = ("read", "check", "decode_batch", "decoder_call", "decode_gpu", "blank")


def _timed(stamps: dict, name: str, fn):
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stamps[name] = time.perf_counter() - start
    return run


class _EventTimedDecoder:
    """The decoder kvdicom uses, with its call timed on the host and, by CUDA events, on the device."""

    def __init__(self, cupy, decoder, stamps: dict):
        self.cupy, self.decoder, self.stamps = cupy, decoder, stamps
        self.events = (cupy.cuda.Event(), cupy.cuda.Event())

    def decode(self, *args, **kwargs):
        self.events[0].record()
        start = time.perf_counter()
        images = self.decoder.decode(*args, **kwargs)
        self.stamps["decoder_call"] = time.perf_counter() - start
        self.events[1].record()
        return images

    def gpu_seconds(self) -> float:
        self.events[1].synchronize()
        return self.cupy.cuda.get_elapsed_time(*self.events) / 1e3


def main() -> int:
    from fixtures.profiles import compressed_specs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=600)
    timing.add_corpus_option(parser)
    args = parser.parse_args()
    cupy = timing.gpu_decoding()
    if cupy is None:
        return 1
    spec = next(s for s in compressed_specs("full") if s.transfer_syntax == "jpeg_baseline" and s.frames == 30)
    path = timing.corpus(args).ensure(spec)
    stamps: dict = {}
    decoder = _EventTimedDecoder(cupy, gpu_codec._decoder(), stamps)
    saved = {(compressed, "read_frames"): compressed.read_frames, (compressed, "check_frames"): compressed.check_frames,
             (gpu_codec, "_decode_batch"): gpu_codec._decode_batch, (gpu_codec, "blank_frames"): gpu_codec.blank_frames,
             (gpu_codec, "_decoder"): gpu_codec._decoder}
    compressed.read_frames = _timed(stamps, "read", compressed.read_frames)
    compressed.check_frames = _timed(stamps, "check", compressed.check_frames)
    gpu_codec._decode_batch = _timed(stamps, "decode_batch", gpu_codec._decode_batch)
    gpu_codec.blank_frames = _timed(stamps, "blank", gpu_codec.blank_frames)
    gpu_codec._decoder = lambda: decoder
    rows = []
    try:
        for _ in range(20):
            timing.gpu_load(cupy, path)
        for _ in range(args.calls):
            stamps.clear()
            start = time.perf_counter()
            timing.gpu_load(cupy, path)
            wall = time.perf_counter() - start
            rows.append(dict(stamps, wall=wall, decode_gpu=decoder.gpu_seconds()))
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)
    walls = np.array([r["wall"] for r in rows])
    print(f"{spec.case_id}: {args.calls} warm loads, ms: p10 {np.percentile(walls, 10) * 1e3:.3f}  "
          f"p50 {np.median(walls) * 1e3:.3f}  p90 {np.percentile(walls, 90) * 1e3:.3f}")
    cut = np.median(walls)
    for label, chosen in (("faster half", walls <= cut), ("slower half", walls > cut)):
        part = [r for r, keep in zip(rows, chosen) if keep]
        means = "  ".join(f"{k} {np.mean([r[k] for r in part]) * 1e3:.3f}" for k in ("wall",) + STAGES)
        print(f"  {label}: {means}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

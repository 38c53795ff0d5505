"""Count the frames nvImageCodec's batch decode corrupts when work is still queued on the caller's stream.

``python tools/probe_stream_race.py [--rounds N] [--corpus-dir DIR]``

nvJPEG's hardware batched decode is reported (torchcodec PR 1634, torchvision
PR 9606) to write its output without waiting for the caller's stream on H100s.
kvdicom drains the stream first (``kvdicom._codecs.gpu_codec._drain``). For each JPEG
baseline case of the full profile, each round queues a kernel of about 20 ms,
then a fill of a block the size of the output, frees the block (so the pool
hands it to the output) and decodes the batch: once with the drain, once with
it switched off. It prints, for each, the rounds whose output the pool placed
on the freed block and the rounds whose output differs from a clean decode.
Rounds with the drain should never differ; rounds without it show whether this
GPU and driver have the race.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import timing  # noqa: E402

import kvdicom  # noqa: E402
from kvdicom._codecs import gpu_codec  # noqa: E402
from kvdicom._header import compressed
from tests.stream_race import queued_fill_rounds  # noqa: E402


def main() -> int:
    from fixtures.profiles import compressed_specs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    timing.add_corpus_option(parser)
    args = parser.parse_args()
    cupy = timing.gpu_decoding()
    if cupy is None:
        return 1
    corpus = timing.corpus(args)
    drain = gpu_codec._drain
    for spec in compressed_specs("full"):
        if spec.transfer_syntax != "jpeg_baseline":
            continue
        layout = kvdicom.inspect(corpus.ensure(spec))
        _, frames = compressed.read_frames(layout)
        how = gpu_codec.plan(layout, compressed.check_frames(layout, frames))
        if how.route != "gpu":
            print(f"{spec.case_id}: decodes on the host ({how.reason})")
            continue
        clean, _ = gpu_codec._decode_batch(frames, layout, how)
        expected = clean.get()
        del clean
        try:
            for label, chosen in (("drained", drain), ("not drained", lambda stream: None)):
                gpu_codec._drain = chosen
                rounds = queued_fill_rounds(cupy, lambda: gpu_codec._decode_batch(frames, layout, how), expected,
                                            args.rounds)
                reused = sum(took for took, _, _ in rounds)
                wrong = sum(not equal for _, equal, _ in rounds)
                print(f"{spec.case_id} {label:<12}: {reused}/{args.rounds} rounds on the freed block, "
                      f"{wrong}/{args.rounds} wrong", flush=True)
        finally:
            gpu_codec._drain = drain
    return 0


if __name__ == "__main__":
    sys.exit(main())

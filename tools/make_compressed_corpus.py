"""Write a profile's compressed fixtures into a corpus folder, to carry to a machine without the encoders.

The GPU machine gets nvImageCodec and pylibjpeg (``.whl-codecs``) but not
imagecodecs or pyjpegls (``.whl-encoders``; both sets together exceed what a
device run carries, unless imagecodecs is cut down with ``tools/slim_wheel.py``,
which lets the device write every case itself). Files made here keep their case ids there when the run
sets the ``DGB_ENCODERS`` line this prints. Files larger than ``--max-mib``
are left out (the device writes the JPEG 2000 and RLE ones itself).

    python tools/make_compressed_corpus.py --profile full --out .corpus/compressed --max-mib 12
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fixtures.cache import Corpus  # noqa: E402
from fixtures.encode import COMPRESSED_SYNTAXES, installed_version  # noqa: E402
from fixtures.profiles import compressed_specs  # noqa: E402

#: encoders the device lacks: only their cases need carrying
CARRIED = ("imagecodecs", "pyjpegls")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--out", default=".corpus/compressed")
    parser.add_argument("--max-mib", type=float, default=12.0, help="skip files whose pixels exceed this (MiB)")
    args = parser.parse_args()
    corpus = Corpus(args.out, 1 << 34)
    total = 0
    for spec in compressed_specs(args.profile):
        if COMPRESSED_SYNTAXES[spec.transfer_syntax][1] not in CARRIED:
            continue
        if spec.pixel_bytes > args.max_mib * 2**20:
            print(f"skipped (over --max-mib): {spec.case_id}")
            continue
        path = corpus.ensure(spec)
        total += path.stat().st_size
        print(f"{path.stat().st_size:>10}  {path.name}")
    pins = ",".join(f"{d}={installed_version(d)}" for d in CARRIED if installed_version(d))
    print(f"{total / 2**20:.1f} MiB in {args.out}; "
          f"on the device: export DGB_ENCODERS={pins} DGB_CORPUS_DIR=$PWD/{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

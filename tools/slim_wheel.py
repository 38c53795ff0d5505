"""Rewrite a wheel keeping only some of its files, so that a device run can carry it.

A device run carries at most 64 MiB; imagecodecs' wheel alone is 26-28 MB
(its 80-odd codecs), the suite and kvdicom use six of them (PackBits for RLE,
JPEG 8 for lossless JPEG fixtures, HTJ2K fixtures, JPEG 2000 and JPEG-LS for
kvdicom's host route, and the core), which come to about 3.4 MB compressed.
The kept files keep their RECORD lines, so pip installs the slim wheel as it
would the full one; every other module of the package is
simply absent (imagecodecs reports a codec it cannot import as unavailable).

    python tools/slim_wheel.py .whl-encoders/imagecodecs-*.whl .whl-slim \
        imagecodecs/__init__ imagecodecs/_imagecodecs imagecodecs/imagecodecs imagecodecs/_imcd \
        imagecodecs/_shared imagecodecs/_jpeg8 imagecodecs/_htj2k imagecodecs/_jpeg2k imagecodecs/_jpegls \
        libjpeg- libopenjph- libopenjp2- liblcms2- libcharls- .dist-info/
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile


def slim(wheel: str, out_dir: str, keep: list[str]) -> str:
    """Write ``out_dir/<same name>`` holding the members whose names contain one of ``keep``; return its path."""
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, os.path.basename(wheel))
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target + ".part", "w", zipfile.ZIP_DEFLATED) as dst:
        names = [n for n in src.namelist() if any(k in n for k in keep)]
        kept = set(names)
        for name in names:
            data = src.read(name)
            if name.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(line for line in lines if line.split(",")[0] in kept) + "\n").encode()
            dst.writestr(src.getinfo(name), data)
    os.replace(target + ".part", target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel")
    parser.add_argument("out_dir")
    parser.add_argument("keep", nargs="+", help="substrings of the member names to keep")
    args = parser.parse_args()
    path = slim(args.wheel, args.out_dir, args.keep)
    print(f"{os.path.getsize(path) / 2**20:.1f} MiB  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a compiled header walk would give (issue 23: measure before deciding on a build step).

Compiles ``tools/walk_probe.c`` (a C walk of an explicit VR little endian top-level dataset to the pixel
data, recording the elements kvdicom keeps: what ``kvdicom._header.fast_header._walk_top`` does) with
``cc``, checks that it finds the same pixel element and the same kept values as the Python walk on the
full profile's CT series, and times both on the same bytes in memory, beside ``read_header`` whole.

    .venv/bin/python tools/walk_probe.py [files]     # needs a C compiler; kvdicom never does

The probe is not kvdicom code: it handles explicit VR little endian only. Numbers: docs/loader.md.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import tempfile
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fixtures.cache import Corpus  # noqa: E402
from fixtures.profiles import series_profile_specs  # noqa: E402
from kvdicom._header import fast_header  # noqa: E402
from kvdicom._series import headers  # noqa: E402


def _compile(out_dir: str) -> ctypes.CDLL:
    library = os.path.join(out_dir, "walk_probe.so")
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", library, os.path.join(ROOT, "tools", "walk_probe.c")],
                   check=True)
    lib = ctypes.CDLL(library)
    lib.walk_top.restype = ctypes.c_long
    lib.walk_top.argtypes = [ctypes.c_char_p, ctypes.c_long, ctypes.c_long, ctypes.POINTER(ctypes.c_uint32),
                             ctypes.c_int, ctypes.POINTER(ctypes.c_int64)]
    return lib


def _python_walk(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        src = fast_header._Source(fd, os.fstat(fd).st_size)
        pos, implicit, _ = fast_header._start(src, False)
        if implicit:
            raise SystemExit(f"{path}: implicit VR; the probe walks explicit VR little endian only")
        return pos, fast_header._walk_top(src, pos, False, False)
    finally:
        os.close(fd)


def _best_us(fn, count: int, loops: int = 20) -> float:
    return min(timeit.repeat(fn, number=loops, repeat=7)) / loops / count * 1e6


def main(paths: list[str]) -> None:
    words = sorted(w for w, action in fast_header._ACTIONS.items() if action == fast_header._KEEP)
    wanted = (ctypes.c_uint32 * len(words))(*words)
    out = (ctypes.c_int64 * (2 * len(words)))()
    with tempfile.TemporaryDirectory() as tmp:
        lib = _compile(tmp)
        heads = []
        for path in paths:
            pos, (kept, pixel) = _python_walk(path)
            with open(path, "rb") as f:
                data = f.read(pixel[2])
            at = lib.walk_top(data, len(data), pos, wanted, len(words), out)
            found = {w: data[out[2 * i] : out[2 * i] + out[2 * i + 1]] for i, w in enumerate(words) if out[2 * i] >= 0}
            if at < 0 or found != {w: value for w, (_, value) in kept.items()}:
                raise SystemExit(f"{path}: the C walk disagrees with the Python walk")
            heads.append((data, pos))

        def python_walks():
            for data, pos in heads:
                src = fast_header._Source(-1, len(data))
                src.buf, src.base = data, 0
                fast_header._walk_top(src, pos, False, False)

        def c_walks():
            for data, pos in heads:
                lib.walk_top(data, len(data), pos, wanted, len(words), out)

        n = len(heads)
        print(f"{n} files, {len(heads[0][0])} header bytes each; per file, best of 7:")
        print(f"  Python walk {_best_us(python_walks, n):.1f} us, C walk (ctypes) {_best_us(c_walks, n):.1f} us, "
              f"read_header whole {_best_us(lambda: [headers.read_header(p) for p in paths], n, 5):.1f} us")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        files = sys.argv[1:]
    else:
        spec = max(series_profile_specs("full"), key=lambda s: s.pixel_bytes)
        folder = Corpus(os.environ.get("DGB_CORPUS_DIR", os.path.join(ROOT, ".corpus")), 40 << 30).ensure_series(spec)
        files = sorted(os.path.join(folder, name) for name in os.listdir(folder))[:128]
    main(files)

"""The compiled header walk against the Python walk alone, interleaved in one process (docs/loader.md).

    .venv/bin/python tools/walk_ab.py SERIES_FOLDER [FILE ...]

Times ``load`` of the series' first slice (beside dicomsdl's read of it, where installed), ``load_series(cpu)``
of the folder beside its read ceiling (``bench.ceilings.SeriesRead``), and ``inspect`` and ``load`` of each FILE,
switching ``fast_header.compiled_walk`` between rounds; prints the medians. Needs the compiled walk built
(``./dgb`` builds it where a C compiler is found).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kvdicom  # noqa: E402
from bench.ceilings import SeriesRead  # noqa: E402
from kvdicom._header import fast_header  # noqa: E402


def _timed(fn, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(folder: str, files: list[str]) -> None:
    compiled = fast_header.compiled_walk
    if compiled is None:
        raise SystemExit("the compiled header walk is not built here: run ./dgb first (it needs a C compiler)")
    _, info = kvdicom.load_series(folder, "cpu")
    first = str(info.paths[0])
    ceiling = SeriesRead([(layout.path, layout.offset, layout.nbytes) for layout in info.layouts], "cpu")
    cases = [("slice load", lambda: kvdicom.load(first, "cpu"), 400),
             ("series load", lambda: kvdicom.load_series(folder, "cpu"), 6), ("series ceiling", ceiling, 6)]
    try:
        from bench.peers import dicomsdl_cpu

        dicomsdl_cpu(first)
        cases.insert(1, ("dicomsdl slice", lambda: dicomsdl_cpu(first), 400))
    except ImportError:
        pass
    for path in files:
        cases.append((f"inspect {os.path.basename(path)[:30]}", lambda p=path: kvdicom.inspect(p), 400))
        cases.append((f"load {os.path.basename(path)[:30]}", lambda p=path: kvdicom.load(p, "cpu"), 100))
    times = {(name, walk): [] for name, _, _ in cases for walk in ("compiled", "python")}
    try:
        for round_ in range(6):
            for name, fn, count in cases:
                for walk in ("compiled", "python") if round_ % 2 == 0 else ("python", "compiled"):
                    fast_header.compiled_walk = compiled if walk == "compiled" else None
                    fn()
                    times[(name, walk)] += _timed(fn, count)
    finally:
        fast_header.compiled_walk = compiled
        ceiling.close()
    for name, _, _ in cases:
        with_c, without = (np.median(times[(name, w)]) * 1e3 for w in ("compiled", "python"))
        print(f"{name:42s} compiled {with_c:9.3f} ms   python {without:9.3f} ms   ({without / with_c:.2f}x)")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])

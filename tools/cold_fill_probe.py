"""How fast the kernel alone fills the page cache with a cold series, against the same files read with O_DIRECT.

    .venv/bin/python tools/cold_fill_probe.py SERIES_FOLDER [ROUNDS]

Each round drops every file (verified), reads them all with O_DIRECT (``bench.series_disk.SeriesDiskRead``), drops
them again, gives ``POSIX_FADV_WILLNEED`` for every whole file and polls their residency with ``mincore`` until all
pages are cached: no byte is copied to user memory, so this bounds any loader that reads through the page cache
(docs/loader.md, "Cold series"). Prints the times of each round.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench import peers  # noqa: E402
from bench.ceilings import _libc, drop_page_cache  # noqa: E402
from bench.series_disk import SeriesDiskRead  # noqa: E402
from kvdicom._io.readahead import will_need  # noqa: E402


def main(folder: str, rounds: int = 3) -> None:
    paths = [str(p) for p in peers.series_files(folder)]
    maps = []
    for path in paths:
        with open(path, "rb") as f:
            maps.append(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))  # mapped, never touched
    pages = [np.frombuffer(m, dtype=np.uint8) for m in maps]
    vectors = [(ctypes.c_ubyte * ((len(m) + mmap.PAGESIZE - 1) // mmap.PAGESIZE))() for m in maps]
    total = sum(len(v) for v in vectors)
    libc = _libc()

    def resident() -> float:
        for view, vector in zip(pages, vectors):
            libc.mincore(ctypes.c_void_p(view.ctypes.data), view.nbytes, vector)
        return sum(int(np.count_nonzero(np.frombuffer(v, dtype=np.uint8) & 1)) for v in vectors) / total

    def drop() -> None:
        for path in paths:
            left = drop_page_cache(path)
            if left is None or left > 0:
                raise SystemExit(f"{path}: the page cache cannot be dropped and verified here ({left})")

    direct = SeriesDiskRead(paths, "cpu", direct=True)
    try:
        for _ in range(rounds):
            drop()
            start = time.perf_counter()
            direct()
            direct_ms = (time.perf_counter() - start) * 1e3
            drop()
            start = time.perf_counter()
            for path in paths:
                will_need(path)
            hinted_ms = (time.perf_counter() - start) * 1e3
            while resident() < 1.0:
                time.sleep(0.002)
            filled_ms = (time.perf_counter() - start) * 1e3
            print(f"O_DIRECT read {direct_ms:.1f} ms   WILLNEED given in {hinted_ms:.1f} ms, "
                  f"all cached at {filled_ms:.1f} ms")
    finally:
        direct.close()


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))

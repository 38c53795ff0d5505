"""Read a byte range of a file into a NumPy buffer: the CPU half of kvdicom's I/O."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Reads below this size use one ``preadv``; larger ones are split across threads,
#: because one thread copying out of the page cache tops out well below memory bandwidth.
PARALLEL_READ_BYTES = 32 << 20
CHUNK_BYTES = 8 << 20


def _pread_exact(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset``; return the bytes read (short only at end of file)."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


def read_into(path: str, buffer: np.ndarray, offset: int, threads: int | None = None) -> int:
    """Read ``buffer.nbytes`` bytes of ``path`` at ``offset`` into ``buffer``; return bytes read."""
    view = memoryview(buffer).cast("B")
    fd = os.open(path, os.O_RDONLY)
    try:
        if len(view) < PARALLEL_READ_BYTES:
            return _pread_exact(fd, view, offset)
        starts = range(0, len(view), CHUNK_BYTES)
        workers = threads or min(16, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            sizes = pool.map(lambda s: _pread_exact(fd, view[s : s + CHUNK_BYTES], offset + s), starts)
            return sum(sizes)
    finally:
        os.close(fd)

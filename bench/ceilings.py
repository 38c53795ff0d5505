"""The machine's own limits, measured on the same bytes as the loaders.

A loader's GB/s means little alone: 40 GB/s is the limit on one machine and
poor on another. Each ceiling moves the same number of bytes as the case it
is compared with, so small-file latency and large-file bandwidth are both fair.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dgbench.config import COLD_MAX_RESIDENT, COLD_ROUNDS
from kvdicom._io import host_read
from kvdicom._io.tuning import machine_threads

DIRECT_IO_ALIGN = 4096


def drop_page_cache(path) -> float | None:
    """Evict ``path`` from the page cache and return the fraction still resident (``None``: cannot tell).

    POSIX_FADV_DONTNEED needs no privilege; where pages stay (tmpfs, some
    overlay file systems, pages mapped elsewhere) KvikIO's ``drop_file_page_cache``
    is tried too. The fraction is read with ``mincore`` (:func:`resident_fraction`).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    left = resident_fraction(path)
    if left is None or left > COLD_MAX_RESIDENT:
        try:
            import kvikio

            kvikio.drop_file_page_cache(str(path))
            left = resident_fraction(path)
        except Exception:  # no KvikIO, an older one without it, or no privilege
            pass
    return left


_PROT_READ, _MAP_SHARED = 0x1, 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    return libc


def resident_fraction(path) -> float | None:
    """Fraction of ``path``'s pages in the page cache, by ``mincore`` on a read-only mapping
    (which touches no page); ``None`` where that cannot be asked (no libc mincore, mapping refused)."""
    try:
        libc = _libc()
        size = os.stat(path).st_size
    except (OSError, AttributeError):
        return None
    if size == 0:
        return 0.0
    page = mmap.PAGESIZE
    pages = -(-size // page)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            return None
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                return None
            return sum(b & 1 for b in vec) / pages
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def cached_fraction(path) -> float | None:
    """Fraction of ``path``'s pages in the page cache (``None`` without KvikIO)."""
    try:
        import kvikio
    except Exception:
        return None
    cached, total = kvikio.get_page_cache_info(str(path))
    return cached / total if total else 1.0


def time_cold(benchmark, path, target) -> None:
    """Time ``target`` with ``path`` evicted from the page cache before every round.

    The row stays ``page_cache: "cold"`` only if every round's drop was verified
    (at most COLD_MAX_RESIDENT of the pages resident); otherwise it becomes
    ``"unverified"``, which the report and the derived numbers never hold against
    the disk ceiling. ``resident_fraction_max`` records the worst round.
    """
    readings: list[float | None] = []

    def setup():
        readings.append(drop_page_cache(path))
        benchmark.extra_info["cached_fraction_before"] = cached_fraction(path)

    benchmark.pedantic(target, setup=setup, rounds=COLD_ROUNDS, iterations=1, warmup_rounds=0)
    record_cold_verdict(benchmark.extra_info, readings)


def record_cold_verdict(extra_info: dict, readings: list[float | None]) -> None:
    """Set ``page_cache`` to ``cold`` or ``unverified`` from each round's residency after the drop."""
    known = [r for r in readings if r is not None]
    verified = bool(readings) and len(known) == len(readings) and max(known) <= COLD_MAX_RESIDENT
    extra_info["resident_fraction_max"] = max(known) if known else None
    extra_info["page_cache"] = "cold" if verified else "unverified"


class HostToDevice:
    """One host→device copy of ``nbytes`` from pinned or pageable memory, synchronized."""

    def __init__(self, nbytes: int, pinned: bool):
        import cupy
        import cupyx

        self.cupy = cupy
        self.host = cupyx.empty_pinned(nbytes, dtype=np.uint8) if pinned else np.empty(nbytes, dtype=np.uint8)
        self.host[:] = 1  # touch every page so no first-touch faults land in the timing
        self.device = cupy.empty(nbytes, dtype=cupy.uint8)

    def __call__(self):
        self.device.set(self.host)
        self.cupy.cuda.get_current_stream().synchronize()


class PageCacheRead:
    """Multi-threaded read of the file's pixel bytes from the page cache into host memory."""

    def __init__(self, path, offset: int, nbytes: int):
        self.path, self.offset = str(path), offset
        self.buffer = np.empty(nbytes, dtype=np.uint8)
        self.buffer[:] = 0

    def __call__(self):
        return host_read.read_into(self.path, self.buffer, self.offset)


class DiskRead:
    """Sequential read of the whole file from the disk, threaded: O_DIRECT, or buffered after a cache drop.

    Call ``drop_page_cache`` before each round. Both ways are measured because
    neither is always faster (buffered reads get the kernel's readahead); the
    cold ceiling is the faster of the two. Where O_DIRECT is refused (tmpfs,
    some overlay file systems) ``direct`` falls back to buffered. Both go
    through kvdicom's own chunked reader and pool (``host_read.read_into``).
    """

    def __init__(self, path, direct: bool = True):
        self.path = str(path)
        self.size = os.stat(self.path).st_size
        self.aligned = self.size // DIRECT_IO_ALIGN * DIRECT_IO_ALIGN
        self.buffer = mmap.mmap(-1, -(-max(self.size, 1) // DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN)  # page-aligned
        self.direct = direct and self._direct_io_works()

    def _direct_io_works(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT)
        except (OSError, AttributeError):
            return False
        try:
            os.preadv(fd, [memoryview(self.buffer)[:DIRECT_IO_ALIGN]], 0)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    @property
    def nbytes(self) -> int:
        return self.aligned if self.direct else self.size

    def __call__(self) -> int:
        out = np.frombuffer(self.buffer, dtype=np.uint8)[: self.nbytes]  # page-aligned start
        return host_read.read_into(self.path, out, 0, direct=self.direct)


class SeriesRead:
    """The I/O ceiling of a series: every file's pixel range, offsets known in advance, read concurrently.

    CPU: into one host buffer. GPU (``device="cuda"``): into one pinned host
    buffer, then copied to the device once. No header is parsed inside the
    timed call, so a series loader is held against the bytes alone.
    """

    def __init__(self, ranges: list[tuple[str, int, int]], device: str = "cpu"):
        self.ranges = ranges  # (path, offset, nbytes) per file, in volume order
        self.nbytes = sum(n for _, _, n in ranges)
        self.device = device
        starts, at = [], 0
        for _, _, n in ranges:
            starts.append(at)
            at += n
        self.starts = starts
        if device == "cuda":
            import cupy
            import cupyx

            self.cupy = cupy
            self.host = cupyx.empty_pinned(self.nbytes, dtype=np.uint8)
            self.gpu = cupy.empty(self.nbytes, dtype=cupy.uint8)
        else:
            self.host = np.empty(self.nbytes, dtype=np.uint8)
        self.host[:] = 0  # touch every page before timing
        self.pool = ThreadPoolExecutor(max_workers=machine_threads())

    def _read(self, i: int) -> int:
        path, offset, n = self.ranges[i]
        fd = os.open(path, os.O_RDONLY)
        try:
            view = memoryview(self.host[self.starts[i] : self.starts[i] + n])
            got = 0
            while got < n:
                step = os.preadv(fd, [view[got:]], offset + got)
                if step == 0:
                    raise OSError(f"{path}: file ended {n - got} bytes before the pixel data's end")
                got += step
            return got
        finally:
            os.close(fd)

    def __call__(self) -> int:
        got = sum(self.pool.map(self._read, range(len(self.ranges))))
        if self.device == "cuda":
            self.gpu.set(self.host)
            self.cupy.cuda.get_current_stream().synchronize()
        return got

    def close(self) -> None:
        self.pool.shutdown()

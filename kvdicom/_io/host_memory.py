"""Large host arrays whose memory, once the caller lets go of them, is kept for the next load of that size.

A fresh ``np.empty`` of a CT series (64-512 MiB) is mapped anew, and the kernel faults in and zeroes every page
the load then writes: on the 2-core CPU dev machine 6.3 ms for 64 MiB, against 9.7 ms for copying those 64 MiB
into memory already touched, so a load of 128 CT slices spent about a third of its time taking pages. The I/O
ceilings it is held against read into one buffer touched once. Here, an array of at least
:data:`kvdicom.settings.HOST_CACHE_MIN_BYTES` is backed by an anonymous ``mmap`` of kvdicom's own; when the last
array or view on it is gone (``weakref.finalize`` on the array every view refers to), the mapping is kept, its
pages still faulted in, and the next load that needs as many bytes (up to a quarter more) takes it. At most
``kvdicom.configure(host_cache_bytes=...)`` bytes are kept (default 512 MiB; 0 keeps none), the most recently
freed; the memory of a volume the caller still holds is never kept or reused. Like CuPy's memory pool for device
memory, this trades memory the process already had for time.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
import weakref

import numpy as np

from kvdicom import settings

# re-entrant: a finalizer run by the garbage collector while this thread holds the lock gives memory back too
_lock = threading.RLock()
_kept: list[mmap.mmap] = []  # freed mappings, oldest first


def _reset_in_child() -> None:
    global _lock, _kept
    _lock, _kept = threading.RLock(), []  # a fork's copy of a lock another thread held would never be released


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_reset_in_child)


def kept_bytes() -> int:
    """Bytes of freed arrays kept now."""
    with _lock:
        return sum(len(m) for m in _kept)


def clear() -> None:
    """Let every kept mapping go."""
    with _lock:
        _kept.clear()


def _limit() -> int:
    return settings.current().host_cache_bytes


def _trim(limit: int) -> None:
    """Keep at most ``limit`` bytes, the most recently freed (a mapping let go is unmapped once nothing refers
    to it any more)."""
    with _lock:
        total = sum(len(m) for m in _kept)
        while total > limit:
            total -= len(_kept.pop(0))


def _give_back(mapping: mmap.mmap) -> None:
    """The last array on ``mapping`` is gone: keep it, within the limit (the oldest ones go first)."""
    limit = _limit()
    if len(mapping) > limit:
        return
    with _lock:
        _kept.append(mapping)
        _trim(limit)


# a lower limit (0: keep none) lets the kept memory go at once, not at the next load
settings.on_change(lambda now: _trim(now.host_cache_bytes))


def _track(mapping: mmap.mmap, nbytes: int) -> np.ndarray:
    array = np.frombuffer(mapping, dtype=np.uint8, count=nbytes)
    # every view of ``array`` refers to it (NumPy stops collapsing a view's base at an array whose base is no
    # array: here the memoryview on the mapping), so this runs only once the last of them is gone
    weakref.finalize(array, _give_back, mapping).atexit = False
    return array


def reuse(nbytes: int) -> np.ndarray | None:
    """A kept mapping's memory as a uint8 array of ``nbytes`` (pages already faulted in), or None."""
    if nbytes < settings.HOST_CACHE_MIN_BYTES:
        return None
    with _lock:
        fits = [m for m in _kept if nbytes <= len(m) <= nbytes + nbytes // 4]
        if not fits:
            return None
        mapping = fits[-1]  # the most recently freed: the likeliest to be in the CPU's caches still
        _kept.remove(mapping)
    return _track(mapping, nbytes)


def fresh(nbytes: int) -> np.ndarray:
    """New memory of ``nbytes`` as a uint8 array, kept when freed where it is large enough (not faulted in)."""
    if nbytes < settings.HOST_CACHE_MIN_BYTES or nbytes > _limit():
        return np.empty(nbytes, dtype=np.uint8)
    try:
        # private, as NumPy's memory: ``mmap``'s default (MAP_SHARED) is shmem, which a forked child would write
        # into under its parent's arrays, and whose pages faulted in 3.4x slower (128 MiB: 50 against 14.7 ms,
        # 2-core CPU dev machine); on the H200 it made a rescaled 256-slice CPU load 1.7x slower (0.094 -> 0.16 s)
        mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    except OSError:  # no room for a mapping (ENOMEM): NumPy's allocator decides, and raises MemoryError
        return np.empty(nbytes, dtype=np.uint8)
    if hasattr(mmap, "MADV_HUGEPAGE"):  # as NumPy asks for its own large arrays: 2 MiB pages where the kernel can
        mapping.madvise(mmap.MADV_HUGEPAGE)
    return _track(mapping, nbytes)


def nbytes_of(shape, dtype) -> int:
    """The bytes of an array of ``shape`` (an int or a tuple of them) and ``dtype``."""
    # math.prod: np.prod of a small tuple took 2.4 us, 4% of a 512² CT slice's CPU load on the H200 (62 us)
    return math.prod((shape,) if isinstance(shape, (int, np.integer)) else shape) * np.dtype(dtype).itemsize


def empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)``: in a kept mapping where one fits, else in new memory kept when freed."""
    nbytes = nbytes_of(shape, dtype)
    if nbytes < settings.HOST_CACHE_MIN_BYTES:  # a slice, not a volume: NumPy's own allocation, nothing more
        return np.empty(shape, dtype=dtype)
    raw = reuse(nbytes)
    if raw is None:
        raw = fresh(nbytes)
    return raw.view(dtype).reshape(shape)

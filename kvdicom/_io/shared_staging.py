"""One host buffer shared with kvdicom's worker processes, so a series' pixel bytes are read by the workers
that parse its headers, straight into memory the parent copies to the GPU from.

Why: reading 256 files on the parent's thread pool costs the parent per-file Python work (open, identity
checks, submission) that fights the threads for the GIL and the parent's unpacking of the headers; the
header workers have each file open already and run on other cores.

The buffer is an anonymous ``memfd`` (Linux), created with the worker pool and inherited by every worker
at its start (``pass_fds``), so nothing is named in ``/dev/shm`` (nothing can leak there, and Docker's
64 MB ``/dev/shm`` does not bound it). The parent maps it and page-locks the mapping for CUDA once per size
(``cudaHostRegister``), so host-to-device copies from it are asynchronous DMA; each worker maps it once per
size too. It only grows, to the largest series loaded, and is held for the process's life as CuPy's pinned
pool holds its blocks. One load uses it at a time (:meth:`SharedStaging.acquire`); a second load at the
same time reads as before.
"""

from __future__ import annotations

import mmap
import os
import threading

import numpy as np

#: Growth step: sizes round up to it, so series of slightly different sizes reuse one mapping.
GROW_BYTES = 64 << 20


class SharedStaging:
    """The parent's side: the memfd, its mapping, the CUDA registration and the one-load-at-a-time lock."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = 0
        self._map: mmap.mmap | None = None
        self._array: np.ndarray | None = None
        self._registered: int | None = None  #: address page-locked for CUDA, if any
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Take the buffer for one load; False when another load holds it (that load then reads as before)."""
        return self._lock.acquire(blocking=False)

    def release(self) -> None:
        self._lock.release()

    def reserve(self, nbytes: int, pin: bool) -> np.ndarray:
        """The first ``nbytes`` of the buffer (grown if needed), page-locked for CUDA when ``pin``."""
        if nbytes > self.size:
            self._unregister()
            size = -(-nbytes // GROW_BYTES) * GROW_BYTES
            os.ftruncate(self.fd, size)
            self._map = mmap.mmap(self.fd, size)  # MAP_SHARED: the workers' writes show here
            self._array = np.frombuffer(self._map, dtype=np.uint8)
            self.size = size
        if pin and self._registered is None:
            self._register()
        return self._array[:nbytes]

    def _register(self) -> None:
        import cupy

        try:
            cupy.cuda.runtime.hostRegister(self._array.ctypes.data, self.size, 0)
        except cupy.cuda.runtime.CUDARuntimeError:  # copies from pageable memory still work, only slower
            return
        self._registered = self._array.ctypes.data

    def _unregister(self) -> None:
        if self._registered is not None:
            import cupy

            cupy.cuda.runtime.hostUnregister(self._registered)
            self._registered = None

    def close(self) -> None:
        """Drop the buffer (a forked child's copy of it, or a pool that stops)."""
        try:
            self._unregister()
        except Exception:  # noqa: BLE001  a forked child has no usable CUDA context: the mapping goes anyway
            self._registered = None
        self._map = self._array = None
        try:
            os.close(self.fd)
        except OSError:
            pass


def create() -> SharedStaging | None:
    """A new shared buffer, or None where ``memfd_create`` is missing (not Linux) or refused."""
    if not hasattr(os, "memfd_create"):
        return None
    try:
        return SharedStaging(os.memfd_create("kvdicom-staging", os.MFD_CLOEXEC))
    except OSError:
        return None


# --- the worker's side -------------------------------------------------------------------------------

_worker_map: tuple[int, int, np.ndarray] | None = None  #: (fd, size, its mapping as uint8) in this worker


def worker_view(fd: int, size: int) -> np.ndarray:
    """In a worker: the shared buffer as the parent sized it (``size``), mapped once per size."""
    global _worker_map
    if _worker_map is None or _worker_map[0] != fd or _worker_map[1] < size:
        _worker_map = (fd, size, np.frombuffer(mmap.mmap(fd, size), dtype=np.uint8))
    return _worker_map[2]

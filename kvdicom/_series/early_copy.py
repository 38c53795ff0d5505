"""Native slices the header workers read, copied to the device chunk by chunk while later chunks are parsed.

Why: the workers' reads are what bounds a long native series on the GPU; copying every slice to its sorted
place only after the last header (one host-to-device copy per slice) added the whole transfer behind them
(256 CT slices of 512², H200: 2.45 ms of a 22-23 ms load, and 3.6 ms with the 256 calls and the sync).
Each chunk a worker returns is one span of the shared buffer (its files' slots are adjacent), so it goes to
a device copy of the buffer as soon as it arrives; once the slices are sorted, one kernel gathers them from
there to their places in the volume. The device copy costs as many device bytes as the files hold on disk,
for the length of the load.

Compressed chunks are not copied: their codestreams are decoded from host memory (``kvdicom._series.decode``).
Every slice is still checked before it is used: a slice whose worker did not read it, or whose chunk was not
copied, leaves the whole volume to the host path (:func:`kvdicom._series.worker_reads.place`).
"""

from __future__ import annotations

import numpy as np

#: CuPy kernels by element type: ``dst[i]`` is element ``i % per`` of slice ``i // per``, which starts at
#: element ``starts[i // per]`` of ``src`` (units of the element type).
_KERNELS: dict = {}


def _gather_kernel(cupy):
    kernel = _KERNELS.get("gather")
    if kernel is None:
        kernel = _KERNELS["gather"] = cupy.ElementwiseKernel(
            "raw T src, raw int64 starts, int64 per", "T dst", "dst = src[starts[i / per] + i % per]",
            "kvdicom_gather_slices")
    return kernel


def unit(starts: list[int], nbytes: int) -> int:
    """The widest element (8, 4, 2 or 1 bytes) that divides every slice's start and its length (give the
    arrays' own addresses among the starts: a misaligned access is a CUDA error that ends the context)."""
    for size in (8, 4, 2):
        if nbytes % size == 0 and all(s % size == 0 for s in starts):
            return size
    return 1


class EarlyCopy:
    """One load's device copy of the shared buffer (``xp``: CuPy; NumPy stands in for it in the CPU tests)."""

    def __init__(self, buffer: np.ndarray, slots: list[tuple[int, int]], xp) -> None:
        self.buffer, self.slots, self.xp = buffer, slots, xp
        self.mirror = None
        self.copied = np.zeros(len(slots), dtype=bool)
        self.chunks = 0  #: spans copied
        self.refused = False  #: the device had no room for the copy: the load uses the host copies
        self._stream = None if xp is np else xp.cuda.get_current_stream()

    def _allocate(self):
        return self.xp.empty(self.buffer.nbytes, dtype=self.xp.uint8)

    def chunk(self, batch: list, results: dict) -> None:
        """After a worker's chunk (``(index, header)`` pairs, adjacent indices): copy its span when it holds a
        native image slice its worker read (``results``: the workers' reads by index)."""
        if not batch:
            return
        native = [i for i, header in batch if header.layout is not None and not header.layout.compressed
                  and type(results.get(i)) is int]
        if not native or self.refused:
            return
        first, last = min(i for i, _ in batch), max(i for i, _ in batch)
        start, stop = self.slots[first][0], self.slots[last][0] + self.slots[last][1]
        if self.mirror is None:
            try:
                self.mirror = self._allocate()
            except MemoryError:  # CuPy's OutOfMemoryError too: the slices go from the host, as before
                self.refused = True
                return
        if self._stream is None:
            self.mirror[start:stop] = self.buffer[start:stop]
        else:
            self.xp.cuda.runtime.memcpyAsync(self.mirror.data.ptr + start, self.buffer.ctypes.data + start,
                                             stop - start, self.xp.cuda.runtime.memcpyHostToDevice, self._stream.ptr)
        self.copied[native] = True
        self.chunks += 1

    def covers(self, indices: list[int]) -> bool:
        return self.mirror is not None and bool(self.copied[indices].all())

    def gather(self, indices: list[int], nbytes: int, raw) -> None:
        """Slice ``k`` of ``raw`` (1-D uint8 on the device, ``nbytes`` a slice) from the copied slot of
        ``indices[k]``; the caller checked :meth:`covers` and that every slice has ``nbytes``."""
        starts = [self.slots[i][0] for i in indices]
        if self._stream is None:
            for k, s in enumerate(starts):
                raw[k * nbytes : (k + 1) * nbytes] = self.mirror[s : s + nbytes]
            return
        # ``raw`` may be a user's ``out=``: C-contiguous, yet a view whose start is aligned to its dtype only
        size = unit(starts + [int(raw.data.ptr), int(self.mirror.data.ptr)], nbytes)
        dtype = np.dtype(f"u{size}")
        usable = self.mirror.nbytes // size * size
        src = self.mirror[:usable].view(dtype)
        dst = raw[: len(indices) * nbytes].view(dtype)
        element_starts = self.xp.asarray(np.asarray(starts, dtype=np.int64) // size)
        _gather_kernel(self.xp)(src, element_starts, nbytes // size, dst)

    def drop(self) -> None:
        """Give the device copy back (the volume needs the room); the slices then go from the host. Copies
        still queued into it run first: CuPy's pool hands the block out again on the same stream only."""
        self.mirror, self.refused = None, True
        self.copied[:] = False

    def finish(self) -> None:
        """Wait for the copies: the shared buffer is the next load's only after they ran."""
        if self._stream is not None and self.chunks:
            self._stream.synchronize()

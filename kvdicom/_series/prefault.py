"""A CPU volume's memory, faulted in on one thread while the header workers parse.

On the CPU path the slices the workers read are copied to the volume only once they are sorted, after the last
header; a fresh ``np.empty`` volume then takes a page fault (and the kernel's zeroing of the page) on every
4 KiB it is copied into, inside that copy. Those faults do not depend on the headers, so one thread takes them
while the workers parse: it reads the first file's header itself, allocates the volume it predicts (every file
a slice of that layout) and writes one byte per page. :meth:`Prefault.take` gives that memory to the load
where the volume it needs has exactly that size, else the load allocates as before.
"""

from __future__ import annotations

import mmap
import threading

import numpy as np

from kvdicom._header.layout import PixelLayout

#: Bytes touched between two looks at the stop flag, so :meth:`Prefault.take` waits little.
STEP_BYTES = 4 << 20


class Prefault:
    """The predicted volume of the series ``paths``, its pages touched on a thread of its own."""

    def __init__(self, paths: list[str]):
        self.array: np.ndarray | None = None
        self._paths = paths
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvdicom-prefault", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kvdicom._series.headers import read_header  # headers imports the loader's modules

        layout = read_header(self._paths[0]).layout
        if not isinstance(layout, PixelLayout) or self._stop.is_set():  # compressed: decoded, not copied
            return
        array = np.empty(len(self._paths) * layout.nbytes, dtype=np.uint8)
        for start in range(0, array.nbytes, STEP_BYTES):
            if self._stop.is_set():
                break
            array[start : start + STEP_BYTES : mmap.PAGESIZE] = 0
        self.array = array

    def take(self, shape, dtype) -> np.ndarray | None:
        """The memory as an array of ``shape`` and ``dtype`` where it has exactly that many bytes (pages not yet
        touched fault in as before; given once), else None (kept for another ``take``: a rescaled series
        allocates its float volume first, then the stored one); either way the thread is done."""
        self.stop()
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if self.array is None or self.array.nbytes != nbytes:
            return None
        array, self.array = self.array, None
        return array.view(dtype).reshape(shape)

    def stop(self) -> None:
        """Stop touching pages and wait for the thread (a load that fails, or needs no such volume)."""
        self._stop.set()
        self._thread.join()

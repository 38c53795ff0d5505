"""A CPU volume's memory, faulted in on a thread of its own while the parent parses the headers.

Where the headers are parsed in the caller's process (fewer than 4 cores, or short series), the pixel reads into
the volume start only once the slices are sorted, after the last header; a fresh ``np.empty`` volume then takes a
page fault, and the kernel's zeroing of the page, on every page those reads write. Those faults do not depend on the
headers, so a thread takes them meanwhile, on a core the header parse (one thread, the GIL) leaves idle. The
caller reads the first file's header (once more: the parse reads it again) and predicts the volume, every file a
slice of that layout; the thread allocates it and writes one byte a page, releasing the GIL as NumPy's assignment
does. :meth:`Prefault.take` gives that memory to the load where the volume it needs has exactly that size, else
the load allocates as before. Where a freed volume of that size is kept (:mod:`kvdicom._io.host_memory`), its
memory, faulted in already, is taken instead and no thread starts. 2-core CPU dev machine, 128 CT slices of 512²
(64 MiB): the reads took 12.7 ms into a fresh volume against 8.2 ms into touched memory.

It never touches more than the files hold: the prediction is dropped where it exceeds their size on disk. Those
sizes are asked for (a ``stat`` a file) before the thread starts: asked on the thread, each ``stat`` waited for the
GIL the parse holds, and 128 CT slices took 22.0 / 24.1 ms against 19.4 / 19.5 ms without pre-faulting.
Tried and not kept: faulting the pages in with ``madvise(MADV_POPULATE_WRITE)`` (through ctypes, GIL released),
which writes nothing, so the memory could be handed over at once and the reads start while the thread still faulted
in the pages they had not reached: 128 CT slices 16.1 against 16.0 ms (separate processes alternated, medians of 6;
2-core CPU dev machine), as the reads then take the faults the thread has not. Tried on the header workers' path
too (59c44fa, reverted): no gain on the 16-core device, where the workers'
reads, not the faults, bound the load; that path does not use it.
"""

from __future__ import annotations

import mmap
import os
import threading

import numpy as np

from kvdicom import settings
from kvdicom._header.layout import PixelLayout
from kvdicom._io import host_memory
from kvdicom._series.headers import read_header


class Prefault:
    """The predicted volume of the series ``paths``, its pages touched on a thread of its own."""

    def __init__(self, paths: list[str], first: PixelLayout | None = None):
        self.array: np.ndarray | None = None
        self._thread: threading.Thread | None = None
        self.nbytes = 0  #: the predicted volume's bytes (0: none predicted)
        layout = first_layout(paths, first)
        if layout is None:
            return
        # a freed volume's memory of that size, faulted in already: no thread, and nothing allocated, so the
        # files' sizes need not bound it (a stat a file: 0.11 / 0.22 ms for 128 / 256 CT slices, 2-core CPU dev
        # machine, on every load of a series loaded before)
        total = len(paths) * layout.nbytes  # every file a slice of the first file's layout
        self.array = host_memory.reuse(total)
        if self.array is not None:
            self.nbytes = total
            return
        self.nbytes = nbytes = _held(paths, total)  # never more than the files hold
        if nbytes:
            self._thread = threading.Thread(target=self._run, args=(nbytes,), name="kvdicom-prefault", daemon=True)
            self._thread.start()

    def _run(self, nbytes: int) -> None:
        # one NumPy call, which releases the GIL: a loop of smaller ones waited for the GIL at every step
        # (the parse holds it; the interpreter hands it over every 5 ms), and touched almost nothing in time
        try:
            array = host_memory.fresh(nbytes)
            array[:: mmap.PAGESIZE] = 0
        except MemoryError:  # no room now: the load allocates its volume itself, and says so if it cannot
            return
        self.array = array

    def take(self, shape, dtype) -> np.ndarray | None:
        """The memory as an array of ``shape`` and ``dtype`` where it has exactly that many bytes (given once),
        else None (kept for another ``take``: a rescaled series allocates its float volume first, then the
        stored one). Waits for the thread."""
        self._wait()
        if self.array is None or self.array.nbytes != host_memory.nbytes_of(shape, dtype):
            return None
        array, self.array = self.array, None
        return array.view(dtype).reshape(shape)

    def _wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def keep_if(self, shape, *dtypes) -> None:
        """Drop the memory now unless the load will :meth:`take` ``shape`` in one of ``dtypes``: a volume of
        another size (another series picked from the folder, files that are not slices) is then allocated beside
        nothing."""
        if self.nbytes not in {host_memory.nbytes_of(shape, dtype) for dtype in dtypes}:
            self.close()

    def close(self) -> None:
        """Wait for the thread and drop the memory not taken (the load is over)."""
        self._wait()
        self.array = None


def first_layout(paths: list[str], first: PixelLayout | None = None) -> PixelLayout | None:
    """The first file's native layout where the series is large enough to pay for a prediction
    (:data:`kvdicom.settings.PREFAULT_MIN_BYTES`, judged from the first file's size), else None (compressed:
    decoded, not read in place; no image). ``first``: that layout where the caller has read it already (else its
    header is read here)."""
    try:
        if not paths or len(paths) * os.stat(paths[0]).st_size < settings.PREFAULT_MIN_BYTES:
            return None
    except OSError:
        return None
    layout = first if first is not None else read_header(paths[0]).layout
    return layout if isinstance(layout, PixelLayout) else None


def _held(paths: list[str], total: int) -> int:
    """``total``, or 0 where the files hold fewer bytes (a header, or a folder of small files beside one large one,
    never makes the prediction more than they hold) or one cannot be asked."""
    held = 0
    for path in paths:
        try:
            held += os.stat(path).st_size
        except OSError:
            return 0
    return total if total <= held else 0

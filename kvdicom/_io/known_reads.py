"""A series' per-slice reads in C where kvdicom was built with a compiler (``kvdicom/_io/_known_reads.c``).

Each file's known pixel range goes into its slot with the checks of :func:`kvdicom._io.host_read.read_known`
(``stat``, open, ``fstat``, ``pread``, ``fstat``, close), a whole run of files per call with the GIL released:
the Python layers around each read cost more than its system calls and hold the GIL the other readers wait for.
128 CT slices of 512² into one touched volume, 2-core CPU dev machine, medians of 25, three rounds: 6.5-7.3 ms
through the Python path, 4.9-5.5 ms this way (the same bytes).

Where C stops at a file (anything changed, unreadable, short), that file is read again through the Python path,
which raises the :class:`kvdicom.DicomLoadError` naming it (or reads it whole); C then carries on after it. So
both paths refuse the same files with the same words, and without the build (``compiled`` is None) the Python
path reads every file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from kvdicom._io import host_read

try:
    from kvdicom._io import _known_reads
except ImportError:  # built without a C compiler: the Python path reads every file
    _known_reads = None

#: The interface of the compiled reads this code drives (``READS_VERSION`` in ``_known_reads.c``); a build of
#: another version (stale, left in the tree) is not used.
COMPILED_VERSION = 1

#: The compiled module, or None (not built, or stale). Tests set it to None to run the Python path alone.
compiled = _known_reads if getattr(_known_reads, "VERSION", None) == COMPILED_VERSION else None


def usable(buffer) -> bool:
    """Whether C may write into ``buffer``: a C-contiguous, writable 1-D NumPy ``uint8`` array (its address and
    length are what C gets)."""
    return (compiled is not None and isinstance(buffer, np.ndarray) and buffer.dtype == np.uint8
            and buffer.ndim == 1 and buffer.flags.c_contiguous and buffer.flags.writeable)


def _item(path: str, offset: int, nbytes: int, start: int, file_id) -> tuple:
    """One file's read as C takes it: path bytes, file offset, bytes, buffer offset, then the identity."""
    return (os.fsencode(path), offset, nbytes, start, *file_id)


def _in_c(file_id, nbytes: int) -> bool:
    """Whether C reads a range of ``nbytes``: its file's identity is known, and the Python path would read it in
    one thread too (a file of :data:`kvdicom.settings.READ_PARALLEL_BYTES` or more is read there in chunks side
    by side, which one C call in one thread would not match)."""
    return file_id is not None and host_read.in_one_thread(nbytes)


def read_run(layouts: Sequence, buffer: np.ndarray, starts: Sequence[int], first: int, stop: int,
             read_one: Callable[[int], None]) -> None:
    """Slices ``first`` to ``stop`` of ``layouts`` into ``buffer`` at ``starts``: in C where :func:`usable` and the
    layout carries its file's identity, else (and for a file where C stops) by ``read_one(k)``, the Python read
    that raises the file's error."""
    k = first
    whole = usable(buffer)
    while k < stop:
        if not whole or not _in_c(layouts[k].file_id, layouts[k].nbytes):
            read_one(k)
            k += 1
            continue
        end = k
        while end < stop and _in_c(layouts[end].file_id, layouts[end].nbytes):
            end += 1
        items = [_item(layouts[j].path, layouts[j].offset, layouts[j].nbytes, starts[j], layouts[j].file_id)
                 for j in range(k, end)]
        k += compiled.read(items, buffer.ctypes.data, buffer.nbytes)
        if k < end:
            read_one(k)  # where C stopped: the Python read says why, or reads it
            k += 1


def read_range(path: str, offset: int, buffer: np.ndarray, file_id, python_read: Callable[[], None]) -> None:
    """``buffer.nbytes`` bytes of ``path`` from ``offset`` into ``buffer``, the file checked against ``file_id``
    before and after: in C where :func:`usable`, else (and where C stops) by ``python_read()``, which raises the
    file's error."""
    if not usable(buffer) or not _in_c(file_id, buffer.nbytes):
        python_read()
        return
    if compiled.read([_item(path, offset, buffer.nbytes, 0, file_id)], buffer.ctypes.data, buffer.nbytes) != 1:
        python_read()

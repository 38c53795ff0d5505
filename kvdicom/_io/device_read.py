"""Read a byte range of a file into a CuPy buffer with KvikIO: the GPU half of kvdicom's I/O.

The file is opened by kvdicom first (:func:`kvdicom._io.fileid.open_regular`:
regular files only, never blocking on a FIFO) and checked against the
header's ``file_id``; KvikIO then opens that same open file through
``/proc/self/fd/N``, so it cannot pick up whatever the path names by then.
The identity is checked again after the read.
"""

from __future__ import annotations

import os
import threading

from kvdicom import settings
from kvdicom._io import fileid, host_read
from kvdicom._io.tuning import plan_read, staged

#: each thread's pinned staging bytes for small reads (at most ``KVIKIO_SMALL_READ_BYTES``), kept between loads
_kept = threading.local()


def _staging(nbytes: int):
    """``nbytes`` of this thread's pinned host memory: kept, grown to the next power of two when too small.

    Kept per thread, so that a slice load neither allocates pinned memory nor waits on another thread's copy.
    """
    kept = getattr(_kept, "buffer", None)
    if kept is None or kept.nbytes < nbytes:
        import cupyx
        import numpy as np

        capacity = min(max(1 << (nbytes - 1).bit_length(), 4096), max(nbytes, settings.KVIKIO_SMALL_READ_BYTES))
        kept = _kept.buffer = cupyx.empty_pinned(capacity, dtype=np.uint8)
    return kept[:nbytes]


def _read_staged(path: str, buffer, offset: int, file_id, fd: int | None) -> int:
    """Small reads: one ``preadv`` into this thread's pinned staging bytes, one copy.

    The copy has run when this returns, on whatever stream is current: the staging is the thread's next read's.
    (A copy left queued on a busy stream read the next load's bytes instead: ``tests/test_device.py``.)
    """
    import cupy

    staging = _staging(buffer.nbytes)
    got = host_read.read_into(path, staging, offset, file_id=file_id, fd=fd)
    stream = cupy.cuda.get_current_stream()
    if stream.ptr == 0:
        buffer.set(staging)  # the legacy default stream: a synchronous cudaMemcpy
    else:
        buffer.set(staging, stream=stream)
        stream.synchronize()
    return got


def _drain_current_stream() -> None:
    """Wait for the work queued on the current stream, if it is not the legacy default stream, before KvikIO writes.

    KvikIO copies on streams of its own that wait only for the legacy default stream (with GDS, the DMA waits
    for none), and CuPy's pool may hand ``buffer`` a block that work still queued on a non-blocking stream
    writes to: that work would land on the pixels afterwards (``tests/test_device.py``). A few microseconds
    when the stream is idle; the small staged reads copy on the current stream instead.
    """
    import cupy

    stream = cupy.cuda.get_current_stream()
    if stream.ptr:
        stream.synchronize()


def _same_open_file(fd: int, path: str) -> str:
    """A path that opens the file behind ``fd`` (procfs), or ``path`` where there is no procfs."""
    proc = f"/proc/self/fd/{fd}"
    return proc if os.path.exists(proc) else path


def _kvikio_fileno(f) -> int:
    """The descriptor of a ``kvikio.CuFile`` (``fileno()``; ``fd()`` in older KvikIO)."""
    return f.fileno() if hasattr(f, "fileno") else f.fd()


def read_into(path: str, buffer, offset: int, *, file_id: fileid.FileId | None = None, fd: int | None = None) -> int:
    """Read ``buffer.nbytes`` bytes of ``path`` at ``offset`` into device ``buffer``; return bytes read.

    ``buffer`` may be a contiguous 1-D uint8 view of a larger CuPy array. With
    GDS the bytes go straight from storage to the GPU; in compat mode KvikIO
    reads them through pinned bounce buffers on its thread pool, except small
    reads, which are staged once (see ``kvdicom._io.tuning``). With ``file_id``,
    a file that is not that file before or after the read raises
    :class:`~kvdicom.errors.DicomLoadError`. ``fd``: the caller's open file (the header's), else opened here.
    """
    if staged(buffer.nbytes):
        return _read_staged(path, buffer, offset, file_id, fd)

    import kvikio

    plan = plan_read(buffer.nbytes)

    with fileid.opened(path, fd, file_id=file_id) as fd:
        fileid.check_same(path, fd, file_id, "before the pixel read")
        with kvikio.CuFile(_same_open_file(fd, path), "r") as f:  # KvikIO opens its own descriptor
            fileid.check_same(path, _kvikio_fileno(f), file_id, "when KvikIO opened it")
            _drain_current_stream()
            got = f.pread(buffer, buffer.nbytes, offset, task_size=plan.task_size).get()
        fileid.check_same(path, fd, file_id, "after the pixel read")
        return got

"""Read a byte range of a file into a CuPy buffer with KvikIO: the GPU half of kvdicom's I/O.

The file is opened by kvdicom first (:func:`kvdicom._io.fileid.open_regular`:
regular files only, never blocking on a FIFO) and checked against the
header's ``file_id``; KvikIO then opens that same open file through
``/proc/self/fd/N``, so it cannot pick up whatever the path names by then.
The identity is checked again after the read.
"""

from __future__ import annotations

import os

from kvdicom._io import fileid, host_read
from kvdicom._io.tuning import plan_read


def _read_staged(path: str, buffer, offset: int, file_id, fd: int | None) -> int:
    """Small reads: one ``preadv`` into pinned host memory (CuPy's pinned pool), one copy."""
    import cupyx
    import numpy as np

    staging = cupyx.empty_pinned(buffer.nbytes, dtype=np.uint8)
    got = host_read.read_into(path, staging, offset, file_id=file_id, fd=fd)
    buffer.set(staging)
    return got


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
    plan = plan_read(buffer.nbytes)
    if not plan.via_kvikio:
        return _read_staged(path, buffer, offset, file_id, fd)

    import kvikio

    with fileid.opened(path, fd, file_id=file_id) as fd:
        fileid.check_same(path, fd, file_id, "before the pixel read")
        with kvikio.CuFile(_same_open_file(fd, path), "r") as f:  # KvikIO opens its own descriptor
            fileid.check_same(path, _kvikio_fileno(f), file_id, "when KvikIO opened it")
            got = f.pread(buffer, buffer.nbytes, offset, task_size=plan.task_size).get()
        fileid.check_same(path, fd, file_id, "after the pixel read")
        return got

"""Whole-file O_DIRECT reads of the files the page cache lacks: a series loaded cold.

A buffered read of a file that is not cached goes through the kernel's readahead and one more copy out of
the page cache; O_DIRECT moves the same bytes from the disk straight into our buffer. H200 machine, 256 CT
slices of 512² (132 MiB), page cache dropped before each round, medians of 7 (run of 98322aa): every file read
whole on 16 threads with O_DIRECT 75.0 ms, buffered 110.2 ms (``POSIX_FADV_WILLNEED`` first: 105.1 ms);
kvdicom's buffered CPU load 124.5 ms (warm: 30.1 ms). A cached file stays faster read through the cache, so
each file is asked first (:func:`cached`): one ``preadv`` of its last byte with ``RWF_NOWAIT``, which fails
with EAGAIN when that page is not in the cache (and starts reading it, so :func:`read_whole` drops that page
again: the file stays wholly out of the cache, and the next cold load reads it direct too). The header walk
and the pixel copy then read the file's :class:`FileImage` instead of the file; its identity is checked around
the read as every other read's is. Used only with ``kvdicom.configure(cold_reads="direct")``: files read so
are not cached for the next load (see :class:`kvdicom.settings.Settings`).
"""

from __future__ import annotations

import collections
import mmap
import os
from collections.abc import Iterator

import numpy as np

from kvdicom import settings
from kvdicom._io import host_read
from kvdicom._io.fileid import FileId, identify

#: O_DIRECT's alignment of buffer, offset and length: the page size covers the 512-byte and 4 KiB logical
#: blocks of every common file system.
ALIGN = 4096

#: ``st_dev`` of file systems that refused O_DIRECT in this process (tmpfs on older kernels, some overlays):
#: their files are read buffered without asking again.
_refused: set[int] = set()


class FileImage:
    """A file's bytes as one O_DIRECT read took them, and the identity of the file they were read from."""

    __slots__ = ("data", "size", "file_id")

    def __init__(self, data: mmap.mmap, file_id: FileId):
        self.data, self.file_id, self.size = data, file_id, file_id[2]

    def pread(self, nbytes: int, offset: int) -> bytes:
        """What ``os.pread`` of the file would return: at most ``nbytes`` from ``offset``, short at the end."""
        return self.data[offset : min(offset + nbytes, self.size)] if 0 <= offset < self.size else b""

    def copy_into(self, out: np.ndarray, offset: int) -> int:
        """Copy the file's bytes from ``offset`` into the uint8 array ``out``; the bytes copied (short at the end)."""
        n = max(0, min(out.nbytes, self.size - offset))
        if n:
            out[:n] = np.frombuffer(self.data, np.uint8, n, offset)
        return n


def cached(fd: int, size: int) -> bool:
    """Whether the last byte of the open regular file ``fd`` (``size`` bytes) is in the page cache; True where
    the kernel cannot tell (no ``RWF_NOWAIT``), so such files keep the buffered reads."""
    if size <= 0:
        return True
    try:
        os.preadv(fd, [bytearray(1)], size - 1, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    except (OSError, AttributeError):  # EOPNOTSUPP (an older kernel, a file system without it); not Linux
        return True
    return True


def wanted(fd: int, file_id: FileId) -> bool:
    """Whether the file open as ``fd`` should be read whole with O_DIRECT: not cached, not empty, at most
    :data:`settings.COLD_DIRECT_MAX_BYTES`, on a file system that has not refused O_DIRECT here."""
    size = file_id[2]
    return 0 < size <= settings.COLD_DIRECT_MAX_BYTES and file_id[0] not in _refused and not cached(fd, size)


def read_whole(path: str, file_id: FileId) -> FileImage | None:
    """``path`` read whole with O_DIRECT, or None where it cannot be (O_DIRECT refused, any ``OSError``, the
    file not ``file_id`` before or after the read): the caller then reads it as before, which reports errors."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 22:  # EINVAL: this file system takes no O_DIRECT
            _refused.add(file_id[0])
        return None
    try:
        if identify(fd) != file_id:
            return None
        size = file_id[2]
        data = mmap.mmap(-1, -(-size // ALIGN) * ALIGN)  # page-aligned, as O_DIRECT needs
        view, got = memoryview(data), 0
        try:
            while got < size:
                n = os.preadv(fd, [view[got:]], got)
                if n == 0:
                    break
                got += n
        finally:
            view.release()
        if got != size or identify(fd) != file_id:
            return None
        last = (size - 1) // ALIGN * ALIGN  # the page :func:`cached`'s probe read into the cache
        os.posix_fadvise(fd, last, size - last, os.POSIX_FADV_DONTNEED)
        return FileImage(data, file_id)
    except OSError as exc:
        if exc.errno == 22:  # EINVAL at the read: O_DIRECT opens here but does not read
            _refused.add(file_id[0])
        return None
    finally:
        os.close(fd)


def read_ahead(paths: list[str], file_ids: list[FileId | None]) -> Iterator[FileImage | None]:
    """Each file's :class:`FileImage` in order (None where ``file_ids`` has None or the read failed), read on
    kvdicom's read pool :data:`settings.COLD_READ_AHEAD` files ahead of the caller, so the disk has reads
    queued while the caller parses."""
    pending: collections.deque = collections.deque()
    todo = iter(zip(paths, file_ids))

    def submit() -> None:
        for path, file_id in todo:
            pending.append(None if file_id is None else host_read.pool().submit(read_whole, path, file_id))
            return

    for _ in range(max(1, settings.COLD_READ_AHEAD)):
        submit()
    while pending:
        future = pending.popleft()
        submit()
        yield None if future is None else future.result()

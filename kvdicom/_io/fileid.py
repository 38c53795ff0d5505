"""Which file a read really reads: open regular files only, and tell one file from another.

The header and the pixels are read through two opens of the same path, and
anything can happen to the path in between: the file is replaced (a new
inode), truncated or rewritten (size, mtime), deleted, or becomes a FIFO or a
directory. Decoding the new bytes with the old layout gives wrong pixels with
no error, so every read checks the file it opened against the identity taken
from the header's open file, and refuses on any difference.

Opening is ``O_NONBLOCK`` after a ``stat``: a FIFO (which blocks ``open`` until
a writer comes), a device or a socket is refused at once, never opened for
reading. Errors finding or opening the path (missing, no permission) stay the
``OSError`` that ``open()`` raises; everything about what was found is a
:class:`~kvdicom.errors.DicomLoadError`.

Limit: a file rewritten in place with the same size within the file system's
timestamp granularity keeps its identity; nothing short of re-reading the
header can tell.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

from kvdicom.errors import DicomLoadError

#: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of a file. The change time too: a file rewritten in
#: place with its mtime restored (``os.utime``) keeps every other field, but the kernel sets its ctime anew.
FileId = tuple[int, int, int, int, int]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _file_id(st: os.stat_result) -> FileId:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def identify(fd_or_path: int | str | os.PathLike) -> FileId:
    """(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of an open file descriptor or a path."""
    st = os.fstat(fd_or_path) if isinstance(fd_or_path, int) else os.stat(fd_or_path)
    return _file_id(st)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), f"not a regular file (mode {mode:o})")


def _refuse_irregular(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise DicomLoadError(path, f"not a regular file: it is {_kind(st.st_mode)}; kvdicom reads regular files only")


def open_regular(path: str | os.PathLike, flags: int = 0) -> int:
    """A read-only descriptor of the regular file at ``path`` (``O_NONBLOCK``, ``O_CLOEXEC`` | ``flags``).

    Raises :class:`DicomLoadError` for anything else (FIFO, directory, device,
    socket) without blocking; ``FileNotFoundError``, ``PermissionError`` and
    other ``OSError`` from looking up or opening the path propagate.
    """
    return open_identified(path, flags)[0]


def open_identified(path: str | os.PathLike, flags: int = 0) -> tuple[int, FileId]:
    """:func:`open_regular`, and the identity of the file opened, from the ``fstat`` that checked it (one
    ``fstat`` fewer than :func:`identify` after the open: 1.5 µs of a 10 µs open, 2-core CPU dev machine)."""
    path = os.fspath(path)
    _refuse_irregular(path, os.stat(path))  # never open a device or FIFO, even non-blocking
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | flags)
    try:
        st = os.fstat(fd)
        _refuse_irregular(path, st)  # replaced between stat and open
    except BaseException:
        os.close(fd)
        raise
    return fd, _file_id(st)


@contextlib.contextmanager
def opened(path: str | os.PathLike, fd: int | None = None, flags: int = 0,
           file_id: FileId | None = None) -> Iterator[int]:
    """The descriptor to read ``path`` through: ``fd`` where the caller holds the file open already (one open
    per load: the header's), else ``path`` opened here (:func:`open_regular`) and closed after the block.

    With ``fd`` and ``file_id``, ``path`` must still name that file (a ``stat``, no open), as a fresh open
    would find: a file swapped, deleted or replaced at the path since the header is refused as before.
    """
    if fd is not None:
        if file_id is not None:
            check_path(path, fd, file_id)
        yield fd
        return
    fd = open_regular(path, flags)
    try:
        yield fd
    finally:
        os.close(fd)


def check_path(path: str | os.PathLike, fd: int | None, file_id: FileId) -> None:
    """``path`` must still name the file ``file_id`` names and ``fd`` has open (a ``stat``, no open), as a fresh
    open would find: a file swapped, deleted or replaced at the path since the header is refused. With ``fd``
    None (nothing opened yet), the fields of the path's file that differ are named."""
    path = os.fspath(path)
    st = os.stat(path)  # FileNotFoundError as open() would raise it
    if _file_id(st) != tuple(file_id):
        _refuse_irregular(path, st)
        if fd is None:
            raise _changed(path, file_id, _file_id(st), "when the path was looked up again")
        check_same(path, fd, file_id, "when the path was looked up again")
        raise DicomLoadError(path, f"file changed between header and pixel read (the path now names "
                                   f"another file: {_file_id(st)}, header {tuple(file_id)}); load it again")


def open_known(path: str, file_id: FileId, flags: int = 0) -> int:
    """A read-only descriptor of ``path``, which must still be the file ``file_id`` names: the path's ``stat``
    must match before the open (so nothing else, FIFO or device, is opened) and the descriptor's ``fstat`` after
    it. The series reads' one check before the read, in place of :func:`open_identified` then
    :func:`check_same`: the same system calls without their second ``fstat`` and Python layers."""
    check_path(path, None, file_id)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | flags)
    try:
        check_same(path, fd, file_id, "before the pixel read")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _changed(path: str, file_id: FileId, now: FileId, when: str) -> DicomLoadError:
    fields = ("device", "inode", "size", "mtime_ns", "ctime_ns")
    changes = [name for name, a, b in zip(fields, file_id, now) if a != b]
    return DicomLoadError(
        path,
        f"file changed between header and pixel read ({', '.join(changes)} differ {when}: "
        f"header {tuple(file_id)}, now {now}); load it again",
    )


def check_same(path: str, fd: int, file_id: FileId | None, when: str) -> None:
    """Raise :class:`DicomLoadError` unless the open ``fd`` still is the file ``file_id`` names."""
    if file_id is None:
        return
    now = identify(fd)
    if now != tuple(file_id):
        raise _changed(path, file_id, now, when)

"""Cold series: the kernel asked to read every file ahead while the headers are parsed.

A series whose files are not in the page cache is parsed one header at a time (in the caller's thread, or by a
few worker processes each on its run of files), and each header read then waits for the disk alone, the disk's
queue nearly empty. ``posix_fadvise(POSIX_FADV_WILLNEED)`` queues a range's reads and returns, so a thread that
hints every file (first the head the parse reads, then the whole file) keeps that queue full while the parse goes
on; the parse and the pixel reads then mostly find their pages cached. (The header workers also announce their own
run of files before parsing it, warm or cold, through :func:`will_need`: whole for a load, heads for a headers-only
scan; the heads hinted here first reach every worker's run at once.) The hints change no byte anyone reads: every
read still checks the file it reads, as before (:mod:`kvdicom._io.fileid`).

Whether the series is cold is asked of its last file's first page, the last one the parse reaches, with
``preadv2(RWF_NOWAIT)``, which fails with EAGAIN where it would wait for the disk: a warm series starts no thread
and pays one open and one read (microseconds). Where the kernel cannot tell (no ``RWF_NOWAIT``, another OS) no
hint is given. Measured numbers are beside :data:`kvdicom.settings.READAHEAD_HEAD_BYTES`.
"""

from __future__ import annotations

import os
import threading

from kvdicom import settings
from kvdicom._io import fileid
from kvdicom.errors import DicomLoadError


def _open_regular(path: str) -> tuple[int, int] | None:
    """A read-only descriptor of ``path`` and the file's size where it is a regular file, else None: the loads'
    own open (:func:`kvdicom._io.fileid.open_identified`, which never opens a FIFO or a device), its refusals left
    to the load's own read of the file, which names it."""
    try:
        fd, file_id = fileid.open_identified(path)
    except (OSError, ValueError, DicomLoadError):  # ValueError: a NUL in the path
        return None
    return fd, file_id[2]


def is_cold(path: str) -> bool:
    """Whether the first page of ``path`` must come from the disk (not in the page cache); False where that
    cannot be asked (no ``RWF_NOWAIT``, not a regular file, unreadable, empty)."""
    flag = getattr(os, "RWF_NOWAIT", None)
    if flag is None:
        return False
    opened = _open_regular(path)
    if opened is None:
        return False
    fd = opened[0]
    try:
        os.preadv(fd, [bytearray(1)], 0, flag)
        return False
    except BlockingIOError:  # EAGAIN: the page is not cached
        return True
    except OSError:  # EOPNOTSUPP on file systems without it, and anything else: no hints
        return False
    finally:
        os.close(fd)


def will_need(path: str, nbytes: int = 0) -> int:
    """Ask the kernel to start reading the first ``nbytes`` of ``path`` (0: all of it, where the file holds at
    most :data:`kvdicom.settings.READAHEAD_MAX_FILE_BYTES`, else its first ``READAHEAD_HEAD_BYTES``) into the page
    cache (``POSIX_FADV_WILLNEED``, which returns once the reads are queued). Returns the bytes asked for. A hint,
    so errors are ignored here: the load's own read of the file reports them, naming it. A FIFO among the paths
    cannot hang it."""
    if not hasattr(os, "posix_fadvise"):  # not on every OS: then no hints
        return 0
    opened = _open_regular(path)
    if opened is None:
        return 0
    fd, size = opened
    if not nbytes and size > settings.READAHEAD_MAX_FILE_BYTES:  # a video beside the slices: not read for nothing
        nbytes = settings.READAHEAD_HEAD_BYTES
    try:
        os.posix_fadvise(fd, 0, nbytes, os.POSIX_FADV_WILLNEED)
        return min(nbytes, size) if nbytes else size
    except OSError:
        return 0
    finally:
        os.close(fd)


def hint_series(paths: list[str], stop: threading.Event, whole: bool = True) -> None:
    """Every file's head hinted in listing order (the order the parse, or each worker's run, asks for them), then
    (``whole``) every whole file, up to :data:`kvdicom.settings.READAHEAD_MAX_BYTES` in all (a series larger than
    that would push its own first files out of the page cache before the parse reached them); ends early once
    ``stop`` is set."""
    for path in paths:
        if stop.is_set():
            return
        will_need(path, settings.READAHEAD_HEAD_BYTES)
    left = settings.READAHEAD_MAX_BYTES if whole else 0
    for path in paths:
        if stop.is_set() or left <= 0:
            return
        left -= will_need(path)


class Readahead:
    """Hints for every file of ``paths`` on a thread of its own, where the series is cold (:func:`is_cold` of
    its last file); :meth:`close` stops them (at the next file) and waits for the thread. A context manager.
    ``whole=False``: heads only, for a caller that reads no pixel data (a headers-only scan)."""

    def __init__(self, paths: list[str], whole: bool = True):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if len(paths) >= settings.READAHEAD_MIN_FILES and hasattr(os, "posix_fadvise") and is_cold(paths[-1]):
            self._thread = threading.Thread(target=hint_series, args=(list(paths), self._stop, whole),
                                            name="kvdicom-readahead", daemon=True)
            self._thread.start()

    @property
    def started(self) -> bool:
        """Whether the series was found cold and its hints started."""
        return self._thread is not None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Readahead:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

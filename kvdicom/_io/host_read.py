"""Read a byte range of a file into host memory: the CPU half of kvdicom's I/O.

One chunked ``preadv`` reader serves every host read: kvdicom's CPU loads, the
staged small GPU reads, and the benchmark ceilings (``bench/ceilings.py``,
with ``direct=True`` for O_DIRECT). Large reads are split into chunks run on
one persistent, process-wide thread pool (:func:`pool`), because one thread
copying out of the page cache tops out well below memory bandwidth, and
starting threads for every read costs more than a small read.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from kvdicom import settings
from kvdicom._io import fileid
from kvdicom._io import tuning as io_tuning

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_worker = threading.local()


def _mark_worker() -> None:
    _worker.in_pool = True


def in_pool() -> bool:
    """Whether this thread is one of the read pool's: work it would hand to the pool runs here instead, so
    nesting cannot deadlock (a task waiting on tasks queued behind it)."""
    return getattr(_worker, "in_pool", False)


def in_one_thread(nbytes: int) -> bool:
    """Whether a read of ``nbytes`` runs in the calling thread (:func:`read_chunks`' default rule): below
    :data:`settings.READ_PARALLEL_BYTES` (times :data:`settings.READ_FEW_THREADS_FACTOR` with few threads), or on a
    pool thread; larger reads are cut into chunks read side by side."""
    if nbytes < settings.READ_PARALLEL_BYTES:
        return True  # below the threshold for any thread count
    few = io_tuning.host_threads() < settings.READ_FEW_THREADS
    return nbytes < settings.READ_PARALLEL_BYTES * (settings.READ_FEW_THREADS_FACTOR if few else 1) or in_pool()


def wait_all(futures: list) -> list:
    """Every future's result in order; after all have finished, the first error (in order) is raised."""
    concurrent.futures.wait(futures)  # none still reads or writes after we return, errors or not
    for future in futures:
        if future.exception() is not None:
            raise future.exception()
    return [f.result() for f in futures]


def pool() -> ThreadPoolExecutor:
    """kvdicom's process-wide read pool, created on first use with ``io_tuning.host_threads()`` threads.

    Callers may submit their own reads (one file per task, say); a read that
    runs on a pool thread reads its chunks itself instead of waiting on tasks
    queued behind it, so nesting cannot deadlock.
    """
    global _pool
    threads = io_tuning.host_threads()
    pool = _pool
    if pool is None or pool._max_workers != threads:
        with _pool_lock:
            if _pool is None or _pool._max_workers != threads:  # first use, or ``kvdicom.configure`` changed it
                old = _pool
                _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kvdicom-read",
                                           initializer=_mark_worker)
                if old is not None:
                    old.shutdown(wait=False)  # its running reads finish
            pool = _pool
    return pool


def _forget_pool_in_child() -> None:
    """A forked child has none of the parent's pool threads: start a new pool on first use."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def chunk_for(nbytes: int) -> int:
    """The pool chunk for a buffered read of ``nbytes``: about 1/READ_CHUNKS_PER_READ of it, in whole MiB, clamped."""
    per = -(-nbytes // settings.READ_CHUNKS_PER_READ)
    per = -(-per // (1 << 20)) * (1 << 20)
    return min(settings.READ_CHUNK_BYTES, max(settings.READ_MIN_CHUNK_BYTES, per))


def _pread_exact(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset``; return the bytes read (short only at end of file).

    ``preadv`` may return fewer bytes than asked (signals, some file systems):
    keep reading until the view is full or the file ends.
    """
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


def _read_then(fd: int, view: memoryview, offset: int, start: int, then) -> int:
    """Read ``view`` at ``offset``, then (if given) ``then(start, start + bytes read)`` while they are in cache."""
    got = _pread_exact(fd, view, offset)
    if then is not None:
        then(start, start + got)
    return got


def read_chunks(fd: int, view: memoryview, offset: int, chunk: int | None = None,
                parallel_from: int | None = None, then=None) -> int:
    """Fill ``view`` from ``fd`` at ``offset``; return the bytes read.

    Below ``parallel_from`` bytes (:data:`settings.READ_PARALLEL_BYTES`, or
    :data:`settings.READ_FEW_THREADS_FACTOR` times it with few threads), or on a pool
    thread, in the caller's thread; otherwise in ``chunk``-sized tasks
    (:func:`chunk_for`) on :func:`pool`. A short chunk (end of file) ends the
    count there: bytes after a gap are not counted.

    ``then(start, stop)``, if given, runs on each chunk's bytes ``view[start:stop]``
    right after they are read, on the thread that read them (chunks are then
    cut in multiples of 8 bytes: whole samples): a per-sample correction then runs in parallel on
    data still in cache instead of in one more pass over the whole buffer.
    """
    one_thread = in_one_thread(len(view)) if parallel_from is None else len(view) < parallel_from or in_pool()
    if one_thread:
        return _read_then(fd, view, offset, 0, then)
    chunk = chunk or chunk_for(len(view))
    if then is not None:
        chunk = max(8, chunk - chunk % 8)  # whole samples in every chunk
    starts = range(0, len(view), chunk)
    futures = [pool().submit(_read_then, fd, view[s : s + chunk], offset + s, s, then) for s in starts]
    # Every task must finish before the caller may close ``fd`` or reuse the
    # buffer, errors or not: wait for all, then raise the first error.
    concurrent.futures.wait(futures)
    total = 0
    for start, future in zip(starts, futures):
        got = future.result()
        if total == start:
            total += got
    return total


def read_into(
    path: str, buffer: np.ndarray, offset: int, *, file_id: fileid.FileId | None = None, direct: bool = False,
    then=None, fd: int | None = None,
) -> int:
    """Read ``buffer.nbytes`` bytes of ``path`` at ``offset`` into ``buffer``; return bytes read.

    ``buffer`` may be a view of a larger array (contiguous). With ``file_id``,
    the file opened must be that file before and after the read, else
    :class:`~kvdicom.errors.DicomLoadError`. With ``direct``, the file is read
    with O_DIRECT: ``buffer``, ``offset`` and the size must then be aligned to
    the file system's block size. ``then``: see :func:`read_chunks` (buffered reads only). A path
    that is not a regular file raises
    ``DicomLoadError`` at once; ``OSError`` from opening or reading propagates.
    """
    view = memoryview(buffer).cast("B")

    def checked(fd: int) -> int:
        fileid.check_same(path, fd, file_id, "before the pixel read")
        if direct:  # no readahead: keep several chunk reads in flight from two chunks up
            chunk = settings.READ_DIRECT_CHUNK_BYTES
            got = read_chunks(fd, view, offset, chunk, parallel_from=chunk + 1)
        else:
            got = read_chunks(fd, view, offset, then=then)
        fileid.check_same(path, fd, file_id, "after the pixel read")
        return got

    if fd is not None and not direct:
        # the header's open file: ``fileid.opened``'s path check without its context manager (with the
        # small-read shortcut of ``read_chunks``, a CT slice's 512 KiB read went from 52.7 to 41.3 µs against
        # 36 µs for its bare stat, fstat, preadv, fstat; 2-core CPU dev machine)
        if file_id is not None:
            fileid.check_path(path, fd, file_id)
        return checked(fd)
    with fileid.opened(path, None, os.O_DIRECT if direct else 0) as own:  # O_DIRECT needs a descriptor of its own
        return checked(own)


def read_known(path: str, buffer: np.ndarray, offset: int, file_id: fileid.FileId) -> int:
    """:func:`read_into` for a file whose header gave ``file_id``, with the fewest calls (:func:`fileid.open_known`:
    ``stat``, open, ``fstat``; the read; ``fstat``; close): a series' per-slice read, where the Python layers of
    :func:`read_into` cost more than its system calls (128 CT slices on the 2-core CPU dev machine, into one
    touched volume, medians of 25: 6.7-7.1 ms through :func:`read_into`, 6.2-6.7 ms this way, 5.1-5.3 ms bare
    ``open`` and ``preadv``)."""
    fd = fileid.open_known(path, file_id)
    try:
        got = read_chunks(fd, memoryview(buffer).cast("B"), offset)
        fileid.check_same(path, fd, file_id, "after the pixel read")
    finally:
        os.close(fd)
    return got

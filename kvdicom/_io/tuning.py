"""KvikIO settings chosen from the machine and the size of each read.

Why these defaults (measured on an H100 in KvikIO compat mode, see results/):

* ``num_threads``: KvikIO's default is 1, which caps a page-cache read at the
  speed of one ``pread`` + copy loop (about 7 GB/s). KvikIO's pool is
  process-wide, so changing it is a side effect on the user's own KvikIO reads:
  ``kvdicom.configure`` makes it explicit. ``"auto"`` (the default) sizes it once,
  at the first read through KvikIO, from the machine: one thread per core up to
  :data:`MAX_THREADS`, unless the user set ``KVIKIO_NTHREADS`` (their choice
  wins); an integer sets that many; ``None`` leaves KvikIO as the user set it.
  The same number sizes kvdicom's host read pool (``kvdicom._io.host_read.pool``).
* ``task_size``: chosen per read, about :data:`settings.KVIKIO_TASKS_PER_THREAD` tasks per
  thread so a slow task does not leave the others idle at the end, bounded by
  :data:`settings.KVIKIO_MIN_TASK_BYTES` (below it per-task overhead dominates) and
  :data:`settings.KVIKIO_MAX_TASK_BYTES`. Measured on the H100 with 16 threads
  (a one-off tune_kvikio profiler (since removed)): 256 MiB read at 28 / 40 / 38 / 28 GB/s with
  1 / 4 / 8 / 16 MiB tasks, 1 GiB at 27 / 43 / 45 / 36 GB/s with 1 / 4 / 8 / 16 MiB.
* Small reads in compat mode (below :data:`settings.KVIKIO_SMALL_READ_BYTES`) skip KvikIO:
  opening a ``CuFile`` and dispatching a task costs more than the copy, so the
  bytes go through one ``preadv`` into a pinned staging buffer and one copy.
  With GDS, every read goes through KvikIO. Measured on the H200 machine: a
  2 MiB file loaded at 1.9 GB/s through KvikIO, slower than the 1-thread seed
  loader (2.6 GB/s), hence the 4 MiB threshold.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass

from kvdicom import settings
from kvdicom.settings import MAX_THREADS


@dataclass(frozen=True)
class ReadPlan:
    """How KvikIO does one read: its pool size and task size (reads that skip KvikIO: :func:`staged`)."""

    threads: int
    task_size: int


def machine_threads() -> int:
    """Threads for KvikIO's pool on this machine: the cores this process may use, at most MAX_THREADS."""
    return max(1, min(MAX_THREADS, settings.cores()))


def task_size_for(nbytes: int, threads: int) -> int:
    """Task size giving each of ``threads`` threads about settings.KVIKIO_TASKS_PER_THREAD tasks of ``nbytes``."""
    per_task = -(-nbytes // (max(1, threads) * settings.KVIKIO_TASKS_PER_THREAD))
    rounded = -(-per_task // settings.KVIKIO_MIN_TASK_BYTES) * settings.KVIKIO_MIN_TASK_BYTES
    return max(settings.KVIKIO_MIN_TASK_BYTES, min(settings.KVIKIO_MAX_TASK_BYTES, rounded))


def configured_threads() -> int | None:
    """The KvikIO pool size kvdicom sets (or has set), ``None`` when it leaves KvikIO's as it is.

    Depends only on :func:`configure`, the machine and ``KVIKIO_NTHREADS``,
    not on whether a load ran yet, so ``machine_info`` can record it up front.
    """
    setting = settings.current().threads
    if setting is None:
        return None
    if setting == "auto":
        return None if "KVIKIO_NTHREADS" in os.environ else machine_threads()
    return int(setting)


def host_threads() -> int:
    """Size of kvdicom's host read pool: the configured count, else :func:`machine_threads`."""
    setting = settings.current().threads
    return setting if type(setting) is int else machine_threads()


#: the ``threads`` setting last applied to KvikIO's pool: applied once per change of the setting, so a
#: user's own later change of KvikIO's pool is left alone
_NOT_APPLIED = object()
_applied: object = _NOT_APPLIED
_lock = threading.Lock()


def configure_kvikio() -> int:
    """Apply the configured pool size to KvikIO once (until ``kvdicom.configure`` changes it).

    Returns the threads in force."""
    global _applied
    import kvikio.defaults

    with _lock:
        setting = settings.current().threads
        wanted = configured_threads()
        if _applied != setting and wanted is not None:
            kvikio.defaults.set({"num_threads": wanted})
        _applied = setting
    return int(kvikio.defaults.get("num_threads"))


@functools.lru_cache(maxsize=1)
def compat_mode() -> bool:
    """Whether KvikIO runs without GDS (POSIX reads through bounce buffers)."""
    import kvikio.defaults

    return bool(kvikio.defaults.is_compat_mode_preferred())


def staged(nbytes: int) -> bool:
    """Whether a read of ``nbytes`` into GPU memory skips KvikIO (compat mode, below the small-read size).

    Checked before :func:`plan_read`, so that a slice load does not take the pool-setting lock and ask
    KvikIO for its pool size, which only KvikIO's reads use.
    """
    return nbytes < settings.KVIKIO_SMALL_READ_BYTES and compat_mode()


def plan_read(nbytes: int) -> ReadPlan:
    """The settings for a read of ``nbytes`` into GPU memory through KvikIO."""
    threads = configure_kvikio()
    return ReadPlan(threads=threads, task_size=task_size_for(nbytes, threads))

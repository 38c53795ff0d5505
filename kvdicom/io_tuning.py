"""KvikIO settings chosen from the machine and the size of each read.

Why these defaults (measured on an H100 in KvikIO compat mode, see results/):

* ``num_threads``: KvikIO's default is 1, which caps a page-cache read at the
  speed of one ``pread`` + copy loop (about 7 GB/s). The pool is process-wide
  and rebuilding it costs milliseconds, so it is sized once from the machine:
  one thread per core up to :data:`MAX_THREADS`, unless the user set
  ``KVIKIO_NTHREADS`` (their choice wins).
* ``task_size``: chosen per read, about :data:`TASKS_PER_THREAD` tasks per
  thread so a slow task does not leave the others idle at the end, bounded by
  :data:`MIN_TASK_BYTES` (below it per-task overhead dominates) and
  :data:`MAX_TASK_BYTES`. Measured on the H100 with 16 threads
  (``tools/tune_kvikio.py``): 256 MiB read at 28 / 40 / 38 / 28 GB/s with
  1 / 4 / 8 / 16 MiB tasks, 1 GiB at 27 / 43 / 45 / 36 GB/s with 1 / 4 / 8 / 16 MiB.
* Small reads in compat mode (below :data:`SMALL_READ_BYTES`) skip KvikIO:
  opening a ``CuFile`` and dispatching a task costs more than the copy, so the
  bytes go through one ``preadv`` into a pinned staging buffer and one copy.
  With GDS, every read goes through KvikIO. Measured on the H200 machine: a
  2 MiB file loaded at 1.9 GB/s through KvikIO, slower than the 1-thread seed
  loader (2.6 GB/s), hence the 4 MiB threshold.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

MAX_THREADS = 16
MIN_TASK_BYTES = 1 << 20
MAX_TASK_BYTES = 8 << 20
TASKS_PER_THREAD = 4
SMALL_READ_BYTES = 4 << 20


@dataclass(frozen=True)
class ReadPlan:
    """How one read is done: through KvikIO (pool size, task size) or a pinned staging copy."""

    threads: int
    task_size: int
    via_kvikio: bool = True


def machine_threads() -> int:
    """Threads for KvikIO's pool on this machine."""
    return max(1, min(MAX_THREADS, len(os.sched_getaffinity(0))))


def task_size_for(nbytes: int, threads: int) -> int:
    """Task size giving each of ``threads`` threads about TASKS_PER_THREAD tasks of ``nbytes``."""
    per_task = -(-nbytes // (max(1, threads) * TASKS_PER_THREAD))
    rounded = -(-per_task // MIN_TASK_BYTES) * MIN_TASK_BYTES
    return max(MIN_TASK_BYTES, min(MAX_TASK_BYTES, rounded))


_configured = False


def configure_kvikio() -> int:
    """Size KvikIO's thread pool once per process; return the threads in force."""
    global _configured
    import kvikio.defaults

    if not _configured and "KVIKIO_NTHREADS" not in os.environ:
        kvikio.defaults.set({"num_threads": machine_threads()})
    _configured = True
    return int(kvikio.defaults.get("num_threads"))


@functools.lru_cache(maxsize=1)
def compat_mode() -> bool:
    """Whether KvikIO runs without GDS (POSIX reads through bounce buffers)."""
    import kvikio.defaults

    return bool(kvikio.defaults.is_compat_mode_preferred())


def plan_read(nbytes: int) -> ReadPlan:
    """The settings for a read of ``nbytes`` into GPU memory."""
    threads = configure_kvikio()
    small = nbytes < SMALL_READ_BYTES and compat_mode()
    return ReadPlan(threads=threads, task_size=task_size_for(nbytes, threads), via_kvikio=not small)

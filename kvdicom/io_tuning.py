"""KvikIO settings chosen from the machine and the size of each read.

Why these defaults (measured on an H100 in KvikIO compat mode, see results/):

* ``num_threads``: KvikIO's default is 1, which caps a page-cache read at the
  speed of one ``pread`` + copy loop (about 7 GB/s). The pool is process-wide
  and rebuilding it costs milliseconds, so it is sized once from the machine:
  one thread per core up to :data:`MAX_THREADS`, unless the user set
  ``KVIKIO_NTHREADS`` (their choice wins).
* ``task_size``: chosen per read, so that every thread gets work on a mid-size
  file and no task is smaller than :data:`MIN_TASK_BYTES` (below that the
  per-task overhead dominates) or larger than :data:`MAX_TASK_BYTES`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_THREADS = 16
MIN_TASK_BYTES = 1 << 20
MAX_TASK_BYTES = 16 << 20


@dataclass(frozen=True)
class ReadPlan:
    """How one read is split: the pool size in force and this read's task size."""

    threads: int
    task_size: int


def machine_threads() -> int:
    """Threads for KvikIO's pool on this machine."""
    return max(1, min(MAX_THREADS, len(os.sched_getaffinity(0))))


def task_size_for(nbytes: int, threads: int) -> int:
    """Task size that gives each of ``threads`` threads at least one task of ``nbytes``."""
    per_thread = -(-nbytes // max(1, threads))
    rounded = -(-per_thread // MIN_TASK_BYTES) * MIN_TASK_BYTES
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


def plan_read(nbytes: int) -> ReadPlan:
    """The settings for a read of ``nbytes`` into GPU memory."""
    threads = configure_kvikio()
    return ReadPlan(threads=threads, task_size=task_size_for(nbytes, threads))

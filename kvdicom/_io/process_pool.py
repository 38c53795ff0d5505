"""kvdicom's one persistent process pool, for CPU-bound work that holds the GIL.

Two users: header parsing of long series (:mod:`kvdicom._series.headers`) and
frame-parallel host decoding of compressed files whose pydicom plugin holds
the GIL (:mod:`kvdicom._codecs.host_parallel`). One pool, so that a script using both
starts worker processes once (665 ms on the 2-core CPU dev machine) and never
runs two sets of one-per-core workers against each other.

``forkserver`` (``spawn`` where it is missing): a forked child of a process
that has initialised CUDA cannot use it, and a fresh interpreter never
inherits the parent's CUDA context or threads. As with any Python process
pool, workers import the caller's main module, so a script must keep its
top-level code under ``if __name__ == "__main__":``; without it the workers
fail to start, the pool is marked broken, and the work is done in-process
from then on (slower, same result).
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor

from kvdicom import settings
from kvdicom.settings import MAX_PROCESSES

_pool: ProcessPoolExecutor | None = None
_broken = False  #: a worker died once (killed, out of memory, no main guard): in-process from then on
_lock = threading.Lock()


def processes() -> int:
    """Worker processes of the pool: ``kvdicom.configure(processes=...)``, else one per core this process may
    run on; at most :data:`~kvdicom.settings.MAX_PROCESSES`, and 0 where the caller asked for none."""
    setting = settings.current().processes
    cap = MAX_PROCESSES if setting == "auto" else min(MAX_PROCESSES, setting)
    return max(0, min(cap, settings.cores()))


def pool() -> ProcessPoolExecutor:
    """The persistent pool, created on first use."""
    global _pool
    with _lock:
        if _pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            _pool = ProcessPoolExecutor(max_workers=processes(), mp_context=context)
        return _pool


def broken() -> bool:
    """Whether the pool broke once (callers then work in-process)."""
    return _broken


def mark_broken() -> None:
    """A worker died: shut the pool down without waiting, and never start it again in this process."""
    global _pool, _broken
    with _lock:
        _broken = True
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None

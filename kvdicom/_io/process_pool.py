"""kvdicom's worker processes, for CPU-bound work that holds the GIL.

Two users: header parsing of long series (:mod:`kvdicom._series.headers`) and frame-parallel host decoding
with pydicom's plugins (:mod:`kvdicom._codecs.host_parallel`). One set of workers, started on first use and
kept, so a script using both starts them once.

Why not ``multiprocessing`` / ``ProcessPoolExecutor``: its workers import the caller's main module (a script
without ``if __name__ == "__main__":`` re-ran whole in every worker), it cannot start children in a daemonic
process (a Dask or DataLoader worker: ``AssertionError: daemonic processes are not allowed to have
children``), its executor hangs in a forked child (the manager thread does not exist there), and a killed
parent left the forkserver and its workers running, holding the parent's stdout. loky (joblib) shares the
first two: it re-imports the main module and starts ``multiprocessing`` processes. So each worker here is a
plain child, ``python -m kvdicom._io.worker`` (:mod:`kvdicom._io.worker`), talking over two pipes of its
own: it imports kvdicom only, is allowed in daemonic processes, threads and Jupyter, holds none of the
caller's descriptors, and ends when its pipe closes, that is when the parent exits or dies. A forked child
forgets the parent's workers and starts its own if it needs them.

Tasks are kvdicom functions at module level with plain arguments (pickled by reference); a task's exception
comes back as its future's exception. A worker that dies (killed, out of memory) fails the futures it held
with ``BrokenProcessPool``; callers then work in-process and mark the pool broken (:func:`mark_broken`).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import kvdicom
from kvdicom import settings
from kvdicom._io import shared_staging
from kvdicom._io import worker as protocol
from kvdicom.settings import MAX_PROCESSES


class _Worker:
    """One worker process and the thread that feeds it tasks from the pool's queue, one at a time."""

    def __init__(self, tasks: queue.SimpleQueue, env: dict, on_death, pass_fds: tuple[int, ...] = ()) -> None:
        self.on_death = on_death
        to_worker_r, self.to_worker = os.pipe()
        self.from_worker, from_worker_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kvdicom._io.worker"], stdin=to_worker_r, stdout=from_worker_w,
                stderr=subprocess.DEVNULL, close_fds=True, pass_fds=pass_fds, env=env, cwd="/")
        except BaseException:
            os.close(self.to_worker)
            os.close(self.from_worker)
            raise
        finally:
            os.close(to_worker_r)
            os.close(from_worker_w)
        self.thread = threading.Thread(target=self._serve, args=(tasks,), name="kvdicom-worker", daemon=True)
        self.thread.start()

    def _serve(self, tasks: queue.SimpleQueue) -> None:
        while True:
            item = tasks.get()
            if item is None:  # shut down: close the pipe, the worker exits
                break
            future, function, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                protocol.send(self.to_worker, (function, args))
                ok, value = protocol.receive(self.from_worker)
            except (EOFError, OSError) as exc:  # the worker died: as a ProcessPoolExecutor, the pool breaks
                broken = BrokenProcessPool(f"a kvdicom worker process died ({type(exc).__name__})")
                future.set_exception(broken)
                self.on_death(broken)
                break
            except BaseException as exc:  # noqa: BLE001  an unpicklable task: the caller's error
                future.set_exception(exc)
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self.close()

    def close(self) -> None:
        for fd in (self.to_worker, self.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass
        self.to_worker = self.from_worker = -1


class WorkerPool:
    """``processes`` worker processes behind one queue; ``submit`` as ``concurrent.futures`` executors do."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._workers: list[_Worker] = []
        self._start_lock = threading.Lock()
        self._broken: BrokenProcessPool | None = None
        #: the host buffer every worker inherits (:mod:`kvdicom._io.shared_staging`); None where unsupported
        self.staging: shared_staging.SharedStaging | None = None

    def _start(self) -> None:
        with self._start_lock:
            if self._workers:
                return
            package_root = os.path.dirname(os.path.dirname(os.path.abspath(kvdicom.__file__)))
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
            env["KVDICOM_PROCESSES"] = "0"  # a worker never starts workers of its own
            self.staging = shared_staging.create()
            pass_fds = () if self.staging is None else (self.staging.fd,)
            try:
                for _ in range(self.processes):
                    self._workers.append(_Worker(self._tasks, env, self._fail_all, pass_fds))
            except OSError as exc:
                self.shutdown()
                raise BrokenProcessPool(f"cannot start kvdicom worker processes ({exc})") from exc

    def start(self) -> None:
        """Start the workers now (``submit`` starts them on first use); raises ``BrokenProcessPool`` if it cannot."""
        if self._broken is not None:
            raise self._broken
        if not self._workers:
            self._start()

    def submit(self, function, *args) -> Future:
        self.start()
        future: Future = Future()
        self._tasks.put((future, function, args))
        return future

    def _drain(self, exc: BaseException | None) -> None:
        """Every queued task fails with ``exc`` (None: is cancelled); sentinels stay for the workers."""
        sentinels = 0
        while True:
            try:
                item = self._tasks.get_nowait()
            except queue.Empty:
                break
            if item is None:
                sentinels += 1
            elif exc is None:
                item[0].cancel()
            elif item[0].set_running_or_notify_cancel():
                item[0].set_exception(exc)
        for _ in range(sentinels):
            self._tasks.put(None)

    def _fail_all(self, exc: BrokenProcessPool) -> None:
        """A worker died: no task waits for ever on a pool that will not run it."""
        self._broken = exc
        self.shutdown(exc)

    def shutdown(self, exc: BaseException | None = None) -> None:
        """Stop feeding the workers; each exits once its pipe closes. Queued tasks are cancelled (or fail).
        The shared buffer is closed unless a load holds it (that load's copy then goes with the object)."""
        self._drain(exc)
        for _ in self._workers:
            self._tasks.put(None)
        self._workers = []
        if self.staging is not None and self.staging.acquire():
            self.staging.close()
        self.staging = None

    def forget(self) -> None:
        """In a forked child: drop the parent's workers without touching them (their pipes close here)."""
        for w in self._workers:
            w.close()
        self._workers = []
        if self.staging is not None:
            self.staging.close()
            self.staging = None


_pool: WorkerPool | None = None
_broken = False  #: a worker died once (killed, out of memory): in-process from then on
_lock = threading.Lock()


def processes() -> int:
    """Worker processes of the pool: ``kvdicom.configure(processes=...)``, else one per core this process may
    run on; at most :data:`~kvdicom.settings.MAX_PROCESSES`, and 0 where the caller asked for none."""
    setting = settings.current().processes
    cap = MAX_PROCESSES if setting == "auto" else min(MAX_PROCESSES, setting)
    return max(0, min(cap, settings.cores()))


def pool() -> WorkerPool:
    """The persistent pool of :func:`processes` workers, started on first use (again when the setting changes)."""
    global _pool
    count = processes()
    if count < 1:
        raise BrokenProcessPool("kvdicom.configure(processes=0): no worker processes")
    with _lock:
        if _pool is not None and _pool.processes != count:
            _pool.shutdown()
            _pool = None
        if _pool is None:
            _pool = WorkerPool(count)
        return _pool


def staging() -> shared_staging.SharedStaging | None:
    """The running pool's shared buffer (None before the pool starts, where unsupported, or once broken)."""
    pool = _pool
    return None if pool is None or _broken or not pool._workers else pool.staging


def broken() -> bool:
    """Whether the pool broke once (callers then work in-process)."""
    return _broken


def mark_broken() -> None:
    """A worker died: stop the pool and never start it again in this process."""
    global _pool, _broken
    with _lock:
        _broken = True
        if _pool is not None:
            _pool.shutdown()
            _pool = None


def _forget_in_child() -> None:
    """A forked child has none of the parent's feeding threads: forget its workers, start anew on first use."""
    global _pool, _lock
    if _pool is not None:
        _pool.forget()
    _pool, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)

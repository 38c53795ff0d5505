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

Tasks are kvdicom functions at module level with plain arguments (pickled by reference), sent and answered by
the thread that runs them (:meth:`WorkerPool.run`); a task's exception is raised there. A worker that dies
(killed, out of memory) breaks the pool with ``BrokenProcessPool``; callers then work in-process and mark the
pool broken (:func:`mark_broken`).
"""

from __future__ import annotations

import collections
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool

import kvdicom
from kvdicom import settings
from kvdicom._io import shared_staging
from kvdicom._io import worker as protocol
from kvdicom.settings import MAX_PROCESSES

#: Seconds a run waits for an idle worker while other runs hold them all, before its caller works in-process: a
#: header run of 256 files holds them for tens of milliseconds, a host decode of a long multi-frame file for
#: seconds; a run whose generator was never closed would hold them until it is collected, and no load may hang
#: on that.
WORKER_WAIT_S = 5.0


#: Signals whose handlers raise in Python programs: Ctrl-C (SIGINT), SIGTERM (pytest-benchmark parts end on it,
#: ``dgbench.interrupt``), alarms and timers (pytest-timeout, profilers), hang-up, the user signals. Named, not every
#: signal: ``pthread_sigmask`` took 52 µs a hold and release with all of them (the set built both ways) against
#: 1.5 µs with one (2-core CPU dev machine); faults a thread raises on itself cannot wait anyway.
_HELD_SIGNALS = frozenset(getattr(signal, name) for name in (
    "SIGINT", "SIGTERM", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name))


class _SignalsHeld:
    """Holds the calling thread's signals while a run moves its workers between lists and pipes.

    Why: Python raises a signal handler's exception (``KeyboardInterrupt``) between any two bytecodes of the main
    thread. Landing between taking an idle worker and recording it, or halfway through a task's bytes, it lost the
    worker: the next run waited :data:`WORKER_WAIT_S` for it and gave up (``./dgb test -n 15`` on an H100, the
    machine loaded, 2026-12-05). Held, a signal waits for :meth:`release`, which a run calls only where its
    books are whole: while it waits for answers, and while its caller has a result. Only the main thread runs
    handlers, so other threads hold nothing.
    """

    def __init__(self) -> None:
        self._mask: set | None = None  #: the mask to restore; None while not held

    def hold(self) -> None:
        if self._mask is None and threading.current_thread() is threading.main_thread():
            self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)

    def release(self) -> None:
        """Signals delivered meanwhile run their handlers now (an exception is raised here)."""
        mask, self._mask = self._mask, None
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class PoolUnavailable(BrokenProcessPool):
    """The pool cannot take this call now, though nothing died: it was shut down (``configure(processes=...)``
    changed, or it lost its last worker), or other runs held every worker past :data:`WORKER_WAIT_S`. That call
    works in-process; the pool is not marked broken, and a shut-down one is replaced at the next call."""


class _Worker:
    """One worker process and its two pipes: one task at a time, sent and answered by whoever holds it."""

    def __init__(self, env: dict, pass_fds: tuple[int, ...] = ()) -> None:
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

    def send(self, function, args) -> None:
        """Hand the worker one task; ``OSError`` where it is gone (a broken pipe)."""
        protocol.send(self.to_worker, (function, args))

    def receive(self) -> tuple[bool, object]:
        """The answer to the task sent: ``(True, result)`` or ``(False, exception)``; ``EOFError`` or ``OSError``
        where the worker died."""
        return protocol.receive(self.from_worker)

    def close(self) -> None:
        """Close the pipes: the worker exits at the end of its input."""
        for fd in (self.to_worker, self.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass
        self.to_worker = self.from_worker = -1


class WorkerPool:
    """``processes`` worker processes, lent to one :meth:`run` at a time each.

    The thread that calls :meth:`run` sends the tasks and reads the answers itself, polling the pipes of the
    workers it took: no thread of the pool's own, no futures. Before, one feeding thread per worker took tasks
    from a queue and handed answers over through futures: 38-43 µs of the parent's CPU a task of no work against
    4-5 µs for a round trip on the pipes (2-core CPU dev machine), and 256 CT headers in 32 chunks (the H200's
    16 workers, two chunks each; here two workers forced) cost the parent 4.7-5.7 ms of CPU against 2.6-3.3 ms
    driven this way, the workers waiting on the parent meanwhile (docs/loader.md).
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._workers: list[_Worker] = []  #: every worker started, lent or not
        self._idle: list[_Worker] = []
        self._cond = threading.Condition()
        self._start_lock = threading.Lock()
        self._broken: BrokenProcessPool | None = None
        self._closed = False
        #: the host buffer every worker inherits (:mod:`kvdicom._io.shared_staging`); None where unsupported
        self.staging: shared_staging.SharedStaging | None = None

    def _start(self) -> None:
        with self._start_lock:
            if self._workers or self._closed:
                return
            package_root = os.path.dirname(os.path.dirname(os.path.abspath(kvdicom.__file__)))
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
            env["KVDICOM_PROCESSES"] = "0"  # a worker never starts workers of its own
            self.staging = shared_staging.create()
            pass_fds = () if self.staging is None else (self.staging.fd,)
            started = []
            try:
                for _ in range(self.processes):
                    started.append(_Worker(env, pass_fds))
            except OSError as exc:
                for worker in started:
                    worker.close()
                self.shutdown()
                raise BrokenProcessPool(f"cannot start kvdicom worker processes ({exc})") from exc
            with self._cond:
                self._workers = started
                self._idle = list(started)
                self._cond.notify_all()

    def start(self) -> None:
        """Start the workers now (:meth:`run` starts them on first use); raises ``BrokenProcessPool`` if it cannot."""
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise PoolUnavailable("the kvdicom worker pool was shut down")
        if not self._workers:
            self._start()

    def _wait_for_idle(self, deadline: float) -> None:
        """Return once some worker is idle, waiting until ``deadline`` (``time.monotonic``) while other runs hold
        them all (``PoolUnavailable`` then)."""
        with self._cond:
            while not self._idle:
                if self._broken is not None:
                    raise self._broken
                if self._closed or not self._workers:
                    raise PoolUnavailable("the kvdicom worker pool was shut down")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PoolUnavailable(f"every kvdicom worker was busy for {WORKER_WAIT_S:g} s")
                self._cond.wait(left)

    def _take_idle(self, count: int) -> list[_Worker]:
        """Up to ``count`` idle workers, without waiting (none where another run holds them all)."""
        with self._cond:
            taken, self._idle = self._idle[:count], self._idle[count:]
            return taken

    def _give_back(self, workers: list[_Worker]) -> None:
        """Workers whose last answer was read: idle again, or closed where the pool stopped meanwhile."""
        with self._cond:
            if self._closed:
                for worker in workers:
                    worker.close()
                return
            self._idle.extend(workers)
            self._cond.notify_all()

    def _settle(self, busy: list[_Worker]) -> None:
        """A run that ended early (an error, its consumer gone): read the answers still owed, then lend the
        workers again; on a thread of its own, so that the caller's error is not kept waiting for them."""
        alive = []
        for worker in busy:
            try:
                worker.receive()
                alive.append(worker)
            except (EOFError, OSError) as exc:
                worker.close()
                self._died(exc)
            except Exception:  # noqa: BLE001  an answer that does not unpickle here: that worker goes
                self._discard(worker)
        self._give_back(alive)

    def run(self, calls: list[tuple]) -> Iterator[tuple[int, object]]:
        """``function(*args)`` for each ``(function, args)`` of ``calls`` on the pool's workers, sent and answered
        from this thread: yields ``(index in calls, result)`` as each finishes.

        A task's exception is raised once no task of this run still runs (no new one is sent after it); a worker
        that dies breaks the pool (``BrokenProcessPool``: callers then work in-process). Close the generator
        (``contextlib.closing``) where it may be left before its end: the tasks still running are then awaited
        on another thread and their workers lent again. The consumer must not start another run from this
        thread meanwhile (it could wait for the workers it holds).
        """
        self.start()
        pending = collections.deque(enumerate(calls))
        if not pending:
            return
        idle: list[_Worker] = []  # this run's workers with no task of it running
        busy: dict[int, tuple[_Worker, int]] = {}  # reading fd -> (worker, index of its task)
        poller = select.poll()
        failure: BaseException | None = None
        held = _SignalsHeld()  # released only where ``idle`` and ``busy`` hold every worker this run took

        def send(worker: _Worker) -> None:
            index, (function, args) = pending.popleft()
            try:
                worker.send(function, args)
            except (pickle.PicklingError, TypeError, AttributeError) as exc:  # pickled before any byte is sent
                idle.append(worker)
                raise TypeError(f"cannot send {function!r} to a kvdicom worker: {exc}") from exc
            except OSError as exc:
                worker.close()
                raise self._died(exc) from exc
            busy[worker.from_worker] = (worker, index)
            poller.register(worker.from_worker, select.POLLIN)

        try:
            deadline = time.monotonic() + WORKER_WAIT_S
            while not idle:
                self._wait_for_idle(deadline)  # signals open: Ctrl-C ends the wait
                held.hold()
                idle += self._take_idle(len(pending))  # none where another run took them first: wait again
                if not idle:
                    held.release()
            while idle and pending:
                send(idle.pop())
            while busy:
                if pending and failure is None and self._idle:  # workers another run gave back meanwhile
                    idle += self._take_idle(len(pending))
                    while idle and pending:
                        send(idle.pop())
                ready = poller.poll(0)  # answers waiting: read with the signals still held
                if not ready:
                    held.release()
                    ready = poller.poll()
                    held.hold()
                for fd, _ in ready:
                    worker, index = busy.pop(fd)
                    poller.unregister(fd)
                    try:
                        ok, value = worker.receive()
                    except (EOFError, OSError) as exc:
                        worker.close()
                        raise self._died(exc) from exc
                    except BaseException:  # interrupted inside an answer: its stream is unusable
                        self._discard(worker)
                        raise
                    if not ok and failure is None:
                        failure = value
                    if pending and failure is None:
                        send(worker)
                    else:  # nothing more for it in this run: lent again now, not at the run's end
                        self._give_back([worker])
                    if ok and failure is None:
                        held.release()
                        yield index, value
                        held.hold()
            if failure is not None:
                raise failure
        finally:
            held.hold()
            try:
                self._give_back(idle)
                if busy:
                    still = [worker for worker, _ in busy.values()]
                    threading.Thread(target=self._settle, args=(still,), name="kvdicom-settle", daemon=True).start()
            finally:
                held.release()

    def _discard(self, worker: _Worker) -> None:
        """Stop ``worker`` (it exits once its pipes close) and lend it no more; the pool runs on without it."""
        worker.close()
        with self._cond:
            if worker in self._workers:
                self._workers.remove(worker)
            if not self._workers:
                self._closed = True
            self._cond.notify_all()

    def _died(self, exc: BaseException) -> BrokenProcessPool:
        """A worker's pipe broke: the pool breaks (every run raises), as a ``ProcessPoolExecutor`` does."""
        broken = BrokenProcessPool(f"a kvdicom worker process died ({type(exc).__name__})")
        self._fail_all(broken)
        return broken

    def _fail_all(self, exc: BrokenProcessPool) -> None:
        """A worker died: no run waits for ever on a pool that will not run it."""
        self._broken = exc
        self.shutdown()

    def shutdown(self) -> None:
        """Stop lending the workers; idle ones exit now (their pipes close), lent ones once their run gives them
        back. The shared buffer is closed unless a load holds it (that load's copy then goes with the object)."""
        with self._cond:
            self._closed = True
            for worker in self._idle:
                worker.close()
            self._workers, self._idle = [], []
            self._cond.notify_all()
        if self.staging is not None and self.staging.acquire():
            self.staging.close()
        self.staging = None

    def forget(self) -> None:
        """In a forked child: drop the parent's workers without touching them (their pipes close here)."""
        for w in self._workers:
            w.close()
        self._workers, self._idle, self._closed = [], [], True
        self._cond = threading.Condition()  # a fork's copy of a lock another thread held would never be released
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
        raise PoolUnavailable("kvdicom.configure(processes=0): no worker processes")
    with _lock:
        if _pool is not None and (_pool.processes != count or _pool._closed):
            _pool.shutdown()
            _pool = None
        if _pool is None:
            _pool = WorkerPool(count)
        return _pool


def staging() -> shared_staging.SharedStaging | None:
    """The running pool's shared buffer (None before the pool starts, where unsupported, or once broken)."""
    pool = _pool
    return None if pool is None or _broken or pool._closed or not pool._workers else pool.staging


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
    """A forked child must not talk to its parent's workers (their pipes are the parent's too, and a run of the
    parent may hold them): forget them, start anew on first use."""
    global _pool, _lock
    if _pool is not None:
        _pool.forget()
    _pool, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)

"""kvdicom/_io/process_pool.py: runs driven from the calling thread (``WorkerPool.run``), on a pool of its own.

Tasks are standard-library functions at module level, which the workers import by reference as they import
kvdicom's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
import os
import signal
import threading
import time

import numpy as np
import pytest

from kvdicom._io.process_pool import WorkerPool


@pytest.fixture
def pool():
    pool = WorkerPool(2)
    pool.start()
    yield pool
    pool.shutdown()


def test_run_answers_every_call_from_the_calling_thread_with_no_thread_of_its_own(pool):
    threads = threading.active_count()
    got = dict(pool.run([(operator.add, (i, 100)) for i in range(10)]))
    assert got == {i: i + 100 for i in range(10)}
    assert threading.active_count() == threads, "the pool runs a thread of its own"
    assert len(pool._idle) == 2


def test_a_failed_task_is_raised_once_the_running_ones_end_and_nothing_is_sent_after_it(pool, tmp_path):
    from tests.worker_targets import touch_then_divide, wait_for

    later = [tmp_path / f"sent{k}" for k in range(8)]
    failing = str(tmp_path / "failing")  # the first task runs on until the second has started to fail, and 1 s more
    calls = [(wait_for, (failing, 1.0)), (touch_then_divide, (failing, 0))] + [(os.mkdir, (str(p),)) for p in later]
    yielded = []
    with pytest.raises(ZeroDivisionError):
        for index, _ in pool.run(calls):
            yielded.append(index)
    assert yielded == []  # the sleep ended after the failure: its answer is read, not given
    assert not any(p.exists() for p in later), "a task was sent after the failure"
    assert len(pool._idle) == 2, "the run returned while a worker still ran its task"


def test_a_run_left_early_lends_its_workers_again_without_their_old_answers(pool, tmp_path):
    from tests.worker_targets import wait_for

    # the second task waits for a file made only once the first answer is in: with a plain 0.3 s sleep, a loaded
    # H100 (./dgb test -n 15) answered the sleep first, its other worker still starting
    go = tmp_path / "go"
    with contextlib.closing(pool.run([(operator.add, (1, 1)), (wait_for, (str(go), 0.3))])) as first:
        assert next(first) == (0, 2)  # left here, the other task still running
    go.touch()
    got = dict(pool.run([(operator.add, (i, 100)) for i in range(6)]))
    assert got == {i: i + 100 for i in range(6)}, "an answer of the run left early was taken for this run's"
    deadline = time.monotonic() + 30
    while len(pool._idle) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pool._idle) == 2


def test_ctrl_c_during_a_run_leaves_the_pool_whole_and_its_next_answers_right(pool):
    def interrupt(*_):
        raise KeyboardInterrupt

    # both workers up first: on a loaded H100 (./dgb test -n 15, 2026-12-05) a worker still starting took the 0.1 s
    # and then the next run's 5 s wait (WORKER_WAIT_S) with its start, and the interrupt landed before any sleep
    assert sorted(v for _, v in pool.run([(operator.add, (0, i)) for i in range(2)])) == [0, 1]
    before = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.1)  # while both workers sleep
    try:
        with pytest.raises(KeyboardInterrupt):
            list(pool.run([(time.sleep, (0.4,)), (time.sleep, (0.4,)), (operator.add, (1, 1))]))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
    assert dict(pool.run([(operator.add, (i, 100)) for i in range(6)])) == {i: i + 100 for i in range(6)}
    assert pool._broken is None and len(pool._workers) == 2


def test_a_task_that_cannot_be_sent_is_the_callers_error_and_the_worker_stays(pool):
    with pytest.raises(TypeError, match="cannot send"):
        list(pool.run([(lambda: 1, ())]))
    assert len(pool._idle) == 2
    assert dict(pool.run([(operator.neg, (5,))])) == {0: -5}


def test_two_threads_running_at_once_each_get_their_own_answers(pool):
    out: dict = {}

    def one(name, base):
        out[name] = dict(pool.run([(operator.add, (i, base)) for i in range(20)]))

    threads = [threading.Thread(target=one, args=(n, 1000 * n)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {n: {i: i + 1000 * n for i in range(20)} for n in range(3)}


def test_a_pool_shut_down_before_a_load_sends_it_in_process_and_the_next_gets_a_new_pool(tmp_path, monkeypatch):
    """``configure(processes=...)`` shuts the old pool down under a load that holds it: not a broken pool."""
    import numpy as np

    import kvdicom
    from fixtures.series import SeriesSpec, write_series
    from kvdicom._io import process_pool
    from kvdicom._series import headers

    monkeypatch.setattr(headers, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(headers, "POOL_MIN_PROCESSES", 1)
    monkeypatch.setattr(process_pool, "_broken", False)
    (tmp_path / "s").mkdir()
    write_series(SeriesSpec(slices=6, rows=16, cols=16, header="ct"), tmp_path / "s")
    with kvdicom.configure(processes=0):
        expected = kvdicom.load_series(tmp_path / "s", "cpu")[0]
    with kvdicom.configure(processes=2):
        old = process_pool.pool()
        old.start()
        monkeypatch.setattr(headers, "header_pool", lambda: old)  # the load holds the pool it asked for
        old.shutdown()
        vol = kvdicom.load_series(tmp_path / "s", "cpu")[0]
        np.testing.assert_array_equal(vol, expected)
        assert not process_pool.broken(), "a pool shut down on purpose was taken for a dead one"
        assert process_pool.pool() is not old


def test_a_worker_with_nothing_left_in_its_run_is_lent_again_before_the_run_ends(pool):
    """A second caller need not wait for a long run's last task: its idle workers are free at once."""
    got = {}
    with contextlib.closing(pool.run([(time.sleep, (2.0,)), (operator.add, (1, 1))])) as long_run:
        assert next(long_run) == (1, 2)  # the add: its worker has nothing left to do in this run
        other = threading.Thread(target=lambda: got.update(pool.run([(operator.neg, (7,))])), daemon=True)
        other.start()
        other.join(1.5)  # well before the sleep ends, even on a machine busy with other tests
        waited = other.is_alive()
        assert list(long_run) == [(0, None)]
    other.join(30)
    assert not waited, "the second run waited for the first run's end"
    assert got == {0: -7}


def test_a_run_that_started_with_fewer_workers_takes_those_given_back_meanwhile(pool, tmp_path):
    """Another run held one of the two workers when this one began; once it is done, this run uses both."""
    from tests.worker_targets import touch_then_pid, wait_for

    runs, started = {}, str(tmp_path / "started")
    # The holder's worker comes back once the second run has started (a handshake: on a loaded machine a fixed
    # sleep had ended before, or long after, the second run began).
    with contextlib.closing(pool.run([(wait_for, (started,))])) as holder:
        first = threading.Thread(target=lambda: list(holder), daemon=True)
        first.start()
        deadline = time.monotonic() + 10
        while len(pool._idle) != 1 and time.monotonic() < deadline:  # the holder has taken its worker
            time.sleep(0.005)
        second = threading.Thread(target=lambda: runs.update(pool.run([(touch_then_pid, (started, 0.1))] * 24)),
                                  daemon=True)
        second.start()  # takes the one idle worker; the holder's comes back once the first of these has run
        second.join(60)
        first.join(60)
    assert len(runs) == 24 and len(set(runs.values())) == 2, runs


def test_a_run_left_unclosed_holds_no_other_caller_past_the_wait(pool, monkeypatch):
    """A run whose generator is neither finished nor closed (kept alive by a traceback) holds its workers; another
    caller waits :data:`WORKER_WAIT_S` at most, then works in-process: no hang."""
    from kvdicom._io import process_pool

    monkeypatch.setattr(process_pool, "WORKER_WAIT_S", 0.2)
    held = pool.run([(time.sleep, (0.0,)), (time.sleep, (0.0,)), (operator.add, (1, 1)), (operator.add, (2, 2))])
    next(held)  # both workers taken, one task left unsent: the run holds them until closed
    with pytest.raises(process_pool.PoolUnavailable, match="busy"):
        list(pool.run([(operator.neg, (1,))]))
    assert pool._broken is None
    held.close()
    # the closed run's owed answers are read on a thread of its own before its workers are lent again: on the
    # device under ./dgb test -n 15 that took longer than 0.2 s, so the next run may wait as long as callers do
    monkeypatch.setattr(process_pool, "WORKER_WAIT_S", 30)
    assert dict(pool.run([(operator.neg, (1,))])) == {0: -1}


def test_a_staged_load_that_fails_gives_the_workers_back_while_its_traceback_lives(tmp_path, monkeypatch):
    """The GPU path's staging (here on NumPy) takes header batches as they come; where it fails (no pinned memory
    for its buffer), its header run is closed at once: a notebook keeps the last traceback, and with it the frames
    that hold the run, and the next load must still find the workers."""
    import kvdicom
    from kvdicom._io import process_pool
    from kvdicom._series import headers, worker_reads
    from kvdicom._series import loader as series
    from tests.test_series import make_series
    from tests.test_series_stage import Recorder

    monkeypatch.setattr(process_pool, "_broken", False)
    monkeypatch.setattr(headers, "use_pool", lambda count: True)
    monkeypatch.setattr(headers, "CHUNKS_PER_WORKER", 8)  # more chunks than workers: some still unsent
    monkeypatch.setattr(worker_reads, "take", lambda *args, **kwargs: None)  # the staged path
    make_series(tmp_path / "s", 24)
    backend = Recorder().backend()

    def no_memory(nbytes):
        raise MemoryError("no pinned memory (test)")

    backend = dataclasses.replace(backend, allocate=no_memory)
    with kvdicom.configure(processes=2):
        pool = process_pool.pool()
        with pytest.raises(MemoryError) as kept:
            series._load(tmp_path / "s", np, "cpu", False, None, None, backend)
        deadline = time.monotonic() + 30
        while len(pool._idle) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(pool._idle) == 2, "the failed load's header run still holds workers"
        assert kept.value is not None  # the traceback, and the frames in it, still alive here


def test_work_forced_onto_the_pool_under_processes_zero_runs_here_and_breaks_nothing(tmp_path, monkeypatch):
    """``configure(processes=0)`` is the caller's choice, not a dead worker: the pool is used again afterwards."""
    import kvdicom
    from kvdicom._io import process_pool
    from kvdicom._series import headers
    from tests.test_series import make_series

    monkeypatch.setattr(process_pool, "_broken", False)
    make_series(tmp_path / "s", 6)
    paths, _ = headers.list_files(tmp_path / "s")
    expected = headers.read_headers(paths, parallel=False)
    with kvdicom.configure(processes=0):
        assert headers.read_headers(paths, parallel=True) == expected
    assert not process_pool.broken(), "processes=0 was taken for a dead worker"
    with kvdicom.configure(processes=2):
        assert headers.read_headers(paths, parallel=True) == expected
        assert process_pool._pool is not None and process_pool._pool._workers


@contextlib.contextmanager
def _interrupt_on_sigusr1():
    def interrupt(*_):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGUSR1, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, before)


def _all_idle_again(pool, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while len(pool._idle) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(pool._idle) == 2


def test_ctrl_c_just_as_a_run_takes_its_workers_loses_none_of_them(pool):
    # the signal lands right after the workers left the idle list, before the run has them on its books (a loaded
    # H100 hit this window: the next run waited 5 s and raised PoolUnavailable)
    take_idle = pool._take_idle

    def taken_then_signalled(count):
        workers = take_idle(count)
        signal.raise_signal(signal.SIGUSR1)
        return workers

    pool._take_idle = taken_then_signalled
    with _interrupt_on_sigusr1(), pytest.raises(KeyboardInterrupt):
        list(pool.run([(operator.add, (1, 1)), (operator.add, (2, 2))]))
    pool._take_idle = take_idle
    assert _all_idle_again(pool), "a worker taken by the interrupted run was never lent again"
    assert dict(pool.run([(operator.add, (i, 100)) for i in range(6)])) == {i: i + 100 for i in range(6)}


def test_ctrl_c_just_after_a_task_is_sent_reads_its_answer_before_the_worker_is_lent_again(pool):
    # the signal lands between a task's last byte and the run noting that worker as busy: its answer must still be
    # read (not taken for the next run's) and the worker lent again
    signalled = []

    def sent_then_signalled(worker):
        send = worker.send

        def wrapper(function, args):
            send(function, args)
            if not signalled:
                signalled.append(worker)
                signal.raise_signal(signal.SIGUSR1)
        return wrapper

    for worker in pool._workers:
        worker.send = sent_then_signalled(worker)
    with _interrupt_on_sigusr1(), pytest.raises(KeyboardInterrupt):
        list(pool.run([(time.sleep, (0.2,)), (time.sleep, (0.2,))]))
    assert signalled
    assert _all_idle_again(pool), "the worker interrupted after its task was sent was never lent again"
    assert dict(pool.run([(operator.add, (i, 100)) for i in range(6)])) == {i: i + 100 for i in range(6)}

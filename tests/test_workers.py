"""kvdicom's worker processes where its users run it: daemonic processes (DataLoader and Dask workers) under
every start method, plain scripts without a main guard, threads, forked children, a dying parent, and
``configure(processes=0)``. Each test forces the workers on (any machine, any series length)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import kvdicom
from fixtures.series import SeriesSpec, write_series
from kvdicom._io import process_pool
from tests import worker_targets

ROOT = Path(__file__).resolve().parent.parent
SPEC = SeriesSpec(slices=12, rows=16, cols=16, header="ct")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("workers-series")
    write_series(SPEC, path)
    return path


@pytest.fixture(scope="module")
def expected(folder) -> np.ndarray:
    with kvdicom.configure(processes=0):
        return kvdicom.load_series(folder, "cpu")[0]


@pytest.fixture
def forced(monkeypatch):
    from kvdicom._series import headers

    monkeypatch.setattr(headers, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(headers, "POOL_MIN_PROCESSES", 1)
    monkeypatch.setattr(process_pool, "_broken", False)


def _run(script: str, tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=tmp_path)


@pytest.mark.parametrize("method", [m for m in ("fork", "spawn", "forkserver")
                                    if m in multiprocessing.get_all_start_methods()])
def test_load_series_in_a_daemonic_process_uses_the_workers(folder, expected, method):
    context = multiprocessing.get_context(method)
    results = context.Queue()
    child = context.Process(target=worker_targets.load_in_child, args=(str(folder), results), daemon=True)
    child.start()
    answer = results.get(timeout=120)
    child.join(30)
    assert answer[0] == "ok", answer[1]
    np.testing.assert_array_equal(worker_targets.volume_of(answer), expected)
    assert answer[4], "the daemonic process did not load on the worker processes"


def test_an_unguarded_script_runs_its_top_level_code_once(folder, expected, tmp_path):
    marks = tmp_path / "ran.txt"
    proc = _run(f"""
        import numpy as np
        import kvdicom
        from kvdicom._io import process_pool
        from tests.worker_targets import force_workers
        with open({str(marks)!r}, "a") as f:
            f.write("ran\\n")
        force_workers()
        volume, _ = kvdicom.load_series({str(folder)!r}, "cpu")
        np.save({str(tmp_path / "volume.npy")!r}, volume)
        print("workers used:", process_pool._pool is not None and not process_pool.broken())
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert marks.read_text() == "ran\n", "the script's top-level code ran again in a worker"
    assert "workers used: True" in proc.stdout
    assert "semaphore" not in proc.stderr and "bootstrapping" not in proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "volume.npy"), expected)


def test_four_threads_at_once_get_the_same_volume(folder, expected, forced):
    volumes, errors = [None] * 4, []

    def load(i):
        try:
            volumes[i] = kvdicom.load_series(folder, "cpu")[0]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for volume in volumes:
        np.testing.assert_array_equal(volume, expected)
    assert process_pool._pool is not None and not process_pool.broken()


def test_a_forked_child_of_a_process_that_used_the_workers_loads_without_hanging(folder, tmp_path):
    from fixtures.encode import unavailable

    if reason := unavailable("jpeg2000_lossless"):  # the script writes a JPEG 2000 file for the decode pool
        pytest.skip(reason)
    path = tmp_path / "f.dcm"
    proc = _run(f"""
        import os, signal, sys
        import numpy as np
        import kvdicom
        from fixtures.spec import DicomSpec
        from fixtures.writer import write_dicom
        from kvdicom._codecs import host_codecs, host_parallel
        from kvdicom._io import process_pool
        from tests.worker_targets import force_workers
        force_workers()
        host_parallel.POOL_MIN_FRAMES, host_parallel.POOL_MIN_DECODED_BYTES, host_parallel.POOL_MIN_PROCESSES = 2, 0, 1
        host_codecs._HAVE_IMAGECODECS = False
        write_dicom(DicomSpec(frames=4, rows=32, cols=32, bits_allocated=16, bits_stored=16, signed=True,
                              transfer_syntax="jpeg2000_lossless"), {str(path)!r})
        before = kvdicom.load_series({str(folder)!r}, "cpu")[0]
        frames = kvdicom.load({str(path)!r}, "cpu")
        assert process_pool._pool is not None and not process_pool.broken()
        pid = os.fork()
        if pid == 0:
            signal.alarm(60)  # a hang fails the child, not the test run
            ok = np.array_equal(kvdicom.load_series({str(folder)!r}, "cpu")[0], before)
            ok = ok and np.array_equal(kvdicom.load({str(path)!r}, "cpu"), frames)
            ok = ok and process_pool._pool is not None and not process_pool.broken()
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
        # the parent's workers still serve it
        assert np.array_equal(kvdicom.load_series({str(folder)!r}, "cpu")[0], before)
    """, tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "child exit 0" in proc.stdout, proc.stdout + proc.stderr


def test_processes_zero_starts_no_worker(folder, expected, forced):
    process_pool.mark_broken()  # stop any workers an earlier test left
    process_pool._broken = False
    with kvdicom.configure(processes=0):
        volume, _ = kvdicom.load_series(folder, "cpu")
        assert process_pool._pool is None
    np.testing.assert_array_equal(volume, expected)


def test_workers_die_with_their_parent_and_never_hold_its_output(folder, tmp_path):
    started = time.monotonic()
    proc = _run(f"""
        import os, signal
        import kvdicom
        from kvdicom._io import process_pool
        from tests.worker_targets import force_workers
        force_workers()
        kvdicom.load_series({str(folder)!r}, "cpu")
        print("workers", *[w.process.pid for w in process_pool._pool._workers], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """, tmp_path, timeout=60)  # capture_output: a worker holding the script's stdout would block this
    assert time.monotonic() - started < 60
    pids = [int(p) for p in proc.stdout.split()[1:]]
    assert pids, proc.stdout + proc.stderr
    deadline = time.monotonic() + 20
    while any(worker_targets.alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(worker_targets.alive(p) for p in pids), "a worker outlived its killed parent"

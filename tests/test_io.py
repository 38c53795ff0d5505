"""Host reads and KvikIO read plans."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from kvdicom import settings
from kvdicom._io import host_read
from kvdicom._io.tuning import machine_threads, task_size_for
from kvdicom.settings import KVIKIO_MAX_TASK_BYTES as MAX_TASK_BYTES
from kvdicom.settings import KVIKIO_MIN_TASK_BYTES as MIN_TASK_BYTES


def test_parallel_host_read_returns_the_exact_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "READ_PARALLEL_BYTES", 1000)
    monkeypatch.setattr(settings, "READ_CHUNK_BYTES", 333)
    data = np.random.default_rng(0).integers(0, 255, 10_000, dtype=np.uint8)
    path = tmp_path / "blob"
    path.write_bytes(b"head" + data.tobytes())
    out = np.empty(data.size, dtype=np.uint8)
    assert host_read.read_into(str(path), out, 4) == data.size
    assert np.array_equal(out, data)


def test_host_read_is_short_at_end_of_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"abcdef")
    out = np.zeros(10, dtype=np.uint8)
    assert host_read.read_into(str(path), out, 2) == 4
    assert out[:4].tobytes() == b"cdef"


def test_task_size_spreads_work_within_bounds():
    # The H100 sweep's best settings: 4 MiB tasks for 256 MiB, 8 MiB for 1 GiB, on 16 threads.
    assert task_size_for(256 << 20, 16) == 4 << 20
    assert task_size_for(1 << 30, 16) == 8 << 20
    assert task_size_for(64 << 20, 16) == 1 << 20
    assert task_size_for(100, 16) == MIN_TASK_BYTES
    assert task_size_for(8 << 30, 16) == MAX_TASK_BYTES
    assert task_size_for(12 << 20, 1) == 3 << 20
    assert task_size_for(10 << 20, 3) % MIN_TASK_BYTES == 0


def test_machine_threads_is_bounded():
    assert 1 <= machine_threads() <= 16


def test_short_preadv_results_are_read_to_the_end(tmp_path, monkeypatch):
    # preadv may return fewer bytes than asked; the reader must keep going.
    data = np.random.default_rng(1).integers(0, 255, 1000, dtype=np.uint8)
    path = tmp_path / "blob"
    path.write_bytes(data.tobytes())
    real = os.preadv
    calls = []

    def short(fd, buffers, offset):
        calls.append(offset)
        return real(fd, [memoryview(buffers[0])[:7]], offset)

    monkeypatch.setattr(os, "preadv", short)
    out = np.zeros(data.size, dtype=np.uint8)
    assert host_read.read_into(str(path), out, 0) == data.size
    assert np.array_equal(out, data) and len(calls) > 100


def test_one_persistent_pool_serves_every_large_read(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "READ_PARALLEL_BYTES", 1000)
    monkeypatch.setattr(settings, "READ_CHUNK_BYTES", 256)
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 16)
    threads = set()
    real = host_read._pread_exact
    monkeypatch.setattr(host_read, "_pread_exact", lambda *a: threads.add(threading.current_thread().name) or real(*a))
    pool = host_read.pool()
    monkeypatch.setattr(host_read, "ThreadPoolExecutor", None)  # no pool may be created per read
    for _ in range(3):
        assert host_read.read_into(str(path), np.empty(4096, dtype=np.uint8), 0) == 4096
    assert host_read.pool() is pool
    assert threads and all(name.startswith("kvdicom-read") for name in threads)


def test_a_large_read_submitted_to_the_pool_does_not_deadlock(tmp_path):
    # Series loading submits per-file reads to the pool; each read must not wait
    # on chunk tasks queued behind it on a full pool. In a child process, so a
    # deadlock fails the test instead of hanging the run.
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 16)
    script = f"""
import concurrent.futures, numpy as np
from kvdicom import settings
from kvdicom._io import host_read
settings.READ_PARALLEL_BYTES, settings.READ_CHUNK_BYTES = 1000, 256
outs = [np.empty(4096, dtype=np.uint8) for _ in range(host_read.pool()._max_workers * 2)]
futures = [host_read.pool().submit(host_read.read_into, {str(path)!r}, o, 0) for o in outs]
print(sum(f.result() for f in futures) == 4096 * len(outs))
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                              timeout=60, cwd=root)
    except subprocess.TimeoutExpired:
        pytest.fail("reads submitted to the pool deadlocked")
    assert proc.returncode == 0 and proc.stdout.split()[-1] == "True", proc.stderr


def test_disk_ceiling_reads_through_kvdicoms_reader(tmp_path, monkeypatch):
    from bench.ceilings import DiskRead

    data = np.random.default_rng(2).integers(0, 255, 3 * 4096 + 100, dtype=np.uint8).tobytes()
    path = tmp_path / "blob"
    path.write_bytes(data)
    calls = []
    real = host_read.read_chunks
    monkeypatch.setattr(host_read, "read_chunks", lambda *a, **k: calls.append(k) or real(*a, **k))
    for direct in (True, False):
        read = DiskRead(path, direct=direct)
        assert read() == read.nbytes
        assert bytes(read.buffer[: read.nbytes]) == data[: read.nbytes]
    assert len(calls) == 2


def test_direct_reads_use_o_direct(tmp_path, monkeypatch):
    path = tmp_path / "blob"
    path.write_bytes(bytes(8192))
    flags = []
    real = os.open
    monkeypatch.setattr(os, "open", lambda p, f, *a: flags.append(f) or real(p, f, *a))
    import mmap

    buffer = np.frombuffer(mmap.mmap(-1, 8192), dtype=np.uint8)
    try:
        host_read.read_into(str(path), buffer, 0, direct=True)
    except OSError:  # a file system without O_DIRECT
        pass
    assert flags and flags[-1] & os.O_DIRECT


def test_a_failed_chunk_waits_for_the_others_before_raising(tmp_path, monkeypatch):
    # The caller closes the descriptor and may reuse the buffer once read_into
    # returns or raises: no chunk may still be reading then.
    import time

    monkeypatch.setattr(settings, "READ_PARALLEL_BYTES", 1000)
    monkeypatch.setattr(settings, "READ_CHUNK_BYTES", 1024)
    path = tmp_path / "blob"
    path.write_bytes(bytes(4096))
    running = []

    def chunk(fd, view, offset):
        if offset == 0:
            raise OSError(5, "Input/output error")
        running.append(offset)
        time.sleep(0.2)
        running.remove(offset)
        return len(view)

    monkeypatch.setattr(host_read, "_pread_exact", chunk)
    with pytest.raises(OSError, match="Input/output error"):
        host_read.read_into(str(path), np.empty(4096, dtype=np.uint8), 0)
    assert running == []


def test_chunk_for_cuts_a_read_in_whole_mib_chunks_within_bounds():
    assert host_read.chunk_for(25 << 20) == 4 << 20  # the enhanced MR case: 4 MiB measured best
    assert host_read.chunk_for(256 << 20) == settings.READ_CHUNK_BYTES
    assert host_read.chunk_for(9 << 20) == settings.READ_MIN_CHUNK_BYTES


def _mid_size_read_sizes(tmp_path, monkeypatch, threads: int) -> list[int]:
    """Read a 12 MiB file with ``threads`` pool threads: the size of each ``preadv`` loop it ran (bytes checked).

    12 MiB lies below the old one-thread threshold (32 MiB) and above the new one (8 MiB).
    """
    monkeypatch.setattr(host_read.io_tuning, "host_threads", lambda: threads)
    data = np.random.default_rng(threads).integers(0, 255, 12 << 20, dtype=np.uint8)
    path = tmp_path / "blob"
    path.write_bytes(data.tobytes())
    calls = []
    real = host_read._pread_exact
    monkeypatch.setattr(host_read, "_pread_exact", lambda fd, view, offset: calls.append(len(view)) or
                        real(fd, view, offset))
    out = np.empty(data.size, dtype=np.uint8)
    assert host_read.read_into(str(path), out, 0) == data.size
    assert np.array_equal(out, data) and sum(calls) == data.size
    return calls


def test_a_mid_size_read_is_split_across_the_pool(tmp_path, monkeypatch):
    assert len(_mid_size_read_sizes(tmp_path, monkeypatch, threads=16)) > 1


def test_with_few_threads_a_mid_size_read_stays_on_one_thread(tmp_path, monkeypatch):
    assert _mid_size_read_sizes(tmp_path, monkeypatch, threads=2) == [12 << 20]

"""Host reads and KvikIO read plans."""

from __future__ import annotations

import numpy as np

from kvdicom import host_read
from kvdicom.io_tuning import MAX_TASK_BYTES, MIN_TASK_BYTES, machine_threads, task_size_for


def test_parallel_host_read_returns_the_exact_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(host_read, "PARALLEL_READ_BYTES", 1000)
    monkeypatch.setattr(host_read, "CHUNK_BYTES", 333)
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

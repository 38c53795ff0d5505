"""The series I/O ceiling reads runs of adjacent files, one task each, and on the GPU copies each run while the
later ones are still read, as the loader does.

Its first form read every file and then made one copy; on the H100 (7ca1e32) that ran slower than kvdicom's
overlapped path (12.55 against 9.73 ms for 256 CT slices), so the ceiling bounded nothing. CuPy is stood in for
here (this machine has no GPU): the stand-in records each copy, and the last file's read waits until a copy
has been made, which only a pipelined ceiling does before its last read ends.
"""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from bench import ceilings
from bench.ceilings import SeriesRead, file_spans


class _DeviceSpan:
    def __init__(self, device, start, stop):
        self.device, self.start, self.stop = device, start, stop

    def set(self, host, stream=None):
        assert stream is self.device.stream, "every span is copied on the ceiling's own stream"
        self.device.memory[self.start : self.stop] = host
        self.device.copies.append((self.start, self.stop))
        self.device.copied.set()


class _Device:
    """A stand-in for the ``cupy.empty`` buffer: slicing it gives a span whose ``set`` records the copy."""

    def __init__(self, n):
        self.memory = np.zeros(n, dtype=np.uint8)
        self.copies, self.copied, self.stream = [], threading.Event(), None

    def __getitem__(self, key):
        return _DeviceSpan(self, key.start, key.stop)


@pytest.fixture
def fake_cupy(monkeypatch):
    devices, synced = [], []

    class Stream:
        def __init__(self, non_blocking=False):
            devices[-1].stream = self

        def synchronize(self):
            synced.append(len(devices[-1].copies))

    def empty(n, dtype=None):
        devices.append(_Device(n))
        return devices[-1]

    cupy = SimpleNamespace(empty=empty, uint8=np.uint8, cuda=SimpleNamespace(Stream=Stream))
    cupyx = SimpleNamespace(empty_pinned=lambda n, dtype=None: np.empty(n, dtype=dtype))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    return SimpleNamespace(devices=devices, synced=synced)


def _files(tmp_path, count, size=100):
    ranges = []
    for i in range(count):
        path = tmp_path / f"{i}.bin"
        path.write_bytes(bytes([i]) * 8 + bytes([i + 1]) * size)
        ranges.append((str(path), 8, size))
    return ranges


def test_copy_spans_split_the_files_into_adjacent_runs():
    assert file_spans(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert file_spans(3, 8) == [(0, 1), (1, 2), (2, 3)]  # never an empty span
    assert file_spans(5, 1) == [(0, 5)]
    assert file_spans(0, 4) == []


def test_each_task_of_the_ceilings_pool_reads_a_run_of_adjacent_files(tmp_path, monkeypatch):
    """A task per file cost its dispatch: on this machine the 128 CT slices read in 7.7-10.8 ms so, 5.4-5.8 ms
    as 4 runs (``SPANS_PER_READER``), so the ceiling was the thread pool's, not the machine's."""
    ranges = _files(tmp_path, 8)
    tasks = []
    read = SeriesRead(ranges, "cpu", threads=2)
    submit = read.pool.submit
    monkeypatch.setattr(read.pool, "submit", lambda fn, *args: (tasks.append(args), submit(fn, *args))[1])
    try:
        assert read() == 800
    finally:
        read.close()
    assert read.spans == file_spans(8, 4)
    assert len(tasks) == 4, f"{len(tasks)} tasks for 8 files on 2 readers"
    expected = np.concatenate([np.full(100, i + 1, dtype=np.uint8) for i in range(8)])
    assert np.array_equal(read.host, expected)


def test_gpu_ceiling_copies_spans_while_later_files_are_still_read(tmp_path, fake_cupy, monkeypatch):
    ranges = _files(tmp_path, 8)
    real = ceilings.read_fully
    last = ranges[-1][0]
    waited = []

    def read_fully(path, *args):
        if path == last:  # the last file is read only once an earlier span has reached the device
            waited.append(fake_cupy.devices[-1].copied.wait(timeout=5))
        return real(path, *args)

    monkeypatch.setattr(ceilings, "read_fully", read_fully)
    read = SeriesRead(ranges, "cuda", threads=2)
    try:
        assert read.spans == file_spans(8, 4)
        assert read() == 800
    finally:
        read.close()
    device = fake_cupy.devices[-1]
    assert waited == [True], "the last file's read ended before any copy: the copies do not overlap the reads"
    assert device.copies == [(read.starts[a], read.starts[b]) for a, b in read.spans]  # in volume order, once each
    assert fake_cupy.synced == [len(read.spans)]  # one wait, after the last copy
    expected = np.concatenate([np.full(100, i + 1, dtype=np.uint8) for i in range(8)])
    assert np.array_equal(device.memory, expected)


def test_gpu_ceiling_fails_on_a_short_file_before_copying_its_span(tmp_path, fake_cupy):
    ranges = _files(tmp_path, 4)
    ranges[3] = (ranges[3][0], 8, 500)  # longer than the file
    read = SeriesRead(ranges, "cuda", threads=2)
    try:
        with pytest.raises(OSError, match="before the pixel data's end"):
            read()
    finally:
        read.close()
    spans = read.spans
    assert (read.starts[spans[-1][0]], read.starts[spans[-1][1]]) not in fake_cupy.devices[-1].copies

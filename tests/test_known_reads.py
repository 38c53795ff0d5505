"""The compiled per-slice reads (kvdicom/_io/_known_reads.c): the Python path's bytes, its refusals in its words,
and the run carried on after a file C stopped at."""

from __future__ import annotations

import os

import numpy as np
import pytest

import kvdicom
from fixtures.spec import DicomSpec
from fixtures.writer import write_dicom
from kvdicom import _loader
from kvdicom._io import known_reads
from kvdicom._series import native
from tests.test_faults import no_hang

pytestmark = pytest.mark.skipif(known_reads.compiled is None,
                                reason="kvdicom's compiled series reads are not built here (no C compiler)")

SLICES = 6


class Counting:
    """The compiled module, counting the items it is handed; ``stop_after``: hand back fewer than it read."""

    VERSION = known_reads.COMPILED_VERSION

    def __init__(self, module, stop_after: int | None = None):
        self.module, self.stop_after, self.items = module, stop_after, []

    def read(self, items, address, capacity):
        self.items.extend(item[0] for item in items)
        if self.stop_after is not None and len(items) > self.stop_after:
            items = items[: self.stop_after]  # as if C stopped at the item after these
        return self.module.read(items, address, capacity)


def _series(tmp_path):
    layouts = []
    for k in range(SLICES):
        path = tmp_path / f"{k}.dcm"
        write_dicom(DicomSpec(rows=16, cols=12, seed=k, signed=True), path)
        layouts.append(kvdicom.inspect(path))
    starts = native.slice_offsets(layouts)
    return layouts, starts


def _read(layouts, starts, compiled):
    """(bytes, None) or (None, the error) of reading every slice with ``compiled`` (None: the Python path)."""
    saved = known_reads.compiled
    known_reads.compiled = compiled
    try:
        host = np.full(starts[-1], 0xAB, np.uint8)
        native.read_all(layouts, host, starts)
        return host, None
    except (kvdicom.DicomLoadError, OSError) as exc:
        return None, exc
    finally:
        known_reads.compiled = saved


def test_compiled_reads_give_the_python_paths_bytes_and_read_every_slice(tmp_path):
    layouts, starts = _series(tmp_path)
    counting = Counting(known_reads.compiled)
    got, error = _read(layouts, starts, counting)
    ref, ref_error = _read(layouts, starts, None)
    assert error is None and ref_error is None
    assert np.array_equal(got, ref)
    assert sorted(counting.items) == sorted(os.fsencode(layout.path) for layout in layouts)
    for layout, start in zip(layouts, starts):  # each slot holds its file's pixel range
        with open(layout.path, "rb") as f:
            f.seek(layout.offset)
            assert got[start : start + layout.nbytes].tobytes() == f.read(layout.nbytes)


def _swap(path, tmp_path):
    twin = tmp_path / "twin.dcm"
    write_dicom(DicomSpec(rows=16, cols=12, seed=99, signed=True), twin)
    os.replace(twin, path)


def _rewrite_in_place(path, tmp_path):
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime restored: only the ctime tells


def _fifo(path, tmp_path):
    os.unlink(path)
    os.mkfifo(path)


CHANGES = {
    "truncated": lambda path, tmp_path: os.truncate(path, path.stat().st_size - 10),
    "swapped": _swap,
    "rewritten in place": _rewrite_in_place,
    "deleted": lambda path, tmp_path: os.unlink(path),
    "a FIFO": _fifo,
    "a directory": lambda path, tmp_path: (os.unlink(path), os.mkdir(path)),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_file_changed_after_its_header_is_refused_by_the_compiled_reads_in_the_python_paths_words(
        tmp_path, change):
    layouts, starts = _series(tmp_path)
    changed = layouts[SLICES // 2]
    CHANGES[change](tmp_path / os.path.basename(changed.path), tmp_path)
    counting = Counting(known_reads.compiled)
    with no_hang():
        got, error = _read(layouts, starts, counting)
        ref, ref_error = _read(layouts, starts, None)
    assert got is None and ref is None
    assert type(error) is type(ref_error) and str(error) == str(ref_error)
    assert changed.path in str(error)
    assert os.fsencode(changed.path) in counting.items  # C was handed the file, and stopped at it


def test_a_run_carries_on_after_the_file_the_compiled_reads_stopped_at(tmp_path, monkeypatch):
    layouts, starts = _series(tmp_path)
    ref, _ = _read(layouts, starts, None)
    monkeypatch.setattr(known_reads, "compiled", Counting(known_reads.compiled, stop_after=2))
    python_reads = []
    original = _loader.read_host_python
    monkeypatch.setattr(_loader, "read_host_python", lambda layout, view: python_reads.append(layout.path)
                        or original(layout, view))
    host = np.zeros(starts[-1], np.uint8)
    native._read_slices(layouts, host, starts, 0, SLICES)
    assert np.array_equal(host, ref)
    assert python_reads == [layouts[2].path, layouts[5].path]  # C read 0-1, stopped; 3-4, stopped


def test_the_compiled_reads_refuse_a_slot_past_the_buffer(tmp_path):
    layouts, starts = _series(tmp_path)
    layout = layouts[0]
    item = (os.fsencode(layout.path), layout.offset, layout.nbytes, 8, *layout.file_id)
    host = np.zeros(layout.nbytes, np.uint8)
    with pytest.raises(ValueError, match="past the buffer"):
        known_reads.compiled.read([item], host.ctypes.data, host.nbytes)
    assert not host.any()


@pytest.mark.parametrize("buffer", [np.zeros(64, np.uint16), np.zeros((8, 8), np.uint8), np.zeros(128, np.uint8)[::2],
                                    memoryview(bytearray(64))], ids=["uint16", "2-D", "strided", "memoryview"])
def test_only_a_contiguous_writable_byte_array_is_handed_to_c(buffer):
    assert not known_reads.usable(buffer)
    readonly = np.zeros(64, np.uint8)
    readonly.flags.writeable = False
    assert not known_reads.usable(readonly)
    assert known_reads.usable(np.zeros(64, np.uint8))


def test_a_header_workers_slot_read_goes_through_c_and_refuses_a_changed_file_in_the_python_paths_words(
        tmp_path, monkeypatch):
    from kvdicom._series import headers

    path = tmp_path / "0.dcm"
    write_dicom(DicomSpec(rows=16, cols=12, seed=1, signed=True), path)
    header = headers.read_header(str(path))
    slot = np.zeros(header.layout.nbytes + 64, np.uint8)
    counting = Counting(known_reads.compiled)
    monkeypatch.setattr(known_reads, "compiled", counting)
    assert headers._read_into_slot(header, slot, None) == (header.layout.nbytes, None)
    assert counting.items == [os.fsencode(path)]
    with open(path, "rb") as f:
        f.seek(header.layout.offset)
        assert slot[: header.layout.nbytes].tobytes() == f.read(header.layout.nbytes)
    os.truncate(path, path.stat().st_size - 10)
    got = headers._read_into_slot(header, slot, None)
    monkeypatch.setattr(known_reads, "compiled", None)
    assert got == headers._read_into_slot(header, slot, None)
    assert isinstance(got[0], str) and "size" in got[0]


def test_where_c_stops_a_header_worker_and_the_parent_read_a_slice_again_through_the_one_python_read(
        tmp_path, monkeypatch):
    """The series' two slice reads (the header workers' slot read, the parent's) are one function: where C stops
    at a file, both read it again the same way and refuse a changed file in the same words."""
    from kvdicom._series import headers

    path = tmp_path / "0.dcm"
    write_dicom(DicomSpec(rows=16, cols=12, seed=1, signed=True), path)
    header = headers.read_header(str(path))
    layout = header.layout
    monkeypatch.setattr(known_reads, "compiled", Counting(known_reads.compiled, stop_after=0))
    python_reads = []
    original = _loader.read_host_python
    monkeypatch.setattr(_loader, "read_host_python", lambda layout, view: python_reads.append(
        ("worker" if view.base is slot else "parent", layout.path)) or original(layout, view))
    slot = np.zeros(layout.nbytes + 64, np.uint8)
    assert headers._read_into_slot(header, slot, None) == (layout.nbytes, None)
    parent = np.zeros(layout.nbytes, np.uint8)
    _loader.read_host_slice(layout, parent)
    assert python_reads == [("worker", str(path)), ("parent", str(path))]
    assert np.array_equal(slot[: layout.nbytes], parent)
    os.truncate(path, path.stat().st_size - 10)
    why, _ = headers._read_into_slot(header, slot, None)
    with pytest.raises(kvdicom.DicomLoadError) as refused:
        _loader.read_host_slice(layout, parent)
    assert isinstance(why, str) and why == refused.value.reason


def test_a_compressed_slices_value_is_read_through_c_and_a_changed_file_refused_in_the_python_paths_words(
        tmp_path, monkeypatch):
    from kvdicom._header import compressed

    path = tmp_path / "rle.dcm"
    write_dicom(DicomSpec(rows=16, cols=12, seed=2, signed=True, transfer_syntax="rle"), path)
    layout = kvdicom.inspect(path)
    nbytes = compressed.value_nbytes(layout)
    counting = Counting(known_reads.compiled)
    monkeypatch.setattr(known_reads, "compiled", counting)
    value, frames = compressed.read_frames(layout, into=np.zeros(nbytes, np.uint8))
    assert counting.items == [os.fsencode(path)]
    with open(path, "rb") as f:
        f.seek(layout.offset)
        assert value.tobytes() == f.read(nbytes)
    assert len(frames) == 1
    os.truncate(path, path.stat().st_size - 4)
    errors = []
    for compiled in (counting, None):
        monkeypatch.setattr(known_reads, "compiled", compiled)
        with pytest.raises(kvdicom.DicomLoadError) as caught:
            compressed.read_frames(layout, into=np.zeros(nbytes, np.uint8))
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and str(path) in errors[0]
    assert counting.items == [os.fsencode(path)] * 2


def test_the_compiled_reads_refuse_a_path_with_a_nul_byte_as_python_does(tmp_path):
    layouts, _ = _series(tmp_path)
    layout = layouts[0]
    host = np.zeros(layout.nbytes, np.uint8)
    item = (os.fsencode(layout.path) + b"\0.ignored", layout.offset, layout.nbytes, 0, *layout.file_id)
    with pytest.raises(ValueError, match="null"):  # never the path cut at the NUL, which is the real file
        known_reads.compiled.read([item], host.ctypes.data, host.nbytes)
    assert not host.any()


def test_a_slice_the_python_path_reads_in_parallel_chunks_is_left_to_it(tmp_path, monkeypatch):
    # One C call reads in one thread: a file of READ_PARALLEL_BYTES or more keeps the Python path's chunked reads.
    from kvdicom import settings

    layouts, starts = _series(tmp_path)
    monkeypatch.setattr(settings, "READ_PARALLEL_BYTES", layouts[0].nbytes // 8)  # large, even with few threads
    counting = Counting(known_reads.compiled)
    got, error = _read(layouts[:1], starts[:2], counting)
    assert error is None and counting.items == []
    assert got.tobytes() == open(layouts[0].path, "rb").read()[layouts[0].offset:][: layouts[0].nbytes]

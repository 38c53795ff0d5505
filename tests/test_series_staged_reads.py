"""Compressed slices read while the headers still come in (``kvdicom._series.stage`` lanes, GPU path), on the CPU.

The GPU route's logic runs with ``tests.test_series_decode``'s NumPy stand-in for nvImageCodec's batch; the
staging runs with a NumPy backend whose compressed reads are the GPU path's own
(:func:`kvdicom._series.decode.read_staged`) on kvdicom's read pool.
"""

from __future__ import annotations

import threading

import numpy as np
import pydicom
import pytest

import kvdicom
from kvdicom._io import host_read
from kvdicom._series import decode as series_decode
from kvdicom._series import headers as series_headers
from kvdicom._series import loader as series
from kvdicom._series import stage as series_stage
from tests import test_series_decode
from tests.test_series_decode import FakeBatch, pydicom_volume, write_series

gpu_route = test_series_decode.gpu_route  # the fixture: nvImageCodec "present", its batch a NumPy stand-in


class PackedReads:
    """A NumPy backend (native slots, copies) whose compressed reads are the GPU path's, recorded."""

    def __init__(self, read=series_decode.read_staged):
        self.read_paths: list[str] = []
        self._read, self._lock = read, threading.Lock()

    def read_packed(self, layout, files):
        with self._lock:
            self.read_paths.append(layout.path)
        return self._read(layout, files)

    def backend(self) -> series_stage.Backend:
        def copy(dst, dst_offset, staging, staging_offset, nbytes):
            dst[dst_offset:dst_offset + nbytes] = staging[staging_offset:staging_offset + nbytes]

        return series_stage.Backend(allocate=lambda n: np.zeros(n, np.uint8), read=series._submit_read, copy=copy,
                                    read_packed=self.read_packed,
                                    submit=lambda fn, *args: host_read.pool().submit(fn, *args))


def load_on_gpu_route(folder, reads: PackedReads, series_uid=None):
    """load_series' GPU path (staging, lanes, GPU batch logic) with NumPy arrays."""
    return series._load(folder, np, "cuda", False, series_uid, None, reads.backend())


def test_staged_compressed_series_equals_pydicom_and_is_read_once(tmp_path, gpu_route):
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 6)
    fake = gpu_route(FakeBatch())
    reads = PackedReads()
    vol, info = load_on_gpu_route(tmp_path / "s", reads)
    assert list(info.paths) == paths
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert sorted(reads.read_paths) == sorted(paths)  # every slice read once, by the lanes
    assert fake.calls == [6]
    assert info.decoders == ("nvimgcodec (jpeg2000, 6 frames in one batch): 6 slices",)


def test_reads_start_before_the_last_header_is_in(tmp_path, gpu_route):
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 4)
    files = sorted(str(p) for p in (tmp_path / "s").iterdir())
    first_read = threading.Event()
    reads = PackedReads(read=lambda layout, n: (first_read.set(), series_decode.read_staged(layout, n))[1])
    headers = [[item] for batch in series_headers.header_batches(files, parallel=False) for item in batch]
    seen_before_last = []

    def batches():
        yield from headers[:-1]
        seen_before_last.append(first_read.wait(timeout=30))  # the lanes read while this batch is still held
        yield headers[-1]

    staging = series_stage.stage(files, batches(), reads.backend())
    assert seen_before_last == [True]
    assert sorted(staging.packed) == list(range(len(files))) and not staging.errors
    assert {piece.layout.path for piece in staging.packed.values()} == set(paths)


def _corrupt_siz_width(path) -> None:
    """The codestream's SIZ says 64 columns where the header says 32: refused while reading, before decoding."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    siz = data.find(b"\xff\x51")
    data[siz + 6:siz + 10] = (64).to_bytes(4, "big")
    with open(path, "wb") as f:
        f.write(data)


def test_a_slice_refused_in_its_lane_is_a_dicom_load_error_naming_it(tmp_path, gpu_route):
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 5)
    _corrupt_siz_width(paths[3])
    gpu_route(FakeBatch())
    reads = PackedReads()
    with pytest.raises(kvdicom.DicomLoadError) as err:
        load_on_gpu_route(tmp_path / "s", reads)
    assert err.value.path == paths[3]
    assert paths[3] in reads.read_paths  # refused by the staged read, not by a second one


def test_files_of_another_series_are_not_read_when_a_series_is_asked_for(tmp_path, gpu_route):
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 4)
    other = tmp_path / "s" / "other.dcm"
    ds = pydicom.dcmread(paths[0])
    ds.SeriesInstanceUID = "1.2.3.99"
    ds.save_as(other)
    _corrupt_siz_width(other)  # would be refused, were it read
    gpu_route(FakeBatch())
    reads = PackedReads()
    vol, info = load_on_gpu_route(tmp_path / "s", reads, series_uid="1.2.3.4")
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert str(other) not in reads.read_paths


def test_mixed_series_on_one_pool_thread_neither_waits_forever_nor_loses_a_read(tmp_path, gpu_route):
    """The lanes hold pool threads until the last header: with one thread, the native slices' staged reads
    queue behind them and must still run (the lanes end first)."""
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless", "explicit_le", "jpeg2000_lossless", "explicit_le"])
    files = sorted(str(p) for p in (tmp_path / "s").iterdir())
    batches = [[item] for batch in series_headers.header_batches(files, parallel=False) for item in batch]
    result = {}
    with kvdicom.configure(threads=1):
        worker = threading.Thread(target=lambda: result.update(
            staging=series_stage.stage(files, iter(batches), PackedReads().backend())))
        worker.start()
        worker.join(timeout=60)
    assert not worker.is_alive(), "staging waited forever"
    staging = result["staging"]
    native = [files.index(p) for p in (paths[1], paths[3])]
    assert sorted(staging.packed) == sorted(files.index(p) for p in (paths[0], paths[2]))
    assert sorted(staging.slots) == sorted(native) and not staging.errors
    for index in native:
        layout = staging.headers[index].layout
        start = staging.slots[index] * staging.slot
        assert staging.buffer[start:start + layout.nbytes].tobytes() == pydicom.dcmread(files[index]).PixelData


def test_a_slice_planned_for_the_whole_folder_is_planned_again_for_a_smaller_series(tmp_path, gpu_route):
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 3)
    layouts = [kvdicom.inspect(p) for p in paths]
    staged = [series_decode.read_staged(layout, 10) for layout in layouts]  # a folder of 10 files
    assert {piece.planned_for for piece in staged} == {10}
    pieces = series_decode.take_staged([staged[0], None, staged[2]], layouts, [2, 0, 1])
    assert [p.slot for p in pieces] == [2, 0, 1]
    assert {p.planned_for for p in pieces} == {3} and all(p.choice is not None for p in pieces)
    assert pieces[0] is staged[0] and pieces[1].layout is layouts[1]  # the missing one read now

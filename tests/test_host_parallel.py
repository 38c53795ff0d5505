"""Frame-parallel host decoding (kvdicom/host_parallel.py) on the shared process pool (kvdicom/process_pool.py).

The pool is forced on for these small files (the thresholds keep small files in-process); every test checks
that the pool really ran, or really failed, so that a pass is not the in-process path in disguise.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

import kvdicom
from fixtures.oracle import pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.time_limit import time_limit
from fixtures.writer import build_dataset, write_dicom
from kvdicom._codecs import host_codecs, host_parallel, route
from kvdicom._header import compressed
from kvdicom._io import process_pool
from tests.host_pool import pool_everything

pytest.importorskip("pylibjpeg", reason="compressed cases need pylibjpeg (requirements.txt)")
pytest.importorskip("openjpeg", reason="compressed cases need pylibjpeg-openjpeg (requirements.txt)")
pytest.importorskip("imagecodecs", reason="compressed fixtures need imagecodecs (requirements.txt)")

S16 = {"bits_allocated": 16, "bits_stored": 16, "signed": True}
CASES = [
    DicomSpec(frames=5, rows=48, cols=40, transfer_syntax="jpegls_lossless", **S16),
    DicomSpec(frames=5, rows=32, cols=48, bits_allocated=16, bits_stored=12, transfer_syntax="jpeg_lossless_sv1"),
    DicomSpec(frames=6, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", **S16),
    DicomSpec(frames=4, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", offset_table="eot", **S16),
    DicomSpec(frames=4, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", fragments=3, **S16),
    DicomSpec(frames=4, rows=24, cols=32, transfer_syntax="htj2k_lossless", **S16),
    DicomSpec(frames=4, rows=32, cols=32, photometric="YBR_RCT", transfer_syntax="jpeg2000_lossless",
              bits_allocated=8, bits_stored=8, samples_per_pixel=3),
]


@pytest.fixture
def pooled(monkeypatch):
    """Every multi-frame host decode goes to the pool; records what the pool returned. Pool state restored."""
    return pool_everything(monkeypatch, "decode")


@pytest.mark.parametrize("case", CASES, ids=[s.case_id for s in CASES])
def test_pool_decodes_every_frame_exactly_as_pixel_array(tmp_path, case, pooled):
    path = tmp_path / "f.dcm"
    write_dicom(case, path)
    got = kvdicom.load(path, "cpu")
    ref = pydicom_pixels(path)
    assert len(pooled) == 1 and pooled[0] is not None, "the pool did not decode the file"
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert np.array_equal(got, ref)
    assert got.flags.writeable and got.flags.c_contiguous  # as pixel_array returns it


def test_the_pooled_array_is_private_to_this_process(tmp_path, pooled):
    # the frames come back through a memory file: a process forked later must not write into this array
    path = tmp_path / "f.dcm"
    write_dicom(CASES[2], path)
    got = kvdicom.load(path, "cpu")
    assert pooled[-1] is not None
    before = got.copy()
    child = os.fork()
    if child == 0:  # pragma: no cover  (the child)
        got[...] = 7
        os._exit(0)
    os.waitpid(child, 0)
    assert np.array_equal(got, before)


def test_decoder_record_names_the_pool(tmp_path, pooled):
    path = tmp_path / "f.dcm"
    write_dicom(CASES[2], path)
    assert "processes" in route.describe(kvdicom.inspect(path), "cpu")


def _with_broken_frame(tmp_path, broken: int = 3):
    """A 6-frame JPEG 2000 file whose frame ``broken`` is SOC + EOC: no image, so every plugin fails on it."""
    spec = CASES[2]
    ds = build_dataset(spec)
    frames = list(generate_frames(ds.PixelData, number_of_frames=spec.frames))
    frames[broken] = b"\xff\x4f\xff\xd9"
    ds.PixelData = encapsulate(frames, has_bot=True)
    path = tmp_path / "broken.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_an_undecodable_frame_is_the_in_process_error_naming_the_file(tmp_path, pooled, monkeypatch):
    path = _with_broken_frame(tmp_path)
    with pytest.raises(kvdicom.DicomLoadError) as pooled_error:
        kvdicom.load(path, "cpu")
    assert pooled == [None], "the pool should have tried the file and handed it back"
    assert pooled_error.value.path == str(path)
    monkeypatch.setattr(host_parallel, "POOL_MIN_FRAMES", 1 << 30)  # now in-process only
    with pytest.raises(kvdicom.DicomLoadError) as local_error:
        kvdicom.load(path, "cpu")
    assert len(pooled) == 1
    assert str(pooled_error.value) == str(local_error.value)


def test_the_worker_reports_the_failing_frame(tmp_path, pooled):
    path = _with_broken_frame(tmp_path, broken=4)
    layout = kvdicom.inspect(path)
    value, _ = compressed.read_frames(layout)
    src = host_parallel._memfd(value.nbytes)
    dst = host_parallel._memfd(layout.decoded_nbytes)
    try:
        host_parallel._write_all(src, memoryview(value).cast("B"), 0)
        options = dict(layout.options, number_of_frames=layout.number_of_frames)
        job = (layout.path, str(layout.transfer_syntax), options, "pylibjpeg", host_parallel._fd_folder(), src, dst,
               layout.decoded_nbytes // layout.number_of_frames, (32, 32), layout.dtype.str)
        assert len(host_parallel.decode_chunk(job, 0, 4)) == 4  # frames 0-3 decode
        why = host_parallel.decode_chunk(job, 2, 6)
    finally:
        os.close(src)
        os.close(dst)
    assert isinstance(why, str) and "frame 4" in why and str(path) in why


def test_pool_that_cannot_start_decodes_in_process(tmp_path, pooled, monkeypatch):
    path = tmp_path / "f.dcm"
    write_dicom(CASES[0], path)

    def cannot_start():
        raise RuntimeError("An attempt has been made to start a new process before the current process has "
                           "finished its bootstrapping phase")  # what a script without the main guard meets

    monkeypatch.setattr(process_pool, "pool", cannot_start)
    got = kvdicom.load(path, "cpu")
    assert pooled == [None]
    assert process_pool.broken()
    assert np.array_equal(got, pydicom_pixels(path)) and got.dtype == pydicom_pixels(path).dtype
    assert host_parallel.problem(kvdicom.inspect(path), "pylibjpeg") is not None  # in-process from now on


def test_workers_that_cannot_open_the_memory_files_leave_decoding_in_process(tmp_path, pooled, monkeypatch):
    path = tmp_path / "f.dcm"
    write_dicom(CASES[0], path)
    monkeypatch.setattr(host_parallel, "_unusable", None)
    monkeypatch.setattr(host_parallel, "_fd_folder", lambda: str(tmp_path / "no-proc"))
    got = kvdicom.load(path, "cpu")
    assert pooled == [None] and not process_pool.broken()
    assert np.array_equal(got, pydicom_pixels(path))
    assert "FileNotFoundError" in host_parallel.problem(kvdicom.inspect(path), "pylibjpeg")


def test_no_memory_files_leaves_decoding_in_process(tmp_path, pooled, monkeypatch):
    path = tmp_path / "f.dcm"
    write_dicom(CASES[1], path)
    monkeypatch.setattr(host_parallel, "_unusable", None)

    def no_memfd(*args):
        raise OSError(38, "Function not implemented")  # ENOSYS: a sandbox without memfd_create

    monkeypatch.setattr(host_parallel.os, "memfd_create", no_memfd)
    got = kvdicom.load(path, "cpu")
    assert pooled == [None] and "memory files" in host_parallel.problem(kvdicom.inspect(path), "pylibjpeg")
    assert np.array_equal(got, pydicom_pixels(path))


def test_a_killed_worker_does_not_hang_the_load(tmp_path, pooled, monkeypatch):
    path = tmp_path / "f.dcm"
    write_dicom(DicomSpec(frames=8, rows=64, cols=64, transfer_syntax="jpeg2000_lossless", **S16), path)
    kvdicom.load(path, "cpu")  # the pool's workers are up
    assert pooled[-1] is not None
    real_pool = process_pool.pool

    def pool_with_dead_workers():  # every worker killed, and gone, before the frames are submitted
        pool = real_pool()
        for worker in list(pool._workers):
            os.kill(worker.process.pid, signal.SIGKILL)
            worker.process.wait(20)
        return pool

    # killing one worker after submission raced with 8 small frames finishing first (seen on the H100 machine)
    monkeypatch.setattr(process_pool, "pool", pool_with_dead_workers)
    with time_limit(60):
        got = kvdicom.load(path, "cpu")
    assert pooled[-1] is None and process_pool.broken()
    assert np.array_equal(got, pydicom_pixels(path))


def test_frames_whose_corrections_differ_decode_as_the_whole_value(tmp_path, pooled):
    # pydicom re-signs every frame from the LAST frame's codestream (signed, 16 bits here: nothing to do);
    # frame 1, unsigned 12-bit, decoded alone would be re-signed from its own (values >= 2048 negative)
    import openjpeg

    spec = DicomSpec(frames=4, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", **S16)
    ds = build_dataset(spec)
    frames = list(generate_frames(ds.PixelData, number_of_frames=4))
    frames[1] = openjpeg.encode(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 4, bits_stored=12,
                                use_mct=False)
    ds.PixelData = encapsulate(frames, has_bot=True)
    path = tmp_path / "mixed.dcm"
    ds.save_as(path, enforce_file_format=True)
    ref = pydicom_pixels(path)
    alone = pydicom.pixels.pixel_array(path, index=1, decoding_plugin="pylibjpeg")
    assert not np.array_equal(alone, ref[1])  # the case this test is about
    got = kvdicom.load(path, "cpu")
    assert pooled == [None], "the pool must hand back frames whose corrections differ"
    assert np.array_equal(got, ref)


def test_the_header_pool_and_the_decode_pool_are_one(monkeypatch):
    from kvdicom._series import headers as series_headers

    assert series_headers.header_pool() is process_pool.pool()
    assert series_headers.header_processes() == process_pool.processes()


def test_single_frames_and_small_files_stay_in_process(tmp_path, monkeypatch):
    path = tmp_path / "f.dcm"
    write_dicom(CASES[0], path)
    layout = kvdicom.inspect(path)
    assert "decoded bytes" in host_parallel.problem(layout, "pylibjpeg")
    monkeypatch.setattr(host_codecs, "_HAVE_IMAGECODECS", False)
    assert route.describe(layout, "cpu") == "host:pydicom:pylibjpeg"
    assert "not known to hold the GIL" in host_parallel.problem(layout, "pillow")


def test_frames_known_only_while_decoding_stay_in_process(tmp_path, pooled):
    # no offset table and more fragments than frames: pydicom splits frames on JPEG EOI markers as it decodes
    path = tmp_path / "f.dcm"
    write_dicom(DicomSpec(frames=4, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", offset_table="none",
                          fragments=2, **S16), path)
    assert "split" in host_parallel.problem(kvdicom.inspect(path), "pylibjpeg")
    assert np.array_equal(kvdicom.load(path, "cpu"), pydicom_pixels(path))
    assert pooled == []

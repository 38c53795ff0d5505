"""kvdicom._pixels.decode on NumPy: each step pinned to hand-computed values, then to pydicom."""

from __future__ import annotations

import numpy as np
import pytest

import kvdicom
from fixtures.oracle import mismatch, pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.writer import build_dataset
from kvdicom import settings


def _load_raw(make_file, tmp_path, words: np.ndarray, **fields):
    """A file whose pixel data is exactly ``words`` (already in file byte order)."""
    spec = DicomSpec(**fields)
    ds = build_dataset(spec)
    ds.PixelData = words.tobytes()
    path = tmp_path / "raw.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_unused_high_bits_are_masked_for_unsigned(make_file, tmp_path):
    words = np.array([0xF123, 0x0FFF, 0xA000, 0x0001], dtype="<u2")
    path = _load_raw(make_file, tmp_path, words, rows=2, cols=2, bits_allocated=16, bits_stored=12)
    out = kvdicom.load(path, "cpu")
    assert out.tolist() == [[0x123, 0xFFF], [0x000, 0x001]]
    assert mismatch(out, pydicom_pixels(path)) is None


def test_unused_high_bits_sign_extend_for_signed(make_file, tmp_path):
    # 12-bit two's complement: 0x800 = -2048, 0xFFF = -1, 0x7FF = 2047; high nibble is noise.
    words = np.array([0x5800, 0x0FFF, 0xF7FF, 0x0000], dtype="<u2")
    path = _load_raw(make_file, tmp_path, words, rows=2, cols=2, bits_allocated=16, bits_stored=12, signed=True)
    out = kvdicom.load(path, "cpu")
    assert out.dtype == np.int16
    assert out.tolist() == [[-2048, -1], [2047, 0]]
    assert mismatch(out, pydicom_pixels(path)) is None


def test_big_endian_words_are_swapped(make_file):
    path = make_file(DicomSpec(rows=3, cols=3, bits_allocated=32, bits_stored=32, transfer_syntax="explicit_be"))
    out = kvdicom.load(path, "cpu")
    assert out.dtype == np.dtype("=u4") and out.dtype.isnative
    assert mismatch(out, pydicom_pixels(path)) is None
    assert out.ravel()[0] == 0 and out.ravel()[1] == 2**32 - 1  # the writer puts both extremes first


def test_bit_packed_pixels_unpack_lsb_first(tmp_path, make_file):
    # 3 x 3 = 9 pixels packed LSB first: 0b1000_0101, 0b0000_0001
    path = _load_raw(make_file, tmp_path, np.array([0x85, 0x01], dtype=np.uint8), rows=3, cols=3,
                     bits_allocated=1, bits_stored=1)
    out = kvdicom.load(path, "cpu")
    assert out.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 1]]
    assert mismatch(out, pydicom_pixels(path)) is None


def test_planar_configuration_1_is_returned_interleaved(make_file, tmp_path):
    # R plane, G plane, B plane of a 1 x 2 image
    planes = np.array([1, 2, 10, 20, 100, 200], dtype=np.uint8)
    path = _load_raw(make_file, tmp_path, planes, rows=1, cols=2, bits_allocated=8, bits_stored=8,
                     samples_per_pixel=3, planar_configuration=1)
    out = kvdicom.load(path, "cpu")
    assert out.tolist() == [[[1, 10, 100], [2, 20, 200]]]
    assert mismatch(out, pydicom_pixels(path)) is None


def test_ybr_full_422_is_expanded_then_converted_like_pydicom(make_file):
    path = make_file(DicomSpec(rows=4, cols=6, frames=2, bits_allocated=8, bits_stored=8,
                               samples_per_pixel=3, photometric="YBR_FULL_422"))
    out = kvdicom.load(path, "cpu")
    assert out.shape == (2, 4, 6, 3)
    assert mismatch(out, pydicom_pixels(path)) is None


@pytest.mark.parametrize("keyword,bits", [("FloatPixelData", 32), ("DoubleFloatPixelData", 64)])
def test_float_pixel_data_keeps_negative_zero_and_extremes(make_file, keyword, bits):
    path = make_file(DicomSpec(rows=2, cols=4, pixel_keyword=keyword, bits_allocated=bits, bits_stored=bits))
    out = kvdicom.load(path, "cpu")
    info = np.finfo(out.dtype)
    assert out.ravel()[0] == info.min and out.ravel()[1] == info.max
    assert np.signbit(out.ravel()[2]) and out.ravel()[2] == 0
    assert mismatch(out, pydicom_pixels(path)) is None


def test_mismatch_reports_a_wrong_value():
    ref = np.arange(6, dtype=np.int16).reshape(2, 3)
    bad = ref.copy()
    bad[1, 2] = 99
    assert "1 of 6 values differ" in mismatch(bad, ref)
    assert "shape" in mismatch(ref.reshape(3, 2), ref)
    assert "dtype" in mismatch(ref.astype(np.uint16), ref)
    assert mismatch(ref.copy(), ref) is None


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("use_out", [False, True], ids=["new", "out"])
def test_unused_bits_are_corrected_chunk_by_chunk_as_the_host_read_lands(make_file, tmp_path, monkeypatch,
                                                                         signed, use_out):
    from kvdicom import _loader as loader

    monkeypatch.setattr(settings, "READ_PARALLEL_BYTES", 1000)
    monkeypatch.setattr(settings, "READ_CHUNK_BYTES", 1003)  # odd: the correction still sees whole samples
    spec = DicomSpec(frames=3, rows=32, cols=48, bits_allocated=16, bits_stored=12, signed=signed,
                     dirty_unused_bits=True)
    path = make_file(spec)
    sizes = []
    real = loader._correct_unused_bits
    monkeypatch.setattr(loader, "_correct_unused_bits", lambda arr, shift: sizes.append(arr.size) or real(arr, shift))
    out = np.empty((3, 32, 48), np.int16 if signed else np.uint16) if use_out else None
    got = kvdicom.load(path, "cpu", out=out)
    assert mismatch(got, pydicom_pixels(path)) is None
    assert len(sizes) > 1 and max(sizes) <= 1003 // 2 and sum(sizes) == 3 * 32 * 48

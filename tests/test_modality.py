"""kvdicom.load(..., rescale=True): pydicom's apply_modality_lut by value and dtype, and its refusals."""

from __future__ import annotations

import re
import struct

import numpy as np
import pydicom
import pytest

import kvdicom
from fixtures import mutate
from fixtures.oracle import check_load, mismatch, pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.writer import add_modality_lut, build_dataset


def _save(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def _with_lut(tmp_path, spec: DicomSpec, descriptor, data, vr="US"):
    return _save(add_modality_lut(build_dataset(spec), descriptor, data, vr), tmp_path / "lut.dcm")


def test_slope_and_intercept_give_float64_like_pydicom(make_file):
    path = make_file(rows=4, cols=5, bits_allocated=16, bits_stored=12, signed=True, rescale_slope=0.5,
                     rescale_intercept=-1024)
    out = kvdicom.load(path, "cpu", rescale=True)
    assert out.dtype == np.float64
    assert mismatch(out, pydicom_pixels(path, rescale=True)) is None
    assert check_load(path, "cpu", rescale=True) is None


def test_identity_rescale_still_gives_float64_like_pydicom(make_file):
    path = make_file(rows=2, cols=2, bits_allocated=8, bits_stored=8, rescale_slope=1.0, rescale_intercept=0.0)
    out = kvdicom.load(path, "cpu", rescale=True)
    assert out.dtype == np.float64 and pydicom_pixels(path, rescale=True).dtype == np.float64


@pytest.mark.parametrize("slope,intercept", [(None, None), (2.0, None), (None, 5.0)])
def test_without_both_values_the_array_is_unchanged_like_pydicom(make_file, slope, intercept):
    path = make_file(rows=3, cols=3, signed=True, rescale_slope=slope, rescale_intercept=intercept)
    out = kvdicom.load(path, "cpu", rescale=True)
    assert out.dtype == np.int16
    assert mismatch(out, kvdicom.load(path, "cpu")) is None
    assert check_load(path, "cpu", rescale=True) is None


def test_rescale_is_off_by_default(make_file):
    path = make_file(rows=2, cols=2, rescale_slope=2.0, rescale_intercept=1.0)
    assert kvdicom.load(path, "cpu").dtype == np.uint16


def _rewrite(path, name, value):
    tag, vr = mutate.IMAGE_PIXEL[name]
    path.write_bytes(mutate.set_value(path.read_bytes(), tag, vr, value))
    return path


def test_non_numeric_slope_is_refused_naming_it_before_allocating(make_file, monkeypatch):
    path = _rewrite(make_file(rows=2, cols=2, rescale_slope=2.0, rescale_intercept=1.0), "RescaleSlope", "abc")
    allocations = []
    monkeypatch.setattr("kvdicom._loader._allocate", lambda *a: allocations.append(a))
    with pytest.raises(kvdicom.DicomLoadError, match=re.escape("(0028,1053) Rescale Slope")) as info:
        kvdicom.load(path, "cpu", rescale=True)
    assert str(path) in str(info.value) and "numeric" in str(info.value)
    assert allocations == []
    assert check_load(path, "cpu", rescale=True) is None  # pydicom fails too


def test_broken_slope_does_not_matter_without_rescale(make_file):
    path = _rewrite(make_file(rows=2, cols=2, rescale_slope=2.0, rescale_intercept=1.0), "RescaleSlope", "abc")
    assert check_load(path, "cpu") is None


def test_multi_valued_slope_that_does_not_broadcast_is_refused(make_file):
    path = _rewrite(make_file(rows=3, cols=3, rescale_slope=2.0, rescale_intercept=1.0), "RescaleSlope", "1\\2")
    with pytest.raises(kvdicom.DicomLoadError, match="do not broadcast") as info:
        kvdicom.load(path, "cpu", rescale=True)
    assert str(path) in str(info.value)
    assert check_load(path, "cpu", rescale=True) is None


def test_multi_valued_slope_that_broadcasts_matches_pydicom(make_file):
    path = _rewrite(make_file(rows=3, cols=2, rescale_slope=2.0, rescale_intercept=1.0), "RescaleSlope", "1\\2")
    assert check_load(path, "cpu", rescale=True) is None


def test_modality_lut_sequence_us_matches_pydicom(tmp_path):
    spec = DicomSpec(rows=8, cols=8, bits_allocated=16, bits_stored=8)
    path = _with_lut(tmp_path, spec, [200, 10, 16], [v * 3 + 1 for v in range(200)])
    out = kvdicom.load(path, "cpu", rescale=True)
    assert out.dtype == np.uint16
    assert mismatch(out, pydicom_pixels(path, rescale=True)) is None


@pytest.mark.parametrize("syntax", [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ExplicitVRBigEndian])
def test_modality_lut_sequence_ow_matches_pydicom(tmp_path, syntax):
    spec = DicomSpec(rows=4, cols=4, bits_allocated=8, bits_stored=8,
                     transfer_syntax="explicit_le" if syntax.is_little_endian else "explicit_be")
    order = "<" if syntax.is_little_endian else ">"
    path = _with_lut(tmp_path, spec, [256, 0, 16], struct.pack(f"{order}256H", *range(1000, 1256)), vr="OW")
    assert check_load(path, "cpu", rescale=True) is None
    assert kvdicom.load(path, "cpu", rescale=True).min() >= 1000


def test_modality_lut_shorter_than_its_descriptor_is_refused_when_a_pixel_runs_past(tmp_path):
    spec = DicomSpec(rows=4, cols=4, bits_allocated=8, bits_stored=8)  # values span 0..255
    path = _with_lut(tmp_path, spec, [256, 0, 16], list(range(10)))
    with pytest.raises(kvdicom.DicomLoadError, match="past the 10 entries") as info:
        kvdicom.load(path, "cpu", rescale=True)
    assert str(path) in str(info.value)
    assert check_load(path, "cpu", rescale=True) is None


def test_modality_lut_on_float_pixel_data_is_refused_like_pydicom(tmp_path):
    spec = DicomSpec(rows=2, cols=2, pixel_keyword="FloatPixelData", bits_allocated=32, bits_stored=32)
    path = _with_lut(tmp_path, spec, [4, 0, 16], [1, 2, 3, 4])
    with pytest.raises(kvdicom.DicomLoadError, match=re.escape("(0028,3000) Modality LUT Sequence")):
        kvdicom.load(path, "cpu", rescale=True)
    assert check_load(path, "cpu", rescale=True) is None


def test_modality_lut_descriptor_with_a_bad_depth_is_refused(tmp_path):
    path = _with_lut(tmp_path, DicomSpec(rows=2, cols=2), [4, 0, 12], [1, 2, 3, 4])
    with pytest.raises(kvdicom.DicomLoadError, match="LUT Descriptor"):
        kvdicom.load(path, "cpu", rescale=True)
    assert check_load(path, "cpu", rescale=True) is None


def _widen_like_the_kernel(bits: np.ndarray) -> np.ndarray:
    """modality._WIDEN_FLOAT32, step for step, in NumPy (the kernel itself needs a GPU)."""
    e = (bits >> 23) & 0xFF
    m = (bits & 0x7FFFFF).astype(np.float64)
    sign = np.where(bits >> 31, -1.0, 1.0)
    return np.where(e == 0, sign * (m * 1.401298464324817e-45), bits.view(np.float32).astype(np.float64))


def test_float32_widening_rule_keeps_subnormals_bit_for_bit():
    from kvdicom._pixels.modality import _WIDEN_FLOAT32

    assert "1.401298464324817e-45" in _WIDEN_FLOAT32 and "e == 0" in _WIDEN_FLOAT32
    rng = np.random.default_rng(7)
    bits = np.concatenate([
        rng.integers(0, 2**32, size=4096, dtype=np.uint64).astype(np.uint32),
        rng.integers(0, 0x800000, size=1024, dtype=np.uint32),  # subnormals
        rng.integers(0, 0x800000, size=1024, dtype=np.uint32) | np.uint32(0x80000000),  # negative subnormals
        np.array([0, 0x80000000, 1, 0x7F800000, 0xFF800000, 0x7F7FFFFF], dtype=np.uint32),
    ])
    finite = np.isfinite(bits.view(np.float32)) | (((bits >> 23) & 0xFF) == 0xFF)
    expected = bits.view(np.float32).astype(np.float64)
    got = _widen_like_the_kernel(bits)
    nan = np.isnan(expected)
    assert np.array_equal(got[~nan & finite].view(np.uint64), expected[~nan & finite].view(np.uint64))
    assert np.isnan(got[nan]).all()


@pytest.mark.gpu
def test_gpu_float32_subnormals_survive_rescale(cuda):
    from kvdicom._pixels.modality import to_float64

    values = np.array([1.401298464324817e-45, -1e-40, 3.5, -0.0, np.finfo(np.float32).max], dtype=np.float32)
    got = to_float64(cuda.asarray(values)).get()
    assert np.array_equal(got.view(np.uint64), values.astype(np.float64).view(np.uint64))
    out = cuda.empty(values.shape, dtype=cuda.float64)
    assert to_float64(cuda.asarray(values), out) is out
    assert np.array_equal(out.get().view(np.uint64), values.astype(np.float64).view(np.uint64))

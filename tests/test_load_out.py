"""``kvdicom.load(..., out=)``: fills the caller's array, straight from the file where no decoding is needed."""

from __future__ import annotations

import numpy as np
import pytest

import kvdicom
import kvdicom._loader
from fixtures.oracle import mismatch, pydicom_pixels
from kvdicom._io import host_read


def _out_for(path, rescale=False):
    layout = kvdicom.inspect(path)
    return np.full(layout.shape, 7, dtype=kvdicom._loader.output_dtype(layout, rescale))


@pytest.fixture
def no_allocation(monkeypatch):
    """Record calls to the loader's own buffer allocation."""
    calls = []
    real = kvdicom._loader._allocate
    monkeypatch.setattr(kvdicom._loader, "_allocate", lambda *a: calls.append(a) or real(*a))
    return calls


@pytest.mark.parametrize("fields", [
    dict(frames=3, rows=8, cols=8),
    dict(rows=8, cols=8, bits_allocated=16, bits_stored=12, signed=True, dirty_unused_bits=True),
    dict(rows=4, cols=5, samples_per_pixel=3),
    dict(rows=4, cols=4, pixel_keyword="FloatPixelData", bits_allocated=32, bits_stored=32),
], ids=["u16", "s12_dirty", "rgb", "f32"])
def test_out_is_filled_in_place_without_a_second_buffer(make_file, no_allocation, fields):
    path = make_file(**fields)
    out = _out_for(path)
    got = kvdicom.load(path, "cpu", out=out)
    assert got is out
    assert no_allocation == [], "read into a new buffer instead of out's memory"
    assert mismatch(out, pydicom_pixels(path)) is None


def test_read_goes_straight_into_out(make_file, monkeypatch):
    path = make_file(frames=2, rows=8, cols=8)
    out = _out_for(path)
    seen = []
    real = host_read.read_into
    monkeypatch.setattr(host_read, "read_into", lambda p, buf, *a, **k: seen.append(buf) or real(p, buf, *a, **k))
    kvdicom.load(path, "cpu", out=out)
    assert len(seen) == 1 and np.shares_memory(seen[0], out)


@pytest.mark.parametrize("fields,rescale", [
    (dict(rows=4, cols=4, transfer_syntax="explicit_be"), False),
    (dict(rows=4, cols=4, samples_per_pixel=3, photometric="YBR_FULL", bits_allocated=8, bits_stored=8), False),
    (dict(rows=3, cols=3, bits_allocated=1, bits_stored=1), False),
    (dict(rows=2, cols=4, samples_per_pixel=3, planar_configuration=1, bits_allocated=8, bits_stored=8), False),
    (dict(rows=4, cols=4, rescale_slope=2.0, rescale_intercept=-1024.0), True),
], ids=["big_endian", "ybr", "bit_packed", "planar", "rescale"])
def test_out_is_filled_by_decode_then_copy_where_decoding_changes_the_bytes(make_file, fields, rescale):
    path = make_file(**fields)
    out = _out_for(path, rescale)
    assert kvdicom.load(path, "cpu", rescale=rescale, out=out) is out
    assert mismatch(out, pydicom_pixels(path, rescale=rescale)) is None


@pytest.mark.parametrize("change", ["shape", "dtype"])
def test_out_of_the_wrong_shape_or_dtype_is_refused_before_reading(make_file, monkeypatch, change):
    path = make_file(frames=2, rows=8, cols=8)
    layout = kvdicom.inspect(path)
    shape, dtype = layout.shape, layout.dtype
    out = np.zeros((2, 8, 9) if change == "shape" else shape, dtype=np.int32 if change == "dtype" else dtype)
    reads = []
    monkeypatch.setattr(host_read, "read_into", lambda *a, **k: reads.append(a))
    with pytest.raises(kvdicom.DicomLoadError, match="out has shape") as info:
        kvdicom.load(path, "cpu", out=out)
    assert reads == [] and str(layout.shape) in info.value.reason
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", ["list", "strided", "readonly"])
def test_out_that_is_no_writeable_contiguous_host_array_is_a_value_error(tmp_path, bad):
    out = np.zeros((8, 16), dtype=np.uint16)
    if bad == "list":
        out = out.tolist()
    elif bad == "strided":
        out = out[:, ::2]
    else:
        out.flags.writeable = False
    with pytest.raises(ValueError, match="out must"):
        kvdicom.load(tmp_path / "absent.dcm", "cpu", out=out)  # before any file work: no FileNotFoundError


def test_rescaled_out_must_have_the_rescaled_dtype(make_file):
    path = make_file(rows=4, cols=4, rescale_slope=2.0, rescale_intercept=1.0)
    with pytest.raises(kvdicom.DicomLoadError, match="float64"):
        kvdicom.load(path, "cpu", rescale=True, out=_out_for(path))


@pytest.mark.gpu
@pytest.mark.parametrize("fields", [
    dict(frames=3, rows=8, cols=8),
    dict(frames=1024, rows=64, cols=64),  # 8 MiB: through KvikIO, not the staged path
    dict(rows=8, cols=8, bits_allocated=16, bits_stored=12, signed=True, dirty_unused_bits=True),
    dict(rows=4, cols=4, transfer_syntax="explicit_be"),
], ids=["u16", "u16_kvikio", "s12_dirty", "big_endian"])
def test_gpu_out_is_filled(cuda, make_file, fields):
    path = make_file(**fields)
    layout = kvdicom.inspect(path)
    out = cuda.full(layout.shape, 7, dtype=layout.dtype)
    assert kvdicom.load(path, "cuda", out=out) is out
    assert mismatch(out, pydicom_pixels(path)) is None


@pytest.mark.gpu
def test_gpu_out_must_be_a_cupy_array(cuda, make_file):
    path = make_file(rows=8, cols=8)
    with pytest.raises(ValueError, match="cupy"):
        kvdicom.load(path, "cuda", out=_out_for(path))

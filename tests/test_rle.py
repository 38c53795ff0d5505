"""RLE decoded frame by frame (kvdicom/rle.py) equals pydicom's ``pixel_array`` with its reference plugin.

Stored values are drawn over the whole container, so unused high bits are
dirty and the shift correction is tested; colour files are planar in the
stream and colour-by-pixel in the array.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

import kvdicom
from fixtures.spec import DicomSpec
from fixtures.writer import build_dataset
from kvdicom import settings as kvdicom_settings
from kvdicom._codecs import rle
from kvdicom._header import compressed

pytest.importorskip("rle", reason="RLE fast path needs pylibjpeg-rle (requirements.txt)")


def _pinned(path):
    ds = pydicom.dcmread(path)
    ds.pixel_array_options(decoding_plugin=compressed.reference_plugin(RLELossless))
    return ds.pixel_array


def _rle_file(path, arr: np.ndarray, bits_stored: int, photometric: str = "") -> None:
    """An RLE file holding ``arr`` (frames, rows, cols[, samples]) as stored values, unused bits included.

    Encoded by pylibjpeg-rle (pydicom's own encoder refuses 32 bits and values beyond Bits Stored).
    """
    from rle.utils import encode_array

    frames, rows, cols = arr.shape[:3]
    samples = arr.shape[3] if arr.ndim == 4 else 1
    bits = arr.dtype.itemsize * 8
    spec = DicomSpec(frames=frames, rows=rows, cols=cols, bits_allocated=bits, bits_stored=bits,
                     signed=arr.dtype.kind == "i", samples_per_pixel=samples,
                     **({"photometric": photometric} if photometric else {}))
    ds = build_dataset(spec)
    encoded = encode_array(arr if frames > 1 else arr[0], rows=rows, columns=cols, samples_per_pixel=samples,
                           bits_allocated=bits, number_of_frames=frames, byteorder="<")
    ds.PixelData = encapsulate(list(encoded))
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.save_as(path, enforce_file_format=True)


@st.composite
def rle_arrays(draw):
    bits = draw(st.sampled_from([8, 16, 32]))
    color = bits in (8, 16) and draw(st.booleans())
    signed = not color and draw(st.booleans())
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}")
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(1, 12))) + ((3,) if color else ())
    seed = draw(st.integers(0, 2**32 - 1))
    info = np.iinfo(dtype)
    arr = np.random.default_rng(seed).integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    if draw(st.booleans()):  # runs: replicate runs as well as literal ones
        arr = np.repeat(arr[:, :, :1], shape[2], axis=2)
    bits_stored = draw(st.integers(1, bits))
    photometric = "RGB" if color and bits == 8 and draw(st.booleans()) else ("RGB" if color else "")
    return arr, bits_stored, photometric


#: How frames decode: imagecodecs' PackBits on kvdicom's pool, the same one frame after another, or
#: pylibjpeg-rle alone (no imagecodecs installed).
ROUTES = {"imagecodecs-pool": (True, 0), "imagecodecs-serial": (True, 1 << 62), "pylibjpeg-rle": (False, 0)}


@contextlib.contextmanager
def route(name: str):
    have, concurrent_from = ROUTES[name]
    with pytest.MonkeyPatch.context() as mp:
        if have:
            pytest.importorskip("imagecodecs")
        mp.setattr(rle, "_HAVE_IMAGECODECS", have)
        mp.setattr(kvdicom_settings, "RLE_CONCURRENT_MIN_BYTES", concurrent_from)
        mp.setattr(kvdicom_settings, "RLE_CONCURRENT_MIN_CPUS", 1)
        yield


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=rle_arrays(), how=st.sampled_from(sorted(ROUTES)))
def test_rle_frames_decode_like_pixel_array(tmp_path, case, how):
    arr, bits_stored, photometric = case
    path = tmp_path / "x.dcm"
    _rle_file(path, arr, bits_stored, photometric)
    layout = kvdicom.inspect(path)
    assert rle.problem(layout) is None  # the frame-by-frame path, not pydicom's
    with route(how):
        got = kvdicom.load(path, "cpu")
    ref = _pinned(path)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert np.array_equal(got, ref)
    assert got.flags.c_contiguous


def _segment_with_trailing_byte(path, byte: int) -> None:
    """Append ``byte`` to the last segment of every frame (pylibjpeg-rle ignores a lone last byte)."""
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(path)
    count = int(ds.get("NumberOfFrames", 1))
    frames = [f + bytes([byte]) for f in generate_frames(ds.PixelData, number_of_frames=count)]
    ds.PixelData = encapsulate(frames)
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("how", sorted(ROUTES))
def test_a_stream_only_pylibjpeg_rle_accepts_decodes_as_pydicom(tmp_path, how):
    # A lone replicate header at the end of a segment: pylibjpeg-rle (pydicom) ignores it, imagecodecs
    # calls the input corrupt: that frame is decoded again by pylibjpeg-rle, never refused or different.
    path = tmp_path / "x.dcm"
    arr = np.random.default_rng(3).integers(0, 2**16, size=(3, 8, 8), dtype=np.uint16)
    _rle_file(path, arr, bits_stored=16)
    _segment_with_trailing_byte(path, 0x81)
    with route(how):
        got = kvdicom.load(path, "cpu")
    assert np.array_equal(got, _pinned(path)) and np.array_equal(got, arr)


@pytest.mark.parametrize("how", sorted(ROUTES))
def test_a_frame_pydicom_cannot_decode_is_refused_on_every_route(tmp_path, how):
    path = tmp_path / "x.dcm"
    _rle_file(path, np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8), bits_stored=16)
    ds = pydicom.dcmread(path)
    from pydicom.encaps import generate_frames

    frames = list(generate_frames(ds.PixelData, number_of_frames=3))
    frames[1] = frames[1][:-6]  # a run cut short
    ds.PixelData = encapsulate(frames)
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises((ValueError, RuntimeError)):
        _pinned(path)
    with route(how), pytest.raises(kvdicom.DicomLoadError, match="RLE frame 1") as info:
        kvdicom.load(path, "cpu")
    assert info.value.path == str(path)


def test_unused_bits_are_shifted_out_as_pydicom_does(tmp_path):
    arr = np.array([[[0x0FFF, 0xF800, 0x7801, 0x1234]]], dtype=np.uint16).view(np.int16)
    path = tmp_path / "x.dcm"
    _rle_file(path, arr, bits_stored=12)
    got = kvdicom.load(path, "cpu")
    assert got.tolist() == [[-1, -2048, -2047, 0x234]]
    assert np.array_equal(got, _pinned(path))


def test_colour_planes_are_interleaved(tmp_path):
    arr = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    path = tmp_path / "x.dcm"
    _rle_file(path, arr, bits_stored=8, photometric="RGB")
    assert np.array_equal(kvdicom.load(path, "cpu"), arr)


def test_ybr_keeps_pydicoms_path(tmp_path):
    arr = np.full((2, 4, 4, 3), 128, dtype=np.uint8)
    path = tmp_path / "x.dcm"
    _rle_file(path, arr, bits_stored=8, photometric="YBR_FULL")
    assert "YBR_FULL" in rle.problem(kvdicom.inspect(path))
    assert np.array_equal(kvdicom.load(path, "cpu"), _pinned(path))


def test_a_frame_with_more_segments_than_the_header_says_is_refused(tmp_path):
    # An RGB stream (3 segments) under a MONOCHROME header: pydicom fails, so must kvdicom.
    path = tmp_path / "x.dcm"
    _rle_file(path, np.zeros((2, 4, 4, 3), dtype=np.uint8), bits_stored=8, photometric="RGB")
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    del ds.PlanarConfiguration
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises((ValueError, RuntimeError)):
        _pinned(path)
    with pytest.raises(kvdicom.DicomLoadError, match="RLE frame 0 decodes to 48 bytes"):
        kvdicom.load(path, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("chunk", [1, 1 << 30], ids=["copy-per-frame", "one-copy"])
def test_gpu_rle_through_pinned_staging_matches_pixel_array(cuda, tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(kvdicom_settings, "RLE_COPY_CHUNK_BYTES", chunk)
    arr = np.random.default_rng(1).integers(-3000, 3000, size=(5, 32, 48), dtype=np.int16)
    path = tmp_path / "x.dcm"
    _rle_file(path, arr, bits_stored=12)
    got = kvdicom.load(path, "cuda")
    assert type(got).__module__.startswith("cupy")
    assert np.array_equal(got.get(), _pinned(path))


@pytest.mark.parametrize("how", sorted(ROUTES))
@pytest.mark.parametrize("run", [60, 68], ids=["short", "long"])
def test_a_segment_of_the_wrong_length_decodes_or_fails_as_pydicom(tmp_path, how, run):
    # One 8-bit segment, one replicate run of ``run`` bytes for 8 x 8 = 64 pixels. pylibjpeg-rle 2.2
    # refuses the short one and clips the long one to the frame; imagecodecs rejects both, so both
    # go back to pylibjpeg-rle.
    path = tmp_path / "x.dcm"
    _rle_file(path, np.zeros((2, 8, 8), dtype=np.uint8), bits_stored=8)
    ds = pydicom.dcmread(path)
    header = np.array([1, 64] + [0] * 14, dtype="<u4").tobytes()
    frame = header + bytes([257 - run, 7])
    ds.PixelData = encapsulate([frame, frame])
    ds.save_as(path, enforce_file_format=True)
    try:
        ref = _pinned(path)
    except (ValueError, RuntimeError):
        ref = None
    with route(how):
        if ref is None:
            with pytest.raises(kvdicom.DicomLoadError, match="RLE frame 0"):
                kvdicom.load(path, "cpu")
        else:
            assert np.array_equal(kvdicom.load(path, "cpu"), ref)
    assert (ref is None) == (run < 64)


def test_the_pool_route_decodes_on_kvdicoms_pool_threads(tmp_path, monkeypatch):
    import threading

    path = tmp_path / "x.dcm"
    arr = np.random.default_rng(4).integers(0, 2**16, size=(4, 16, 16), dtype=np.uint16)
    _rle_file(path, arr, bits_stored=16)
    threads = []
    real = rle.decode_frame_into
    monkeypatch.setattr(rle, "decode_frame_into",
                        lambda *a: threads.append(threading.current_thread().name) or real(*a))
    with route("imagecodecs-pool"):
        assert np.array_equal(kvdicom.load(path, "cpu"), arr)
    assert len(threads) == 4 and all(name.startswith("kvdicom-read") for name in threads)

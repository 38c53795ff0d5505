"""Decompression bombs (issue 24, item 7): a header promising far more than its compressed bytes can hold is
refused before any output is allocated, with a limit the caller can raise; a host decoder running out
of memory anyway is a DicomLoadError naming the file, as pydicom's route gives."""

from __future__ import annotations

import struct

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

import kvdicom
from fixtures.encode import encode_frames
from fixtures.oracle import pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.writer import build_dataset
from kvdicom import settings
from kvdicom._codecs import route
from kvdicom._series import decode as series_decode

pytest.importorskip("pylibjpeg", reason="compressed cases need pylibjpeg (requirements.txt)")
imagecodecs = pytest.importorskip("imagecodecs", reason="compressed fixtures need imagecodecs (requirements.txt)")

U8 = {"bits_allocated": 8, "bits_stored": 8, "signed": False}
S16 = {"bits_allocated": 16, "bits_stored": 16, "signed": True}


def _never_decode(*args, **kwargs):
    raise AssertionError("a decoder was chosen: the bomb was not refused first")


def _never_read(*args, **kwargs):
    raise AssertionError("the slices were read: the bomb was not refused before the volume was allocated")


def _lossless_jpeg_claiming(tmp_path, size: int):
    """A real 32² lossless JPEG whose frame header (SOF3) and DICOM header both claim ``size`` x ``size``."""
    spec = DicomSpec(frames=1, rows=32, cols=32, transfer_syntax="jpeg_lossless_sv1", **S16)
    ds = build_dataset(spec)
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    sof = frame.index(b"\xff\xc3")
    frame[sof + 5: sof + 9] = struct.pack(">2H", size, size)  # Y (lines), X (samples per line)
    ds.PixelData = encapsulate([bytes(frame)])
    ds.Rows = ds.Columns = size
    path = tmp_path / "bomb.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_lossless_jpeg_claiming_30000_squared_is_refused_before_decoding(tmp_path, monkeypatch):
    """The issue's 4.4 KB file claiming 30000² (41 s and 6.9 GB before): one bit per sample at least."""
    path = _lossless_jpeg_claiming(tmp_path, 30000)
    monkeypatch.setattr(route, "choose", _never_decode)
    for device in ("cpu",):
        with pytest.raises(kvdicom.DicomLoadError, match="lossless JPEG, which codes each sample in one bit") as err:
            kvdicom.load(path, device)
        assert str(path) in str(err.value)
    # no limit the caller can raise makes a lie true
    with kvdicom.configure(max_compression_ratio=None), pytest.raises(kvdicom.DicomLoadError, match="one bit"):
        kvdicom.load(path, "cpu")
    monkeypatch.undo()
    real = tmp_path / "real.dcm"  # while a true one loads
    build_dataset(DicomSpec(frames=2, rows=64, cols=64, transfer_syntax="jpeg_lossless_sv1", **S16)).save_as(
        real, enforce_file_format=True)
    np.testing.assert_array_equal(kvdicom.load(real, "cpu"), pydicom_pixels(real))


def _blank(tmp_path, name, syntax, size, dtype, frames=1, **bits):
    """A real file of ``frames`` blank ``size``² frames: what real content compresses to at its most."""
    spec = DicomSpec(frames=frames, rows=64, cols=64, transfer_syntax=syntax, **bits)
    ds = build_dataset(spec)
    ds.Rows = ds.Columns = size
    pixels = np.zeros((frames, size, size), dtype)
    ds.PixelData = encapsulate(encode_frames(syntax, pixels, bits_stored=bits["bits_stored"], signed=bits["signed"],
                                             photometric="MONOCHROME2"))
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def small_floor(monkeypatch):
    """The size from which the ratio applies, lowered to 1 MiB so that a 4 MiB file can stand for a 4 GiB one."""
    monkeypatch.setattr(settings, "RATIO_CHECK_MIN_DECODED_BYTES", 1 << 20)


@pytest.mark.parametrize(("syntax", "dtype", "bits"), [("jpegls_lossless", np.uint8, U8),
                                                      ("jpeg2000_lossless", np.int16, S16)], ids=["jpegls", "j2k"])
def test_a_file_compressed_beyond_the_limit_is_refused_and_the_limit_can_be_raised(tmp_path, small_floor,
                                                                                   monkeypatch, syntax, dtype, bits):
    path = _blank(tmp_path, "blank.dcm", syntax, 2048, dtype, **bits)  # 4-8 MiB from a few hundred bytes
    with monkeypatch.context() as patched:
        patched.setattr(route, "choose", _never_decode)
        with pytest.raises(kvdicom.DicomLoadError, match=r"compression ratio of \d+:1 beyond the limit of 1000:1"):
            kvdicom.load(path, "cpu")
    with kvdicom.configure(max_compression_ratio=None):
        np.testing.assert_array_equal(kvdicom.load(path, "cpu"), pydicom_pixels(path))
    with kvdicom.configure(max_compression_ratio=1e6):
        assert not kvdicom.load(path, "cpu").any()
    with pytest.raises(kvdicom.DicomLoadError, match="compression ratio"):  # the block's limit is gone again
        kvdicom.load(path, "cpu")
    # below the floor a blank frame (512² int16 J2K: ~140 bytes, over 3,000:1) loads: real content does that
    small = _blank(tmp_path, "small.dcm", "jpeg2000_lossless", 512, np.int16, **S16)
    assert len(pydicom.dcmread(small).PixelData) * 1000 < 512 * 512 * 2
    np.testing.assert_array_equal(kvdicom.load(small, "cpu"), pydicom_pixels(small))


def test_a_series_of_slices_each_below_the_floor_is_refused_as_a_whole(tmp_path, small_floor, monkeypatch):
    """Each 512 KiB blank slice is below the floor; the four together (2 MiB) are not: checked before the volume
    is allocated, naming the folder."""
    folder = tmp_path / "s"
    folder.mkdir()
    paths = []
    for i in range(4):
        path = _blank(folder, f"{i}.dcm", "jpeg2000_lossless", 512, np.int16, **S16)
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = i + 1
        ds.SOPInstanceUID = f"1.2.3.4.{i + 1}"
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    for path in paths:  # alone, every slice loads
        assert not kvdicom.load(path, "cpu").any()
    with monkeypatch.context() as patched:
        patched.setattr(series_decode, "read_all", _never_read)
        with pytest.raises(kvdicom.DicomLoadError, match="4 compressed slices: .*compression ratio") as err:
            kvdicom.load_series(folder, "cpu")
        assert str(folder) in str(err.value)
    with kvdicom.configure(max_compression_ratio=None):
        volume, _ = kvdicom.load_series(folder, "cpu")
    assert volume.shape == (4, 512, 512) and not volume.any()


def test_imagecodecs_running_out_of_memory_is_a_dicom_load_error(tmp_path, monkeypatch):
    """Before: the MemoryError sent the file to pydicom's plugin, to decode (or run out) a second time."""
    spec = DicomSpec(frames=1, rows=64, cols=64, transfer_syntax="jpeg2000_lossless", **S16)
    path = tmp_path / "j2k.dcm"
    build_dataset(spec).save_as(path, enforce_file_format=True)
    assert route.describe(kvdicom.inspect(path), "cpu").startswith("host:kvdicom._codecs.host_codecs:imagecodecs")

    def out_of_memory(*args, **kwargs):
        raise MemoryError("imagecodecs could not allocate")

    monkeypatch.setattr(imagecodecs, "jpeg2k_decode", out_of_memory)
    with pytest.raises(kvdicom.DicomLoadError, match="out of memory decoding jpeg2000 data to 8192 bytes") as err:
        kvdicom.load(path, "cpu")
    assert str(path) in str(err.value)


def test_max_compression_ratio_values():
    assert kvdicom.configure(max_compression_ratio=50).settings.max_compression_ratio == 50.0
    for bad in (0.5, float("nan"), "lots", True):
        with pytest.raises(ValueError, match="max_compression_ratio"):
            kvdicom.configure(max_compression_ratio=bad)
    kvdicom.configure(max_compression_ratio=1000.0)  # the default again


@pytest.mark.parametrize(("raw", "expected"), [("500", 500.0), ("none", None), ("1e5", 1e5)])
def test_max_compression_ratio_from_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv("KVDICOM_MAX_RATIO", raw)
    assert settings._from_environment().max_compression_ratio == expected


def test_a_bad_max_ratio_in_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("KVDICOM_MAX_RATIO", "huge")
    with pytest.raises(ValueError, match="KVDICOM_MAX_RATIO='huge'"):
        settings._from_environment()

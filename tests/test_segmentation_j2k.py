"""JPEG 2000 with Bits Allocated 1 (segmentations; issue 24, item 8): pydicom decodes them to one uint8 per
sample, and so does kvdicom, on every route, instead of refusing the file."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, generate_uid

import kvdicom
from fixtures.oracle import pydicom_pixels
from kvdicom._codecs import gpu_codec, host_codecs, route
from kvdicom._header.compressed import check_frames, read_frames

imagecodecs = pytest.importorskip("imagecodecs", reason="the 1-bit codestreams are encoded with imagecodecs")
pytest.importorskip("openjpeg", reason="pydicom's JPEG 2000 decoder is pylibjpeg-openjpeg (requirements.txt)")

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _encode(frame):
    return bytes(imagecodecs.jpeg2k_encode(frame, level=0, codecformat="J2K", reversible=True, bitspersample=1))


def write_segmentation(path, syntax=JPEG2000Lossless, frames=3, rows=64, cols=48, seed=0):
    """A multi-frame 1-bit segmentation whose frames are JPEG 2000 codestreams of 1-bit samples."""
    masks = (np.random.default_rng(seed).random((frames, rows, cols)) > 0.6).astype(np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID, ds.SOPInstanceUID = SEGMENTATION_STORAGE, generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = rows, cols, frames, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = encapsulate([_encode(m) for m in masks])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path, masks


@pytest.fixture
def segmentation(tmp_path):
    return write_segmentation(tmp_path / "seg.dcm")


def test_cpu_load_equals_pydicom(segmentation):
    path, masks = segmentation
    ref = pydicom_pixels(path)
    assert ref.dtype == np.uint8 and np.array_equal(ref, masks)
    got = kvdicom.load(path, "cpu")
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    layout = kvdicom.inspect(path)
    assert (layout.bits_allocated, layout.dtype, layout.shape) == (1, np.uint8, ref.shape)
    # other codecs with one bit allocated stay refused, saying what is decoded
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
    ds.save_as(path.with_name("rle.dcm"))
    with pytest.raises(kvdicom.DicomLoadError, match=r"Bits Allocated 1 with RLE .* \(and 1 in JPEG 2000"):
        kvdicom.load(path.with_name("rle.dcm"), "cpu")


def test_pydicom_route_equals_pydicom_too(segmentation, monkeypatch):
    """Without imagecodecs the reference plugin decodes it: the same array."""
    path, _ = segmentation
    monkeypatch.setattr(host_codecs, "_HAVE_IMAGECODECS", False)
    assert route.describe(kvdicom.inspect(path), "cpu").startswith("host:pydicom:")
    np.testing.assert_array_equal(kvdicom.load(path, "cpu"), pydicom_pixels(path))


def test_gpu_plan_keeps_one_bit_on_the_host(segmentation):
    path, _ = segmentation
    layout = kvdicom.inspect(path)
    _, frames = read_frames(layout)
    big = route.as_batch(layout, 4096)  # past the size below which the host is chosen anyway
    assert "Bits Allocated 1" in gpu_codec.plan(big, check_frames(layout, frames)).reason


@pytest.mark.gpu
def test_gpu_load_equals_pydicom(cuda, segmentation):
    path, _ = segmentation
    got = kvdicom.load(path, "cuda")
    np.testing.assert_array_equal(cuda.asnumpy(got), pydicom_pixels(path))


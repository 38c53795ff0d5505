"""kvdicom.inspect: offsets, dtypes and shapes from the header, and clean refusals."""

from __future__ import annotations

import os
import re
import struct
import tracemalloc

import numpy as np
import pydicom
import pytest
from pydicom.uid import MPEG2MPML, MPEG4HP41, JPEGBaseline8Bit, RLELossless

import kvdicom
from fixtures.oracle import mismatch, pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.writer import build_dataset, pixel_bytes, write_dicom
from kvdicom._header.layout import PIXEL_ELEMENTS


def test_offset_points_at_the_pixel_bytes(make_file):
    spec = DicomSpec(frames=3, rows=5, cols=7, bits_allocated=16, bits_stored=12, signed=True)
    path = make_file(spec)
    layout = kvdicom.inspect(path)
    data = path.read_bytes()
    assert data[layout.offset : layout.offset + layout.nbytes] == pixel_bytes(spec)
    assert layout.nbytes == 3 * 5 * 7 * 2
    assert layout.dtype == np.dtype("int16")
    assert layout.shape == (3, 5, 7)
    assert layout.transfer_syntax == pydicom.uid.ExplicitVRLittleEndian


def test_single_frame_is_two_dimensional_like_pydicom(make_file):
    path = make_file(frames=1, rows=4, cols=6, number_of_frames_tag=True)
    assert kvdicom.inspect(path).shape == (4, 6) == pydicom_pixels(path).shape


def test_big_endian_layout_reports_native_dtype(make_file):
    layout = kvdicom.inspect(make_file(transfer_syntax="explicit_be", bits_allocated=32, bits_stored=32))
    assert layout.dtype.isnative and not layout.little_endian


def test_excess_whole_frames_are_returned_as_pydicom_does(make_file):
    # 2 frames declared, 3 frames of bytes present: pydicom returns all 3.
    spec = DicomSpec(frames=2, rows=2, cols=2, bits_allocated=8, bits_stored=8, trailing_padding=4)
    path = make_file(spec)
    assert kvdicom.inspect(path).shape == (3, 2, 2) == pydicom_pixels(path).shape


def _save(ds, path, tsyntax):
    ds.file_meta.TransferSyntaxUID = tsyntax
    ds.save_as(path, enforce_file_format=True)
    return path


def _empty_jpeg_file(tmp_path, tsyntax):
    """An 8-bit file whose one encapsulated fragment is a JPEG with nothing between SOI and EOI."""
    ds = build_dataset(DicomSpec(bits_allocated=8, bits_stored=8))
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xd9"])
    ds["PixelData"].VR = "OB"
    return _save(ds, tmp_path / "compressed.dcm", tsyntax)


@pytest.mark.parametrize("tsyntax", [MPEG2MPML, MPEG4HP41])
def test_unsupported_compressed_transfer_syntax_is_refused_naming_it(tmp_path, tsyntax):
    path = _empty_jpeg_file(tmp_path, tsyntax)
    with pytest.raises(kvdicom.DicomLoadError, match=re.escape(tsyntax.name)) as info:
        kvdicom.inspect(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("tsyntax", [JPEGBaseline8Bit, RLELossless])
def test_broken_compressed_stream_is_refused_on_load(tmp_path, tsyntax):
    path = _empty_jpeg_file(tmp_path, tsyntax)
    assert kvdicom.inspect(path).codec in ("jpeg", "rle")
    with pytest.raises(kvdicom.DicomLoadError) as info:
        kvdicom.load(path, "cpu")
    assert info.value.path == str(path)


def test_deflated_transfer_syntax_is_refused(make_file):
    with pytest.raises(kvdicom.DicomLoadError, match="Deflated"):
        kvdicom.inspect(make_file(transfer_syntax="deflated_le"))


def test_missing_pixel_data_is_refused(tmp_path):
    ds = build_dataset(DicomSpec())
    del ds.PixelData
    path = _save(ds, tmp_path / "nopixels.dcm", pydicom.uid.ExplicitVRLittleEndian)
    with pytest.raises(kvdicom.DicomLoadError, match="no pixel data element"):
        kvdicom.inspect(path)


def test_not_a_dicom_file_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not dicom at all\n" * 20)
    with pytest.raises(kvdicom.DicomLoadError, match="cannot parse the DICOM header"):
        kvdicom.inspect(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        kvdicom.inspect(tmp_path / "absent.dcm")


def test_truncated_pixel_data_is_refused_before_allocating(make_file, monkeypatch):
    path = make_file(frames=4, rows=16, cols=16)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    allocations = []
    monkeypatch.setattr("kvdicom._loader._allocate", lambda *a: allocations.append(a))
    with pytest.raises(kvdicom.DicomLoadError, match="shorter than the header promises"):
        kvdicom.load(path, "cpu")
    assert allocations == []


def _patch_pixel_length(path, new_length: int) -> None:
    """Rewrite the 4-byte length of Pixel Data (Explicit VR LE, OW) in place."""
    layout = kvdicom.inspect(path)
    data = bytearray(path.read_bytes())
    data[layout.offset - 4 : layout.offset] = struct.pack("<I", new_length)
    path.write_bytes(bytes(data))


def test_rows_lying_about_size_never_allocate_it(make_file, monkeypatch):
    path = make_file(frames=1, rows=8, cols=8)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
    ds.save_as(path)
    allocations = []
    monkeypatch.setattr("kvdicom._loader._allocate", lambda *a: allocations.append(a))
    with pytest.raises(kvdicom.DicomLoadError, match="shorter than the header promises"):
        kvdicom.load(path, "cpu")
    assert allocations == []


def test_huge_declared_length_is_bounded_by_the_file(make_file):
    # ~4 GiB declared, the real 128 bytes present: pydicom reads to the end of
    # the file and decodes them, so kvdicom must too, allocating only what is there.
    path = make_file(frames=1, rows=8, cols=8)
    _patch_pixel_length(path, 0xFFFFFFF0)
    tracemalloc.start()
    try:
        out = kvdicom.load(path, "cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(out, pydicom_pixels(path))
    assert peak < 16 << 20, f"peak Python allocation {peak} bytes for a 4 GiB lie"


def test_huge_declared_length_with_missing_frames_is_refused(make_file):
    path = make_file(frames=4, rows=8, cols=8)
    _patch_pixel_length(path, 0xFFFFFFF0)
    data = path.read_bytes()
    path.write_bytes(data[:-64])
    with pytest.raises(kvdicom.DicomLoadError, match="shorter than the header promises"):
        kvdicom.load(path, "cpu")


def test_lying_length_in_a_small_element_is_bounded(tmp_path):
    # A non-deferred element (in the file meta) declaring 2 GiB must not be allocated.
    path = tmp_path / "lie.dcm"
    spec = DicomSpec(rows=4, cols=4)
    ds = build_dataset(spec)
    ds.save_as(path, enforce_file_format=True)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x02\x00\x10\x00UI")  # (0002,0010) Transfer Syntax UID, explicit VR
    data[at + 6 : at + 8] = b"\xff\xff"
    data[at + 4 : at + 6] = b"UN"  # UN has a 4-byte length: make it huge
    data[at + 6 : at + 6] = b"\x00\x00"
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(kvdicom.DicomLoadError):
            kvdicom.load(path, "cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_file_without_meta_needs_force(make_file):
    path = make_file(file_meta=False, transfer_syntax="implicit_le")
    with pytest.raises(kvdicom.DicomLoadError, match="cannot parse"):
        kvdicom.inspect(path)
    layout = kvdicom.inspect(path, force=True)
    assert layout.transfer_syntax == pydicom.uid.ImplicitVRLittleEndian


def test_ybr_with_16_bit_samples_is_refused(make_file):
    path = make_file(samples_per_pixel=3, photometric="YBR_FULL", bits_allocated=16, bits_stored=16)
    with pytest.raises(kvdicom.DicomLoadError, match="unsigned 8-bit"):
        kvdicom.inspect(path)


def test_unknown_device_is_a_value_error(make_file):
    with pytest.raises(ValueError, match="device"):
        kvdicom.load(make_file(), "gpu")


def test_excess_frames_that_are_not_whole_bytes_are_refused_like_pydicom(make_file):
    # 9 frames of 1 x 1 bit-packed pixels declared, 2 bytes present: pydicom
    # counts 16 "whole" frames of 0.125 bytes and fails on the float count.
    from fixtures import mutate
    from fixtures.oracle import check_load

    path = make_file(frames=9, rows=1, cols=2, bits_allocated=1, bits_stored=1)
    path.write_bytes(mutate.set_value(path.read_bytes(), 0x00280011, "US", 1))
    with pytest.raises(kvdicom.DicomLoadError, match=re.escape("(0028,0008) Number of Frames 9")) as info:
        kvdicom.inspect(path)
    assert str(path) in str(info.value) and "whole number of bytes" in str(info.value)
    assert check_load(path, "cpu") is None


def test_deferred_header_values_are_reread_through_the_bounded_reader(make_file, tmp_path):
    # Deferred values come from the header's own open, bounded file, not from
    # whatever the path names by the time they are read.
    from kvdicom._header.layout import _read_header
    from kvdicom._io.bounded_file import BoundedReader

    path = make_file(rows=32, cols=32)
    other = tmp_path / "other.dcm"
    write_dicom(DicomSpec(rows=32, cols=32, seed=7), other)
    with BoundedReader(path) as fp:
        ds = _read_header(str(path), fp, False)
        assert ds.get_item(0x7FE00010, keep_deferred=True).value is None  # deferred
        os.replace(other, path)
        assert isinstance(ds.buffer, BoundedReader)
        assert ds.PixelData == pixel_bytes(DicomSpec(rows=32, cols=32))


@pytest.mark.parametrize("rows,cols", [(1, 3), (2, 3), (4, 4)])
def test_big_endian_8_bit_ow_is_swapped_pairwise_like_pydicom(make_file, rows, cols):
    path = make_file(rows=rows, cols=cols, bits_allocated=8, bits_stored=8, transfer_syntax="explicit_be",
                     pixel_vr="OW")
    layout = kvdicom.inspect(path)
    assert layout.swap_8bit_words and layout.nbytes % 2 == 0
    out = kvdicom.load(path, "cpu")
    assert mismatch(out, pydicom_pixels(path)) is None
    assert out.ravel()[0] == 0 and out.ravel()[1] == 255  # the writer puts both extremes first


def test_number_of_frames_absent_and_1_give_the_same_2d_array(make_file):
    absent = kvdicom.load(make_file(rows=3, cols=4, number_of_frames_tag=False), "cpu")
    one = kvdicom.load(make_file(rows=3, cols=4, number_of_frames_tag=True), "cpu")
    assert absent.shape == one.shape == (3, 4)


@pytest.mark.parametrize("syntax", ["implicit_le", "explicit_le", "explicit_be"])
def test_file_without_meta_loads_with_force_like_pydicom(make_file, syntax):
    from fixtures.oracle import check_load

    path = make_file(rows=3, cols=3, bits_allocated=16, bits_stored=12, signed=True, transfer_syntax=syntax,
                     file_meta=False)
    assert check_load(path, "cpu", force=True) is None
    assert kvdicom.load(path, "cpu", force=True).shape == (3, 3)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "PALETTE COLOR"])
def test_monochrome1_and_palette_return_stored_values_like_pydicom(make_file, photometric):
    path = make_file(rows=3, cols=3, bits_allocated=8, bits_stored=8, photometric=photometric)
    out = kvdicom.load(path, "cpu")
    assert mismatch(out, pydicom_pixels(path)) is None
    assert out.ravel()[0] == 0 and out.ravel()[1] == 255  # no inversion, no palette lookup


def test_odd_length_pixel_data_has_its_pad_byte(make_file):
    path = make_file(rows=3, cols=3, bits_allocated=8, bits_stored=8)
    layout = kvdicom.inspect(path)
    assert layout.value_length == 10 and layout.nbytes == 9
    assert mismatch(kvdicom.load(path, "cpu"), pydicom_pixels(path)) is None


@pytest.mark.parametrize("bits,keyword", [(24, "PixelData"), (40, "PixelData"), (16, "FloatPixelData"),
                                          (32, "DoubleFloatPixelData")])
def test_bits_allocated_without_a_dtype_is_refused_naming_it(make_file, bits, keyword):
    from fixtures import mutate
    from fixtures.oracle import check_load

    float_bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword, 16)
    path = make_file(rows=4, cols=4, pixel_keyword=keyword, bits_allocated=float_bits, bits_stored=float_bits)
    elements = mutate.walk(path.read_bytes())
    pixel = next(e for e in elements if e.tag in dict(PIXEL_ELEMENTS))
    data = mutate.set_value(path.read_bytes(), 0x00280100, "US", bits)
    path.write_bytes(mutate.set_value(data, pixel.tag, pixel.vr, bytes(16 * bits // 8)))
    with pytest.raises(kvdicom.DicomLoadError, match=re.escape(f"(0028,0100) Bits Allocated {bits}")) as info:
        kvdicom.inspect(path)
    assert str(path) in str(info.value)
    assert check_load(path, "cpu") is None  # pydicom fails too


@pytest.mark.parametrize("frames", ["1.5", "3.5"])
def test_fractional_number_of_frames_is_refused_naming_it(make_file, frames):
    from fixtures import mutate
    from fixtures.oracle import check_load

    path = make_file(rows=4, cols=4)
    data = mutate.set_value(path.read_bytes(), 0x00280008, "IS", frames)
    path.write_bytes(mutate.set_value(data, 0x7FE00010, "OW", bytes(int(32 * float(frames)))))
    with pytest.raises(kvdicom.DicomLoadError, match=re.escape("(0028,0008) Number of Frames")) as info:
        kvdicom.inspect(path)
    assert str(path) in str(info.value)
    assert check_load(path, "cpu") is None


def test_number_of_frames_2_point_0_is_read_as_2_like_pydicom(make_file):
    from fixtures import mutate
    from fixtures.oracle import check_load

    path = make_file(frames=2, rows=4, cols=4)
    path.write_bytes(mutate.set_value(path.read_bytes(), 0x00280008, "IS", "2.0"))
    assert kvdicom.inspect(path).shape == (2, 4, 4)
    assert check_load(path, "cpu") is None


def test_fractional_number_of_frames_is_replaced_by_excess_whole_frames_like_pydicom(make_file):
    # 1.5 frames declared, 3 whole frames of bytes present: pydicom returns 3 frames.
    from fixtures import mutate
    from fixtures.oracle import check_load

    path = make_file(frames=3, rows=1, cols=1, bits_allocated=16, bits_stored=16)
    path.write_bytes(mutate.set_value(path.read_bytes(), 0x00280008, "IS", "1.5"))
    assert kvdicom.inspect(path).shape == (3, 1, 1)
    assert check_load(path, "cpu") is None


def test_the_pad_byte_of_odd_length_pixel_data_is_not_an_extra_frame(make_file):
    # 5 one-byte frames: 5 bytes plus the pad byte. pydicom treats the 6th byte as
    # padding, not as a sixth whole frame.
    path = make_file(frames=5, rows=1, cols=1, bits_allocated=8, bits_stored=8)
    layout = kvdicom.inspect(path)
    assert layout.value_length == 6
    assert layout.number_of_frames == 5 and layout.shape == (5, 1, 1) and layout.nbytes == 5
    assert mismatch(kvdicom.load(path, "cpu"), pydicom_pixels(path)) is None


def test_pixel_data_shorter_than_promised_is_refused_even_with_bytes_after_it(make_file):
    # The Pixel Data length says 2 bytes fewer than the Image Pixel module needs,
    # while the file still holds them (so no end-of-file check can catch it):
    # pydicom refuses, and kvdicom must refuse for this reason, not read on.
    from fixtures.oracle import check_load

    path = make_file(frames=1, rows=8, cols=8)
    expected = kvdicom.inspect(path).nbytes
    _patch_pixel_length(path, expected - 2)
    with pytest.raises(kvdicom.DicomLoadError) as info:
        kvdicom.inspect(path)
    reason = info.value.reason
    assert reason.startswith("pixel data is shorter than the header promises")
    assert f"{expected - 2} bytes present" in reason and f"{expected} expected" in reason
    assert check_load(path, "cpu") is None


def test_pixel_data_of_a_vr_pydicom_does_not_know_is_refused_like_pydicom(tmp_path):
    """Found by bench/test_fuzz.py: Pixel Data's VR overwritten to ``O\\x00`` with a 2-byte length that fits the
    header's one byte of pixels. pydicom reads the header, then fails on the value (NotImplementedError:
    Unknown Value Representation); kvdicom returned the byte as the image."""
    path = tmp_path / "vr.dcm"
    write_dicom(DicomSpec(frames=2, rows=1, cols=1, bits_allocated=1, bits_stored=1, signed=False), path)
    data = bytearray(path.read_bytes())
    at = data.rindex(b"\xe0\x7f\x10\x00OB") if b"\xe0\x7f\x10\x00OB" in data else data.rindex(b"\xe0\x7f\x10\x00OW")
    data[at + 5 : at + 8] = b"\x00\x01\x00"  # VR "O\0", then a 2-byte length of 1: the value is the next byte
    path.write_bytes(bytes(data))
    with pytest.raises(NotImplementedError):
        pydicom.dcmread(path).pixel_array
    with pytest.raises(kvdicom.DicomLoadError, match=r"vr\.dcm.*Value Representation"):
        kvdicom.load(path, "cpu")


@pytest.mark.parametrize("frames", [1, 3])
def test_big_endian_8_bit_ow_pixels_of_an_odd_length_are_refused_like_pydicom(tmp_path, frames):
    """Found by bench/test_fuzz.py: 8-bit pixels encoded as OW in Explicit VR Big Endian are swapped pairwise,
    so pydicom reads the pad byte too, from the value; a value of the odd, unpadded length has no last pair
    (pydicom: ValueError, buffer size must be a multiple of element size), and kvdicom read the pad byte past
    the value's end instead. Padded to an even length, both load the same pixels."""
    spec = DicomSpec(frames=frames, rows=1, cols=1, bits_allocated=8, bits_stored=8, signed=False,
                     transfer_syntax="explicit_be", pixel_vr="OW", number_of_frames_tag=frames > 1)
    padded = tmp_path / "padded.dcm"
    write_dicom(spec, padded)
    np.testing.assert_array_equal(kvdicom.load(padded, "cpu"), pydicom.dcmread(padded).pixel_array)
    data = bytearray(padded.read_bytes())
    at = data.rindex(b"\x7f\xe0\x00\x10OW")
    assert int.from_bytes(data[at + 8 : at + 12], "big") == frames + frames % 2
    data[at + 8 : at + 12] = frames.to_bytes(4, "big")  # the odd length; the pad byte stays after the value
    odd = tmp_path / "odd.dcm"
    odd.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="multiple of element size"):
        pydicom.dcmread(odd).pixel_array
    with pytest.raises(kvdicom.DicomLoadError, match=r"odd\.dcm.*big endian.*odd"):
        kvdicom.load(odd, "cpu")


@pytest.mark.parametrize(("bits", "cols", "frames"), [(8, 5, 1), (8, 1, 1), (8, 3, 2), (1, 5, 1), (1, 3, 1),
                                                      (1, 3, 2)])
def test_ybr_full_with_one_sample_loads_like_pydicom_or_is_refused_where_pydicom_fails(tmp_path, bits, cols, frames):
    """Found by bench/test_fuzz.py (seed 110): YBR_FULL on a one-sample image. pydicom converts to RGB along the
    last axis, the columns here: with 3 columns it returns that conversion, else it fails (ValueError). kvdicom
    returned a wrongly shaped array (8-bit, 5 columns: 4 x 3), raised IndexError (1 column), and did not convert
    unpacked 1-bit samples at all."""
    path = tmp_path / "ybr.dcm"
    write_dicom(DicomSpec(frames=frames, rows=4, cols=cols, bits_allocated=bits, bits_stored=bits, signed=False,
                          number_of_frames_tag=frames > 1), path)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.save_as(path)
    if cols != 3:
        with pytest.raises(ValueError):
            pydicom.dcmread(path).pixel_array
        with pytest.raises(kvdicom.DicomLoadError, match=rf"ybr\.dcm.*YBR_FULL with 1 sample.*holds {cols} values"):
            kvdicom.load(path, "cpu")
        return
    expected = pydicom.dcmread(path).pixel_array
    got = kvdicom.load(path, "cpu")
    assert got.dtype == expected.dtype and got.shape == expected.shape == (frames, 4, 3)[-expected.ndim:]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("planar", [0, 1])
def test_one_bit_ybr_full_colour_is_converted_like_pydicom(tmp_path, planar):
    """pydicom unpacks 1-bit samples to bytes, then converts YBR_FULL to RGB like any 8-bit image; kvdicom
    returned the unpacked samples unconverted."""
    path = tmp_path / "ybr1.dcm"
    write_dicom(DicomSpec(frames=1, rows=4, cols=8, bits_allocated=1, bits_stored=1, signed=False,
                          samples_per_pixel=3, planar_configuration=planar, photometric="YBR_FULL"), path)
    assert pydicom.dcmread(path).PhotometricInterpretation == "YBR_FULL"
    np.testing.assert_array_equal(kvdicom.load(path, "cpu"), pydicom.dcmread(path).pixel_array)


@pytest.mark.parametrize(("rows", "cols", "samples", "frames"), [(3, 3, 1, 1), (3, 3, 3, 1), (1, 1, 3, 1), (1, 3, 3, 1),
                                                                  (4, 3, 1, 1), (3, 4, 3, 1), (1, 1, 3, 2)])
def test_ybr_full_422_not_in_whole_groups_of_four_is_refused_like_pydicom(tmp_path, rows, cols, samples, frames):
    """pydicom expands native YBR_FULL_422 over the whole buffer in Y Y Cb Cr groups: where the stored samples are
    not whole groups (an odd number of pixels, 3 x 3 say) it fails (ValueError: could not broadcast), and kvdicom's
    same expansion raised that ValueError, not a DicomLoadError. Whole groups load equal (two 1 x 1 frames: 4)."""
    path = tmp_path / "ybr422.dcm"
    write_dicom(DicomSpec(frames=frames, rows=rows, cols=cols, bits_allocated=8, bits_stored=8, signed=False,
                          samples_per_pixel=samples, number_of_frames_tag=frames > 1,
                          photometric="RGB" if samples == 3 else ""), path)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "YBR_FULL_422"
    stored = rows * cols * samples * frames * 2 // 3
    ds.PixelData = bytes(ds.PixelData[:stored]) + b"\0" * (stored % 2)
    ds.save_as(path)
    if stored % 4:
        with pytest.raises(ValueError, match="broadcast"):
            pydicom.dcmread(path).pixel_array
        with pytest.raises(kvdicom.DicomLoadError, match=rf"ybr422\.dcm.*{stored} samples is not whole groups of 4"):
            kvdicom.load(path, "cpu")
    else:
        np.testing.assert_array_equal(kvdicom.load(path, "cpu"), pydicom.dcmread(path).pixel_array)


@pytest.mark.parametrize(("rows", "cols", "samples"), [(2, 4, 3), (6, 6, 3)])
def test_one_bit_ybr_full_422_is_refused_like_pydicom(tmp_path, rows, cols, samples):
    """Found by bench/test_fuzz.py (seed 189: Bits Allocated 1 written over an 8-bit YBR_FULL_422 file): pydicom
    sizes 1-bit YBR_FULL_422 data at two thirds of the samples, unpacks it without expanding and fails to reshape
    (ValueError); kvdicom failed the same reshape with that ValueError, not a DicomLoadError."""
    path = tmp_path / "ybr1.dcm"
    write_dicom(DicomSpec(frames=1, rows=rows, cols=cols, bits_allocated=1, bits_stored=1, signed=False,
                          samples_per_pixel=samples, photometric="RGB"), path)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "YBR_FULL_422"
    two_thirds = rows * cols * samples * 2 // 3 // 8  # bytes pydicom expects
    ds.PixelData = bytes(range(two_thirds)) + b"\0" * (two_thirds % 2)
    ds.save_as(path)
    with pytest.raises(ValueError, match="reshape"):
        pydicom.dcmread(path).pixel_array
    with pytest.raises(kvdicom.DicomLoadError, match=r"ybr1\.dcm.*YBR_FULL_422 with Bits Allocated 1"):
        kvdicom.load(path, "cpu")

"""Compressed DICOM: fixtures, frame location, the CPU load, and the GPU route's corrections checked on the CPU.

The GPU decoder itself (nvImageCodec) needs a device; here its output is
stood in for by the CPU codecs that return samples the same way (the
codestream's own container and sign: openjpeg for JPEG 2000 / HTJ2K,
libjpeg-turbo through imagecodecs for JPEG), so :func:`kvdicom._codecs.gpu_codec.finish`
and :func:`kvdicom._codecs.gpu_codec.plan` are tested against pydicom here.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames

import kvdicom
from fixtures.oracle import check_load, pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.writer import build_dataset, write_dicom
from kvdicom import settings
from kvdicom._codecs import gpu_codec
from kvdicom._header import codestream, compressed, encapsulated

pytest.importorskip("pylibjpeg", reason="compressed cases need pylibjpeg (requirements.txt)")
pytest.importorskip("openjpeg", reason="compressed cases need pylibjpeg-openjpeg (requirements.txt)")
imagecodecs = pytest.importorskip("imagecodecs", reason="compressed fixtures need imagecodecs (requirements.txt)")

S16 = {"bits_allocated": 16, "bits_stored": 16, "signed": True}
RGB8 = {"bits_allocated": 8, "bits_stored": 8, "samples_per_pixel": 3}

#: (spec, max allowed difference from pydicom on the GPU route: 0 for lossless)
CASES = [
    (DicomSpec(frames=1, rows=64, cols=64, transfer_syntax="jpeg2000_lossless", **S16), 0),
    (DicomSpec(frames=3, rows=48, cols=40, transfer_syntax="htj2k_lossless", **S16), 0),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=16, bits_stored=12, transfer_syntax="htj2k_lossless"), 0),
    (DicomSpec(frames=2, rows=32, cols=48, transfer_syntax="rle", **S16), 0),
    (DicomSpec(frames=2, rows=16, cols=24, transfer_syntax="rle", **RGB8), 0),
    (DicomSpec(frames=2, rows=32, cols=48, photometric="YBR_FULL_422", transfer_syntax="jpeg_baseline", **RGB8), 5),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=8, bits_stored=8, transfer_syntax="jpeg_baseline"), 5),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=16, bits_stored=12, transfer_syntax="jpeg_lossless_sv1"), 0),
    (DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="jpeg_lossless", **S16), 0),
    (DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="jpegls_lossless", **S16), 0),
    (DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="jpeg2000", **S16), 1),
    (DicomSpec(frames=2, rows=32, cols=32, photometric="YBR_RCT", transfer_syntax="jpeg2000_lossless", **RGB8), 0),
    (DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", **RGB8), 0),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=16, bits_stored=12, transfer_syntax="jpeg2000_lossless"), 0),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=8, bits_stored=8, transfer_syntax="jpeg2000_lossless"), 0),
    (DicomSpec(frames=3, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", offset_table="eot", **S16), 0),
    (DicomSpec(frames=3, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", offset_table="none", fragments=2,
               **S16), 0),
    (DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", fragments=3, **S16), 0),
]
IDS = [s.case_id for s, _ in CASES]


@pytest.fixture(autouse=True)
def any_size_on_the_gpu(monkeypatch):
    """Small files normally decode on the host (faster); route them as large ones are, to test that route."""
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    monkeypatch.setattr(gpu_codec, "GPU_COLOUR_J2K", True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("compressed")
    out = {}
    for spec, _ in CASES:
        out[spec] = root / f"{spec.case_id}.dcm"
        write_dicom(spec, out[spec])
    return out


def _planned(path, **layout_changes):
    """(layout, frames, plan) of ``path`` as the GPU load plans it; ``layout_changes`` replace header fields
    after the frame checks (a header the codestreams were checked against, then planned as another kind)."""
    layout = kvdicom.inspect(path)
    _, frames = compressed.read_frames(layout)
    infos = compressed.check_frames(layout, frames)
    if layout_changes:
        layout = dataclasses.replace(layout, **layout_changes)
    return layout, frames, gpu_codec.plan(layout, infos)


@pytest.mark.parametrize(("case", "atol"), CASES, ids=IDS)
def test_cpu_load_equals_pinned_pixel_array(files, case, atol):
    spec = case
    assert check_load(files[spec], "cpu") is None


@pytest.mark.parametrize(("case", "atol"), CASES, ids=IDS)
def test_inspect_reports_codec_and_frames_without_decoding(files, case, atol):
    spec = case
    layout = kvdicom.inspect(files[spec])
    assert layout.compressed and layout.number_of_frames == spec.frames
    assert layout.codec == compressed.CODECS[pydicom.uid.UID(layout.transfer_syntax)]
    assert layout.shape == pydicom_pixels(files[spec]).shape
    assert layout.nbytes < files[spec].stat().st_size


@pytest.mark.parametrize(("case", "atol"), CASES, ids=IDS)
def test_frames_located_in_the_file_equal_pydicoms(files, case, atol):
    spec = case
    layout = kvdicom.inspect(files[spec])
    _, frames = compressed.read_frames(layout)
    ds = pydicom.dcmread(files[spec])
    ext = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths) if "ExtendedOffsetTable" in ds else None
    expected = list(generate_frames(ds.PixelData, number_of_frames=spec.frames, extended_offsets=ext))
    assert [bytes(f) for f in frames] == expected


def test_phantom_compresses_like_an_image(files):
    spec = CASES[0][0]
    layout = kvdicom.inspect(files[spec])
    assert layout.decoded_nbytes / layout.nbytes > 1.5  # uniform noise gives < 1


def _stand_in_decode(layout, frames, how):
    """What nvImageCodec returns, from CPU codecs with the same conventions (container and sign of the stream)."""
    import openjpeg

    out = []
    for f in frames:
        if layout.codec in ("jpeg2000", "htj2k"):
            a = openjpeg.decode(bytes(f))
        else:
            a = imagecodecs.jpeg8_decode(bytes(f))  # YCbCr → RGB, as ColorSpec.SRGB
        out.append(a.reshape(layout.rows, layout.columns, layout.samples_per_pixel))
    raw = np.stack(out)
    assert raw.dtype.itemsize == how.raw_itemsize
    return raw.view(f"u{how.raw_itemsize}")


@pytest.mark.parametrize(("case", "atol"), CASES, ids=IDS)
def test_gpu_route_corrections_match_pydicom(files, case, atol):
    spec = case
    layout, frames, how = _planned(files[spec])
    if spec.transfer_syntax in ("rle", "jpegls_lossless", "jpeg_lossless", "jpeg_lossless_sv1"):
        assert how.route == "host"
        return
    assert how.route == "gpu", how.reason
    got = gpu_codec.finish(_stand_in_decode(layout, frames, how), layout, how)
    ref = pydicom_pixels(files[spec])
    assert got.shape == ref.shape and got.dtype == ref.dtype
    diff = np.abs(got.astype(np.int64) - ref.astype(np.int64)).max()
    assert diff <= atol


GREY_JPEG = DicomSpec(frames=2, rows=32, cols=32, bits_allocated=8, bits_stored=8, transfer_syntax="jpeg_baseline")
YBR_JPEG = DicomSpec(frames=2, rows=32, cols=48, photometric="YBR_FULL_422", transfer_syntax="jpeg_baseline", **RGB8)
EDITS = [(GREY_JPEG, {"BitsAllocated": 16}), (YBR_JPEG, {"BitsAllocated": 16}), (YBR_JPEG, {"PixelRepresentation": 1}),
         (YBR_JPEG, {"PixelRepresentation": 1, "PhotometricInterpretation": "YBR_FULL"})]


@pytest.mark.parametrize(("base", "edit"), EDITS,
                         ids=["grey-8bit-under-16", "ybr-8bit-under-16", "ybr-signed", "ybr-full-signed"])
def test_jpeg_that_pydicom_cannot_decode_is_left_to_the_host(files, tmp_path, base, edit):
    """Found by a scan of rewritten headers: pydicom puts 8-bit JPEG samples into a buffer sized by Bits Allocated
    16 and fails; it fails to convert signed YBR samples to RGB. The GPU route planned both and returned an array
    (uint16, int8 RGB); on the host pydicom's decoder fails, and the load with it."""
    ds = pydicom.dcmread(files[base])
    for keyword, value in edit.items():
        setattr(ds, keyword, value)
    path = tmp_path / "edited.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ValueError):
        pydicom_pixels(path)
    _, _, how = _planned(path)
    assert how.route == "host" and "pydicom" in how.reason
    assert check_load(path, "cpu") is None  # refused, as pydicom fails


def test_lossless_jpeg_decodes_on_the_host(files):
    """nvJPEG 13.2.3 returned wrong values for a 12-bit SV1 stream on the device: never route SOF3 to it."""
    spec = next(s for s, _ in CASES if s.transfer_syntax == "jpeg_lossless_sv1")
    layout, frames, how = _planned(files[spec])
    assert how.route == "host" and "lossless JPEG" in how.reason


def test_small_files_decode_on_the_host(files, monkeypatch):
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 256 << 10)
    layout, frames, how = _planned(files[CASES[0][0]])
    assert how.route == "host" and "the host is faster" in how.reason


def _colour_j2k_plan(files, photometric, as_photometric=None):
    spec = next(s for s, _ in CASES
                if s.transfer_syntax == "jpeg2000_lossless" and s.photometric_interpretation == photometric)
    changes = {} if as_photometric is None else {"photometric_interpretation": as_photometric}
    return _planned(files[spec], **changes)[2]


@pytest.mark.parametrize("photometric", ["RGB", "YBR_RCT"])
def test_colour_j2k_kinds_verified_on_the_device_decode_on_the_gpu(files, monkeypatch, photometric):
    monkeypatch.setattr(gpu_codec, "GPU_COLOUR_J2K", False)
    how = _colour_j2k_plan(files, photometric)
    assert how.route == "gpu", how.reason
    assert how.color == ("unchanged" if photometric == "RGB" else "srgb")


def test_colour_j2k_kinds_not_verified_stay_on_the_host(files, monkeypatch):
    monkeypatch.setattr(gpu_codec, "GPU_COLOUR_J2K", False)
    how = _colour_j2k_plan(files, "YBR_RCT", as_photometric="YBR_ICT")
    assert how.route == "host" and "YBR_ICT" in how.reason and "GPU_COLOUR_J2K_VERIFIED" in how.reason
    monkeypatch.setattr(gpu_codec, "GPU_COLOUR_J2K_VERIFIED", frozenset())
    how = _colour_j2k_plan(files, "RGB")
    assert how.route == "host" and "RGB with 8-bit" in how.reason


def test_sign_correction_from_the_j2k_codestream(tmp_path):
    """Pixel Representation 1 but an unsigned 12-bit codestream: pydicom re-signs from bit 11."""
    spec = DicomSpec(frames=1, rows=32, cols=32, bits_allocated=16, bits_stored=12, transfer_syntax="jpeg2000_lossless")
    ds = build_dataset(spec)
    ds.PixelRepresentation = 1
    path = tmp_path / "resign.dcm"
    ds.save_as(path, enforce_file_format=True)
    layout, frames, how = _planned(path)
    assert not how.signed and how.precision == 12
    ref = pydicom_pixels(path)
    assert ref.min() < 0  # the phantom's high values became negative
    got = gpu_codec.finish(_stand_in_decode(layout, frames, how), layout, how)
    assert np.array_equal(got, ref)
    assert check_load(path, "cpu") is None


def _htj2k_stream():
    return bytes(imagecodecs.htj2k_encode(np.arange(256, dtype=np.uint16).reshape(16, 16), reversible=True))


def test_htj2k_from_openjph_is_single_pass():
    info = codestream.j2k_info(_htj2k_stream())
    assert info.ht and info.ht_single_pass and (info.width, info.height, info.precision) == (16, 16, 16)


def test_htj2k_without_proof_of_single_pass_is_not_single_pass():
    data = _htj2k_stream()
    no_comment = data.replace(b"OpenJPH", b"Unknown")
    assert not codestream.j2k_info(no_comment).ht_single_pass
    cap = data.index(b"\xff\x50")
    multi = bytearray(data)
    ccap = struct.unpack(">H", data[cap + 8: cap + 10])[0] | (1 << 13)  # MULTIHT
    multi[cap + 8: cap + 10] = struct.pack(">H", ccap)
    assert not codestream.j2k_info(bytes(multi)).ht_single_pass


def test_htj2k_not_shown_single_pass_decodes_on_the_host(tmp_path):
    spec = DicomSpec(frames=1, rows=32, cols=32, transfer_syntax="htj2k_lossless", **S16)
    ds = build_dataset(spec)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1)).replace(b"OpenJPH", b"Unknown")
    ds.PixelData = pydicom.encaps.encapsulate([frame])
    path = tmp_path / "ht.dcm"
    ds.save_as(path, enforce_file_format=True)
    layout, frames, how = _planned(path)
    assert how.route == "host" and "single coding pass" in how.reason


def _rewrite(spec, path, **changes):
    ds = build_dataset(spec)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", ["jpeg2000_lossless", "jpeg_lossless_sv1", "jpegls_lossless"])
def test_header_dimensions_must_agree_with_the_codestream(tmp_path, syntax):
    spec = DicomSpec(frames=1, rows=32, cols=32, transfer_syntax=syntax, **S16)
    path = _rewrite(spec, tmp_path / "lying.dcm", Rows=60000, Columns=60000)
    for device in ("cpu",):
        with pytest.raises(kvdicom.DicomLoadError, match="codestream is 32x32"):
            kvdicom.load(path, device)


def test_rle_header_promising_more_than_the_stream_can_hold_is_refused(tmp_path):
    spec = DicomSpec(frames=1, rows=32, cols=32, transfer_syntax="rle", **S16)
    path = _rewrite(spec, tmp_path / "lying.dcm", Rows=60000, Columns=60000)
    with pytest.raises(kvdicom.DicomLoadError, match="RLE frame 0"):
        kvdicom.load(path, "cpu")


@pytest.mark.parametrize("syntax", ["rle", "jpeg2000_lossless"])
@pytest.mark.parametrize("frames, number_of_frames", [(2, "1.5"), (2, "2.5"), (3, "2.5"), (2, "2.0"), (3, "3.0")])
def test_a_fractional_number_of_frames_is_refused_as_pydicom_fails_on_it(tmp_path, syntax, frames,
                                                                         number_of_frames):
    """Found by the compressed fuzz: pydicom sizes an encapsulated value's output by Number of Frames and fails on
    a fraction (a TypeError), where kvdicom had loaded every frame the fragments held."""
    spec = DicomSpec(frames=frames, rows=32, cols=32, transfer_syntax=syntax, **S16)
    path = _rewrite(spec, tmp_path / "frames.dcm", NumberOfFrames=number_of_frames)
    try:
        expected = pydicom_pixels(path)
    except TypeError:
        expected = None
    assert (expected is None) == (float(number_of_frames) % 1 != 0)
    for device in ("cpu",):
        if expected is None:
            with pytest.raises(kvdicom.DicomLoadError, match="Number of Frames .* is not a whole number"):
                kvdicom.load(path, device)
        else:
            np.testing.assert_array_equal(kvdicom.load(path, device), expected)


def test_the_oracle_takes_the_refusal_of_encapsulated_data_under_a_native_syntax(tmp_path):
    """A file meta whose first group byte is lost (the compressed fuzz): pydicom reads no transfer syntax, the oracle
    gives it the encoding pydicom detected (Explicit VR LE), and pydicom returns the RLE items as pixels; kvdicom
    refuses, as docs/loader.md says, and the oracle takes that refusal (fixtures.oracle.DOCUMENTED_REFUSALS)."""
    spec = DicomSpec(frames=2, rows=16, cols=16, transfer_syntax="rle", **S16)
    path = tmp_path / "lost_meta.dcm"
    write_dicom(spec, path)
    data = path.read_bytes()
    path.write_bytes(data[:132] + b"\0" + data[133:])
    assert pydicom_pixels(path).shape == (2, 16, 16)  # the items and codestreams read as pixels
    with pytest.raises(kvdicom.DicomLoadError, match="undefined length .encapsulated., which native"):
        kvdicom.load(path, "cpu")
    assert check_load(path, "cpu") is None


def _encapsulated_file(tmp_path, value: bytes, frames: int = 1):
    spec = DicomSpec(frames=frames, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", **S16)
    ds = build_dataset(spec)
    ds.PixelData = value
    path = tmp_path / "bad.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_fragment_claiming_a_gigabyte_is_read_short_and_fails_as_in_pydicom(tmp_path):
    # pydicom takes the value up to the sequence delimiter and reads the item short (here: empty);
    # kvdicom does the same, so nothing is sized from the 1 GiB claim, and the empty frame fails to decode.
    empty_bot = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
    path = _encapsulated_file(tmp_path, empty_bot + b"\xfe\xff\x00\xe0" + struct.pack("<I", 1 << 30))
    layout = kvdicom.inspect(path)
    assert layout.frame_table.nbytes == 0 and layout.frame_table.span[1] <= path.stat().st_size
    assert check_load(path, "cpu") is None
    with pytest.raises(kvdicom.DicomLoadError, match="cannot decode"):
        kvdicom.load(path, "cpu")


def _rle_file(tmp_path) -> tuple[bytes, int]:
    """A 2-frame RLE file's bytes and the file offset of its last item header (its length lies 4 bytes on)."""
    path = tmp_path / "rle.dcm"
    write_dicom(DicomSpec(frames=2, rows=16, cols=16, transfer_syntax="rle", **S16), path)
    data = path.read_bytes()
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    return data, data.rindex(b"\xfe\xff\x00\xe0")


@pytest.mark.parametrize("extra", [512, 1 << 31], ids=["past-the-end", "2-GiB"])
def test_a_last_item_running_past_its_end_decodes_as_pydicom_reads_it(tmp_path, extra):
    """Found by the fuzzer on the device: pydicom falls back to the bytes up to the sequence delimiter and
    reads the over-long item short, so it decodes the file; kvdicom must return the same array."""
    data, item = _rle_file(tmp_path)
    length = struct.unpack_from("<I", data, item + 4)[0]
    path = tmp_path / "long_item.dcm"
    path.write_bytes(data[: item + 4] + struct.pack("<I", length + extra) + data[item + 8 :])
    assert check_load(path, "cpu") is None
    np.testing.assert_array_equal(kvdicom.load(path, "cpu"), pydicom_pixels(path))


def test_items_cut_off_before_the_sequence_delimiter_are_refused_as_pydicom_finds_no_pixel_data(tmp_path):
    data, item = _rle_file(tmp_path)
    for cut in (len(data) - 8, len(data) - 100):  # right after the last fragment; inside it
        path = tmp_path / f"cut{cut}.dcm"
        path.write_bytes(data[:cut])
        with pytest.raises(kvdicom.DicomLoadError, match=f"^{path}: "):
            kvdicom.load(path, "cpu")
        with pytest.raises(kvdicom.DicomLoadError, match=r"sequence delimiter \(FFFE,E0DD\)"):
            # the value starts after (7FE0,0010) OB, 2 reserved bytes and the undefined length
            encapsulated.locate(str(path), data.rindex(b"\xe0\x7f\x10\x00") + 12, cut, 2)
        assert check_load(path, "cpu") is None  # pydicom has no pixel data there either


@pytest.mark.parametrize("offsets", [(0, 5), (0, 12, 4), (7, 12, 36), (0, 0, 12), (0, 100)],
                         ids=["between-fragments", "decreasing", "first-ignored", "empty-first-frame", "past-the-end"])
def test_basic_offset_table_groups_fragments_as_pydicom_does(tmp_path, offsets):
    # pydicom does not check that offsets point at fragments: it starts a new frame at the first fragment
    # at or past the next offset. kvdicom must find the same frames (the decoders then judge the bytes).
    from pydicom.encaps import generate_fragmented_frames

    frags = [b"\xfe\xff\x00\xe0" + struct.pack("<I", 4) + bytes([65 + i]) * 4 for i in range(4)]
    bot = b"\xfe\xff\x00\xe0" + struct.pack("<I", 4 * len(offsets)) + struct.pack(f"<{len(offsets)}I", *offsets)
    value = bot + b"".join(frags)
    path = _encapsulated_file(tmp_path, value, frames=len(offsets))
    expected = [b"".join(f) for f in generate_fragmented_frames(value, number_of_frames=len(offsets))]
    layout = compressed.inspect_compressed(str(path), pydicom.dcmread(path), pydicom.uid.JPEG2000Lossless,
                                           lambda *a: None) if len(expected) >= len(offsets) else None
    if layout is None:  # pydicom finds fewer frames than declared: refused
        with pytest.raises(kvdicom.DicomLoadError, match="fewer than"):
            kvdicom.inspect(path)
        return
    _, frames = compressed.read_frames(layout)
    assert [bytes(f) for f in frames] == expected


def test_fewer_fragments_than_frames_is_refused(tmp_path):
    frag = b"\xfe\xff\x00\xe0" + struct.pack("<I", 4) + b"abcd"
    path = _encapsulated_file(tmp_path, b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + frag, frames=3)
    with pytest.raises(kvdicom.DicomLoadError, match="fewer than the"):
        kvdicom.inspect(path)


def test_undecodable_stream_is_a_dicom_load_error(tmp_path):
    frag = b"\xfe\xff\x00\xe0" + struct.pack("<I", 4) + b"\xff\x4f\xff\xd9"
    path = _encapsulated_file(tmp_path, b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + frag)
    with pytest.raises(kvdicom.DicomLoadError):
        kvdicom.load(path, "cpu")


def test_rescale_applies_to_compressed_pixels(tmp_path):
    spec = DicomSpec(frames=1, rows=32, cols=32, transfer_syntax="rle", rescale_slope=2.0, rescale_intercept=-1024.0,
                     **S16)
    path = tmp_path / "r.dcm"
    write_dicom(spec, path)
    assert check_load(path, "cpu", rescale=True) is None


def test_case_id_names_the_encoder_version(monkeypatch):
    spec = DicomSpec(rows=32, cols=32, transfer_syntax="htj2k_lossless", **S16)
    assert spec.case_id.endswith(f"_ic{imagecodecs.__version__}")
    assert DicomSpec(rows=32, cols=32, transfer_syntax="rle", **S16).case_id.endswith("_rle")
    monkeypatch.setenv("DGB_ENCODERS", "imagecodecs=1999.1.1")
    pinned = DicomSpec(rows=32, cols=32, transfer_syntax="htj2k_lossless", **S16)
    assert pinned.case_id.endswith("_ic1999.1.1") and pinned.key() != spec.key()


def test_a_pinned_encoder_version_that_is_not_installed_is_never_written(monkeypatch, tmp_path):
    from fixtures.encode import EncoderUnavailable

    monkeypatch.setenv("DGB_ENCODERS", "imagecodecs=1999.1.1")
    with pytest.raises(EncoderUnavailable, match="pinned to imagecodecs 1999.1.1"):
        write_dicom(DicomSpec(rows=32, cols=32, transfer_syntax="htj2k_lossless", **S16), tmp_path / "x.dcm")


# --- fuzz: mutated compressed files load as pydicom does, or raise DicomLoadError --------------------

FUZZ_BASES = [
    DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", **S16),
    DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="htj2k_lossless", **S16),
    DicomSpec(frames=2, rows=16, cols=16, transfer_syntax="rle", **S16),
    DicomSpec(frames=2, rows=16, cols=16, photometric="YBR_FULL_422", transfer_syntax="jpeg_baseline", **RGB8),
    DicomSpec(frames=3, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", offset_table="eot", **S16),
]
#: (tag, VR, values) of the Image Pixel elements the fuzzer rewrites
FUZZ_ELEMENTS = [
    (0x00280010, "US", [0, 1, 8, 31, 32, 33, 64, 0xFFFF]),  # Rows
    (0x00280011, "US", [0, 1, 8, 31, 32, 33, 64, 0xFFFF]),  # Columns
    (0x00280100, "US", [1, 8, 12, 16, 32]),  # Bits Allocated
    (0x00280101, "US", [1, 7, 8, 12, 15, 16, 17]),  # Bits Stored
    (0x00280103, "US", [0, 1, 2]),  # Pixel Representation
    (0x00280002, "US", [1, 3, 4]),  # Samples per Pixel
    (0x00280008, "IS", ["1", "2", "3", "4", "0"]),  # Number of Frames
    (0x00280004, "CS", ["MONOCHROME2", "RGB", "YBR_FULL_422", "YBR_ICT", "PALETTE COLOR"]),
]


@pytest.fixture(scope="module")
def fuzz_bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzbase")
    out = []
    for spec in FUZZ_BASES:
        path = root / f"{spec.case_id}.dcm"
        write_dicom(spec, path)
        out.append(path.read_bytes())
    return out


def _mutant(data: bytes, draw) -> tuple[bytes, bool]:
    """(mutated file, whether its codestreams are intact)."""
    from hypothesis import strategies as st

    kind = draw(st.sampled_from(["truncate", "bytes", "element", "element", "pixel_bytes"]))
    if kind == "truncate":
        return data[: draw(st.integers(144, len(data) - 1))], False
    if kind == "element":  # through pydicom: fixtures.mutate walks defined-length datasets only
        import io

        tag, vr, values = draw(st.sampled_from(FUZZ_ELEMENTS))
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.add_new(tag, vr, draw(st.sampled_from(values)))
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue(), True
    # past the file meta: corrupt file meta is bench/test_fuzz.py's ground (native syntaxes)
    meta_end = 144 + struct.unpack("<I", data[140:144])[0]
    start = data.index(b"\xe0\x7f\x10\x00") if kind == "pixel_bytes" else meta_end
    pos = draw(st.integers(start, len(data) - 1))
    chunk = draw(st.binary(min_size=1, max_size=8))
    return data[:pos] + chunk + data[pos + len(chunk):], False


def _image_area(frame: bytes, j2k: bool) -> tuple[int, int, int] | None:
    """(rows, columns, components) of a frame by the standard's own definition, or None without a header.

    JPEG 2000: the SIZ segment's image area, Ysiz - YOsiz by Xsiz - XOsiz (openjpeg decodes that area;
    pylibjpeg-openjpeg reports Ysiz rows); JPEG: pydicom's SOF parser.
    """
    from pydicom.pixels.utils import _get_jpg_parameters

    if j2k:
        at = frame.find(b"\xff\x51")
        if at < 0 or len(frame) < at + 40:
            return None
        xsiz, ysiz, xo, yo = struct.unpack(">4I", frame[at + 6: at + 22])
        return ysiz - yo, xsiz - xo, struct.unpack(">H", frame[at + 38: at + 40])[0]
    try:
        params = _get_jpg_parameters(frame)
        return params["height"], params["width"], params["components"]
    except Exception:  # noqa: BLE001  no SOF to read
        return None


def _codestream_disagrees_with_header(path) -> bool:
    """Whether a frame's codestream, by the standard's definition of its image area, has other rows, columns or
    components than the header. pydicom then reflows the decoded samples into the header's frame (a J2K frame
    whose SIZ says 31 × 32 under a 32 × 32 header came back with every row shifted); kvdicom refuses such a
    file before allocating (issue 10: the header's size only after it agrees with the codestream)."""
    try:
        ds = pydicom.dcmread(path)
        frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
        want = (int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel))
    except Exception:  # noqa: BLE001  a file pydicom cannot walk: not this case
        return False
    j2k = ds.file_meta.TransferSyntaxUID in pydicom.uid.JPEG2000TransferSyntaxes
    return any(area is not None and area != want for area in (_image_area(bytes(f), j2k) for f in frames))


def test_fuzzed_compressed_files_match_pydicom_or_are_refused(fuzz_bases, tmp_path_factory):
    import contextlib
    import tracemalloc

    from hypothesis import HealthCheck, given, note, settings
    from hypothesis import strategies as st

    root = tmp_path_factory.mktemp("fuzz")

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
    @given(st.integers(0, len(FUZZ_BASES) - 1), st.data())
    def check(base, data):
        mutant, streams_intact = _mutant(fuzz_bases[base], data.draw)
        path = root / "mutant.dcm"
        path.write_bytes(mutant)
        note(f"base {FUZZ_BASES[base].case_id}, {len(mutant)} bytes")
        problem = check_load(path, "cpu")
        if (problem and problem.startswith("kvdicom refused a file pydicom decodes") and "codestream is" in problem
                and _codestream_disagrees_with_header(path)):
            problem = None  # pydicom reflows such a frame into the header's shape: wrong data, refused here
        assert problem is None, problem
        tracemalloc.start()
        try:
            with contextlib.suppress(kvdicom.DicomLoadError):
                kvdicom.load(path, "cpu")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < compressed.RLE_MAX_EXPANSION * len(mutant) + (8 << 20)
        # the GPU route's decision and corrections, with the stand-in decoder
        try:
            layout, frames, how = _planned(path)
        except kvdicom.DicomLoadError:
            return
        if how.route != "gpu":
            return
        try:
            raw = _stand_in_decode(layout, frames, how)
        except Exception:  # noqa: BLE001
            return  # a stream the CPU codecs cannot decode: the GPU route re-decodes such frames on the host
        try:
            got = gpu_codec.finish(raw, layout, how)
        except kvdicom.DicomLoadError:
            return
        try:
            ref = pydicom_pixels(path)
        except Exception as exc:  # noqa: BLE001
            # the GPU route would return ``got`` where pydicom fails; only a corrupt stream may decode otherwise there
            assert not streams_intact, f"the GPU route decodes a file pydicom fails on ({type(exc).__name__}: {exc})"
            return
        tol = 5 if layout.codec == "jpeg" else 0
        assert got.shape == ref.shape and got.dtype == ref.dtype
        if streams_intact:  # decoders differ on corrupt streams; GPU and pydicom agree only on valid ones
            assert np.abs(got.astype(np.int64) - ref.astype(np.int64)).max() <= tol

    check()


def test_compressed_series_slices_load_like_pydicom(tmp_path):
    """Series fixtures take compressed syntaxes too (one encapsulated frame per slice file)."""
    from fixtures.series import SeriesSpec, write_series

    write_series(SeriesSpec(slices=3, rows=32, cols=32, transfer_syntax="htj2k_lossless"), tmp_path)
    files = sorted(p for p in tmp_path.iterdir() if p.suffix == ".dcm")
    assert len(files) == 3
    for path in files:
        assert kvdicom.inspect(path).codec == "htj2k"
        assert check_load(path, "cpu") is None


def test_frames_split_on_jpeg_eoi_markers_without_an_offset_table(tmp_path):
    """No offset table, more fragments than frames: pydicom splits frames at fragments ending in EOI."""
    spec = DicomSpec(frames=3, rows=32, cols=32, bits_allocated=8, bits_stored=8, transfer_syntax="jpeg_baseline",
                     offset_table="none", fragments=2)
    path = tmp_path / "eoi.dcm"
    write_dicom(spec, path)
    layout = kvdicom.inspect(path)
    assert layout.frame_table.split_on_eoi
    _, frames = compressed.read_frames(layout)
    assert len(frames) == 3
    assert check_load(path, "cpu") is None


def test_extended_offset_table_length_past_the_value_is_cut_as_pydicom_cuts_it(tmp_path):
    # pydicom reads each EOT frame with ``buffer.read(length)``: a length running past the value's end
    # gives the bytes up to it. kvdicom cut it the same way instead of refusing the file.
    import struct

    spec = DicomSpec(frames=3, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", offset_table="eot", **S16)
    ds = build_dataset(spec)
    lengths = list(struct.unpack("<3Q", ds.ExtendedOffsetTableLengths))
    lengths[-1] += 1000
    ds.ExtendedOffsetTableLengths = struct.pack("<3Q", *lengths)
    path = tmp_path / "eot.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert np.array_equal(kvdicom.load(path, "cpu"), pydicom.dcmread(path).pixel_array)


def test_extended_offset_table_length_past_any_readable_size_is_refused_as_pydicom_fails(tmp_path):
    # ``buffer.read(length)`` with a length past sys.maxsize raises OverflowError in pydicom: no array. kvdicom
    # cut it to the value's end and its own decoders returned frame 0 (a nightly fuzzer's find).
    import struct

    spec = DicomSpec(frames=3, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", offset_table="eot", **S16)
    ds = build_dataset(spec)
    lengths = list(struct.unpack("<3Q", ds.ExtendedOffsetTableLengths))
    lengths[0] |= 1 << 63
    ds.ExtendedOffsetTableLengths = struct.pack("<3Q", *lengths)
    path = tmp_path / "eot.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(kvdicom.DicomLoadError, match="Extended Offset Table"):
        kvdicom.load(path, "cpu")
    assert check_load(path, "cpu") is None


@pytest.mark.parametrize("damaged", ["first fragment", "Basic Offset Table"])
def test_extended_offset_table_frames_are_read_past_damaged_item_headers_as_pydicom_reads_them(tmp_path, damaged):
    # pydicom seeks to each Extended Offset Table frame and reads it: the item headers after the Basic Offset
    # Table are never read, so a damaged one does not stop it (the Basic Offset Table's own tag is checked).
    spec = DicomSpec(frames=3, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", offset_table="eot", **S16)
    path = tmp_path / "eot.dcm"
    write_dicom(spec, path)
    data = bytearray(path.read_bytes())
    bot = data.index(b"\xe0\x7f\x10\x00") + 12  # Pixel Data: tag, OB, reserved, undefined length
    assert data[bot: bot + 4] == b"\xfe\xff\x00\xe0"
    at = bot if damaged == "Basic Offset Table" else bot + 8 + struct.unpack("<I", data[bot + 4: bot + 8])[0]
    data[at + 1] = 0x00  # (FFFE,E000) becomes (FF00,E000)
    path.write_bytes(bytes(data))
    assert check_load(path, "cpu") is None
    if damaged == "first fragment":
        assert np.array_equal(kvdicom.load(path, "cpu"), pydicom_pixels(path))


class _FakeImage:
    """An nvImageCodec Image stand-in: a CuPy array seen through __cuda_array_interface__ only."""

    def __init__(self, arr, strides=None):
        self.arr = arr
        cai = dict(arr.__cuda_array_interface__)
        cai["strides"] = strides
        self.__cuda_array_interface__ = cai


@pytest.mark.gpu
def test_gpu_decoded_images_are_copied_into_their_slots_or_sent_to_the_host(cuda):
    import cupy

    how = gpu_codec.Plan("gpu", raw_itemsize=2)
    raw = cupy.zeros((4, 8, 6, 1), dtype=cupy.uint16)
    good = [cupy.arange(48, dtype=cupy.uint16).reshape(8, 6, 1) + 100 * i for i in range(4)]
    wide = cupy.zeros((8, 12, 1), dtype=cupy.uint16)[:, ::2]  # right shape, strided
    images = [_FakeImage(good[0]), None, _FakeImage(wide, strides=wide.strides), _FakeImage(good[3][:4])]
    redo = gpu_codec._copy_images(images, raw, how, cupy.cuda.get_current_stream())
    cupy.cuda.get_current_stream().synchronize()
    assert redo == [1, 2, 3]
    assert cupy.array_equal(raw[0], good[0]) and not raw[1:].any()
    images = [_FakeImage(g, strides=g.strides) for g in good]  # explicit C strides are contiguous too
    assert gpu_codec._copy_images(images, raw, how, cupy.cuda.get_current_stream()) == []
    cupy.cuda.get_current_stream().synchronize()
    assert all(cupy.array_equal(raw[i], good[i]) for i in range(4))


@pytest.mark.gpu
def test_gpu_images_already_in_their_slots_are_not_copied(cuda, monkeypatch):
    import cupy

    how = gpu_codec.Plan("gpu", raw_itemsize=1)
    raw = cupy.arange(4 * 8 * 6 * 3, dtype=cupy.uint8).reshape(4, 8, 6, 3)
    copies = []
    monkeypatch.setattr(cupy.cuda.runtime, "memcpyAsync", lambda *a: copies.append(a))
    images = [_FakeImage(raw[i]) for i in range(3)] + [_FakeImage(raw[0].copy())]
    assert gpu_codec._copy_images(images, raw, how, cupy.cuda.get_current_stream()) == []
    assert len(copies) == 1 and copies[0][0] == raw[3].data.ptr  # only the image decoded elsewhere


@pytest.mark.gpu
def test_gpu_rgb_jpeg_decodes_into_the_output_slots(cuda, files, monkeypatch):
    """DECODE_IN_PLACE: nvImageCodec writes RGB 8-bit frames straight into the batch's slots, equal to pydicom."""
    import cupy

    if gpu_codec.nvimgcodec_problem():
        pytest.skip(gpu_codec.nvimgcodec_problem())
    spec = next(s for s, _ in CASES if s.transfer_syntax == "jpeg_baseline" and s.samples_per_pixel == 3)
    layout, frames, how = _planned(files[spec])
    assert how.route == "gpu" and (how.raw_itemsize, layout.samples_per_pixel) in gpu_codec.DECODE_IN_PLACE
    copies = []
    real = cupy.cuda.runtime.memcpyAsync
    monkeypatch.setattr(cupy.cuda.runtime, "memcpyAsync", lambda *a: copies.append(a) or real(*a))
    raw, redo = gpu_codec._decode_batch(frames, layout, how)
    assert redo == [] and copies == []
    got = gpu_codec.finish(raw, layout, how).get()
    ref = pydicom_pixels(files[spec])
    assert np.abs(got.astype(np.int64) - ref.astype(np.int64)).max() <= 5


@pytest.mark.gpu
@pytest.mark.parametrize("syntax", ["jpeg2000_lossless", "htj2k_lossless"])
def test_gpu_16_bit_grey_j2k_decodes_into_the_output_slots_exactly(cuda, files, monkeypatch, syntax):
    """DECODE_IN_PLACE (2, 1): 16-bit grey JPEG 2000 / HTJ2K frames written straight into the batch's slots, no
    copies, equal to pydicom bit for bit (lossless)."""
    import cupy

    if gpu_codec.nvimgcodec_problem():
        pytest.skip(gpu_codec.nvimgcodec_problem())
    spec = next((s for s, _ in CASES if s.transfer_syntax == syntax and s.samples_per_pixel == 1
                 and s.bits_allocated == 16), None)
    if spec is None:
        pytest.skip(f"no 16-bit grey {syntax} case in this profile")
    layout, frames, how = _planned(files[spec])
    if how.route != "gpu":
        pytest.skip(f"{syntax} decodes on the host here: {how.reason}")
    assert (how.raw_itemsize, layout.samples_per_pixel) in gpu_codec.DECODE_IN_PLACE
    copies = []
    real = cupy.cuda.runtime.memcpyAsync
    monkeypatch.setattr(cupy.cuda.runtime, "memcpyAsync", lambda *a: copies.append(a) or real(*a))
    raw, redo = gpu_codec._decode_batch(frames, layout, how)
    assert redo == [] and copies == []
    np.testing.assert_array_equal(gpu_codec.finish(raw, layout, how).get(), pydicom_pixels(files[spec]))


@pytest.mark.gpu
def test_gpu_decode_waits_for_work_queued_on_the_stream(cuda, files):
    """Work still queued on a block the pool hands to the output finishes before the decoder writes there.

    nvJPEG's hardware batched decode does not wait for the caller's stream (torchcodec PR 1634). Here a fill
    of the block is queued behind a long kernel, the block is freed, and the batch decodes: without a drain
    the fill lands on the decoded frames afterwards.
    """
    from tests.stream_race import queued_fill_rounds

    if gpu_codec.nvimgcodec_problem():
        pytest.skip(gpu_codec.nvimgcodec_problem())
    spec = next(s for s, _ in CASES if s.transfer_syntax == "jpeg_baseline" and s.samples_per_pixel == 3)
    layout, frames, how = _planned(files[spec])
    assert how.route == "gpu"
    clean, _ = gpu_codec._decode_batch(frames, layout, how)
    expected = clean.get()
    del clean
    rounds = queued_fill_rounds(cuda, lambda: gpu_codec._decode_batch(frames, layout, how), expected, 8)
    assert all(redo == [] and equal for _, equal, redo in rounds), rounds
    if not any(reused for reused, _, _ in rounds):
        pytest.skip("the memory pool never handed the freed block to the output, so nothing was checked")


@pytest.mark.gpu
def test_gpu_slots_given_to_the_decoder_are_the_output_frames(cuda):
    """Each slot handed to nvImageCodec points at its own frame of the output, with the frame's shape and type."""
    import cupy

    raw = cupy.empty((3, 5, 7, 3), dtype=np.uint16)
    slots = gpu_codec._slots(raw)
    assert [s.__cuda_array_interface__["data"][0] for s in slots] == [raw[i].data.ptr for i in range(3)]
    assert all(s.__cuda_array_interface__["shape"] == (5, 7, 3) for s in slots)
    assert all(s.__cuda_array_interface__["typestr"] == raw.dtype.str for s in slots)


@pytest.mark.parametrize("shape", [(4, 3, 5), (4, 8, 2), (4, 1, 1)], ids=["odd-bytes", "word-multiple", "one-byte"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_blank_frames_are_the_all_zero_ones_whatever_the_frame_size(shape, dtype):
    """A frame is blank only when every byte is zero: a single set bit in its last byte makes it not blank."""
    frames = np.zeros(shape, dtype=dtype)
    frames[1].reshape(-1)[-1] = 1
    frames[3].reshape(-1)[0] = -1 if np.dtype(dtype).kind == "i" else 255
    assert gpu_codec.blank_frames(frames.reshape(len(frames), -1)) == [0, 2]


@pytest.mark.gpu
def test_gpu_blank_frames_are_the_all_zero_ones(cuda):
    import cupy

    for shape in [(4, 3, 5), (4, 8, 2)]:
        frames = np.zeros(shape, dtype=np.uint8)
        frames[1, -1, -1] = 1
        frames[3, 0, 0] = 128
        assert gpu_codec.blank_frames(cupy.asarray(frames).reshape(4, -1)) == [0, 2]


def _jpeg_frames(files, syntax="jpeg_baseline"):
    spec = next(s for s, _ in CASES if s.transfer_syntax == syntax)
    layout = kvdicom.inspect(files[spec])
    return compressed.read_frames(layout)[1]


def test_jpeg_frame_header_facts_equal_a_parse_of_the_whole_frame(files):
    frame = bytes(_jpeg_frames(files)[0])
    app = b"\xff\xe5" + struct.pack(">H", 6002) + b"\x00" * 6000  # an APP5 segment pushes SOF past the prefix
    pushed = frame[:2] + app + frame[2:]
    for f in (frame, pushed):
        whole = codestream._jpeg_info_uncached(f)
        assert whole is not None and codestream.jpeg_info(f) == whole
    assert codestream.jpeg_info(pushed) == codestream._jpeg_info_uncached(frame)  # found past the prefix


def test_frames_with_the_same_header_are_parsed_once(files, monkeypatch):
    calls = []
    real = codestream._get_jpg_parameters
    monkeypatch.setattr(codestream, "_get_jpg_parameters", lambda b: calls.append(len(b)) or real(b))
    codestream._jpeg_info_of.cache_clear()
    frames = _jpeg_frames(files)
    assert bytes(frames[0][:64]) == bytes(frames[1][:64])
    infos = [codestream.jpeg_info(f) for f in frames * 3]
    assert len(set(infos)) == 1 and len(calls) < len(infos)


def test_the_nvimgcodec_plugin_peer_is_not_run_on_lossless_jpeg(tmp_path):
    """A peer that can break the CUDA context must not run inside the session (it failed every GPU benchmark
    after it on the H200); the skip says why, whether or not nvImageCodec is installed here."""
    from bench import compressed_peers
    from fixtures.encode import EncoderUnavailable

    path = tmp_path / "sof3.dcm"
    try:
        write_dicom(DicomSpec(frames=2, rows=32, cols=32, bits_allocated=16, bits_stored=12,
                              transfer_syntax="jpeg_lossless_sv1"), path)
    except EncoderUnavailable as exc:
        pytest.skip(f"cannot write a lossless JPEG file here: {exc}")
    why = compressed_peers.plugin_available(path, compressed_peers.NVIMGCODEC_PLUGIN)
    assert why is not None and "error 715" in why and "JPEG Lossless" in why
    # the reference plugin is still offered
    assert compressed_peers.plugin_available(path, "pylibjpeg") is None


@pytest.mark.parametrize("syntax", ["htj2k_lossless", "jpeg_baseline"])
@pytest.mark.parametrize("cols", [512, 3])
def test_one_sample_ybr_decodes_on_the_host_as_pydicom_handles_it(tmp_path, syntax, cols):
    """YBR_FULL on a one-sample frame: pydicom converts along the columns (3: converted) or fails (512). The GPU
    route decoded such frames as grey and returned them unconverted: now the host decides, as pydicom does."""
    pytest.importorskip("imagecodecs")
    path = tmp_path / "ybr.dcm"
    frames = 1 if cols > 3 else 2  # Rows is 16 bits
    rows = (256 << 10) // (cols * frames) + 1  # past GPU_MIN_DECODED_BYTES: a GPU load would plan the GPU
    write_dicom(DicomSpec(frames=frames, rows=rows, cols=cols, bits_allocated=8, bits_stored=8, signed=False,
                          transfer_syntax=syntax, number_of_frames_tag=frames > 1), path)
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.save_as(path)
    layout, _, how = _planned(path)
    assert how.route == "host" and "one sample as YBR_FULL" in how.reason
    grey = dataclasses.replace(layout, photometric_interpretation="MONOCHROME2")
    assert gpu_codec.plan(grey, compressed.check_frames(layout, compressed.read_frames(layout)[1])).route == "gpu"
    assert check_load(path, "cpu") is None

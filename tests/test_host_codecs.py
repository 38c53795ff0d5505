"""kvdicom._codecs.host_codecs: lossless JPEG 2000 / JPEG-LS decoded by imagecodecs equal pydicom's ``pixel_array``,
and everything it must not take keeps pydicom's path."""

from __future__ import annotations

import struct
import threading

import numpy as np
import pytest

import kvdicom
from fixtures.oracle import check_load, pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.writer import write_dicom
from kvdicom import settings
from kvdicom._codecs import host_codecs, route
from kvdicom._header import codestream, compressed
from kvdicom._io import host_read
from kvdicom._io import tuning as io_tuning

pytest.importorskip("pylibjpeg", reason="compressed cases need pylibjpeg (requirements.txt)")
pytest.importorskip("openjpeg", reason="compressed cases need pylibjpeg-openjpeg (requirements.txt)")
imagecodecs = pytest.importorskip("imagecodecs", reason="the route needs imagecodecs (requirements.txt)")

from tests.test_compressed import RGB8, S16  # noqa: E402  (after the skips: it needs the same codecs)

#: Files this route decodes (the imagecodecs library that runs).
TAKEN = [
    (DicomSpec(frames=1, rows=64, cols=64, transfer_syntax="jpeg2000_lossless", **S16), "openjpeg"),
    (DicomSpec(frames=3, rows=48, cols=40, transfer_syntax="htj2k_lossless", **S16), "openjpeg"),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=16, bits_stored=12, transfer_syntax="htj2k_lossless"),
     "openjpeg"),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=16, bits_stored=12, transfer_syntax="jpeg2000_lossless"),
     "openjpeg"),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=8, bits_stored=8, transfer_syntax="jpeg2000_lossless"),
     "openjpeg"),
    (DicomSpec(frames=2, rows=32, cols=32, photometric="YBR_RCT", transfer_syntax="jpeg2000_lossless", **RGB8),
     "openjpeg"),
    (DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", **RGB8), "openjpeg"),
    (DicomSpec(frames=3, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", offset_table="eot", **S16), "openjpeg"),
    (DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="jpegls_lossless", **S16), "CharLS"),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=16, bits_stored=12, signed=True,
               transfer_syntax="jpegls_lossless"), "CharLS"),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=8, bits_stored=8, transfer_syntax="jpegls_lossless"),
     "CharLS"),
]
#: Files it leaves to pydicom, and a word of why.
LEFT = [
    (DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="jpeg2000", **S16), "irreversible"),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=16, bits_stored=12, transfer_syntax="jpeg_lossless_sv1"),
     "lossless JPEG"),
    (DicomSpec(frames=2, rows=32, cols=32, bits_allocated=8, bits_stored=8, transfer_syntax="jpeg_baseline"),
     "not decoded exactly alike"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("host_codecs")
    paths = {}
    for spec, _ in TAKEN + LEFT:
        paths[spec] = root / f"{spec.case_id}.dcm"
        write_dicom(spec, paths[spec])
    return paths


@pytest.fixture
def no_pydicom_decode(monkeypatch):
    """pydicom's decoders must not run: the route under test decodes everything."""
    def refuse(*args, **kwargs):
        raise AssertionError("pydicom's decoder ran")

    monkeypatch.setattr(route, "_host_decode_here", refuse)
    monkeypatch.setattr(route, "host_decode", refuse)


def _plan(path):
    layout = kvdicom.inspect(path)
    _, frames = compressed.read_frames(layout)
    return layout, frames, host_codecs.plan(layout, frames, compressed.check_frames(layout, frames))


@pytest.mark.parametrize(("case", "library"), TAKEN, ids=[s.case_id for s, _ in TAKEN])
def test_lossless_files_decode_here_equal_to_pixel_array(files, no_pydicom_decode, case, library):
    layout, _, how = _plan(files[case])
    assert not isinstance(how, str), how
    assert library in route.describe(layout, "cpu")
    assert check_load(files[case], "cpu") is None


@pytest.mark.parametrize(("case", "why"), LEFT, ids=[s.case_id for s, _ in LEFT])
def test_other_files_keep_pydicom_path(files, case, why):
    layout, _, how = _plan(files[case])
    assert isinstance(how, str) and why in how
    assert route.describe(layout, "cpu").startswith("host:pydicom:")
    assert check_load(files[case], "cpu") is None


def test_frames_decode_side_by_side_on_the_read_pool(files, no_pydicom_decode, monkeypatch):
    monkeypatch.setattr(settings, "IMAGECODECS_CONCURRENT_MIN_CPUS", 1)
    threads = []
    real = host_codecs._decode_frame

    def spy(*args):
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(host_codecs, "_decode_frame", spy)
    spec = TAKEN[1][0]  # 3 frames of HTJ2K
    got = kvdicom.load(files[spec], "cpu")
    assert np.array_equal(got, pydicom_pixels(files[spec]))
    assert len(threads) == 3 and all(name.startswith("kvdicom-read") for name in threads), threads
    assert "frames on" in route.describe(kvdicom.inspect(files[spec]), "cpu")


def test_large_j2k_frames_get_openjpeg_threads_unless_on_the_pool(files, monkeypatch):
    spec = TAKEN[0][0]  # one 64² JPEG 2000 frame
    layout, frames, how = _plan(files[spec])
    monkeypatch.setattr(io_tuning, "host_threads", lambda: 8)
    assert host_codecs._frame_threads(layout, how, 1) == 1  # below INTRA_FRAME_MIN_PIXELS
    monkeypatch.setattr(settings, "IMAGECODECS_INTRA_FRAME_MIN_PIXELS", 64 * 64)
    assert host_codecs._frame_threads(layout, how, 1) == 8
    monkeypatch.setattr(host_read, "in_pool", lambda: True)  # a series slice's task: the pool has the cores
    assert host_codecs._frame_threads(layout, how, 1) == 1


def test_a_stream_imagecodecs_refuses_is_decoded_by_pydicom(files, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("imagecodecs refuses it")

    monkeypatch.setattr(imagecodecs, "jpeg2k_decode", refuse)
    spec = TAKEN[3][0]
    assert check_load(files[spec], "cpu") is None


def test_without_imagecodecs_pydicom_decodes(files, monkeypatch):
    monkeypatch.setattr(host_codecs, "_HAVE_IMAGECODECS", False)
    ran = []
    real = route._host_decode_here
    monkeypatch.setattr(route, "_host_decode_here", lambda *a: ran.append(1) or real(*a))
    spec = TAKEN[0][0]
    assert check_load(files[spec], "cpu") is None
    assert ran


def test_one_sample_not_monochrome_keeps_pydicom_path(files):
    """pydicom's colour handling decides (and may refuse) a one-sample YBR_FULL file: not this route's call."""
    import dataclasses

    layout, frames, _ = _plan(files[TAKEN[0][0]])
    layout = dataclasses.replace(layout, photometric_interpretation="YBR_FULL")
    how = host_codecs.plan(layout, frames, compressed.check_frames(layout, frames))
    assert isinstance(how, str) and "YBR_FULL" in how


def _cod_segment(frame: bytes) -> tuple[int, bytes]:
    pos = frame.index(b"\xff\x52")
    length = struct.unpack(">H", frame[pos + 2: pos + 4])[0]
    return pos, frame[pos: pos + 2 + length]


def _first_frame(path) -> bytes:
    layout = kvdicom.inspect(path)
    return bytes(compressed.read_frames(layout)[1][0])


def test_reversible_wavelet_found_in_the_main_header_and_every_tile_part(files):
    frame = _first_frame(files[TAKEN[0][0]])
    assert codestream.j2k_reversible(frame)
    pos, cod = _cod_segment(frame)
    irreversible_main = frame[: pos + 13] + b"\x00" + frame[pos + 14:]  # SPcod's transform byte: 9-7
    assert not codestream.j2k_reversible(irreversible_main)
    # the same COD, naming 9-7, in the tile-part header: Psot grows by its length
    sot = frame.index(b"\xff\x90")
    for transform, expected in ((b"\x00", False), (b"\x01", True)):
        tile_cod = cod[:13] + transform + cod[14:]
        psot = struct.unpack(">I", frame[sot + 6: sot + 10])[0]
        grown = frame[: sot + 6] + struct.pack(">I", psot + len(tile_cod) if psot else 0) + frame[sot + 10: sot + 12]
        edited = grown + tile_cod + frame[sot + 12:]
        assert codestream.j2k_reversible(edited) is expected
    lossy = _first_frame(files[LEFT[0][0]])
    assert not codestream.j2k_reversible(lossy)
    assert not codestream.j2k_reversible(frame[:pos])  # cut before COD: cannot be shown


def test_damaged_stream_is_refused_or_equal_to_pixel_array(files, tmp_path):
    """A byte run overwritten inside the first tile: pydicom and kvdicom fail alike or return the same array."""
    spec = TAKEN[0][0]
    data = bytearray(files[spec].read_bytes())
    sod = data.index(b"\xff\x93")
    data[sod + 2: sod + 40] = b"\xff" * 38
    path = tmp_path / "damaged.dcm"
    path.write_bytes(bytes(data))
    assert check_load(path, "cpu") is None


def test_an_imagecodecs_without_the_codec_leaves_the_file_to_pydicom(files, monkeypatch):
    """A slimmed wheel (tools/slim_wheel.py) may lack openjpeg: no error per file, pydicom decodes."""
    monkeypatch.setattr(imagecodecs.JPEG2K, "available", False)
    host_codecs._unavailable.cache_clear()
    try:
        layout, _, how = _plan(files[TAKEN[0][0]])
        assert isinstance(how, str) and "openjpeg" in how
        assert route.describe(layout, "cpu").startswith("host:pydicom:")
        assert check_load(files[TAKEN[0][0]], "cpu") is None
    finally:
        monkeypatch.undo()
        host_codecs._unavailable.cache_clear()


@pytest.mark.parametrize("syntaxes", [["jpeg2000_lossless"] * 4, ["htj2k_lossless"] * 3 + ["jpegls_lossless"],
                                      ["jpeg2000_lossless", "jpeg2000", "jpeg2000_lossless", "rle"]],
                         ids=["j2k", "htj2k+jpegls", "mixed-with-lossy-and-rle"])
def test_cpu_series_slices_decode_on_the_read_pool_equal_to_pydicom(tmp_path, monkeypatch, syntaxes):
    from tests.test_series_decode import pydicom_volume, write_series

    monkeypatch.setattr(settings, "IMAGECODECS_CONCURRENT_MIN_CPUS", 1)
    threads = []
    real = host_codecs.decode_into
    monkeypatch.setattr(host_codecs, "decode_into",
                        lambda *a: threads.append(threading.current_thread().name) or real(*a))
    paths = write_series(tmp_path / "s", syntaxes)
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    taken = sum(s in ("jpeg2000_lossless", "htj2k_lossless", "jpegls_lossless") for s in syntaxes)
    assert len(threads) == taken
    assert sum(int(d.rsplit(": ", 1)[1].split()[0]) for d in info.decoders if "host_codecs" in d) == taken
    # the first slice is read here to choose the route and decoded here while the pool decodes the others
    assert sum(name.startswith("kvdicom-read") for name in threads) == taken - 1, threads


def test_a_j2k_header_with_no_components_has_no_facts_and_no_crash(files, tmp_path):
    """Csiz 0 in SIZ (a fuzzer's find): no codestream facts, and the load is pydicom's result or a DicomLoadError."""
    frame = _first_frame(files[TAKEN[0][0]])
    at = frame.index(b"\xff\x51")
    no_components = frame[: at + 38] + b"\x00\x00" + frame[at + 40:]
    assert codestream.j2k_info(no_components) is None
    assert not codestream.j2k_reversible(no_components)
    data = files[TAKEN[0][0]].read_bytes()
    path = tmp_path / "csiz0.dcm"
    path.write_bytes(data.replace(frame, no_components))
    assert check_load(path, "cpu") is None


@pytest.mark.parametrize("min_cpus", [1, 1 << 20], ids=["slices-on-the-pool", "slices-in-turn"])
def test_cpu_series_plans_each_slice_once(tmp_path, monkeypatch, min_cpus):
    """Choosing the route, decoding and naming the decoder share one plan per slice: it walks every tile-part."""
    from tests.test_series_decode import pydicom_volume, write_series

    monkeypatch.setattr(settings, "IMAGECODECS_CONCURRENT_MIN_CPUS", min_cpus)
    asked = []
    real = host_codecs.plan
    monkeypatch.setattr(host_codecs, "plan", lambda layout, *a: asked.append(layout.path) or real(layout, *a))
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 3)
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert any("host_codecs" in d for d in info.decoders), info.decoders
    assert sorted(asked) == sorted(str(p) for p in paths)

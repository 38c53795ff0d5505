"""Compressed series (kvdicom._series.decode): one read per file, one GPU batch per plan, exact host fallbacks.

The GPU route's logic (planning on the batch's size, grouping, the batch call, blank and failed frames
redone on the host, host-route slices) runs here on the CPU with a NumPy stand-in for
``gpu_codec._decode_batch`` that decodes as nvImageCodec returns frames (the codestream's samples in an
unsigned container); the real decoder runs in the ``gpu`` test on the device.
"""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest

import kvdicom
from fixtures.encode import COMPRESSED_SYNTAXES, unavailable
from fixtures.spec import DicomSpec
from fixtures.writer import build_dataset
from kvdicom import settings
from kvdicom._codecs import gpu_codec
from kvdicom._header import compressed
from kvdicom._series import decode as series_decode
from tests.host_pool import pool_everything

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

#: the sample format each syntax's encoder takes (fixtures/spec.py's rules); the rest are int16 CT-like
_SAMPLES = {"jpeg_baseline": dict(bits_allocated=8, bits_stored=8, signed=False),
            "jpeg_extended": dict(bits_allocated=16, bits_stored=12, signed=False)}


def _slice_spec(syntax: str, rows: int, seed: int) -> DicomSpec:
    samples = _SAMPLES.get(syntax, dict(bits_allocated=16, bits_stored=16, signed=True))
    return DicomSpec(rows=rows, cols=rows, transfer_syntax=syntax, seed=seed, **samples)


def write_slices(folder, specs: list[DicomSpec]) -> list[str]:
    """One slice per spec (slice i from spec i) in one series, names not in slice order; paths in slice order."""
    for syntax in {spec.transfer_syntax for spec in specs}:
        if reason := unavailable(syntax):
            pytest.skip(reason)
    os.makedirs(folder, exist_ok=True)
    n = len(specs)
    paths = []
    for i, spec in enumerate(specs):
        ds = build_dataset(spec)
        ds.SeriesInstanceUID = "1.2.3.4"
        ds.SOPInstanceUID = f"1.2.3.4.{i + 1}"
        ds.ImagePositionPatient = [0.0, 0.0, 2.5 * i]
        ds.ImageOrientationPatient = list(AXIAL)
        ds.InstanceNumber = i + 1
        path = os.path.join(folder, f"IM{(i * 7) % n:04d}_{i}.dcm" if n > 1 else "IM0.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_series(folder, syntaxes: list[str], rows: int = 32) -> list[str]:
    """One slice per entry of ``syntaxes`` (slice i in syntax i): :func:`write_slices` of CT-like samples."""
    return write_slices(folder, [_slice_spec(syntax, rows, i) for i, syntax in enumerate(syntaxes)])


def write_colour_series(folder, photometric: str, n: int = 3, rows: int = 32, cols: int = 48) -> list[str]:
    """``n`` 8-bit colour JPEG 2000 lossless slices (``photometric`` "" is RGB): :func:`write_slices`."""
    return write_slices(folder, [DicomSpec(rows=rows, cols=cols, bits_allocated=8, bits_stored=8, samples_per_pixel=3,
                                           seed=i, photometric=photometric, transfer_syntax="jpeg2000_lossless")
                                 for i in range(n)])


def pydicom_volume(paths) -> np.ndarray:
    """pydicom's arrays, reference plugin pinned, stacked in slice order."""
    arrays = []
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.pixel_array_options(decoding_plugin=compressed.reference_plugin(ds.file_meta.TransferSyntaxUID))
        arrays.append(ds.pixel_array)
    return np.stack(arrays)


def corrupt_tile_data(path) -> None:
    """Overwrite the first tile's data after SOD: openjpeg then fails to decode (the header still parses)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    sod = data.find(b"\xff\x93")
    data[sod + 2 : sod + 40] = b"\xff" * 38
    with open(path, "wb") as f:
        f.write(data)


# --- device="cpu" --------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", sorted(COMPRESSED_SYNTAXES))
def test_cpu_series_of_every_syntax_equals_pydicom_stacked(tmp_path, syntax):
    paths = write_series(tmp_path / "s", [syntax] * 4)
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    assert list(info.paths) == paths
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    layout = kvdicom.inspect(paths[0])
    expected = series_decode.host_decoder(layout)
    assert info.decoders == (f"{expected}: 4 slices",), info.decoders


def test_cpu_series_of_mixed_syntaxes_equals_pydicom_stacked(tmp_path):
    syntaxes = ["jpeg2000_lossless", "rle", "htj2k_lossless", "jpeg2000_lossless", "rle", "jpegls_lossless"]
    paths = write_series(tmp_path / "s", syntaxes)
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert sum(int(d.rsplit(": ", 1)[1].split()[0]) for d in info.decoders) == len(syntaxes), info.decoders


def test_cpu_corrupt_slice_is_an_error_naming_it(tmp_path):
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 5)
    corrupt_tile_data(paths[2])
    with pytest.raises(kvdicom.DicomLoadError) as err:
        series_decode.decode_into([kvdicom.inspect(p) for p in paths], np.zeros((5, 32, 32), np.int16), "cpu")
    assert err.value.path == paths[2]
    with pytest.raises(kvdicom.DicomLoadError) as err:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert err.value.path == paths[2]


# --- the GPU route's logic, on the CPU -----------------------------------------------------------


class FakeBatch:
    """``gpu_codec._decode_batch`` as nvImageCodec behaves, on the host: records each call's frame count.

    ``none`` / ``zeros``: frame positions (over all calls) returned as no image / as all zeros (nvJPEG's silent
    failure); ``fail``: every call raises.
    """

    def __init__(self, none=(), zeros=(), fail=False):
        self.none, self.zeros, self.fail = set(none), set(zeros), fail
        self.calls: list[int] = []
        self.seen = 0

    def __call__(self, frames, layout, how):
        import openjpeg

        self.calls.append(len(frames))
        if self.fail:
            raise RuntimeError("nvImageCodec: out of memory")
        raw = np.empty((len(frames), layout.rows, layout.columns, layout.samples_per_pixel), f"u{how.raw_itemsize}")
        redo = []
        for i, frame in enumerate(frames):
            position, self.seen = self.seen, self.seen + 1
            if position in self.none:
                redo.append(i)
                continue
            decoded = openjpeg.decode(np.ascontiguousarray(frame).tobytes())
            raw[i] = 0 if position in self.zeros else decoded.reshape(raw.shape[1:]).view(raw.dtype)
        return raw, redo


@pytest.fixture
def gpu_route(monkeypatch):
    """nvImageCodec "present", every size on the GPU route, the batch a :class:`FakeBatch` (returned)."""
    pytest.importorskip("openjpeg")
    monkeypatch.setattr(gpu_codec, "nvimgcodec_problem", lambda: None)
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)

    def use(fake: FakeBatch) -> FakeBatch:
        monkeypatch.setattr(gpu_codec, "_decode_batch", fake)
        return fake

    return use


def _decode_gpu_logic(paths):
    layouts = [kvdicom.inspect(p) for p in paths]
    stored = np.full((len(paths), layouts[0].rows, layouts[0].columns), -7, dtype=layouts[0].dtype)
    decoders = series_decode.decode_gpu(layouts, stored, list(range(len(paths))))
    return stored, decoders


def test_gpu_logic_one_batch_per_plan_and_host_route_slices_exact(tmp_path, gpu_route):
    syntaxes = ["jpeg2000_lossless", "rle", "jpeg2000_lossless", "jpegls_lossless", "jpeg2000_lossless", "rle"]
    paths = write_series(tmp_path / "s", syntaxes)
    fake = gpu_route(FakeBatch())
    stored, decoders = _decode_gpu_logic(paths)
    np.testing.assert_array_equal(stored, pydicom_volume(paths))
    assert fake.calls == [3], "the three JPEG 2000 slices are one batch; RLE and JPEG-LS decode on the host"
    assert "nvimgcodec (jpeg2000, 3 frames in one batch): 3 slices" in decoders, decoders
    assert any(d.startswith("kvdicom._codecs.rle") and d.endswith(": 2 slices") for d in decoders), decoders


def test_gpu_logic_chooses_the_route_once_for_slices_alike(tmp_path, gpu_route, monkeypatch):
    """A series' slices alike share one GPU choice (``route.Choices``); a host-route slice is chosen on its own."""
    from kvdicom._codecs import route

    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 5 + ["rle"])
    fake = gpu_route(FakeBatch())
    made = []
    real = route.choose
    monkeypatch.setattr(route, "choose", lambda layout, *a, **k: (made.append(layout.codec), real(layout, *a, **k))[1])
    stored, decoders = _decode_gpu_logic(paths)
    np.testing.assert_array_equal(stored, pydicom_volume(paths))
    assert fake.calls == [5] and made.count("jpeg2000") == 1, made
    assert made.count("rle") >= 1


def test_gpu_logic_long_groups_split_into_calls_of_bounded_size(tmp_path, gpu_route, monkeypatch):
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 5)
    monkeypatch.setattr(settings, "GPU_BATCH_MAX_DECODED_BYTES", 2 * 32 * 32 * 2)  # two slices per call
    fake = gpu_route(FakeBatch(none={2}))
    stored, decoders = _decode_gpu_logic(paths)
    np.testing.assert_array_equal(stored, pydicom_volume(paths))
    assert fake.calls == [2, 2, 1]
    assert "nvimgcodec (jpeg2000, 5 frames in 3 batches): 4 slices" in decoders, decoders


def test_gpu_logic_frames_without_image_or_all_zeros_are_redone_on_the_host(tmp_path, gpu_route):
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 5)
    gpu_route(FakeBatch(none={1}, zeros={3}))
    stored, decoders = _decode_gpu_logic(paths)
    np.testing.assert_array_equal(stored, pydicom_volume(paths))
    assert "nvimgcodec (jpeg2000, 5 frames in one batch): 3 slices" in decoders, decoders
    assert any("no image or all zeros" in d and d.endswith(": 2 slices") for d in decoders), decoders


@pytest.mark.parametrize("photometric", ["", "YBR_RCT"])  # "": RGB
def test_gpu_logic_colour_j2k_series_of_a_verified_kind_is_one_batch_equal_to_pydicom(tmp_path, gpu_route,
                                                                                      photometric):
    """8-bit RGB / YBR_RCT JPEG 2000 (``gpu_codec.GPU_COLOUR_J2K_VERIFIED``) go to the GPU batch by default."""
    paths = write_colour_series(tmp_path / "s", photometric)
    fake = gpu_route(FakeBatch())
    layouts = [kvdicom.inspect(p) for p in paths]
    stored = np.full((3, 32, 48, 3), 7, dtype=np.uint8)
    decoders = series_decode.decode_gpu(layouts, stored, [0, 1, 2])
    np.testing.assert_array_equal(stored, pydicom_volume(paths))
    assert fake.calls == [3], decoders
    assert "nvimgcodec (jpeg2000, 3 frames in one batch): 3 slices" in decoders, decoders


def test_gpu_logic_plans_differing_precision_as_separate_batches(tmp_path, gpu_route):
    # 16-bit int16 and 12-bit-stored uint16 J2K slices cannot stack (dtype differs), so: same dtype, other
    # signedness of the codestream is impossible too; instead JPEG 2000 and HTJ2K slices of one series
    syntaxes = ["jpeg2000_lossless", "htj2k_lossless", "jpeg2000_lossless", "htj2k_lossless"]
    paths = write_series(tmp_path / "s", syntaxes)
    fake = gpu_route(FakeBatch())
    stored, decoders = _decode_gpu_logic(paths)
    np.testing.assert_array_equal(stored, pydicom_volume(paths))
    layout = kvdicom.inspect(paths[1])
    _, frames = compressed.read_frames(layout)
    htj2k_on_gpu = gpu_codec.plan(layout, compressed.check_frames(layout, frames)).route == "gpu"
    assert fake.calls == ([2, 2] if htj2k_on_gpu else [2]), (fake.calls, decoders)


def test_gpu_logic_plan_sees_the_batch_not_the_slice(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_codec, "nvimgcodec_problem", lambda: None)
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 4, rows=128)
    layouts = [kvdicom.inspect(p) for p in paths]
    per_slice = 128 * 128 * 2
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 3 * per_slice)  # one slice is below, four are not
    _, frames = compressed.read_frames(layouts[0])
    assert gpu_codec.plan(layouts[0], compressed.check_frames(layouts[0], frames)).route == "host"
    pieces = series_decode.read_all(layouts, [0, 1, 2, 3], plan_frames=len(layouts))
    assert [p.how.route for p in pieces] == ["gpu"] * 4
    batches, host = series_decode.groups(pieces)
    assert [[p.slot for p in b] for b in batches] == [[0, 1, 2, 3]] and host == []


def test_gpu_logic_failed_batch_falls_back_to_the_host_and_names_a_corrupt_slice(tmp_path, gpu_route):
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 4)
    gpu_route(FakeBatch(fail=True))
    stored, decoders = _decode_gpu_logic(paths)
    np.testing.assert_array_equal(stored, pydicom_volume(paths))
    assert any("nvImageCodec batch failed (RuntimeError" in d for d in decoders), decoders
    corrupt_tile_data(paths[2])
    with pytest.raises(kvdicom.DicomLoadError) as err:
        _decode_gpu_logic(paths)
    assert err.value.path == paths[2]


def test_gpu_logic_lying_slice_is_refused_before_anything_decodes(tmp_path, gpu_route):
    """A slice whose codestream disagrees with its header: an error naming it, and no batch ever ran."""
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 4)
    with open(paths[3], "rb") as f:
        data = bytearray(f.read())
    siz = data.find(b"\xff\x51")  # SIZ: Lsiz, Rsiz, Xsiz (4 bytes): the codestream's width
    data[siz + 6 : siz + 10] = (64).to_bytes(4, "big")
    with open(paths[3], "wb") as f:
        f.write(data)
    fake = gpu_route(FakeBatch())
    with pytest.raises(kvdicom.DicomLoadError) as err:
        _decode_gpu_logic(paths)
    assert err.value.path == paths[3] and "codestream" in err.value.reason
    assert fake.calls == []


# --- on the device -------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("syntaxes", [
    ["jpeg2000_lossless"] * 6,
    ["htj2k_lossless"] * 6,
    ["jpeg2000_lossless", "rle", "htj2k_lossless", "jpeg2000_lossless", "jpegls_lossless", "jpeg2000_lossless"],
], ids=["j2k", "htj2k", "mixed"])
def test_gpu_series_equals_pydicom_stacked(cuda, tmp_path, monkeypatch, syntaxes):
    """The real nvImageCodec batch (every size forced onto the GPU route) against the pydicom loop."""
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    paths = write_series(tmp_path / "s", syntaxes, rows=64)
    vol, info = kvdicom.load_series(tmp_path / "s", "cuda")
    assert isinstance(vol, cuda.ndarray)
    np.testing.assert_array_equal(cuda.asnumpy(vol), pydicom_volume(paths), err_msg=str(info.decoders))
    if gpu_codec.nvimgcodec_problem() is None:
        assert any(d.startswith("nvimgcodec (jpeg2000") or d.startswith("nvimgcodec (htj2k")
                   for d in info.decoders), info.decoders


@pytest.mark.gpu
@pytest.mark.parametrize("photometric", ["", "YBR_RCT"], ids=["rgb", "ybr_rct"])
def test_gpu_colour_j2k_series_equals_pydicom_stacked(cuda, tmp_path, monkeypatch, photometric):
    """A verified colour J2K kind (``GPU_COLOUR_J2K_VERIFIED``, not forced) through the real batch: exact."""
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    paths = write_colour_series(tmp_path / "s", photometric, n=4, rows=64, cols=96)
    vol, info = kvdicom.load_series(tmp_path / "s", "cuda")
    np.testing.assert_array_equal(cuda.asnumpy(vol), pydicom_volume(paths), err_msg=str(info.decoders))
    if gpu_codec.nvimgcodec_problem() is None:
        assert any(d.startswith("nvimgcodec (jpeg2000") for d in info.decoders), info.decoders


@pytest.mark.gpu
def test_gpu_series_with_a_black_slice_equals_pydicom_stacked(cuda, tmp_path, monkeypatch):
    """A legitimately black slice decodes to zeros on the GPU, is redone on the host, and stays zeros."""
    from pydicom.encaps import encapsulate

    from fixtures.encode import encode_frames

    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 4, rows=64)
    ds = pydicom.dcmread(paths[1])
    ds.PixelData = encapsulate(encode_frames("jpeg2000_lossless", np.zeros((1, 64, 64), np.int16), bits_stored=16,
                                             signed=True, photometric="MONOCHROME2"))
    ds.save_as(paths[1], enforce_file_format=True)
    vol, info = kvdicom.load_series(tmp_path / "s", "cuda")
    ref = pydicom_volume(paths)
    assert not ref[1].any() and ref[0].any()
    np.testing.assert_array_equal(cuda.asnumpy(vol), ref, err_msg=str(info.decoders))


def _root(array: np.ndarray):
    """The object that owns ``array``'s memory (following views' bases)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array.base if array.base is not None else array


def test_read_all_with_allocate_reads_every_slice_into_one_buffer(tmp_path):
    """One allocation of every slice's value bytes, each slice a view of its run of it, equal to its own read."""
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 5)
    layouts = [kvdicom.inspect(p) for p in paths]
    sizes = []

    def allocate(nbytes):
        sizes.append(nbytes)
        return np.full(nbytes, 0xAB, dtype=np.uint8)

    pieces = series_decode.read_all(layouts, list(range(5)), allocate=allocate)
    assert sizes == [sum(compressed.value_nbytes(layout) for layout in layouts)]
    assert len({id(_root(p.value)) for p in pieces}) == 1
    for piece, layout in zip(pieces, layouts):
        assert bytes(piece.value) == bytes(compressed.read_frames(layout)[0])


def test_read_frames_refuses_an_into_buffer_of_the_wrong_size(tmp_path):
    layout = kvdicom.inspect(write_series(tmp_path / "s", ["jpeg2000_lossless"])[0])
    with pytest.raises(ValueError, match="uint8 bytes"):
        compressed.read_frames(layout, into=np.empty(compressed.value_nbytes(layout) - 1, np.uint8))


def test_gpu_logic_batch_codestreams_are_views_of_one_staging_buffer(tmp_path, gpu_route, monkeypatch):
    """The frames handed to nvImageCodec come from one series staging buffer, not one allocation per file."""
    fake = gpu_route(FakeBatch())
    seen = []
    original = fake.__call__

    def spy(frames, layout, how):
        seen.extend(frames)
        return original(frames, layout, how)

    monkeypatch.setattr(gpu_codec, "_decode_batch", spy)
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 4)
    stored, _ = _decode_gpu_logic(paths)
    np.testing.assert_array_equal(stored, pydicom_volume(paths))
    assert len(seen) == 4 and len({id(_root(f)) for f in seen}) == 1


@pytest.mark.gpu
def test_gpu_series_codestreams_are_staged_in_pinned_memory(cuda, tmp_path, monkeypatch):
    """On the device the batch reads its codestreams from pinned host memory (one staging buffer)."""
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    if gpu_codec.nvimgcodec_problem() is not None:
        pytest.skip(gpu_codec.nvimgcodec_problem())
    kinds = []
    real = gpu_codec._decode_batch

    def spy(frames, layout, how):
        for frame in frames:
            attributes = cuda.cuda.runtime.pointerGetAttributes(frame.ctypes.data)
            kinds.append(attributes.type)  # 1: cudaMemoryTypeHost (page-locked); 0: pageable
        return real(frames, layout, how)

    monkeypatch.setattr(gpu_codec, "_decode_batch", spy)
    paths = write_series(tmp_path / "s", ["htj2k_lossless"] * 4, rows=64)
    vol, info = kvdicom.load_series(tmp_path / "s", "cuda")
    np.testing.assert_array_equal(cuda.asnumpy(vol), pydicom_volume(paths), err_msg=str(info.decoders))
    assert kinds == [1] * 4, kinds


# --- host-route slices side by side on kvdicom's process pool ------------------------------------


@pytest.fixture
def slices_pooled(monkeypatch):
    """Every host-route series goes to the process pool (thresholds off); records what the pool returned."""
    return pool_everything(monkeypatch, "decode_slices")


@pytest.mark.parametrize("syntax", ["jpeg2000_lossless", "jpegls_lossless", "jpeg_lossless_sv1", "jpeg_baseline",
                                    "htj2k_lossless"])
def test_cpu_series_slices_decoded_on_the_process_pool_equal_pydicom_stacked(tmp_path, slices_pooled, syntax):
    paths = write_series(tmp_path / "s", [syntax] * 5)
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    assert len(slices_pooled) == 1 and slices_pooled[0] is not None, "the pool did not decode the slices"
    ref = pydicom_volume(paths)
    assert vol.dtype == ref.dtype and np.array_equal(vol, ref)
    assert any("slices on" in d and d.endswith(": 5 slices") for d in info.decoders), info.decoders


def test_pooled_series_with_a_corrupt_slice_is_an_error_naming_it(tmp_path, slices_pooled):
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 5)
    corrupt_tile_data(paths[3])
    with pytest.raises(kvdicom.DicomLoadError) as err:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert err.value.path == paths[3]
    assert slices_pooled == [None]  # the pool gave up; the in-process decode raised, naming the file


def test_gpu_logic_host_route_slices_decode_on_the_process_pool(tmp_path, gpu_route, slices_pooled):
    paths = write_series(tmp_path / "s", ["jpegls_lossless"] * 4)
    fake = gpu_route(FakeBatch())
    stored, _ = _decode_gpu_logic(paths)
    assert fake.calls == [] and len(slices_pooled) == 1 and slices_pooled[0] is not None
    np.testing.assert_array_equal(stored, pydicom_volume(paths))


def test_slices_are_read_in_a_few_runs_not_one_task_each(tmp_path, monkeypatch):
    """Per-slice reading is mostly Python: one pool task per slice left 16 threads fighting for the GIL (256
    HTJ2K slices on the H200: 59.7 ms against 23.1 in two runs, ``settings.SERIES_READ_TASKS``). The slices come
    back in their order and equal, however many runs."""
    from kvdicom._io import host_read

    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 9)
    layouts = [kvdicom.inspect(p) for p in paths]
    pool = host_read.pool()
    submitted = []

    class Recording:
        def submit(self, fn, *args):
            submitted.append(len(args[0]) if fn is series_decode._read_group else 1)
            return pool.submit(fn, *args)

    monkeypatch.setattr(host_read, "pool", lambda: Recording())
    pieces = series_decode.read_all(layouts, list(range(9)))
    assert submitted == [5, 4], submitted
    assert [p.slot for p in pieces] == list(range(9)) and [p.layout for p in pieces] == layouts
    for piece, layout in zip(pieces, layouts):
        assert bytes(piece.value) == bytes(compressed.read_frames(layout)[0])
    monkeypatch.setattr(settings, "SERIES_READ_TASKS", 1)  # one run: read in the caller, no task at all
    submitted.clear()
    assert [p.slot for p in series_decode.read_all(layouts, list(range(9)))] == list(range(9)) and not submitted

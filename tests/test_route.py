"""kvdicom._codecs.route: one choice per layout, the same for kvdicom.load, load_series and the benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

import kvdicom
from fixtures.oracle import pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.writer import write_dicom
from kvdicom import settings
from kvdicom._codecs import gpu_codec, route
from kvdicom._header import compressed

pytest.importorskip("pylibjpeg", reason="compressed cases need pylibjpeg (requirements.txt)")
pytest.importorskip("openjpeg", reason="compressed cases need pylibjpeg-openjpeg (requirements.txt)")
pytest.importorskip("imagecodecs", reason="the imagecodecs back end needs imagecodecs (requirements.txt)")
pytest.importorskip("rle", reason="the RLE back end needs pylibjpeg-rle (requirements.txt)")

S16 = dict(bits_allocated=16, bits_stored=16, signed=True)
#: (file, the host back end that takes it)
CASES = [
    (DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="rle", **S16), "rle"),
    (DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="htj2k_lossless", **S16), "imagecodecs"),
    (DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="jpeg2000", **S16), "pydicom"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("route")
    paths = {}
    for i, (case, _) in enumerate(CASES):
        paths[case] = root / f"{i}.dcm"
        write_dicom(case, paths[case])
    return paths


def _choose(path, device):
    layout = kvdicom.inspect(path)
    _, frames = compressed.read_frames(layout)
    return layout, route.choose(layout, frames, compressed.check_frames(layout, frames), device)


@pytest.mark.parametrize(("case", "backend"), CASES, ids=[b for _, b in CASES])
def test_cpu_takes_the_first_back_end_that_accepts_and_says_why_the_faster_ones_declined(files, case, backend):
    layout, choice = _choose(files[case], "cpu")
    assert choice.backend == backend and not choice.on_gpu
    order = ["rle", "imagecodecs", "pydicom"]
    assert len(choice.declined) == order.index(backend)  # one reason per faster back end
    assert all(isinstance(why, str) and why for why in choice.declined)
    out = np.empty(layout.shape, dtype=layout.dtype)
    value, frames = compressed.read_frames(layout)
    route.host_into(layout, choice, value, frames, out)
    np.testing.assert_array_equal(out, pydicom_pixels(files[case]))


@pytest.mark.parametrize(("case", "backend"), CASES, ids=[b for _, b in CASES])
def test_the_name_recorded_is_the_back_end_that_ran(files, case, backend):
    layout, choice = _choose(files[case], "cpu")
    text = route.describe(layout, "cpu")
    assert text == f"host:{route.name(layout, choice)}"
    assert {"rle": "rle", "imagecodecs": "imagecodecs", "pydicom": "pydicom:"}[backend] in text


def test_cuda_without_a_usable_gpu_decoder_falls_to_the_host_route_naming_why(files, monkeypatch):
    monkeypatch.setattr(gpu_codec, "nvimgcodec_problem", lambda: "nvImageCodec is not installed (test)")
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)  # the plan would take the GPU
    layout, choice = _choose(files[CASES[1][0]], "cuda")
    assert choice.backend == "imagecodecs"
    assert choice.declined[0] == "nvImageCodec is not installed (test)"
    assert route.describe(layout, "cuda").endswith("(nvImageCodec is not installed (test))")


def test_cuda_takes_nvimgcodec_where_it_decodes_exactly(files, monkeypatch):
    monkeypatch.setattr(gpu_codec, "nvimgcodec_problem", lambda: None)
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    layout, choice = _choose(files[CASES[1][0]], "cuda")
    assert choice.on_gpu and choice.plan.route == "gpu" and choice.declined == ()
    # a series batch, not the file, meets the size rule: the same slice joins the GPU only in a large batch
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 10 * layout.decoded_nbytes)
    _, frames = compressed.read_frames(layout)
    infos = compressed.check_frames(layout, frames)
    assert not route.choose(layout, frames, infos, "cuda").on_gpu
    assert route.choose(layout, frames, infos, "cuda", batch_frames=20).on_gpu


def test_both_layouts_share_one_image_pixel_base(files):
    from kvdicom._header.layout import ImagePixel

    native_path = files[CASES[0][0]].with_name("native.dcm")
    write_dicom(DicomSpec(frames=2, rows=32, cols=32, **S16), native_path)
    native, encapsulated = kvdicom.inspect(native_path), kvdicom.inspect(files[CASES[1][0]])
    assert isinstance(native, ImagePixel) and isinstance(encapsulated, ImagePixel)
    assert (native.compressed, encapsulated.compressed) == (False, True)
    for layout in (native, encapsulated):  # the Image Pixel facts mean the same for both
        assert layout.frame_shape == (32, 32) and layout.decoded_nbytes == 2 * 32 * 32 * 2

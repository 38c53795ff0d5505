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


GPU_CASES = [DicomSpec(rows=32, cols=32, transfer_syntax=ts, **S16) for ts in ("htj2k_lossless", "jpeg2000_lossless")]
GPU_CASES.append(DicomSpec(rows=32, cols=32, bits_allocated=8, bits_stored=8, signed=False, samples_per_pixel=3,
                           photometric="YBR_FULL_422", transfer_syntax="jpeg_baseline"))


@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.transfer_syntax)
def test_a_gpu_choice_reads_no_field_of_one_files_own(tmp_path, monkeypatch, case):
    """What lets ``Choices`` make one GPU choice for a series' slices alike: the choice reads none of
    ``PER_FILE_FIELDS`` (every attribute read is recorded, except ``dataclasses.replace`` copying them)."""
    import dataclasses
    import sys

    from fixtures.encode import unavailable

    if reason := unavailable(case.transfer_syntax):
        pytest.skip(reason)
    monkeypatch.setattr(gpu_codec, "nvimgcodec_problem", lambda: None)
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    write_dicom(case, tmp_path / "f.dcm")
    layout = kvdicom.inspect(tmp_path / "f.dcm")
    _, frames = compressed.read_frames(layout)
    infos = compressed.check_frames(layout, frames)
    read = set()

    class Recording(type(layout)):
        def __getattribute__(self, name):
            if name in route.PER_FILE_FIELDS and not sys._getframe(1).f_code.co_filename.endswith("dataclasses.py"):
                read.add(name)
            return object.__getattribute__(self, name)

    recorded = Recording(**{f.name: getattr(layout, f.name) for f in dataclasses.fields(layout)})
    choice = route.choose(recorded, frames, infos, "cuda", batch_frames=4)
    assert choice.on_gpu, choice
    assert read == set(), f"a GPU choice read {read}: slices differing there would share a wrong choice"


def test_a_series_makes_one_gpu_choice_for_slices_alike_and_every_host_choice(files, monkeypatch):
    monkeypatch.setattr(gpu_codec, "nvimgcodec_problem", lambda: None)
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    made = []
    real = route.choose
    monkeypatch.setattr(route, "choose", lambda *a, **k: (made.append(a[0]), real(*a, **k))[1])
    layout = kvdicom.inspect(files[CASES[1][0]])  # HTJ2K: the GPU takes it
    _, frames = compressed.read_frames(layout)
    infos = compressed.check_frames(layout, frames)
    choices = route.Choices()
    import dataclasses

    other_file = dataclasses.replace(layout, path="elsewhere.dcm", file_id=(1, 2, 3))
    first = choices.choose(layout, frames, infos, "cuda", batch_frames=8)
    assert choices.choose(other_file, frames, infos, "cuda", batch_frames=8) is first and len(made) == 1
    # another batch size, other codestream facts, another Image Pixel field: chosen afresh
    choices.choose(layout, frames, infos, "cuda", batch_frames=9)
    choices.choose(layout, frames, [dataclasses.replace(infos[0], precision=12)] + infos[1:], "cuda", batch_frames=8)
    choices.choose(dataclasses.replace(layout, bits_stored=12), frames, infos, "cuda", batch_frames=8)
    assert len(made) == 4
    # host choices read each frame's own bytes: never shared
    host = route.Choices()
    for _ in range(3):
        assert not host.choose(layout, frames, infos, "cpu").on_gpu
    assert len(made) == 7

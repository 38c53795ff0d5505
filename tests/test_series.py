"""kvdicom.load_series: pydicom's arrays stacked in GDCM's order, or a refusal naming the files."""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.pixels import apply_modality_lut

import kvdicom
from fixtures.encode import unavailable
from fixtures.spec import DicomSpec
from fixtures.writer import add_modality_lut, build_dataset
from kvdicom._series import headers as series_headers
from kvdicom._series import native

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
OBLIQUE = (0.866025, 0.5, 0.0, -0.5, 0.866025, 0.0)


def _normal(orientation):
    return np.cross(orientation[:3], orientation[3:])


def make_series(folder, n=4, *, spec=None, orientation=AXIAL, spacing=2.5, origin=(-10.0, 20.0, 30.0),
                uid="1.2.3.4", positions=None, instance_numbers=None, shuffle=True, pixel_spacing=(0.5, 0.75),
                syntax=None, rescale=None, **extra):
    """Write an n-slice series (file names not in slice order) and return the paths in slice order."""
    os.makedirs(folder, exist_ok=True)
    spec = spec or DicomSpec(rows=3, cols=4, bits_allocated=16, bits_stored=12, signed=True)
    if syntax:
        spec = DicomSpec(**{**spec.__dict__, "transfer_syntax": syntax})
    normal = _normal(orientation)
    names = list(range(n))
    if shuffle:
        names = names[::-1] if n < 3 else names[1::2] + names[0::2]
    paths = []
    for i in range(n):
        ds = build_dataset(DicomSpec(**{**spec.__dict__, "seed": i}))
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = f"{uid}.{i + 1}"
        if positions is None:
            ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + normal * spacing * i]
        elif positions[i] is not None:
            ds.ImagePositionPatient = list(positions[i])
        if orientation is not None:
            ds.ImageOrientationPatient = list(orientation)
        if pixel_spacing is not None:
            ds.PixelSpacing = list(pixel_spacing)
        number = (instance_numbers or list(range(1, n + 1)))[i]
        if number is not None:
            ds.InstanceNumber = number
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = rescale(i)
        for keyword, value in extra.items():
            setattr(ds, keyword, value(i) if callable(value) else value)
        path = os.path.join(folder, f"slice{names[i]:03d}.dcm")
        ds.preamble = b"\0" * 128
        ds.save_as(path, enforce_file_format=True)
        paths.append(os.path.abspath(path))
    return paths


def pydicom_volume(paths, rescale=False):
    arrays = []
    for p in paths:
        ds = pydicom.dcmread(p)
        arrays.append(apply_modality_lut(ds.pixel_array, ds) if rescale else ds.pixel_array)
    return np.stack(arrays)


def test_volume_is_pydicoms_arrays_stacked_in_position_order(tmp_path):
    paths = make_series(tmp_path / "s", 5)
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    assert info.paths == tuple(paths)
    assert info.sort_rule == "position"
    assert vol.dtype == np.int16 and vol.shape == (5, 3, 4)
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert info.spacing == pytest.approx(2.5) and info.irregularities == ()
    assert info.skipped == ()


def test_iterable_of_paths_in_any_order(tmp_path):
    paths = make_series(tmp_path / "s", 4)
    vol, info = kvdicom.load_series(reversed(paths), "cpu")
    assert info.paths == tuple(paths)
    np.testing.assert_array_equal(vol, pydicom_volume(paths))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None,
          max_examples=25)
@given(n=st.integers(1, 6), orientation=st.sampled_from([AXIAL, SAGITTAL, CORONAL, OBLIQUE]),
       spacing=st.sampled_from([-3.0, 0.625, 1.25, 5.0]), rescale=st.booleans(),
       syntax=st.sampled_from(["explicit_le", "implicit_le", "explicit_be"]),
       kind=st.sampled_from(["i16s12", "u8", "u16", "f32", "rgb"]))
def test_any_small_series_equals_pydicom_stacked_in_normal_order(tmp_path_factory, n, orientation, spacing,
                                                                rescale, syntax, kind):
    spec = {"i16s12": DicomSpec(rows=3, cols=2, bits_allocated=16, bits_stored=12, signed=True),
            "u8": DicomSpec(rows=2, cols=3, bits_allocated=8, bits_stored=8),
            "u16": DicomSpec(rows=2, cols=2),
            "f32": DicomSpec(rows=2, cols=2, pixel_keyword="FloatPixelData", bits_allocated=32, bits_stored=32),
            "rgb": DicomSpec(rows=2, cols=2, bits_allocated=8, bits_stored=8, samples_per_pixel=3,
                             planar_configuration=1)}[kind]
    folder = tmp_path_factory.mktemp("series")
    slopes = (lambda i: (1.5 + i, -1024 + i)) if rescale else None
    paths = make_series(folder, n, spec=spec, orientation=orientation, spacing=spacing, syntax=syntax,
                        rescale=slopes)
    normal = _normal(orientation)
    expected = sorted(paths, key=lambda p: float(np.dot(pydicom.dcmread(p).ImagePositionPatient, normal)))
    vol, info = kvdicom.load_series(folder, "cpu", rescale=rescale)
    assert list(info.paths) == expected
    ref = pydicom_volume(expected, rescale=rescale)
    assert vol.dtype == ref.dtype and vol.shape == ref.shape
    np.testing.assert_array_equal(vol, ref)


def test_rescale_applies_each_slices_own_slope_and_intercept(tmp_path):
    paths = make_series(tmp_path / "s", 3, rescale=lambda i: (0.5 * (i + 1), -1000.0 - i))
    vol, _ = kvdicom.load_series(tmp_path / "s", "cpu", rescale=True)
    assert vol.dtype == np.float64
    np.testing.assert_array_equal(vol, pydicom_volume(paths, rescale=True))


def test_rescale_with_slices_without_slope_promotes_like_np_stack(tmp_path):
    paths = make_series(tmp_path / "s", 3, rescale=lambda i: (2.0, 1.0))
    ds = pydicom.dcmread(paths[1])
    del ds.RescaleSlope
    ds.save_as(paths[1])
    vol, _ = kvdicom.load_series(tmp_path / "s", "cpu", rescale=True)
    ref = pydicom_volume(paths, rescale=True)
    assert vol.dtype == ref.dtype == np.float64
    np.testing.assert_array_equal(vol, ref)


def test_out_is_filled_and_returned(tmp_path):
    paths = make_series(tmp_path / "s", 3)
    out = np.full((3, 3, 4), 7, dtype=np.int16)
    vol, _ = kvdicom.load_series(tmp_path / "s", "cpu", out=out)
    assert vol is out
    np.testing.assert_array_equal(out, pydicom_volume(paths))
    with pytest.raises(ValueError, match="shape"):
        kvdicom.load_series(tmp_path / "s", "cpu", out=np.empty((2, 3, 4), np.int16))


def test_instance_number_orders_when_position_is_missing(tmp_path):
    paths = make_series(tmp_path / "s", 4, positions=[None] * 4, instance_numbers=[4, 2, 3, 1])
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    assert info.sort_rule == "instance_number"
    assert info.instance_numbers == (1, 2, 3, 4)
    expected = [paths[3], paths[1], paths[2], paths[0]]
    assert info.paths == tuple(expected)
    np.testing.assert_array_equal(vol, pydicom_volume(expected))
    assert info.affine is None and info.spacing is None


def test_no_position_and_no_instance_number_is_refused(tmp_path):
    make_series(tmp_path / "s", 3, positions=[None] * 3, instance_numbers=[None] * 3)
    with pytest.raises(kvdicom.DicomLoadError, match="cannot order"):
        kvdicom.load_series(tmp_path / "s", "cpu")


def test_affine_maps_each_slice_index_to_its_image_position(tmp_path):
    make_series(tmp_path / "s", 4, orientation=OBLIQUE, spacing=1.25, pixel_spacing=(0.5, 0.75))
    _, info = kvdicom.load_series(tmp_path / "s", "cpu")
    row_cos, col_cos = np.array(OBLIQUE[:3]), np.array(OBLIQUE[3:])
    for i, path in enumerate(info.paths):
        ipp = np.array(pydicom.dcmread(path).ImagePositionPatient, dtype=float)
        for r, c in ((0, 0), (2, 3), (1, 0)):
            # DICOM PS3.3 C.7.6.2.1.1: P = IPP + column_cosines * r * dr + row_cosines * c * dc
            expected = ipp + col_cos * r * 0.5 + row_cos * c * 0.75
            np.testing.assert_allclose(info.affine @ [i, r, c, 1], [*expected, 1], atol=1e-4)
    assert info.pixel_spacing == (0.5, 0.75)
    assert info.orientation == pytest.approx(OBLIQUE)


def test_non_uniform_spacing_is_reported(tmp_path):
    z = [0.0, 1.0, 2.0, 4.0]
    make_series(tmp_path / "s", 4, positions=[(0.0, 0.0, v) for v in z])
    _, info = kvdicom.load_series(tmp_path / "s", "cpu")
    assert any("non-uniform spacing" in r for r in info.irregularities)


def test_gantry_tilt_is_reported(tmp_path):
    make_series(tmp_path / "s", 4, positions=[(0.0, 0.5 * i, 2.0 * i) for i in range(4)])
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    assert any("gantry tilt" in r for r in info.irregularities)
    assert vol.shape[0] == 4


def test_several_series_are_refused_unless_one_is_picked(tmp_path):
    for p in make_series(tmp_path / "a", 2, uid="1.2.3.1"):
        os.rename(p, tmp_path / "s" / ("a_" + os.path.basename(p))) if (tmp_path / "s").exists() else (
            os.makedirs(tmp_path / "s"), os.rename(p, tmp_path / "s" / ("a_" + os.path.basename(p))))
    make_series(tmp_path / "s", 3, uid="1.2.3.2", origin=(0.0, 0.0, 100.0))
    with pytest.raises(kvdicom.DicomLoadError, match="2 series") as info:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert "1.2.3.1" in str(info.value) and "1.2.3.2" in str(info.value)
    vol, picked = kvdicom.load_series(tmp_path / "s", "cpu", series_uid="1.2.3.1")
    assert vol.shape[0] == 2 and picked.series_uid == "1.2.3.1"


@pytest.mark.parametrize("field,value,match", [
    ("Rows", 5, "rows"),
    ("BitsAllocated", None, "dtype"),
    ("ImageOrientationPatient", list(SAGITTAL), "Orientation"),
])
def test_slices_that_cannot_stack_are_refused_naming_the_file(tmp_path, field, value, match):
    paths = make_series(tmp_path / "s", 3)
    ds = pydicom.dcmread(paths[1])
    if field == "Rows":
        ds.Rows = value
        ds.PixelData = ds.PixelData + bytes(2 * 4 * 2)
    elif field == "BitsAllocated":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = bytes(12)
    else:
        ds.ImageOrientationPatient = value
    ds.save_as(paths[1])
    with pytest.raises(kvdicom.DicomLoadError, match=match) as info:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert paths[1] in str(info.value) or paths[0] in str(info.value)


def test_duplicate_positions_are_refused(tmp_path):
    paths = make_series(tmp_path / "s", 3, positions=[(0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0)])
    with pytest.raises(kvdicom.DicomLoadError, match="same slice position") as info:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert paths[1] in str(info.value) and paths[2] in str(info.value)


def test_multi_frame_file_is_refused(tmp_path):
    make_series(tmp_path / "s", 2)
    make_series(tmp_path / "m", 1, spec=DicomSpec(frames=2, rows=3, cols=4, bits_allocated=16, bits_stored=12,
                                                  signed=True), origin=(0.0, 0.0, 50.0))
    os.rename(tmp_path / "m" / "slice000.dcm", tmp_path / "s" / "multi.dcm")
    with pytest.raises(kvdicom.DicomLoadError, match="multi-frame") as info:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert "multi.dcm" in str(info.value)


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(kvdicom.DicomLoadError, match="empty folder"):
        kvdicom.load_series(tmp_path / "empty", "cpu")


def test_non_dicom_and_image_less_files_are_skipped_and_listed(tmp_path):
    paths = make_series(tmp_path / "s", 2)
    notes = tmp_path / "s" / "README.txt"
    notes.write_text("not dicom\n" * 30)
    ds = pydicom.dcmread(paths[0])
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(ds, keyword)
    ds.SOPInstanceUID = "1.2.3.99"
    # a report, not an image: an image storage class without pixels is a truncated slice (test_hostile_series)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.BasicTextSRStorage
    ds.save_as(tmp_path / "s" / "report.dcm")
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    assert vol.shape[0] == 2
    skipped = dict(info.skipped)
    assert "not a DICOM file" in skipped[str(notes)]
    assert "no pixel data" in skipped[str(tmp_path / "s" / "report.dcm")]


def test_folder_of_only_non_dicom_files_is_refused(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "a.txt").write_text("x" * 300)
    with pytest.raises(kvdicom.DicomLoadError, match="every file was skipped"):
        kvdicom.load_series(tmp_path / "s", "cpu")


def test_truncated_and_corrupt_slices_are_refused_naming_them(tmp_path):
    paths = make_series(tmp_path / "s", 3)
    data = open(paths[2], "rb").read()
    open(paths[2], "wb").write(data[:-10])
    data = open(paths[0], "rb").read()
    open(paths[0], "wb").write(data[: data.index(b"\xe0\x7f\x10\x00")])  # cut before the pixel data
    with pytest.raises(kvdicom.DicomLoadError) as info:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert paths[0] in str(info.value) and paths[2] in str(info.value)


def test_unreadable_file_is_refused_naming_it(tmp_path, monkeypatch):
    paths = make_series(tmp_path / "s", 2)
    real_open = os.open

    def deny(path, *args, **kwargs):
        if os.fspath(path) == paths[1]:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(kvdicom.DicomLoadError, match="unreadable") as info:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert paths[1] in str(info.value)


def test_file_changed_after_its_header_was_read_is_refused(tmp_path, monkeypatch):
    paths = make_series(tmp_path / "s", 3)
    original = series_headers.read_headers

    def then_rewrite(*args, **kwargs):
        headers = original(*args, **kwargs)
        data = open(paths[1], "rb").read()
        with open(paths[1], "wb") as f:
            f.write(data[:-2])  # shorter: pixels no longer all there
        return headers

    monkeypatch.setattr(series_headers, "read_headers", then_rewrite)
    out = np.zeros((3, 3, 4), np.int16)
    with pytest.raises(kvdicom.DicomLoadError, match="changed between header and pixel read") as info:
        kvdicom.load_series(tmp_path / "s", "cpu", out=out)
    assert paths[1] in str(info.value)


def test_header_pool_gives_the_same_headers_as_in_process(tmp_path):
    paths = make_series(tmp_path / "s", 6)
    pooled = series_headers.read_headers(paths, parallel=True)
    local = series_headers.read_headers(paths, parallel=False)
    assert pooled == local
    assert all(h.layout is not None for h in pooled)


def test_slow_path_slices_load_like_fast_ones(tmp_path):
    # Lenient spellings send the headers to pydicom; the result is the same volume.
    make_series(tmp_path / "fast", 3)
    make_series(tmp_path / "slow", 3, **{"SliceThickness": lambda i: "1_0"})
    fast, fast_info = kvdicom.load_series(tmp_path / "fast", "cpu")
    slow, slow_info = kvdicom.load_series(tmp_path / "slow", "cpu")
    np.testing.assert_array_equal(fast, slow)
    assert fast_info.sort_rule == slow_info.sort_rule == "position"


@pytest.mark.gpu
def test_gpu_volume_equals_cpu_volume(cuda, tmp_path):
    make_series(tmp_path / "s", 5)
    for rescale in (False, True):
        vol, info = kvdicom.load_series(tmp_path / "s", "cuda", rescale=rescale)
        assert type(vol).__module__.startswith("cupy")
        np.testing.assert_array_equal(vol.get(), pydicom_volume(info.paths, rescale=rescale))


# The series fixtures (fixtures/series.py): the folder knows its true slice order.

from fixtures.series import SAGITTAL as FIXTURE_SAGITTAL  # noqa: E402
from fixtures.series import SeriesSpec, layout, volume_paths, write_series  # noqa: E402


def _fixture_folder(tmp_path, spec):
    folder = tmp_path / spec.case_id
    folder.mkdir()
    write_series(spec, folder)
    return folder


@pytest.mark.parametrize("folder_spec", [
    SeriesSpec(slices=6, rows=8, cols=8),
    SeriesSpec(slices=5, rows=8, cols=12, header="mr", signed=False, bits_stored=12, orientation=FIXTURE_SAGITTAL,
               transfer_syntax="implicit_le"),
    SeriesSpec(slices=4, rows=6, cols=6, transfer_syntax="explicit_be"),
    SeriesSpec(slices=5, rows=6, cols=6, non_dicom=True, dicomdir=True),
    SeriesSpec(slices=4, rows=6, cols=6, positions=False),
], ids=lambda s: s.case_id)
@pytest.mark.parametrize("rescale", [False, True])
def test_fixture_series_load_in_true_order(tmp_path, folder_spec, rescale):
    spec = folder_spec
    folder = _fixture_folder(tmp_path, spec)
    vol, info = kvdicom.load_series(folder, "cpu", rescale=rescale)
    truth = [str(p) for p in volume_paths(folder, spec)]
    assert list(info.paths) == truth
    np.testing.assert_array_equal(vol, pydicom_volume(truth, rescale=rescale))
    assert info.sort_rule == ("position" if spec.positions else "instance_number")
    skipped = {os.path.basename(p) for p, _ in info.skipped}
    assert skipped == {f.name for f in layout(spec) if f.role in ("non_dicom", "dicomdir")}


def test_fixture_irregularities_are_reported(tmp_path):
    _, info = kvdicom.load_series(_fixture_folder(tmp_path, SeriesSpec(slices=6, rows=6, cols=6, uniform=False)), "cpu")
    assert any("non-uniform" in r for r in info.irregularities)
    _, info = kvdicom.load_series(_fixture_folder(tmp_path, SeriesSpec(slices=6, rows=6, cols=6, tilt=15.0)), "cpu")
    assert any("gantry tilt" in r for r in info.irregularities)


def test_fixture_refusals(tmp_path):
    with pytest.raises(kvdicom.DicomLoadError, match="2 series"):
        kvdicom.load_series(_fixture_folder(tmp_path, SeriesSpec(slices=4, rows=6, cols=6, other_series=2)), "cpu")
    with pytest.raises(kvdicom.DicomLoadError, match="same slice position"):
        kvdicom.load_series(_fixture_folder(tmp_path, SeriesSpec(slices=4, rows=6, cols=6, duplicates=1)), "cpu")


def test_malformed_position_is_refused_naming_the_file(tmp_path):
    from fixtures import mutate

    paths = make_series(tmp_path / "s", 3)
    with open(paths[1], "rb") as f:
        data = f.read()
    with open(paths[1], "wb") as f:
        f.write(mutate.set_value(data, 0x00200032, "DS", b"abc\\1\\2 "))
    with pytest.raises(kvdicom.DicomLoadError, match="ImagePositionPatient|Image Position") as info:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert paths[1] in str(info.value)


def test_stored_bytes_are_read_straight_into_the_volume(tmp_path, monkeypatch):
    make_series(tmp_path / "s", 4)
    buffers = []
    original = native.read_all
    monkeypatch.setattr(native, "read_all", lambda layouts, host, starts: (buffers.append(host),
                                                                           original(layouts, host, starts)))
    vol, _ = kvdicom.load_series(tmp_path / "s", "cpu")
    assert len(buffers) == 1 and np.shares_memory(buffers[0], vol)  # no scratch buffer, no copy
    buffers.clear()
    vol, _ = kvdicom.load_series(tmp_path / "s", "cpu", rescale=False, out=np.empty_like(vol))
    assert np.shares_memory(buffers[0], vol)


def test_pool_results_round_trip_every_layout_field(tmp_path):
    ds = add_modality_lut(build_dataset(DicomSpec(rows=2, cols=2, bits_allocated=8, bits_stored=8)), [4, 0, 8],
                          [1, 2, 3, 4])
    ds.ImagePositionPatient, ds.InstanceNumber = [1.0, 2.0, 3.0], 7
    path = str(tmp_path / "lut.dcm")
    ds.save_as(path, enforce_file_format=True)
    header = series_headers.read_header(path)
    assert header.layout.modality.kind == "lut"
    assert series_headers.unpack(series_headers.pack(header)) == header


def test_the_parent_rebuilds_headers_equal_to_their_classes_own_and_skips_no_check(tmp_path):
    """``series_headers._rebuild`` skips ``__init__``: what it builds equals the class's own instance (hash too),
    and none of these classes has a check there that it would skip."""
    import dataclasses

    from kvdicom._header.codestream import FrameInfo
    from kvdicom._header.compressed import CompressedLayout
    from kvdicom._header.encapsulated import FrameTable
    from kvdicom._header.layout import ModalityLUT, ModalityTransform, PixelLayout
    from kvdicom._series.keys import SliceKeys

    header = series_headers.read_header(make_series(tmp_path / "s", 1, rescale=lambda i: (2.0, -3.0))[0])
    samples = [header, header.layout, header.keys, header.layout.modality, ModalityLUT(0, 2, "uint16", (4, 5)),
               FrameTable((10, 20), (((10, 10),),)), FrameInfo(512, 512, 1, 16, True, ht=True)]
    for obj in samples:
        names = tuple(f.name for f in dataclasses.fields(obj))
        rebuilt = series_headers._rebuild(type(obj), names, tuple(getattr(obj, n) for n in names))
        assert type(rebuilt) is type(obj) and rebuilt == obj and hash(rebuilt) == hash(obj), type(obj)
    for cls in (PixelLayout, CompressedLayout, ModalityTransform, ModalityLUT, FrameTable, FrameInfo, SliceKeys,
                series_headers.Header):
        assert not hasattr(cls, "__post_init__"), cls
        made_in = cls.__init__.__code__.co_filename  # "<string>": dataclasses builds __init__ with exec
        assert not made_in.endswith(".py"), f"{cls.__name__}.__init__ is written in {made_in}, not dataclass-made"


def test_cuda_without_cupy_fails_before_reading_any_file(tmp_path, monkeypatch):
    import sys

    import kvdicom._io.gpu

    make_series(tmp_path / "s", 2)
    monkeypatch.setitem(sys.modules, "cupy", None)  # any import of cupy now raises ImportError
    monkeypatch.setattr(kvdicom._io.gpu, "_ready", False)
    monkeypatch.setattr(series_headers, "list_files", lambda *a: pytest.fail("listed files before checking for CuPy"))
    with pytest.raises(kvdicom.GpuUnavailableError):
        kvdicom.load_series(tmp_path / "s", "cuda")


def test_compressed_slices_load_like_pydicom_stacked(tmp_path):
    if reason := unavailable("htj2k_lossless"):
        pytest.skip(reason)  # the GPU machine has decoders but not imagecodecs
    spec = SeriesSpec(slices=3, rows=16, cols=16, transfer_syntax="htj2k_lossless")
    folder = _fixture_folder(tmp_path, spec)
    vol, info = kvdicom.load_series(folder, "cpu")
    truth = [str(p) for p in volume_paths(folder, spec)]
    assert list(info.paths) == truth
    np.testing.assert_array_equal(vol, pydicom_volume(truth))
    packed = series_headers.pack(series_headers.read_header(truth[0]))
    assert series_headers.unpack(packed).layout.codec == "htj2k"


@pytest.mark.parametrize("keyword, value, element, count", [
    ("ImagePositionPatient", [1.0, 2.0], "(0020,0032) Image Position (Patient)", 3),
    ("ImageOrientationPatient", [1.0, 0.0, 0.0, 0.0, 1.0], "(0020,0037) Image Orientation (Patient)", 6),
    ("PixelSpacing", [0.5, 0.5, 0.5], "(0028,0030) Pixel Spacing", 2),
    ("SliceThickness", [1.0, 2.0], "(0018,0050) Slice Thickness", 1),
])
def test_a_key_of_the_wrong_count_is_refused_naming_the_file_on_both_header_paths(tmp_path, keyword, value,
                                                                                  element, count):
    """The fast path's keys (``from_raw``, the count checked once per spelling for repeated values) and pydicom's
    (``from_dataset``) refuse a wrong count alike, and ``load_series`` names the slice."""
    from kvdicom._header import fast_header
    from kvdicom._series import keys as series_keys

    paths = make_series(tmp_path / "s", 3)
    ds = pydicom.dcmread(paths[1])
    setattr(ds, keyword, value)
    ds.save_as(paths[1], enforce_file_format=True)
    why = f"{element} {tuple(value)!r} is not {count} number(s)"
    for keys in (lambda: series_keys.from_raw(paths[1], fast_header.scan(paths[1]).keys),
                 lambda: series_keys.from_dataset(paths[1], pydicom.dcmread(paths[1]))):
        with pytest.raises(kvdicom.DicomLoadError) as info:
            keys()
        assert info.value.path == paths[1] and info.value.reason == why
    with pytest.raises(kvdicom.DicomLoadError, match=os.path.basename(paths[1])):
        kvdicom.load_series(tmp_path / "s", "cpu")

"""Hostile series (issue 24): non-finite or absurd geometry, symlink loops, a missing source, a wrong out=, a
file rewritten in place with its mtime restored. Each is a clear answer: the right volume by a named rule,
or the contract's exception naming the file."""

from __future__ import annotations

import errno
import os
import time

import numpy as np
import pydicom
import pytest

import kvdicom
from tests.test_series import make_series, pydicom_volume

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1.7e308, -1.7e308],
                         ids=["nan", "inf", "-inf", "huge", "-huge"])
def test_a_non_finite_or_absurd_position_falls_back_to_instance_number_and_says_so(tmp_path, bad):
    positions = [(0.0, 0.0, 2.5 * i) for i in range(4)]
    positions[1] = (0.0, 0.0, bad)
    paths = make_series(tmp_path / "s", 4, positions=positions)
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    assert info.sort_rule == "instance_number"
    assert info.paths == tuple(paths)  # instance numbers 1..4 follow the written order
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert info.affine is None and info.spacing is None
    assert any("not usable" in note and paths[1] in note for note in info.irregularities)


def test_two_infinite_positions_are_not_one_position_and_not_a_volume_order(tmp_path):
    positions = [(0.0, 0.0, float("inf"))] * 2 + [(0.0, 0.0, 5.0)]
    paths = make_series(tmp_path / "s", 3, positions=positions)
    _, info = kvdicom.load_series(tmp_path / "s", "cpu")
    assert info.sort_rule == "instance_number" and info.paths == tuple(paths)


@pytest.mark.parametrize("orientation", [(0.0,) * 6, (float("nan"),) * 6], ids=["zeros", "nan"])
def test_an_orientation_of_zeros_or_nan_orders_by_instance_number(tmp_path, orientation):
    paths = make_series(tmp_path / "s", 3, orientation=orientation, positions=[(0.0, 0.0, z) for z in (5, 0, 10)])
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    assert info.sort_rule == "instance_number" and info.paths == tuple(paths)
    np.testing.assert_array_equal(vol, pydicom_volume(paths))


@pytest.mark.parametrize("position,orientation", [
    ((0.0, 0.0, 1e9), AXIAL), ((0.0, 0.0, 1.0000001e9), AXIAL), ((0.0, -1e9, 0.0), AXIAL),
    ((0.0, 0.0, float("nan")), AXIAL), ((float("inf"), 0.0, 0.0), AXIAL),
    ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.5, 0.0, 0.0)), ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 0.5, 0.0)),
    ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 0.50001, 0.0)), ((0.0, 0.0, 0.0), (1e200, 0.0, 0.0, 0.0, 1e200, 0.0)),
    ((0.0, 0.0, 0.0), (1e200, 1e200, 0.0, 1e200, 1e200, 0.0)), ((0.0, 0.0, 0.0), (float("inf"),) + AXIAL[1:]),
    ((0.0, 0.0, 0.0), (0.0,) * 6), (None, AXIAL), ((0.0, 0.0, 0.0), None),
], ids=lambda v: repr(v))
def test_the_whole_series_geometry_test_is_the_one_slice_rule(position, orientation):
    """``order`` tests every slice's geometry at once (``_usable_arrays``); a slice fails it exactly where
    ``usable_geometry`` says no, at the limits (1e9 mm, a normal of length 0.5) and for NaN, inf and overflow."""
    from kvdicom._series import order as series_order
    from kvdicom._series.keys import SliceKeys

    good = SliceKeys(position=(0.0, 0.0, 2.0), orientation=AXIAL)
    odd = SliceKeys(position=position, orientation=orientation)
    assert (series_order._usable_arrays([good, odd, good]) is not None) == series_order.usable_geometry(odd)


def test_unusable_geometry_and_no_instance_numbers_is_refused_naming_both_rules(tmp_path):
    make_series(tmp_path / "s", 3, positions=[(0.0, 0.0, float("nan"))] * 3, instance_numbers=[None] * 3)
    with pytest.raises(kvdicom.DicomLoadError, match="Instance Number is missing.*non-finite"):
        kvdicom.load_series(tmp_path / "s", "cpu")


def test_a_symlink_loop_in_the_folder_is_a_dicom_load_error_naming_it(tmp_path):
    make_series(tmp_path / "s", 3)
    a, b = tmp_path / "s" / "loop-a", tmp_path / "s" / "loop-b"
    os.symlink(b, a)
    os.symlink(a, b)
    with pytest.raises(kvdicom.DicomLoadError) as info:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert "loop-a" in str(info.value) and ("symbolic links" in str(info.value) or "ELOOP" in str(info.value))


def test_a_missing_source_is_file_not_found_as_for_load(tmp_path):
    with pytest.raises(FileNotFoundError) as series:
        kvdicom.load_series(tmp_path / "nowhere", "cpu")
    with pytest.raises(FileNotFoundError) as single:
        kvdicom.load(tmp_path / "nowhere.dcm", "cpu")
    assert series.value.errno == single.value.errno == errno.ENOENT
    assert not isinstance(series.value, kvdicom.DicomLoadError)


def test_out_of_the_wrong_shape_is_a_dicom_load_error_and_of_the_wrong_kind_a_value_error(tmp_path):
    make_series(tmp_path / "s", 3)
    with pytest.raises(kvdicom.DicomLoadError, match="out has shape"):
        kvdicom.load_series(tmp_path / "s", "cpu", out=np.empty((2, 3, 4), np.int16))
    with pytest.raises(ValueError, match="C-contiguous"):
        kvdicom.load_series(tmp_path / "s", "cpu", out=np.empty((3, 4, 3), np.int16).transpose(0, 2, 1))


def test_a_slice_rewritten_in_place_with_its_mtime_restored_is_refused(tmp_path, monkeypatch):
    from kvdicom._series import headers as series_headers

    paths = make_series(tmp_path / "s", 3)
    real = series_headers.read_headers

    def then_rewrite(*args, **kwargs):
        headers = real(*args, **kwargs)
        st = os.stat(paths[1])
        ds = pydicom.dcmread(paths[1])
        ds.PixelData = bytes(len(ds.PixelData))  # same size, other pixels
        # a rewrite within the clock tick that wrote the file leaves even its ctime as it was, which no stat can
        # see (the kernel's coarse clock: 4 ms at HZ=250), so let the tick pass first, as bench/test_fuzz.py's
        # rewrite_keep_mtime does, and check that the ctime moved: the test's premise, not kvdicom's
        time.sleep(0.02)
        ds.save_as(paths[1], enforce_file_format=True)
        os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime as it was
        now = os.stat(paths[1])
        assert now.st_size == st.st_size and now.st_mtime_ns == st.st_mtime_ns and now.st_ctime_ns != st.st_ctime_ns
        return headers

    monkeypatch.setattr(series_headers, "read_headers", then_rewrite)
    with pytest.raises(kvdicom.DicomLoadError, match="changed between header and pixel read") as info:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert paths[1] in str(info.value) and "ctime_ns" in str(info.value)


@pytest.mark.parametrize("tilt", [0.0, 15.0, -20.0])
def test_the_affine_places_every_slice_centre_where_its_file_says_tilted_or_not(tmp_path, tilt):
    from fixtures.series import SeriesSpec, write_series

    folder = tmp_path / "s"
    folder.mkdir()
    write_series(SeriesSpec(slices=6, rows=6, cols=6, tilt=tilt, spacing=3.0), folder)
    _, info = kvdicom.load_series(folder, "cpu")
    for k, position in enumerate(info.positions):
        np.testing.assert_allclose(info.affine @ [k, 0, 0, 1], [*position, 1], atol=1e-6)
    assert any("gantry tilt" in note for note in info.irregularities) == bool(tilt)


def test_slices_come_in_simpleitks_order_with_its_geometry(tmp_path):
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is not installed (requirements-peers.txt)")
    paths = make_series(tmp_path / "s", 5, orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    image = reader.Execute()
    assert info.paths == tuple(paths) and list(reader.GetFileNames()) == list(paths)
    np.testing.assert_allclose(info.affine[:3, 3], image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(info.affine[:3, :3], axis=0)[::-1], image.GetSpacing(), atol=1e-6)


def test_with_series_uid_a_broken_file_of_another_series_is_listed_not_fatal(tmp_path):
    paths = make_series(tmp_path / "s", 3, uid="1.2.3.4")
    broken = tmp_path / "s" / "other.dcm"
    data = open(paths[0], "rb").read()
    broken.write_bytes(data[:400])  # cut inside its header: unreadable, its series unknown
    with pytest.raises(kvdicom.DicomLoadError, match="other.dcm"):
        kvdicom.load_series(tmp_path / "s", "cpu")  # without series_uid the folder is refused, naming it
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu", series_uid="1.2.3.4")
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert [p for p, _ in info.skipped] == [str(broken)] and "unreadable" in info.skipped[0][1]


def test_an_image_slice_cut_inside_its_header_is_refused_not_silently_dropped(tmp_path):
    paths = make_series(tmp_path / "s", 4)
    data = open(paths[2], "rb").read()
    rows_at = data.index(b"\x28\x00\x10\x00")  # (0028,0010) Rows
    with open(paths[2], "wb") as f:
        f.write(data[:rows_at])  # DICM and the CT Image Storage class are there, Rows and the pixels are not
    with pytest.raises(kvdicom.DicomLoadError, match="without pixel data: truncated") as info:
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert paths[2] in str(info.value)


def test_the_bounded_reader_names_its_path_as_pydicoms_eof_warning_needs(tmp_path):
    # pydicom's read_dataset warns "<details> in file " + fp.name on an EOFError: an integer name (the descriptor)
    # turned a truncated header's refusal into "TypeError: can only concatenate str (not "int") to str"
    from kvdicom._io.bounded_file import BoundedReader

    path = tmp_path / "f.dcm"
    path.write_bytes(b"\0" * 200)
    with BoundedReader(path) as fp:
        assert fp.name == str(path)
        assert ("Unexpected end of file in file " + getattr(fp, "name", "<no filename>")).endswith(str(path))

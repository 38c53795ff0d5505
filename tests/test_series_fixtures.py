"""Series fixtures: per-slice geometry, shuffled names, the variants load_series must handle, the cache."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from bench import peers
from fixtures.cache import Corpus, series_size
from fixtures.headers import normal
from fixtures.oracle import pydicom_pixels
from fixtures.profiles import CT_SERIES, MR_SERIES, series_profile_specs
from fixtures.series import SAGITTAL, SeriesSpec, layout, volume_paths, write_series

SMALL = SeriesSpec(slices=6, rows=8, cols=8)


def _write(tmp_path, spec):
    folder = tmp_path / spec.case_id
    folder.mkdir()
    write_series(spec, folder)
    return folder


def _positions_along_normal(paths):
    out = []
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        n = normal([float(v) for v in ds.ImageOrientationPatient])
        out.append(float(np.dot([float(v) for v in ds.ImagePositionPatient], n)))
    return np.array(out)


@pytest.mark.parametrize("series", [SMALL, SeriesSpec(slices=5, rows=8, cols=12, header="mr", signed=False,
                                                    bits_stored=12, orientation=SAGITTAL,
                                                    transfer_syntax="implicit_le")],
                         ids=lambda s: s.case_id)
def test_one_series_one_file_per_slice_names_shuffled(tmp_path, series):
    spec = series
    folder = _write(tmp_path, spec)
    paths = volume_paths(folder, spec)
    assert sorted(os.listdir(folder)) == sorted(p.name for p in paths)
    assert [p.name for p in paths] != sorted(p.name for p in paths), "file names are in slice order"
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    assert [h.InstanceNumber for h in headers] == list(range(1, spec.slices + 1))
    assert len({h.SeriesInstanceUID for h in headers}) == 1 and len({h.StudyInstanceUID for h in headers}) == 1
    assert len({h.SOPInstanceUID for h in headers}) == spec.slices
    np.testing.assert_allclose(np.diff(_positions_along_normal(paths)), spec.spacing, atol=1e-3)
    # every slice has its own pixels, and pydicom's sorted stack is the volume in this order
    volume = peers.pydicom_series(folder)
    assert volume.shape == (spec.slices, spec.rows, spec.cols)
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(volume[i], pydicom_pixels(p))
    assert not np.array_equal(volume[0], volume[1])


def test_simpleitk_sorts_the_series_in_the_same_order(tmp_path):
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK is not installed")
    for spec in (SMALL, SeriesSpec(slices=6, rows=8, cols=8, tilt=12.0),
                 SeriesSpec(slices=6, rows=8, cols=8, header="mr", orientation=SAGITTAL)):
        folder = _write(tmp_path, spec)
        names = [os.path.basename(n) for n in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))]
        assert names == [p.name for p in volume_paths(folder, spec)]


def test_non_uniform_spacing_leaves_one_wider_gap(tmp_path):
    spec = SeriesSpec(slices=6, rows=8, cols=8, spacing=2.0, uniform=False)
    steps = np.diff(_positions_along_normal(volume_paths(_write(tmp_path, spec), spec)))
    np.testing.assert_allclose(steps, [2.0, 2.0, 3.0, 2.0, 2.0], atol=1e-3)


def test_gantry_tilt_tilts_the_plane_not_the_table(tmp_path):
    spec = SeriesSpec(slices=4, rows=8, cols=8, spacing=1.0, tilt=15.0)
    paths = volume_paths(_write(tmp_path, spec), spec)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    assert all(float(h.GantryDetectorTilt) == 15.0 for h in headers)
    orientation = [float(v) for v in headers[0].ImageOrientationPatient]
    np.testing.assert_allclose(orientation[3:], [0, math.cos(math.radians(15)), math.sin(math.radians(15))], atol=1e-6)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    np.testing.assert_allclose(np.diff(positions, axis=0), [[0, 0, 1.0]] * 3, atol=1e-4)  # the table moves along z
    steps = np.diff(positions @ np.array(normal(orientation)))
    np.testing.assert_allclose(steps, math.cos(math.radians(15)), atol=1e-4)  # not along the slice normal


def test_variants_missing_positions_other_series_duplicates_and_strangers(tmp_path):
    spec = SeriesSpec(slices=5, rows=8, cols=8, positions=False, other_series=2, duplicates=1, non_dicom=True,
                      dicomdir=True)
    folder = _write(tmp_path, spec)
    files = layout(spec)
    assert len(os.listdir(folder)) == spec.file_count == 10
    roles = {f.name: f.role for f in files}
    uids = {}
    for name, role in roles.items():
        if role == "non_dicom":
            with pytest.raises(pydicom.errors.InvalidDicomError):
                pydicom.dcmread(folder / name)
            continue
        ds = pydicom.dcmread(folder / name)
        if role == "dicomdir":
            assert "PixelData" not in ds and ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
            continue
        assert "ImagePositionPatient" not in ds and "ImageOrientationPatient" in ds
        uids.setdefault(role, set()).add(ds.SeriesInstanceUID)
    assert uids["slice"] == uids["duplicate"] and len(uids["slice"]) == 1
    assert len(uids["other_series"]) == 1 and uids["other_series"] != uids["slice"]


def test_duplicates_sit_at_the_first_slices_positions(tmp_path):
    spec = SeriesSpec(slices=4, rows=8, cols=8, duplicates=2)
    folder = _write(tmp_path, spec)
    dups = [f for f in layout(spec) if f.role == "duplicate"]
    slices = volume_paths(folder, spec)
    for f in dups:
        dup = pydicom.dcmread(folder / f.name, stop_before_pixels=True)
        orig = pydicom.dcmread(slices[f.index], stop_before_pixels=True)
        assert dup.ImagePositionPatient == orig.ImagePositionPatient and dup.AcquisitionNumber == 2
        assert dup.InstanceNumber != orig.InstanceNumber


def test_same_spec_same_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    write_series(SMALL, a)
    write_series(SMALL, b)
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in os.listdir(a))
    assert SMALL.key() != SeriesSpec(slices=6, rows=8, cols=8, seed=1).key()


def test_corpus_caches_series_atomically_and_evicts_them(tmp_path):
    corpus = Corpus(tmp_path / "corpus", cap_bytes=1 << 30)
    writer = subprocess.Popen([sys.executable, "-c", "pass"])
    writer.wait()  # a writer that is gone: its folder is stale (a live writer's is left alone)
    stale = corpus.root / f"x.series.{writer.pid}.tmp"
    stale.mkdir()
    (stale / "half.dcm").write_bytes(b"x")
    corpus = Corpus(corpus.root, cap_bytes=1 << 30)
    assert not stale.exists()
    path = corpus.ensure_series(SMALL)
    assert path.is_dir() and len(os.listdir(path)) == SMALL.slices
    assert not list(corpus.root.glob("*.tmp"))
    inode = os.stat(path / "IM00001.dcm").st_ino
    assert corpus.ensure_series(SMALL) == path and os.stat(path / "IM00001.dcm").st_ino == inode
    assert corpus.used_bytes() == sum(p.stat().st_size for p in path.iterdir())
    # a cap that holds one series only: the older folder is evicted for the new one
    newer = SeriesSpec(slices=6, rows=8, cols=8, seed=1)
    small = Corpus(corpus.root, cap_bytes=series_size(newer) + 1)
    other = small.ensure_series(newer)
    assert other.is_dir() and not path.exists()


def test_series_profiles():
    quick, full, nightly = (series_profile_specs(p) for p in ("quick", "full", "nightly"))
    assert [(s.slices, s.rows, s.header) for s in quick] == [(16, 64, "ct")]
    assert CT_SERIES in full and MR_SERIES in full and (CT_SERIES.slices, CT_SERIES.rows) == (256, 512)
    assert (MR_SERIES.slices, MR_SERIES.rows, MR_SERIES.bits_stored) == (96, 256, 12)
    assert any(s.slices == 1024 for s in nightly) and set(full) < set(nightly)
    assert len({s.case_id for s in nightly}) == len(nightly)

"""kvdicom.monai.KvDicomReader: MONAI's reader contract (arrays in ITKReader's axis order, MONAI's meta keys, RAS
affines), checked against pydicom without MONAI, and against MONAI's own readers where MONAI is installed."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

import kvdicom
from fixtures.series import SeriesSpec, write_series
from fixtures.spec import DicomSpec
from fixtures.writer import write_dicom
from kvdicom.monai import KvDicomReader

SERIES = SeriesSpec(slices=6, rows=20, cols=24, header="ct", seed=3)
OBLIQUE = SeriesSpec(slices=5, rows=16, cols=18, header="mr", signed=False, bits_stored=12, seed=4,
                     orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0), pixel_spacing=(0.8, 0.6), spacing=2.5)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("monai")
    out = {}
    for spec in (SERIES, OBLIQUE):
        out[spec] = root / spec.case_id
        out[spec].mkdir()
        write_series(spec, out[spec])
    return out


def _pydicom_series(folder):
    """(datasets sorted along the normal, their pixels as MONAI's readers give them, by pydicom)."""
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    normal = np.cross(np.asarray(datasets[0].ImageOrientationPatient[:3], float),
                      np.asarray(datasets[0].ImageOrientationPatient[3:], float))
    datasets.sort(key=lambda ds: float(normal @ np.asarray(ds.ImagePositionPatient, float)))
    rescaled = "RescaleSlope" in datasets[0]  # MONAI's readers rescale into float32 where the files say so
    return datasets, np.stack([apply_modality_lut(ds.pixel_array, ds).astype(np.float32) if rescaled
                               else ds.pixel_array for ds in datasets])


@pytest.mark.parametrize("series", [SERIES, OBLIQUE], ids=["axial-ct", "sagittal-mr"])
def test_a_series_comes_in_itk_axis_order_with_every_voxel_placed_by_the_ras_affine(folders, series):
    reader = KvDicomReader(device="cpu")
    assert reader.verify_suffix(folders[series])
    array, meta = reader.get_data(reader.read(folders[series]))
    datasets, reference = _pydicom_series(folders[series])
    np.testing.assert_array_equal(array, reference.transpose(2, 1, 0))  # (columns, rows, slices)
    assert array.dtype == reference.dtype
    assert tuple(meta["spatial_shape"]) == (series.cols, series.rows, series.slices)
    assert math.isnan(meta["original_channel_dim"]) and meta["space"] == "RAS"
    for k, ds in enumerate(datasets):  # the affine puts each voxel where the file's own tags put it
        row_cos, col_cos = np.asarray(ds.ImageOrientationPatient[:3]), np.asarray(ds.ImageOrientationPatient[3:])
        dr, dc = (float(v) for v in ds.PixelSpacing)
        for i, j in ((0, 0), (series.cols - 1, 0), (3, series.rows - 1)):
            lps = np.asarray(ds.ImagePositionPatient, float) + row_cos * dc * i + col_cos * dr * j
            ras = lps * [-1, -1, 1]
            np.testing.assert_allclose(meta["affine"] @ [i, j, k, 1], [*ras, 1], atol=1e-6)
    np.testing.assert_allclose(meta["spacing"], [series.pixel_spacing[1], series.pixel_spacing[0], series.spacing])
    np.testing.assert_allclose(meta["00200032"]["Value"], [float(v) for v in datasets[0].ImagePositionPatient])


def test_lps_affines_on_request_and_a_list_of_slices_is_the_folder(folders):
    folder = folders[SERIES]
    ras_array, ras = KvDicomReader(device="cpu").get_data(KvDicomReader(device="cpu").read(folder))
    reader = KvDicomReader(device="cpu", affine_lps_to_ras=False)
    array, lps = reader.get_data(reader.read(sorted(folder.iterdir())))
    np.testing.assert_array_equal(array, ras_array)
    np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ lps["affine"], ras["affine"])
    assert lps["space"] == "LPS"


def test_without_rescale_the_stored_values_come_back(folders):
    reader = KvDicomReader(device="cpu", rescale=False)
    array, _ = reader.get_data(reader.read(folders[SERIES]))
    volume, _ = kvdicom.load_series(folders[SERIES], "cpu")
    np.testing.assert_array_equal(array, volume.transpose(2, 1, 0))
    assert array.dtype == volume.dtype


@pytest.mark.parametrize("shape, samples", [((7, 5, 6), False), ((4, 3, 5, 3), True), ((6, 9), False),
                                           ((5, 4, 3), True), ((6, 100, 1000), False), ((3, 90, 500, 3), True)],
                         ids=["slices", "rgb-slices", "one-slice", "rgb", "slices-in-runs", "rgb-in-runs"])
@pytest.mark.parametrize("dtype", [None, np.float32], ids=["kept", "float32"])
def test_the_axes_come_reversed_and_cast_in_one_pass_as_numpy_would_give_them(shape, samples, dtype):
    from kvdicom.monai import to_monai_axes

    volume = np.random.default_rng(1).normal(0, 1e4, (2,) + shape)[1]  # a view, not its own base
    spatial = volume.ndim - int(samples)
    axes = tuple(reversed(range(spatial))) + tuple(range(spatial, volume.ndim))
    expected = np.ascontiguousarray(volume.transpose(axes)).astype(dtype or volume.dtype)
    got = to_monai_axes(volume, samples, dtype)
    assert got.dtype == expected.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


def test_a_large_volume_is_reversed_in_runs_side_by_side_but_on_a_pool_thread_in_that_thread(monkeypatch):
    """From one of kvdicom's pool threads the runs are not queued on the pool, where they could wait behind the
    very task that waits for them (:func:`kvdicom._series.volume.in_runs`)."""
    import threading

    from kvdicom import monai as kvmonai
    from kvdicom._io import host_read

    monkeypatch.setattr(kvmonai.io_tuning, "host_threads", lambda: 4)
    runs = []
    real = kvmonai._reverse_rows
    monkeypatch.setattr(kvmonai, "_reverse_rows", lambda volume, out, first, stop: runs.append(
        (threading.current_thread(), first, stop)) or real(volume, out, first, stop))
    volume = np.arange(6 * 100 * 1000, dtype=np.int16).reshape(6, 100, 1000)
    expected = volume.transpose(2, 1, 0).astype(np.float32)
    np.testing.assert_array_equal(kvmonai.to_monai_axes(volume, False, np.float32), expected)
    # 600,000 values: two runs of rows, on the pool's threads
    assert sorted((first, stop) for _, first, stop in runs) == [(0, 50), (50, 100)]
    assert threading.main_thread() not in [thread for thread, _, _ in runs]
    runs.clear()
    on_pool = host_read.pool().submit(lambda: (threading.current_thread(),
                                               kvmonai.to_monai_axes(volume, False, np.float32)))
    thread, array = on_pool.result(timeout=60)
    np.testing.assert_array_equal(array, expected)
    assert runs == [(thread, 0, 100)]  # on a pool thread: one run, in that thread


def test_a_multiframe_file_and_two_folders_as_channels(folders, tmp_path):
    path = tmp_path / "mf.dcm"
    write_dicom(DicomSpec(frames=4, rows=12, cols=10, bits_allocated=16, bits_stored=16, signed=True), path)
    reader = KvDicomReader(device="cpu")
    array, meta = reader.get_data(reader.read(path))
    expected = apply_modality_lut(pydicom.dcmread(path).pixel_array, pydicom.dcmread(path))
    np.testing.assert_array_equal(array, np.asarray(expected, np.float32).transpose(2, 1, 0))
    assert tuple(meta["spatial_shape"]) == (10, 12, 4)
    copy = tmp_path / "copy"
    shutil.copytree(folders[SERIES], copy)
    stacked, meta = reader.get_data(reader.read([folders[SERIES], copy]))
    assert stacked.shape == (2, SERIES.cols, SERIES.rows, SERIES.slices) and meta["original_channel_dim"] == 0
    np.testing.assert_array_equal(stacked[0], stacked[1])


def test_verify_suffix_takes_dicom_with_or_without_a_suffix_and_refuses_the_rest(folders, tmp_path):
    reader = KvDicomReader(device="cpu")
    bare = tmp_path / "IM0001"
    shutil.copy(next(folders[SERIES].iterdir()), bare)
    text = tmp_path / "notes.txt"
    text.write_text("not dicom")
    other = tmp_path / "README"
    other.write_bytes(b"\0" * 200)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert reader.verify_suffix(bare) and reader.verify_suffix([bare, next(folders[SERIES].iterdir())])
    assert not reader.verify_suffix(text) and not reader.verify_suffix(other) and not reader.verify_suffix(empty)
    assert not reader.verify_suffix([bare, text])


def test_what_load_series_refuses_the_reader_refuses_naming_the_file(tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_series(SeriesSpec(slices=3, rows=8, cols=8, other_series=2), mixed)
    reader = KvDicomReader(device="cpu")
    with pytest.raises(kvdicom.DicomLoadError) as refused:
        reader.read(mixed)
    with pytest.raises(kvdicom.DicomLoadError) as by_kvdicom:
        kvdicom.load_series(mixed, "cpu")
    assert str(refused.value) == str(by_kvdicom.value)
    uid = pydicom.dcmread(sorted(mixed.iterdir())[0]).SeriesInstanceUID
    array, _ = KvDicomReader(device="cpu", series_uid=uid).get_data(KvDicomReader(device="cpu", series_uid=uid)
                                                                     .read(mixed))
    assert array.shape[-1] in (2, 3)


# --- against MONAI's own readers (where MONAI is installed) -------------------------------------------------


@pytest.fixture(scope="module")
def monai():
    return pytest.importorskip("monai", reason="MONAI is not installed (pip install 'kvdicom[monai]')")


def _load(monai, reader, source):
    from monai.transforms import LoadImage

    image, meta = LoadImage(reader=reader, image_only=False)(source)
    return np.asarray(image.cpu() if hasattr(image, "cpu") else image), meta


@pytest.mark.parametrize("series", [SERIES, OBLIQUE], ids=["axial-ct", "sagittal-mr"])
def test_load_image_gives_what_pydicom_reader_gives(monai, folders, series):
    from monai.data import PydicomReader

    ours, ours_meta = _load(monai, KvDicomReader(device="cpu"), folders[series])
    theirs, theirs_meta = _load(monai, PydicomReader(), folders[series])
    np.testing.assert_allclose(ours, theirs)
    for key in ("affine", "original_affine", "spatial_shape", "spacing"):
        np.testing.assert_allclose(np.asarray(ours_meta[key]), np.asarray(theirs_meta[key]), atol=1e-5, err_msg=key)
    assert ours_meta["filename_or_obj"] == theirs_meta["filename_or_obj"]


def test_load_image_gives_what_itk_reader_gives(monai, folders):
    pytest.importorskip("itk", reason="ITK is not installed")
    from monai.data import ITKReader

    ours, ours_meta = _load(monai, KvDicomReader(device="cpu"), folders[SERIES])
    theirs, theirs_meta = _load(monai, ITKReader(), folders[SERIES])
    np.testing.assert_allclose(ours, theirs)
    np.testing.assert_allclose(np.asarray(ours_meta["affine"]), np.asarray(theirs_meta["affine"]), atol=1e-5)


def test_a_dataloader_with_two_workers_gives_the_batches_of_one(monai, folders):
    import torch
    from monai.data import DataLoader, Dataset
    from monai.transforms import LoadImaged

    data = [{"image": str(folders[SERIES])}, {"image": str(folders[SERIES])}]
    dataset = Dataset(data, transform=LoadImaged(keys="image", reader=KvDicomReader(device="cpu")))
    batches = {}
    for workers in (0, 2):
        batches[workers] = [b["image"] for b in DataLoader(dataset, batch_size=1, num_workers=workers)]
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))


def test_on_the_gpu_the_image_stays_on_the_gpu(monai, cuda, folders):
    from monai.transforms import EnsureTyped, LoadImaged

    loaded = LoadImaged(keys="image", reader=KvDicomReader(device="cuda"))({"image": str(folders[SERIES])})
    on_gpu = EnsureTyped(keys="image", device="cuda:0")(loaded)["image"]
    assert on_gpu.is_cuda
    cpu, _ = KvDicomReader(device="cpu").get_data(KvDicomReader(device="cpu").read(folders[SERIES]))
    np.testing.assert_array_equal(on_gpu.cpu().numpy(), cpu)

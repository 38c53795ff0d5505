"""The CPU volume's memory, faulted in on a thread while the caller's process parses the headers
(kvdicom._series.prefault), and given to the load only where its size is the volume's."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import kvdicom
from kvdicom import settings
from kvdicom._series import headers as series_headers
from kvdicom._series import loader as series
from kvdicom._series import prefault
from tests.test_series import make_series, pydicom_volume
from tests.test_series_stage import kvdicom_spec

DEFAULT_MIN_BYTES = settings.PREFAULT_MIN_BYTES


@pytest.fixture(autouse=True)
def any_size(monkeypatch):
    """Small test series are pre-faulted too (the size rule has its own test)."""
    monkeypatch.setattr(settings, "PREFAULT_MIN_BYTES", 0)


def predicted_bytes(paths) -> int:
    """The bytes a :class:`prefault.Prefault` of ``paths`` predicts (its memory let go at once)."""
    made = prefault.Prefault(paths)
    made.close()
    return made.nbytes


def test_a_series_too_small_to_pay_is_not_predicted(tmp_path, monkeypatch):
    paths = make_series(tmp_path / "s", 5, spec=kvdicom_spec(rows=16, cols=24))
    monkeypatch.setattr(settings, "PREFAULT_MIN_BYTES", DEFAULT_MIN_BYTES)
    assert predicted_bytes(paths) == 0
    size = (tmp_path / "s" / "slice000.dcm").stat().st_size
    monkeypatch.setattr(settings, "PREFAULT_MIN_BYTES", 5 * size)
    assert predicted_bytes(paths) == 5 * 16 * 24 * 2


def test_the_predicted_volume_is_every_file_a_slice_of_the_first_files_layout(tmp_path):
    paths = make_series(tmp_path / "s", 5, spec=kvdicom_spec(rows=16, cols=24))
    made = prefault.Prefault(paths)
    assert made.take((5, 16, 24), np.float64) is None  # another size: kept for a later take ...
    volume = made.take((5, 16, 24), np.int16)  # ... of the right one, given once
    assert volume is not None and volume.shape == (5, 16, 24) and volume.dtype == np.int16
    assert made.take((5, 16, 24), np.int16) is None


def test_never_more_than_the_files_hold(tmp_path):
    paths = make_series(tmp_path / "s", 1, spec=kvdicom_spec(rows=64, cols=64))
    # beside one 8 KiB slice, 40 tiny files: 41 slices of 8 KiB would be more than the folder holds
    small = []
    for i in range(40):
        (tmp_path / "s" / f"note{i:02d}.txt").write_text("x")
        small.append(str(tmp_path / "s" / f"note{i:02d}.txt"))
    assert predicted_bytes(paths + small) == 0
    assert predicted_bytes(paths + small[:1]) == 0
    assert predicted_bytes(paths) == 64 * 64 * 2


def test_a_compressed_first_file_predicts_nothing(tmp_path):
    pytest.importorskip("openjpeg")
    from tests.test_series_decode import write_series

    made = prefault.Prefault(write_series(tmp_path / "s", ["jpeg2000_lossless", "jpeg2000_lossless"]))
    assert made.take((2, 32, 32), np.int16) is None


@pytest.fixture
def taken(monkeypatch):
    """CPU loads with the headers parsed in this process; records what each Prefault gave."""
    monkeypatch.setattr(series_headers, "use_pool", lambda count: False)
    given = []

    class Recorded(prefault.Prefault):
        def take(self, shape, dtype):
            array = super().take(shape, dtype)
            given.append(array)
            return array

    monkeypatch.setattr(series, "Prefault", Recorded)
    return given


@pytest.fixture
def made(taken, monkeypatch):
    """Every Prefault a load makes (recorded by ``taken`` too)."""
    instances = []

    class Kept(series.Prefault):
        def __init__(self, paths, first=None):
            super().__init__(paths, first)
            instances.append(self)

    monkeypatch.setattr(series, "Prefault", Kept)
    return instances


@pytest.mark.parametrize("rescale", [False, True])
def test_a_cpu_series_is_read_into_the_memory_faulted_in_meanwhile(tmp_path, taken, rescale):
    paths = make_series(tmp_path / "s", 6, spec=kvdicom_spec(rows=16, cols=24),
                        rescale=lambda i: (0.5 + i, -1024.0 + i))
    volume, info = kvdicom.load_series(tmp_path / "s", "cpu", rescale=rescale)
    assert info.paths == tuple(paths)
    np.testing.assert_array_equal(volume, pydicom_volume(paths, rescale=rescale))
    used = [a for a in taken if a is not None]
    assert len(used) == 1  # the stored volume: the volume itself, or the scratch a rescale decodes from
    if rescale:
        assert volume.dtype == np.float64 and not np.shares_memory(volume, used[0])
    else:
        assert np.shares_memory(volume, used[0])


def test_a_folder_with_another_file_leaves_the_volume_to_a_fresh_allocation(tmp_path, taken):
    paths = make_series(tmp_path / "s", 4, spec=kvdicom_spec(rows=16, cols=24))
    (tmp_path / "s" / "notes.txt").write_text("not DICOM" * 400)  # 5 files: a prediction one slice too long
    volume, _ = kvdicom.load_series(tmp_path / "s", "cpu")
    assert taken and all(a is None for a in taken)
    np.testing.assert_array_equal(volume, pydicom_volume(paths))


def test_a_load_into_out_or_onto_the_gpu_makes_no_prediction(tmp_path, taken, monkeypatch):
    made = []
    monkeypatch.setattr(series, "Prefault", lambda paths: made.append(paths))
    make_series(tmp_path / "s", 4, spec=kvdicom_spec(rows=16, cols=24))
    out = np.empty((4, 16, 24), np.int16)
    kvdicom.load_series(tmp_path / "s", "cpu", out=out)
    assert made == []


def test_a_failed_load_drops_the_memory(tmp_path, made):
    make_series(tmp_path / "s", 3, spec=kvdicom_spec(rows=16, cols=24))
    narrow = make_series(tmp_path / "t", 1, spec=kvdicom_spec(rows=16, cols=20), origin=(0.0, 0.0, 99.0))
    shutil.copy(narrow[0], tmp_path / "s" / "z_narrow.dcm")  # a slice of other columns: not one volume
    with pytest.raises(kvdicom.DicomLoadError, match="columns"):
        kvdicom.load_series(tmp_path / "s", "cpu")
    assert made and made[0].array is None and made[0]._thread is None


def test_no_room_for_the_prediction_leaves_the_volume_to_the_load(tmp_path, taken, monkeypatch):
    paths = make_series(tmp_path / "s", 4, spec=kvdicom_spec(rows=16, cols=24))
    real_empty = np.empty
    calls = []

    def empty(shape, dtype=float, **kw):  # the thread's allocation fails, the load's does not
        if prefault.threading.current_thread().name == "kvdicom-prefault":
            calls.append(shape)
            raise MemoryError("no room")
        return real_empty(shape, dtype, **kw)

    monkeypatch.setattr(prefault.np, "empty", empty)
    errors = []
    monkeypatch.setattr(prefault.threading, "excepthook", errors.append)
    volume, _ = kvdicom.load_series(tmp_path / "s", "cpu")
    assert calls and errors == [] and all(a is None for a in taken)
    np.testing.assert_array_equal(volume, pydicom_volume(paths))


def test_a_prediction_of_another_size_is_dropped_before_the_volume_is_allocated(tmp_path, made, monkeypatch):
    paths = make_series(tmp_path / "s", 4, spec=kvdicom_spec(rows=16, cols=24), uid="1.2.3.4")
    make_series(tmp_path / "t", 2, spec=kvdicom_spec(rows=16, cols=24), uid="1.2.3.5", origin=(0.0, 0.0, 90.0))
    for i, other in enumerate(sorted((tmp_path / "t").iterdir())):
        shutil.copy(other, tmp_path / "s" / f"z_other{i}.dcm")  # 6 files, 4 of the series asked for
    held = []
    real_empty = series._empty
    monkeypatch.setattr(series, "_empty", lambda *a, **k: held.append(made[0].array) or real_empty(*a, **k))
    volume, info = kvdicom.load_series(tmp_path / "s", "cpu", series_uid="1.2.3.4")
    assert made[0].nbytes == 6 * 16 * 24 * 2 and held == [None]  # nothing held beside the volume
    assert info.paths == tuple(paths)
    np.testing.assert_array_equal(volume, pydicom_volume(paths))


def test_a_freed_volume_of_the_predicted_size_is_taken_without_a_stat_a_file(tmp_path, monkeypatch):
    """Memory a freed volume left is no new allocation, so the files' sizes need not bound it: one ``stat``
    (the first file's, for the size rule), not one a file on every load of a series loaded before."""
    from kvdicom._io import host_memory

    monkeypatch.setattr(settings, "HOST_CACHE_MIN_BYTES", 1024)
    host_memory.clear()
    paths = make_series(tmp_path / "s", 6, spec=kvdicom_spec(rows=16, cols=24))
    first = kvdicom.inspect(paths[0])
    freed = host_memory.fresh(6 * first.nbytes)
    del freed  # kept for the next load of its size
    stats = []
    real_stat = prefault.os.stat
    monkeypatch.setattr(prefault.os, "stat", lambda p, *a, **k: stats.append(p) or real_stat(p, *a, **k))
    made = prefault.Prefault(paths, first)
    assert made.nbytes == 6 * first.nbytes and stats == [paths[0]]
    assert made.take((6, 16, 24), np.int16) is not None
    made.close()
    host_memory.clear()
    stats.clear()
    made = prefault.Prefault(paths, first)  # nothing kept: the prediction is bounded by the files, as before
    assert made.nbytes == 6 * first.nbytes and len(stats) == 1 + len(paths)
    made.close()

"""A long native series on the CPU is read into the slots its Instance Numbers predict while the header workers
parse (``kvdicom._series.predicted``); every slice not read into its own slot is read again after the sort."""

from __future__ import annotations

import os

import numpy as np
import pytest

import kvdicom
from kvdicom._io import host_read
from kvdicom._series import headers as series_headers
from kvdicom._series import predicted
from tests.test_series import make_series, pydicom_volume
from tests.test_series_stage import kvdicom_spec

SPEC = kvdicom_spec(rows=16, cols=24)


@pytest.fixture
def made(monkeypatch):
    """Headers from the process pool in several chunks; the ``Predicted`` of each load, and every file the
    reads after the sort read again."""
    monkeypatch.setattr(series_headers, "use_pool", lambda count: True)
    monkeypatch.setattr(series_headers, "CHUNKS_PER_WORKER", 64)
    loads, again = [], []
    real_read, real_raw = predicted.read, predicted.Predicted.raw

    def raw(self, ordered):
        indices = [self._index[id(h)] for h in ordered]
        start = self.slots.get(indices[0], 0)
        start = 0 if start + len(ordered) > self.files else start
        again.extend(h.path for k, (h, i) in enumerate(zip(ordered, indices)) if self.slots.get(i) != start + k)
        return real_raw(self, ordered)

    monkeypatch.setattr(predicted, "read", lambda *a: loads.append(real_read(*a)) or loads[-1])
    monkeypatch.setattr(predicted.Predicted, "raw", raw)
    return loads, again


def _load(folder):
    vol, info = kvdicom.load_series(folder, "cpu")
    return vol, info


@pytest.mark.parametrize("task_files", [1, 32], ids=["a-task-a-batch", "the-rest-at-the-end"])
@pytest.mark.parametrize("falling", [False, True], ids=["numbers-climb", "numbers-fall"])
def test_slices_are_read_into_their_own_slots_while_the_headers_come_in(tmp_path, made, falling, task_files,
                                                                         monkeypatch):
    """Instance Numbers that climb or fall with the position: every slice read once, into the volume's memory."""
    from kvdicom import settings

    monkeypatch.setattr(settings, "PREDICTED_TASK_FILES", task_files)
    n = 9
    numbers = list(range(n, 0, -1)) if falling else None
    paths = make_series(tmp_path / "s", n, spec=SPEC, instance_numbers=numbers)  # file names not in slice order
    vol, info = _load(tmp_path / "s")
    loads, again = made
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert info.paths == tuple(paths)
    assert again == [] and len(loads[0].slots) == n
    assert np.shares_memory(vol, loads[0].buffer)


def test_wrong_instance_numbers_are_read_again_into_the_right_slots(tmp_path, made):
    n = 9
    paths = make_series(tmp_path / "s", n, spec=SPEC, instance_numbers=[3, 1, 2, 9, 4, 8, 5, 7, 6])
    vol, info = _load(tmp_path / "s")
    _, again = made
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert info.paths == tuple(paths) and again  # not all where the numbers said


def test_a_file_that_is_no_slice_shifts_the_volume_within_the_slots(tmp_path, made):
    """Ten files, nine slices numbered against the position: slots 1-9 hold them and the volume is a view there."""
    n = 9
    paths = make_series(tmp_path / "s", n, spec=SPEC, instance_numbers=list(range(n, 0, -1)))
    (tmp_path / "s" / "zz-notes.txt").write_bytes(b"not DICOM" * 500)
    vol, info = _load(tmp_path / "s")
    loads, again = made
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert [p for p, _ in info.skipped] == [str(tmp_path / "s" / "zz-notes.txt")]
    assert again == [] and np.shares_memory(vol, loads[0].buffer) and loads[0].files == n + 1


def test_slices_without_positions_are_read_after_the_sort(tmp_path, made):
    n = 6
    paths = make_series(tmp_path / "s", n, spec=SPEC, positions=[None] * n)
    vol, info = _load(tmp_path / "s")
    loads, again = made
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert info.sort_rule == "instance_number" and loads[0].slots == {} and len(again) == n


def test_a_failed_first_read_is_read_again_after_the_sort(tmp_path, made, monkeypatch):
    n = 9
    paths = make_series(tmp_path / "s", n, spec=SPEC)
    calls = []
    real = predicted._read_run

    def fails_once(*a):
        calls.append(len(a[0]))
        if len(calls) == 1:
            raise OSError("lost")
        real(*a)

    monkeypatch.setattr(predicted, "_read_run", fails_once)
    vol, _ = _load(tmp_path / "s")
    _, again = made
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert len(again) == calls[0] > 0  # exactly the files of the failed run


def test_a_slice_truncated_after_its_header_is_refused_naming_it(tmp_path, made, monkeypatch):
    n = 9
    paths = make_series(tmp_path / "s", n, spec=SPEC)
    victim = paths[4]
    real = series_headers.header_batches

    def batches(paths, *a, **k):
        for batch in real(paths, *a, **k):
            if any(h.path == victim for _, h in batch):
                os.truncate(victim, os.path.getsize(victim) - 100)
            yield batch

    monkeypatch.setattr(series_headers, "header_batches", batches)
    with pytest.raises(kvdicom.DicomLoadError) as caught:
        _load(tmp_path / "s")
    assert caught.value.path == victim
    loads, again = made
    index = loads[0].headers.index(next(h for h in loads[0].headers if h.path == victim))
    assert index not in loads[0].slots and victim in again  # its first read failed; the read after the sort says so


def test_only_the_series_asked_for_takes_slots(tmp_path, made):
    n = 9
    paths = make_series(tmp_path / "s", n, spec=SPEC, uid="1.2.3.4")
    make_series(tmp_path / "other", n, spec=SPEC, uid="1.2.3.5", origin=(0.0, 0.0, 500.0))
    for name in os.listdir(tmp_path / "other"):
        os.rename(tmp_path / "other" / name, tmp_path / "s" / f"other-{name}")
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu", series_uid="1.2.3.4")
    loads, _ = made
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    others = {i for i, h in enumerate(loads[0].headers) if h.keys.series_uid == "1.2.3.5"}
    assert others and not others & set(loads[0].slots)


def test_a_load_on_a_kvdicom_pool_thread_reads_there(tmp_path, made):
    """Called on one of kvdicom's read threads (a Dask task may be): the reads run in that thread, not behind it."""
    n = 9
    paths = make_series(tmp_path / "s", n, spec=SPEC)
    vol, _ = host_read.pool().submit(_load, tmp_path / "s").result(timeout=60)
    loads, again = made
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert again == [] and len(loads[0].slots) == n


def test_predicted_reads_off_reads_after_the_sort(tmp_path, made, monkeypatch):
    from kvdicom import settings
    from kvdicom._series import native

    monkeypatch.setattr(settings, "PREDICTED_READS", False)
    read = []
    real = native.read_native
    monkeypatch.setattr(native, "read_native", lambda layouts, *a: (read.append(len(layouts)), real(layouts, *a)))
    paths = make_series(tmp_path / "s", 9, spec=SPEC)
    vol, _ = _load(tmp_path / "s")
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert made[0] == [] and read == [9]

"""kvdicom._io.host_memory: a freed large host volume's memory is kept for the next load of that size, and only
once nothing refers to it any more.

The size rule (``settings.HOST_CACHE_MIN_BYTES``, 32 MiB) is lowered here, so that small test series use it.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import kvdicom
from kvdicom import settings
from kvdicom._io import host_memory
from tests.test_series import make_series, pydicom_volume
from tests.test_series_stage import kvdicom_spec


@pytest.fixture(autouse=True)
def small_volumes_kept(monkeypatch):
    monkeypatch.setattr(settings, "HOST_CACHE_MIN_BYTES", 1024)
    monkeypatch.setattr(settings, "_current", settings.Settings())
    host_memory.clear()
    yield
    host_memory.clear()


@pytest.fixture
def series(tmp_path):
    paths = make_series(tmp_path / "s", 6, spec=kvdicom_spec(rows=16, cols=24), rescale=lambda i: (1.5, -1024.0 + i))
    return str(tmp_path / "s"), paths


def _load(folder, **kwargs):
    volume, _ = kvdicom.load_series(folder, "cpu", **kwargs)
    return volume


def test_a_freed_volume_is_kept_and_the_next_load_of_its_size_reuses_it(series):
    folder, _ = series
    volume = _load(folder)
    where, nbytes = volume.ctypes.data, volume.nbytes
    assert host_memory.kept_bytes() == 0  # in use
    del volume
    assert host_memory.kept_bytes() == nbytes
    again = _load(folder)
    assert again.ctypes.data == where and host_memory.kept_bytes() == 0


def test_a_reused_volume_is_written_whole(series):
    folder, paths = series
    expected = pydicom_volume(paths)
    for rescale in (False, True):
        volume = _load(folder, rescale=rescale)
        volume.view(np.uint8)[:] = 0xA5  # what the last user left in it
        del volume
        again = _load(folder, rescale=rescale)
        reference = expected if not rescale else pydicom_volume(paths, rescale=True)
        assert again.dtype == reference.dtype and np.array_equal(again, reference)


def test_memory_a_view_still_uses_is_never_reused(series):
    folder, _ = series
    volume = _load(folder)
    one_slice, kept = volume[2], volume[2].copy()
    del volume
    gc.collect()
    assert host_memory.kept_bytes() == 0
    other = _load(folder)
    other[:] = 0
    assert not np.shares_memory(one_slice, other) and np.array_equal(one_slice, kept)
    del one_slice
    assert host_memory.kept_bytes() == other.nbytes


def test_large_single_file_loads_use_it_too(tmp_path):
    (path,) = make_series(tmp_path / "f", 1, spec=kvdicom_spec(rows=64, cols=64))
    array = kvdicom.load(path, "cpu")
    nbytes = array.nbytes
    del array
    assert host_memory.kept_bytes() == nbytes
    assert np.array_equal(kvdicom.load(path, "cpu"), pydicom_volume([path])[0])


def test_nothing_is_kept_with_host_cache_bytes_0_or_beyond_the_limit(series):
    folder, _ = series
    with kvdicom.configure(host_cache_bytes=0):
        del_volume = _load(folder)
        del del_volume
        assert host_memory.kept_bytes() == 0
    volume = _load(folder)
    nbytes = volume.nbytes
    with kvdicom.configure(host_cache_bytes=nbytes - 1):
        del volume
        assert host_memory.kept_bytes() == 0


def test_the_most_recently_freed_are_kept_within_the_limit():
    with kvdicom.configure(host_cache_bytes=5000):
        first, second, third = (host_memory.empty((n,), np.uint8) for n in (2000, 2100, 2200))
        del first, second
        assert host_memory.kept_bytes() == 4100
        del third  # 6300 bytes: the oldest (2000) goes
        assert host_memory.kept_bytes() == 4300
        assert host_memory.reuse(1000) is None  # nothing kept is within a quarter more than 1000 bytes
        taken = host_memory.reuse(2000)  # 2100 and 2200 both are: the more recently freed is taken
        assert taken.nbytes == 2000 and host_memory.kept_bytes() == 2100


@pytest.mark.parametrize("value", [-1, 1.5, True, "1G"])
def test_a_bad_host_cache_bytes_is_a_value_error(value):
    with pytest.raises(ValueError, match="host_cache_bytes"):
        kvdicom.configure(host_cache_bytes=value)


def test_a_forked_child_starts_with_nothing_kept():
    array = host_memory.empty((4096,), np.uint8)
    del array
    assert host_memory.kept_bytes() == 4096
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it inherited as kept, and leave without running pytest's teardown
        os.write(write, str(host_memory.kept_bytes()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 64) == b"0"
    assert host_memory.kept_bytes() == 4096  # the parent keeps its own


def test_a_forked_child_writing_into_a_volume_leaves_the_parents_unchanged():
    """Copy-on-write as for any NumPy array: a child (a DataLoader worker forked with a volume in hand) that
    writes into it must not change the parent's data."""
    array = host_memory.empty((64, 64), np.int16)
    array[...] = 7
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        array[...] = -1
        os.write(write, b"written")
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 64) == b"written"
    assert (array == 7).all()


def test_no_room_for_a_mapping_leaves_the_allocation_to_numpy(monkeypatch):
    def no_room(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(host_memory.mmap, "mmap", no_room)
    array = host_memory.empty((64, 64), np.int16)
    assert array.shape == (64, 64) and array.base.flags.owndata  # NumPy's own memory, not kept when freed
    del array
    assert host_memory.kept_bytes() == 0


def test_a_lower_limit_lets_kept_memory_go_at_once():
    first, second = (host_memory.empty((n,), np.uint8) for n in (3000, 4000))
    del first
    del second
    assert host_memory.kept_bytes() == 7000
    with kvdicom.configure(host_cache_bytes=4000):
        assert host_memory.kept_bytes() == 4000  # the more recently freed
    kvdicom.configure(host_cache_bytes=0)
    assert host_memory.kept_bytes() == 0

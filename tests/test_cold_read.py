"""Cold series: the files the page cache lacks are read whole with O_DIRECT (kvdicom._io.cold_read) and walked
and copied from that one read, never through the page cache; cached files keep the buffered reads."""

from __future__ import annotations

import errno
import os
import sys

import numpy as np
import pytest

import kvdicom
from bench.ceilings import resident_fraction
from kvdicom._io import cold_read, shared_staging
from kvdicom._io.fileid import identify
from kvdicom._series import headers as series_headers
from tests.test_series import make_series
from tests.test_series_stage import kvdicom_spec

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="O_DIRECT, RWF_NOWAIT: Linux only")


def drop(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def is_cached(path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return cold_read.cached(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


@pytest.fixture
def dropped(tmp_path):
    """A file of 3 pages and a bit, evicted from the page cache; skips where the kernel keeps it (tmpfs) or
    cannot say (no RWF_NOWAIT), or where its file system takes no O_DIRECT."""
    path = tmp_path / "f"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3 * 4096 + 123, np.uint8).tobytes())
    drop(path)
    if is_cached(path):
        pytest.skip("this file system keeps its files in memory, or the kernel cannot say: no cold reads here")
    if cold_read.read_whole(str(path), identify(str(path))) is None:
        pytest.skip("this file system takes no O_DIRECT")
    drop(path)
    return str(path)


def test_a_dropped_file_is_not_cached_and_a_read_one_is(dropped):
    assert not is_cached(dropped)
    with open(dropped, "rb") as f:
        f.read()
    assert is_cached(dropped)


def test_a_whole_read_holds_the_files_bytes_and_leaves_the_page_cache_alone(dropped):
    image = cold_read.read_whole(dropped, identify(dropped))
    with open(dropped, "rb") as f:
        data = f.read()
    assert image.size == len(data) and image.pread(len(data) + 99, 0) == data  # short at the end, as os.pread
    assert image.pread(10, len(data) - 4) == data[-4:] and image.pread(5, len(data)) == b""
    out = np.zeros(40, np.uint8)
    assert image.copy_into(out, len(data) - 16) == 16 and bytes(out[:16]) == data[-16:] and not out[16:].any()


def test_a_whole_read_of_another_file_than_named_is_refused(dropped):
    dev, ino, size, mtime, ctime = identify(dropped)
    assert cold_read.read_whole(dropped, (dev, ino, size, mtime + 1, ctime)) is None  # rewritten since
    assert cold_read.read_whole(dropped, (dev, ino + 1, size, mtime, ctime)) is None  # replaced


def test_a_file_system_refusing_o_direct_is_not_asked_again(dropped, monkeypatch):
    fid = identify(dropped)
    real_open = os.open

    def no_direct(path, flags, *a):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a)

    monkeypatch.setattr(cold_read, "_refused", set())
    monkeypatch.setattr(os, "open", no_direct)
    assert cold_read.read_whole(dropped, fid) is None
    fd = real_open(dropped, os.O_RDONLY)
    try:
        assert not cold_read.wanted(fd, fid)  # read buffered from now on, though still not cached
        assert not cold_read.cached(fd, fid[2])
    finally:
        os.close(fd)


def test_cached_empty_and_too_large_files_are_not_read_direct(dropped, monkeypatch):
    fid = identify(dropped)
    fd = os.open(dropped, os.O_RDONLY)
    try:
        assert cold_read.wanted(fd, fid)
        monkeypatch.setattr(cold_read.settings, "COLD_DIRECT_MAX_BYTES", fid[2] - 1)
        assert not cold_read.wanted(fd, fid)
        assert not cold_read.wanted(fd, fid[:2] + (0,) + fid[3:])
    finally:
        os.close(fd)
    with open(dropped, "rb") as f:
        f.read()
    fd = os.open(dropped, os.O_RDONLY)
    try:
        monkeypatch.setattr(cold_read.settings, "COLD_DIRECT_MAX_BYTES", 1 << 30)
        assert not cold_read.wanted(fd, fid)
    finally:
        os.close(fd)


def worker_answers(paths, direct=True):
    """The worker's task (:func:`series_headers._read_chunk_shared`) run here over ``paths``: its answers and
    each slot's bytes. Call with ``shared_staging._worker_map`` patched (monkeypatch): it is reset here, as each
    call makes a new buffer that this process, acting as the worker, must map anew."""
    shared_staging._worker_map = None
    owner = shared_staging.create()
    try:
        sizes = [os.path.getsize(p) for p in paths]
        buffer = owner.reserve(sum(sizes), pin=False)
        buffer[:] = 0
        slots = list(zip(np.cumsum([0] + sizes[:-1]).tolist(), sizes))
        answers = series_headers._read_chunk_shared(paths, slots, owner.fd, owner.size, None, direct)
        return answers, [bytes(buffer[o : o + n]) for o, n in slots]
    finally:
        owner.close()


def native_series(tmp_path):
    return make_series(tmp_path / "s", 4, spec=kvdicom_spec(rows=64, cols=72))


def compressed_series(tmp_path):
    pytest.importorskip("openjpeg")
    from tests.test_series_decode import write_series

    return write_series(tmp_path / "s", ["jpeg2000_lossless", "rle", "jpeg2000_lossless"], rows=64)


@pytest.mark.parametrize("series", [native_series, compressed_series])
def test_a_cold_chunk_is_read_once_with_o_direct_and_answers_as_a_warm_one(dropped, tmp_path, monkeypatch, series):
    """Cold, direct reads asked for: every file read whole with O_DIRECT, its header walked (fragments too) and
    its pixels copied from that read, so none enters the page cache (and the next load reads direct again); the
    answers and slots equal those of cache reads, and once cached a file is read through the cache."""
    paths = series(tmp_path)
    monkeypatch.setattr(shared_staging, "_worker_map", None)  # this process's mapping of another buffer: none
    whole = []
    real = cold_read.read_whole
    monkeypatch.setattr(cold_read, "read_whole", lambda p, fid: (whole.append(p), real(p, fid))[1])
    for path in paths:
        drop(path)
    left = [resident_fraction(p) for p in paths]  # a page may stay (ext4 kept one of four here)
    cold, cold_slots = worker_answers(paths)
    assert sorted(whole) == sorted(paths)
    assert all(r <= before for r, before in zip(map(resident_fraction, paths), left))  # none through the cache
    whole.clear()
    again, _ = worker_answers(paths)
    assert sorted(whole) == sorted(paths)  # still not cached: read direct again
    whole.clear()
    warm, warm_slots = worker_answers(paths, direct=False)  # cache reads (the default): reads through it
    assert whole == [] and all(resident_fraction(p) == 1.0 for p in paths)
    assert cold == again == warm and cold_slots == warm_slots
    assert all(type(read) is int and read > 0 for _, read, _ in warm)
    whole.clear()
    assert worker_answers(paths)[0] == warm and whole == []  # cached now: read through the cache


def test_a_file_changed_after_its_whole_read_is_read_again_from_the_file(dropped, tmp_path, monkeypatch):
    """An image of another identity than the file the header opens is not used: the header and pixels come
    from the file, as warm."""
    paths = native_series(tmp_path)
    monkeypatch.setattr(shared_staging, "_worker_map", None)
    real = cold_read.read_whole

    def then_touch(path, fid):
        image = real(path, fid)
        os.utime(path, ns=(fid[3] + 10**9, fid[3] + 10**9))  # a new identity after the whole read
        return image

    monkeypatch.setattr(cold_read, "read_whole", then_touch)
    for path in paths:
        drop(path)
    answers, slots = worker_answers(paths)
    for path, (packed, read, _), slot in zip(paths, answers, slots):
        layout = kvdicom.inspect(path)
        assert read == layout.nbytes and series_headers.unpack(packed).layout.file_id == identify(path)
        with open(path, "rb") as f:
            f.seek(layout.offset)
            assert slot[:read] == f.read(read)


def test_a_cold_series_loads_direct_where_asked_and_equal_to_pydicom(dropped, tmp_path, monkeypatch):
    """The whole load, headers and reads in the worker processes, with direct reads asked for: equal to pydicom,
    and no file's page entered the cache (every read went direct); by default, through the cache."""
    from tests.test_series import pydicom_volume

    monkeypatch.setattr(series_headers, "use_pool", lambda count: True)
    monkeypatch.setattr(series_headers, "CHUNKS_PER_WORKER", 4)
    paths = make_series(tmp_path / "s", 9, spec=kvdicom_spec(rows=64, cols=72))
    for path in paths:
        drop(path)
    left = [resident_fraction(p) for p in paths]
    with kvdicom.configure(cold_reads="direct"):  # passed on to the worker processes, which have their own
        vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    assert info.paths == tuple(paths)
    assert all(r <= before for r, before in zip(map(resident_fraction, paths), left))
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    for path in paths:
        drop(path)
    vol, _ = kvdicom.load_series(tmp_path / "s", "cpu")  # the default: through the page cache
    assert all(resident_fraction(p) == 1.0 for p in paths)
    np.testing.assert_array_equal(vol, pydicom_volume(paths))

"""Cold series read ahead: a series whose files are not cached gets every file hinted to the kernel while its headers
are parsed; a warm one gets nothing; the volume is the same either way."""

from __future__ import annotations

import os
import threading

import numpy as np
import pydicom
import pytest

import kvdicom
from bench.ceilings import drop_page_cache
from kvdicom import settings
from kvdicom._io import readahead
from kvdicom._io.readahead import Readahead
from kvdicom._series import headers as series_headers
from tests.test_series import make_series

needs_nowait = pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="no preadv2(RWF_NOWAIT) on this OS")


def _drop(paths) -> None:
    """Every file out of the page cache, or the test skipped where that cannot be done and verified (tmpfs)."""
    for path in paths:
        left = drop_page_cache(path)
        if left is None or left > 0:
            pytest.skip(f"the page cache of {path} cannot be dropped and verified here ({left})")


def _series(tmp_path, n=6):
    folder = tmp_path / "series"
    make_series(folder, n)
    return folder, series_headers.list_files(folder)[0]  # in the order the load lists them


@pytest.fixture
def hints(monkeypatch):
    """(path, nbytes) of every WILLNEED hint given."""
    given, real = [], os.posix_fadvise

    def spy(fd, offset, length, advice):
        if advice == os.POSIX_FADV_WILLNEED:
            given.append((os.readlink(f"/proc/self/fd/{fd}"), length))  # the path, resolved
        return real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    return given


@needs_nowait
def test_a_file_is_cold_once_dropped_and_warm_once_read(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(1 << 16))
    _drop([path])
    assert readahead.is_cold(str(path))
    path.read_bytes()
    assert not readahead.is_cold(str(path))


def test_what_cannot_be_asked_is_not_cold_and_never_blocks(tmp_path):
    """A FIFO listed among the files (opened without O_NONBLOCK, its open would wait for a writer forever), a
    folder, a missing file and an empty one: no hints, and no hang."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "empty").write_bytes(b"")
    answers = {}

    def ask():
        for name in ("fifo", ".", "missing", "empty"):
            answers[name] = readahead.is_cold(str(tmp_path / name))

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(10)
    assert not asker.is_alive(), "is_cold blocked"
    assert answers == {"fifo": False, ".": False, "missing": False, "empty": False}


@needs_nowait
def test_a_cold_series_hints_every_head_then_every_whole_file_and_loads_the_same_volume(tmp_path, hints,
                                                                                       monkeypatch):
    # a load of six tiny slices can end before the hints' thread first runs, and its end stops the hints (as it
    # should: ``test_close_stops_the_hints_at_the_next_file``); here they run to their end, so all are seen
    real = readahead.hint_series
    monkeypatch.setattr(readahead, "hint_series", lambda paths, stop, whole=True: real(paths, threading.Event(), whole))
    folder, paths = _series(tmp_path)
    warm, _ = kvdicom.load_series(folder, device="cpu")
    _drop(paths)
    cold, info = kvdicom.load_series(folder, device="cpu")
    resolved = [os.path.realpath(p) for p in paths]
    assert [p for p, n in hints if n == settings.READAHEAD_HEAD_BYTES] == resolved
    assert [p for p, n in hints if n == 0] == resolved
    assert len(hints) == 2 * len(paths)
    np.testing.assert_array_equal(cold, warm)
    np.testing.assert_array_equal(cold, np.stack([pydicom.dcmread(p).pixel_array for p in info.paths]))


def test_a_warm_series_starts_no_hints(tmp_path, hints):
    folder, paths = _series(tmp_path)
    for path in paths:
        with open(path, "rb") as f:
            f.read()
    kvdicom.load_series(folder, device="cpu")
    assert hints == []
    assert not Readahead(paths).started


def test_the_last_file_is_the_one_asked(tmp_path, monkeypatch):
    """The last file is the last the parse reaches: a series whose first files were read (a viewer showed them)
    but not the rest is still cold."""
    asked = []
    monkeypatch.setattr(readahead, "is_cold", lambda path: asked.append(path) or False)
    Readahead(["a", "b", "c"]).close()
    assert asked == ["c"]
    monkeypatch.setattr(settings, "READAHEAD_MIN_FILES", 4)
    Readahead(["a", "b", "c"]).close()
    assert asked == ["c"]  # too few files: not even asked


def test_close_stops_the_hints_at_the_next_file(monkeypatch):
    """A load that ends early (a refusal) does not leave a thread hinting thousands of files behind it."""
    monkeypatch.setattr(readahead, "is_cold", lambda path: True)
    first, release, done = threading.Event(), threading.Event(), []

    def slow_hint(path, nbytes=0):
        first.set()
        release.wait(10)
        done.append(path)
        return 1

    monkeypatch.setattr(readahead, "will_need", slow_hint)
    ahead = Readahead([f"f{i}" for i in range(1000)])
    assert ahead.started and first.wait(10)
    closer = threading.Thread(target=ahead.close)
    closer.start()
    release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert len(done) <= 2


def test_a_refused_series_still_stops_its_hints(tmp_path, monkeypatch):
    """The hints' thread is joined whatever the load raises."""
    folder, paths = _series(tmp_path)
    with open(paths[-1], "r+b") as f:
        f.truncate(os.path.getsize(paths[-1]) - 10)  # truncated in its pixel data
    monkeypatch.setattr(readahead, "is_cold", lambda path: True)
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(kvdicom.DicomLoadError, match=os.path.basename(paths[-1])):
        kvdicom.load_series(folder, device="cpu")
    assert "kvdicom-readahead" not in {t.name for t in threading.enumerate()} - before


def test_a_huge_file_beside_the_slices_gets_its_head_hinted_never_all_of_it(tmp_path, hints, monkeypatch):
    """A video or a large multi-frame file in the folder is skipped or refused by the load: reading it all ahead
    would fill the page cache for nothing. The workers' announcements (``will_need`` of a whole file) keep to
    the same bound."""
    folder, _ = _series(tmp_path, 3)
    huge = folder / "zz_video.bin"
    with open(huge, "wb") as f:
        f.truncate(settings.READAHEAD_MAX_FILE_BYTES + 1)  # sparse: nothing written
    paths = series_headers.list_files(folder)[0]
    readahead.hint_series(paths, threading.Event())
    given = {}
    for path, nbytes in hints:
        given.setdefault(path, []).append(nbytes)
    assert given.pop(os.path.realpath(huge)) == [settings.READAHEAD_HEAD_BYTES] * 2
    assert all(nbytes == [settings.READAHEAD_HEAD_BYTES, 0] for nbytes in given.values())
    assert len(given) == 3
    hints.clear()
    assert readahead.will_need(str(huge)) == settings.READAHEAD_HEAD_BYTES
    assert hints == [(os.path.realpath(huge), settings.READAHEAD_HEAD_BYTES)]


def test_whole_files_are_hinted_up_to_the_bytes_bound_in_listing_order(tmp_path, hints, monkeypatch):
    """A series larger than the bound would push its own first files out of the cache before the parse got
    there: past it, only heads."""
    folder, paths = _series(tmp_path, 6)
    size = os.path.getsize(paths[0])
    monkeypatch.setattr(settings, "READAHEAD_MAX_BYTES", 2 * size + 1)  # room for two files and a byte
    readahead.hint_series(paths, threading.Event())
    whole = [p for p, n in hints if n == 0]
    assert whole == [os.path.realpath(p) for p in paths[:3]]  # the third starts within the bound
    assert [p for p, n in hints if n == settings.READAHEAD_HEAD_BYTES] == [os.path.realpath(p) for p in paths]


class _InProcessPool:
    """The header pool's ``run``, each call made here and recorded (what the workers would be sent)."""

    def __init__(self):
        self.calls = []

    def run(self, calls):
        self.calls += calls
        for k, (function, args) in enumerate(calls):
            yield k, function(*args)


def test_a_headers_only_scan_asks_the_kernel_for_heads_never_for_pixel_data(tmp_path, hints, monkeypatch):
    """``kvdicom.dask.scan`` reads no pixel: on a cold tree the parent's hints and the header workers'
    announcements must not pull every file's pixel data through the page cache (a dataset larger than memory
    would be read whole, for a plan made from headers)."""
    kvdask = pytest.importorskip("kvdicom.dask")
    make_series(tmp_path / "study" / "a", 4)
    make_series(tmp_path / "study" / "b", 3, uid="1.2.3.5")
    monkeypatch.setattr(readahead, "is_cold", lambda path: True)
    pool = _InProcessPool()
    monkeypatch.setattr(series_headers, "header_pool", lambda: pool)
    monkeypatch.setattr(series_headers, "use_pool", lambda count: True)
    monkeypatch.setattr(series_headers, "header_processes", lambda: 2)
    rows = kvdask.scan(tmp_path / "study")
    assert sorted(len(r.paths) for r in rows if r.problem is None) == [3, 4]
    assert pool.calls and all(args[-1] is False for _, args in pool.calls)  # pixels=False sent to the workers
    assert hints and {nbytes for _, nbytes in hints} == {settings.READAHEAD_HEAD_BYTES}


def test_a_load_still_announces_whole_files_in_its_header_workers(tmp_path, hints, monkeypatch):
    """The same workers' run for ``load_series``, whose pixel reads follow the sort: whole files."""
    folder, paths = _series(tmp_path, 5)
    pool = _InProcessPool()
    monkeypatch.setattr(series_headers, "header_pool", lambda: pool)
    headers = series_headers.read_headers(paths, parallel=True)
    assert [h.path for h in headers] == paths and all(h.layout is not None for h in headers)
    assert pool.calls and all(args[-1] is True for _, args in pool.calls)
    assert sorted(p for p, n in hints if n == 0) == sorted(os.path.realpath(p) for p in paths)


def test_where_the_os_has_no_posix_fadvise_nothing_is_hinted_and_loads_go_on(tmp_path, monkeypatch):
    """macOS has no ``posix_fadvise``: the header workers' announcements and the read-ahead give nothing,
    rather than an AttributeError out of a load."""
    folder, paths = _series(tmp_path, 3)
    monkeypatch.delattr(os, "posix_fadvise")
    monkeypatch.setattr(readahead, "is_cold", lambda path: True)
    assert readahead.will_need(paths[0]) == 0
    assert not Readahead(paths).started
    pool = _InProcessPool()
    monkeypatch.setattr(series_headers, "header_pool", lambda: pool)
    assert all(h.layout is not None for h in series_headers.read_headers(paths, parallel=True))

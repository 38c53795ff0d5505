"""The corpus cache: written once, reused, never half-written, capped, and clear when out of room."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest

from fixtures import cache as cache_module
from fixtures.cache import Corpus, CorpusError
from fixtures.spec import DicomSpec

SMALL = DicomSpec(rows=8, cols=8)
OTHER = DicomSpec(rows=8, cols=8, seed=1)


def test_file_is_written_once_and_reused(tmp_path):
    corpus = Corpus(tmp_path, 1 << 30)
    first = corpus.ensure(SMALL)
    inode = first.stat().st_ino
    again = Corpus(tmp_path, 1 << 30).ensure(SMALL)
    assert again == first and again.stat().st_ino == inode


def test_a_crash_while_writing_leaves_no_file_under_the_final_name(tmp_path, monkeypatch):
    def crash(spec, path):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module, "write_dicom", crash)
    corpus = Corpus(tmp_path, 1 << 30)
    with pytest.raises(KeyboardInterrupt):
        corpus.ensure(SMALL)
    assert not corpus.path_for(SMALL).exists()
    assert list(tmp_path.iterdir()) == []


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_are_removed_on_open(tmp_path):
    (tmp_path / f"x.dcm.{_gone_pid()}.tmp").write_bytes(b"partial")
    (tmp_path / f"y.dcm.{os.getpid()}.tmp").write_bytes(b"ours, from an earlier attempt")
    Corpus(tmp_path, 1 << 30)
    assert list(tmp_path.iterdir()) == []


def test_a_live_sessions_temporary_file_is_left_alone(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f"x.dcm.{writer.pid}.tmp"
        live.write_bytes(b"being written by another session")
        Corpus(tmp_path, 1 << 30)
        assert live.exists()
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.parametrize("damage", ["truncate", "flip", "no record"])
def test_a_damaged_cached_file_is_regenerated_with_a_notice(tmp_path, damage, capsys):
    path = Corpus(tmp_path, 1 << 30).ensure(SMALL)
    good = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(good[:-10])
    elif damage == "flip":
        path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    else:
        cache_module.checksum_path(path).unlink()
    corpus = Corpus(tmp_path, 1 << 30)
    assert corpus.ensure(SMALL).read_bytes() == good
    assert len(corpus.notices) == 1 and path.name in corpus.notices[0] and "regenerating" in corpus.notices[0]
    assert corpus.notices[0] in capsys.readouterr().err
    assert cache_module.check_file(path) is None


def test_check_file_names_the_fault(tmp_path):
    path = tmp_path / "a.dcm"
    path.write_bytes(b"abc")
    assert "missing" in cache_module.check_file(path)
    cache_module.write_checksum(path)
    assert cache_module.check_file(path) is None
    path.write_bytes(b"abcd")
    assert "size 4 bytes, 3 recorded" in cache_module.check_file(path)
    path.write_bytes(b"abd")
    assert "hash differs" in cache_module.check_file(path)


def test_a_request_larger_than_the_cap_evicts_nothing(tmp_path):
    corpus = Corpus(tmp_path, 1 << 30)
    old = corpus.ensure(SMALL)
    corpus.cap_bytes = cache_module._size(OTHER) - 1  # OTHER alone is over the cap
    with pytest.raises(CorpusError, match="corpus cap"):
        corpus.ensure(OTHER)
    assert old.exists()


def _cap_for_one_more(first) -> int:
    """A cap that holds ``first`` or OTHER, not both."""
    return first.stat().st_size + cache_module._size(OTHER) - 1


def test_least_recently_used_file_is_evicted_to_respect_the_cap(tmp_path):
    corpus = Corpus(tmp_path, 1 << 30)
    old = corpus.ensure(SMALL)
    corpus.cap_bytes = _cap_for_one_more(old)
    os.utime(old, (1, 1))
    new = corpus.ensure(OTHER)
    assert new.exists() and not old.exists()


def test_files_in_use_are_never_evicted(tmp_path):
    corpus = Corpus(tmp_path, 1 << 30)
    kept = corpus.ensure(SMALL)
    corpus.cap_bytes = _cap_for_one_more(kept)
    with pytest.raises(CorpusError, match="corpus cap"):
        corpus.ensure(OTHER, keep={kept})
    assert kept.exists()


def test_files_in_use_make_a_request_fail_before_any_eviction(tmp_path):
    corpus = Corpus(tmp_path, 1 << 30)
    kept = corpus.ensure(SMALL)
    spare = corpus.ensure(DicomSpec(rows=8, cols=8, seed=2))
    corpus.cap_bytes = kept.stat().st_size + spare.stat().st_size + cache_module._size(OTHER) // 2
    with pytest.raises(CorpusError, match="corpus cap"):
        corpus.ensure(OTHER, keep={kept})
    assert kept.exists() and spare.exists()  # evicting spare would not have made room: it stays


def test_profile_larger_than_the_cap_fails_with_the_option_to_raise(tmp_path):
    corpus = Corpus(tmp_path, 1 << 10)
    with pytest.raises(CorpusError, match="--corpus-cap"):
        corpus.check_fits([SMALL])


def test_full_disk_gives_a_clear_message(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda p: usage(10, 10, 1 << 20))
    with pytest.raises(CorpusError, match="not enough disk space"):
        Corpus(tmp_path, 1 << 30).ensure(SMALL)
    assert list(tmp_path.iterdir()) == []


def test_specs_differing_only_in_seed_are_cached_apart(tmp_path):
    from fixtures.writer import write_dicom

    corpus = Corpus(tmp_path, 1 << 30)
    assert corpus.path_for(SMALL) != corpus.path_for(OTHER)
    first, second = corpus.ensure(SMALL), corpus.ensure(OTHER)
    fresh = tmp_path.parent / f"{tmp_path.name}-fresh.dcm"
    write_dicom(OTHER, fresh)
    assert first != second and second.read_bytes() == fresh.read_bytes() != first.read_bytes()


def test_using_a_cached_file_leaves_the_file_untouched(tmp_path):
    # kvdicom checks (device, inode, size, mtime, ctime) around every pixel read: a use that touched the file,
    # even keeping its mtime (os.utime changes the ctime), fails a load of it in flight in another process.
    corpus = Corpus(tmp_path, 1 << 30)
    path = corpus.ensure(SMALL)
    before = path.stat()
    time.sleep(0.01)
    assert Corpus(tmp_path, 1 << 30).ensure(SMALL) == path
    after = path.stat()
    assert (after.st_mtime_ns, after.st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)
    assert cache_module.last_used(path) > before.st_ctime_ns  # still marked as used, for eviction


def test_the_file_used_last_is_evicted_last_and_its_marker_goes_with_it(tmp_path):
    corpus = Corpus(tmp_path, 1 << 30)
    first, second = corpus.ensure(SMALL), corpus.ensure(OTHER)
    time.sleep(0.01)
    corpus.ensure(SMALL)  # used again: now the more recent
    assert corpus._files() == [second, first]
    corpus._make_room(corpus.cap_bytes - first.stat().st_size, keep=set())
    assert not second.exists() and not cache_module.use_marker(second).exists() and first.exists()


def test_the_checksum_record_is_in_place_before_the_file(tmp_path, monkeypatch):
    # a concurrent user that finds the file must find its record, or it "regenerates" it under the writer
    seen = []
    real_publish = cache_module._publish

    def publish(src, dst):
        seen.append(cache_module.checksum_path(Path(dst)).exists())
        return real_publish(src, dst)

    monkeypatch.setattr(cache_module, "_publish", publish)
    path = Corpus(tmp_path, 1 << 30).ensure(SMALL)
    assert seen == [True] and path.exists()


def test_a_file_another_process_put_in_place_first_is_never_replaced(tmp_path, monkeypatch):
    # A reader of the first copy (a pytest-xdist worker in kvdicom.load) checks its inode before and after
    # reading the pixels: replacing the file under it failed that load as "file changed".
    corpus = Corpus(tmp_path, 1 << 30)
    target = corpus.path_for(SMALL)
    real_write = cache_module.write_dicom
    theirs = []

    def racing_write(spec, path):  # the other writer finishes while we write
        other = tmp_path / "other.dcm"
        real_write(spec, other)
        cache_module.write_checksum(target, source=other)
        os.rename(other, target)
        theirs.append(os.open(target, os.O_RDONLY))  # and someone is reading it
        real_write(spec, path)

    monkeypatch.setattr(cache_module, "write_dicom", racing_write)
    try:
        assert corpus.ensure(SMALL) == target
        assert os.fstat(theirs[0]).st_ino == target.stat().st_ino
    finally:
        os.close(theirs[0])
    assert cache_module.check_file(target) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, target.name + ".sha256"])


def test_without_hard_links_the_file_is_renamed_into_place(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(cache_module.os, "link", no_links)
    path = Corpus(tmp_path, 1 << 30).ensure(SMALL)
    assert cache_module.check_file(path) is None and not list(tmp_path.glob("*.tmp"))


def test_a_series_another_process_put_in_place_first_is_used(tmp_path, monkeypatch):
    from fixtures.series import SeriesSpec, write_series

    spec = SeriesSpec(slices=2, rows=8, cols=8)
    corpus = Corpus(tmp_path, 1 << 30)
    target = corpus.series_path_for(spec)

    def racing_write(spec_, folder):  # the other writer finishes while we write
        other = tmp_path / "other"
        other.mkdir()
        write_series(spec_, other)
        os.rename(other, target)
        write_series(spec_, folder)

    monkeypatch.setattr(cache_module, "write_series", racing_write)
    assert corpus.ensure_series(spec) == target
    assert sorted(p.name for p in target.iterdir()) and not list(tmp_path.glob("*.tmp"))

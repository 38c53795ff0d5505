"""The corpus cache: written once, reused, never half-written, capped, and clear when out of room."""

from __future__ import annotations

import os
from collections import namedtuple

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


def test_stale_temporary_files_are_removed_on_open(tmp_path):
    (tmp_path / "x.dcm.123.tmp").write_bytes(b"partial")
    Corpus(tmp_path, 1 << 30)
    assert list(tmp_path.iterdir()) == []


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

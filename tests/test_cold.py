"""Cold rows must be cold: the drop of the page cache is verified, else the row says ``unverified``."""

from __future__ import annotations

import os

import pytest

from bench import ceilings


class FakeBenchmark:
    """pytest-benchmark's ``pedantic``: setup before each round, then the target."""

    def __init__(self):
        self.extra_info = {"page_cache": "cold"}

    def pedantic(self, target, setup, rounds, iterations, warmup_rounds):
        for _ in range(rounds):
            setup()
            target()


def test_resident_fraction_sees_a_read_file_and_its_drop(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(4 << 20))
    path.read_bytes()
    assert ceilings.resident_fraction(path) == 1.0
    left = ceilings.drop_page_cache(path)
    if left is None or left > 0.01:
        pytest.skip(f"this file system keeps pages after POSIX_FADV_DONTNEED ({left})")
    assert ceilings.resident_fraction(path) == left


@pytest.mark.parametrize(("readings", "state"), [
    ([0.0, 0.0, 0.0, 0.0, 0.0], "cold"),
    ([0.0, 0.0, 0.5, 0.0, 0.0], "unverified"),   # one round found half the file cached
    ([None] * 5, "unverified"),                  # no mincore: cannot tell
    ([1.0] * 5, "unverified"),                   # tmpfs: the drop does nothing
])
def test_time_cold_records_whether_every_drop_was_verified(tmp_path, monkeypatch, readings, state):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 4096)
    left = iter(readings)
    monkeypatch.setattr(ceilings, "drop_page_cache", lambda p: next(left))
    bench = FakeBenchmark()
    ceilings.time_cold(bench, path, lambda: None)
    assert bench.extra_info["page_cache"] == state
    known = [r for r in readings if r is not None]
    assert bench.extra_info["resident_fraction_max"] == (max(known) if known else None)


def test_a_file_that_stays_cached_is_unverified_end_to_end(tmp_path, monkeypatch):
    """The real drop, on a file whose pages are pinned by a mapping elsewhere in the process."""
    import mmap

    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(1 << 20))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        mapped[:]  # fault every page in and keep it mapped: DONTNEED cannot evict mapped pages
        monkeypatch.setattr(ceilings, "cached_fraction", lambda p: None)
        bench = FakeBenchmark()
        ceilings.time_cold(bench, path, lambda: None)
    assert bench.extra_info["page_cache"] == "unverified"
    assert bench.extra_info["resident_fraction_max"] > 0.5

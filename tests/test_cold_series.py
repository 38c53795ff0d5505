"""Cold series: every file dropped and verified, read against the same files' O_DIRECT ceiling, never the warm one."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import ceilings, series_disk
from bench.series_disk import SeriesDiskRead
from dgbench.derived import add_derived_fields
from dgbench.schema import bench_document, series_ceiling_for
from tests.test_cold import FakeBenchmark
from tests.test_report import H100, machine_info, markdown_tables, result_document, run_report, write_result

ROOT = Path(__file__).resolve().parents[1]
CASE = "series4_64x64_i16_explicit_le_ct"
PIXELS = 4 * 64 * 64 * 2

#: Sizes around the O_DIRECT alignment: one byte, a page short and over, whole pages, none at all.
SIZES = (1, 4095, 4096, 4097, 3 * 4096 + 17, 0, 70_000)


def _files(tmp_path, sizes=SIZES) -> list[Path]:
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"slice{i:03d}.dcm"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def test_the_disk_ceiling_reads_every_file_whole_into_aligned_slots(tmp_path):
    paths = _files(tmp_path)
    read = SeriesDiskRead(paths)
    try:
        for path in paths:
            ceilings.drop_page_cache(path)
        assert read() == read.nbytes == sum(SIZES)
        for i, path in enumerate(paths):
            assert read.file_bytes(i) == path.read_bytes()
            assert (read.host.ctypes.data + read.starts[i]) % ceilings.DIRECT_IO_ALIGN == 0
        read.host[:] = 0  # a second round reads them again, not the first round's leftovers
        read()
        assert [read.file_bytes(i) for i in range(len(paths))] == [p.read_bytes() for p in paths]
    finally:
        read.close()


@pytest.mark.parametrize("refused", ["open", "read"])
def test_where_o_direct_is_refused_every_file_is_read_buffered_and_says_so(tmp_path, monkeypatch, refused):
    """tmpfs refuses O_DIRECT at open, some overlays at the first read: both fall back to buffered reads."""
    paths = _files(tmp_path)
    direct_fds, real_open, real_preadv = set(), os.open, os.preadv

    def fake_open(path, flags, *args):
        if flags & os.O_DIRECT and refused == "open":
            raise OSError(errno.EINVAL, "O_DIRECT refused", path)
        fd = real_open(path, flags & ~os.O_DIRECT, *args)
        if flags & os.O_DIRECT:
            direct_fds.add(fd)
        return fd

    def fake_preadv(fd, buffers, offset):
        if fd in direct_fds:
            raise OSError(errno.EINVAL, "O_DIRECT read refused")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(series_disk.os, "open", fake_open)
    monkeypatch.setattr(series_disk.os, "preadv", fake_preadv)
    read = SeriesDiskRead(paths)
    try:
        assert read.direct is False
        direct_fds.clear()
        assert read() == sum(SIZES)
        assert not direct_fds, "a round still opened files with O_DIRECT"
        assert [read.file_bytes(i) for i in range(len(paths))] == [p.read_bytes() for p in paths]
    finally:
        read.close()


def test_direct_false_reads_buffered_without_probing(tmp_path):
    paths = _files(tmp_path, (5000, 12))
    read = SeriesDiskRead(paths, direct=False)
    try:
        assert read.direct is False and read() == 5012
        assert read.file_bytes(1) == paths[1].read_bytes()
    finally:
        read.close()


@pytest.mark.parametrize(("left", "state", "worst"), [
    ({"a": 0.0, "b": 0.0, "c": 0.0}, "cold", 0.0),
    ({"a": 0.0, "b": 0.5, "c": 0.0}, "unverified", 0.5),     # one file kept half its pages
    ({"a": 0.0, "b": None, "c": 0.0}, "unverified", None),   # one file could not be asked
])
def test_a_series_is_cold_only_if_every_file_was_dropped_every_round(tmp_path, monkeypatch, left, state, worst):
    paths = [tmp_path / name for name in left]
    dropped = []

    def drop(path):
        dropped.append(Path(path).name)
        return left[Path(path).name]

    monkeypatch.setattr(ceilings, "drop_page_cache", drop)
    monkeypatch.setattr(ceilings, "cached_fraction", lambda p: None)
    rounds = []
    bench = FakeBenchmark()
    ceilings.time_cold(bench, paths, lambda: rounds.append(len(dropped)))
    assert rounds == [3 * (i + 1) for i in range(ceilings.COLD_ROUNDS)]  # all three dropped before each round
    assert bench.extra_info["page_cache"] == state
    assert bench.extra_info["resident_fraction_max"] == worst


def test_the_real_drop_of_a_series_with_one_file_pinned_in_memory_is_unverified(tmp_path, monkeypatch):
    import mmap

    paths = _files(tmp_path, (1 << 20, 1 << 20))
    with open(paths[1], "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        mapped[:]  # mapped pages survive POSIX_FADV_DONTNEED
        monkeypatch.setattr(ceilings, "cached_fraction", lambda p: None)
        bench = FakeBenchmark()
        ceilings.time_cold(bench, paths, lambda: None)
    assert bench.extra_info["page_cache"] == "unverified"
    assert bench.extra_info["resident_fraction_max"] > 0.5


def test_the_disk_ceiling_row_says_which_read_ran_and_whether_it_was_cold(tmp_path, monkeypatch):
    paths = _files(tmp_path)
    monkeypatch.setattr(ceilings, "drop_page_cache", lambda p: 0.0)  # a verified drop, whatever this disk does
    monkeypatch.setattr(ceilings, "cached_fraction", lambda p: None)
    bench = FakeBenchmark()
    series_disk.time_disk_ceiling(bench, CASE, paths, PIXELS, "cpu", slices=4, files=len(paths))
    info = bench.extra_info
    assert info["loader"] == "ceiling:series_disk_read_" + ("direct" if info["direct_io"] else "buffered")
    assert (info["page_cache"], info["pixel_bytes"], info["bytes_read"]) == ("cold", PIXELS, sum(SIZES))

    monkeypatch.setattr(SeriesDiskRead, "_direct_io_works", lambda self: False)  # tmpfs
    monkeypatch.setattr(ceilings, "drop_page_cache", lambda p: 1.0)  # tmpfs keeps every page
    bench = FakeBenchmark()
    series_disk.time_disk_ceiling(bench, CASE, paths, PIXELS, "cpu")
    info = bench.extra_info
    assert (info["loader"], info["direct_io"], info["page_cache"]) == (
        "ceiling:series_disk_read_buffered", False, "unverified")


def test_the_buffered_disk_ceiling_reads_through_the_page_cache_where_o_direct_works(tmp_path, monkeypatch):
    """``direct=False``: the bound of a loader reading as kvdicom does, beside the O_DIRECT row."""
    paths = _files(tmp_path)
    monkeypatch.setattr(ceilings, "drop_page_cache", lambda p: 0.0)
    monkeypatch.setattr(ceilings, "cached_fraction", lambda p: None)
    monkeypatch.setattr(SeriesDiskRead, "_direct_io_works", lambda self: True)
    real = SeriesDiskRead._read

    def read(self, i, flags):
        assert not flags & os.O_DIRECT, "O_DIRECT in the buffered ceiling"
        return real(self, i, flags)

    monkeypatch.setattr(SeriesDiskRead, "_read", read)
    bench = FakeBenchmark()
    series_disk.time_disk_ceiling(bench, CASE, paths, PIXELS, "cpu", direct=False)
    info = bench.extra_info
    assert (info["loader"], info["direct_io"], info["page_cache"]) == ("ceiling:series_disk_read_buffered", False,
                                                                        "cold")


# --- derived numbers: a cold row against the cold ceiling -------------------------------------------


def _row(loader, median, device="cpu", page_cache="warm", **extra):
    if page_cache == "cold":
        extra.setdefault("resident_fraction_max", 0.0)
    if not loader.startswith("ceiling:"):
        extra["ceiling"] = series_ceiling_for(device, page_cache)
    return bench_document(CASE, loader, median, device=device, pixel_bytes=PIXELS, page_cache=page_cache,
                          **extra)


def test_series_rows_name_the_ceiling_of_their_own_page_cache():
    assert [series_ceiling_for(d, c) for d in ("cpu", "cuda") for c in ("warm", "cold", "unverified")] == [
        "series_host_read", "series_disk_read", "series_disk_read",
        "series_h2d", "series_disk_h2d", "series_disk_h2d"]


def test_a_cold_series_row_is_held_against_the_cold_disk_ceiling_and_never_the_warm_one():
    rows = [
        _row("ceiling:series_host_read", 0.001),                        # warm: far faster than any disk
        _row("ceiling:series_h2d", 0.001, "cuda"),
        _row("ceiling:series_disk_read_direct", 0.004, page_cache="cold", direct_io=True),
        _row("ceiling:series_disk_h2d_direct", 0.005, "cuda", page_cache="cold", direct_io=True),
        _row("kvdicom", 0.002),
        _row("kvdicom", 0.008, page_cache="cold"),
        _row("kvdicom", 0.010, "cuda", page_cache="cold"),
        _row("pydicom", 0.032, page_cache="cold"),
    ]
    add_derived_fields(rows)
    warm, cold_cpu, cold_gpu, pydicom = (r["extra_info"] for r in rows[4:])
    assert warm["pct_of_ceiling"] == pytest.approx(50.0)
    assert cold_cpu["pct_of_ceiling"] == pytest.approx(50.0)  # 4 ms O_DIRECT read / 8 ms load
    assert cold_cpu["ceiling_gbps"] == rows[2]["extra_info"]["gbps"]
    assert cold_gpu["pct_of_ceiling"] == pytest.approx(50.0)  # against disk + copy, not the CPU's disk read
    assert cold_cpu["speedup_vs_pydicom"] == pytest.approx(4.0)  # the cold pydicom loop, not a warm one
    assert pydicom["pct_of_ceiling"] == pytest.approx(12.5)


def test_without_a_verified_cold_ceiling_a_cold_series_row_has_no_percent():
    rows = [
        _row("ceiling:series_host_read", 0.001),
        _row("ceiling:series_disk_read_buffered", 0.004, page_cache="cold", resident_fraction_max=0.3),
        _row("kvdicom", 0.008, page_cache="cold"),
        _row("kvdicom", 0.008, page_cache="cold", resident_fraction_max=0.3),
    ]
    add_derived_fields(rows)
    assert "pct_of_ceiling" not in rows[2]["extra_info"]  # the only cold ceiling was not cold
    assert "pct_of_ceiling" not in rows[3]["extra_info"]  # nor was this row


def test_the_full_profile_has_cold_series_cases_and_quick_none():
    """Cold series run on series of at least COLD_MIN_BYTES of pixels, as cold files do."""
    def collected(profile):
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "bench/test_series.py", "bench/test_compressed_series.py",
             "--collect-only", "-q", "-m", "cold", "-p", "no:randomly", "--profile", profile],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        return sorted(line for line in out.stdout.splitlines() if "::" in line)

    assert [t for t in collected("quick") if "[series" in t] == []  # an empty parameter set: skipped
    full = collected("full")
    for series in ("series256_512x512_i16_explicit_le_ct", "series96_256x256_u16s12_explicit_le_mr_sag"):
        for test in ("pydicom_cpu", "kvdicom_cpu", "kvdicom_gpu", "io_ceiling_cpu", "io_ceiling_gpu"):
            assert f"bench/test_series.py::test_series_{test}_cold[{series}]" in full
    assert not [t for t in full if "series16_" in t]
    for syntax in ("htj2k_lossless_ct_ic", "jpeg2000_lossless_ct_oj"):
        for test in ("kvdicom_cpu", "kvdicom_gpu", "disk_ceiling_cpu", "disk_ceiling_gpu"):
            assert [t for t in full if f"::test_cseries_{test}_cold[series256_512x512_i16_{syntax}" in t]



def test_the_report_holds_a_cold_series_row_against_the_cold_ceiling_of_its_own_run(tmp_path, capsys):
    """The report recomputes % of ceiling from the saved rows (derived=False): warm and cold rows stay apart."""
    rows = [
        _row("ceiling:series_host_read", 0.001),
        _row("ceiling:series_disk_read_direct", 0.004, page_cache="cold", direct_io=True),
        _row("kvdicom", 0.004),
        _row("kvdicom", 0.005, page_cache="cold"),
        _row("pydicom", 0.040, page_cache="cold"),
    ]
    path = write_result(tmp_path / "r.json", result_document(machine_info(H100, "h100"), rows,
                                                             "2026-03-01T02:00:00+00:00", derived=False))
    assert run_report(capsys, path, "-o", tmp_path / "out")[0] == 0
    table = markdown_tables((tmp_path / "out" / "report.md").read_text())[f"Case: {CASE}"]
    by_key = {(r["Loader"], r["Page cache"]): r for r in table}
    assert by_key[("kvdicom", "warm")]["% of ceiling"] == "25.0%"
    assert by_key[("kvdicom", "cold")]["% of ceiling"] == "80.0%"
    assert by_key[("kvdicom", "cold")]["Speed-up vs pydicom"] == "8.00×"

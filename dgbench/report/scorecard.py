"""The report's first table: per machine, kvdicom on the reference cases, read in ten seconds.

Reference cases (whichever the machine's rows hold): the seed notebook's 256 MiB file,
the CT series (cases ``series<N>_*``), one CT slice, and a compressed series. For each:
kvdicom's GB/s (on CUDA, warm page cache, where it ran there; else on the CPU),
its speed-up over pydicom, and its % of that machine's ceiling, both from the run
that row came from (named in the row): the newest run that holds the whole comparison
(kvdicom and pydicom measured together), else the newest that has kvdicom's row, so a
partial run (kvdicom and its ceilings only, an A/B) does not blank the ratio. Then the
trend table: what changed between a machine's runs, judged by the baseline rule.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

from . import formatting
from .model import Benchmark, Machine, Row, is_compressed_case
from .plot_data import trend_points
from .scaling import dataset_headlines
from .tables import Table, run_label

SEED_CASE = "f128_1024x1024_u16_explicit_le"
#: fixtures.profiles.CT_SERIES (256 slices of 512² int16, CT headers) and its one-slice counterparts.
CT_SERIES_CASE = "series256_512x512_i16_explicit_le_ct"
CT_SLICE_CASES = ("f1_512x512_i16_explicit_le_ct", "f1_512x512_i16_explicit_le")
_SERIES = re.compile(r"^series\d*_")

SCORECARD_HEADERS = ("Machine", "Reference case", "Case id", "kvdicom on", "GB/s", "× pydicom", "% of ceiling",
                     "Run")
TREND_HEADERS = ("Machine", "Case", "Loader", "Device", "Page cache", "Runs", "First GB/s", "Last GB/s",
                 "Last change", "Its ceiling's last change", "Regressed")


def _largest(benchmarks: Sequence[Benchmark], accept: Callable[[str], bool]) -> str | None:
    sizes = {b.case: b.pixel_bytes for b in benchmarks if accept(b.case)}
    return max(sizes, key=lambda c: (sizes[c], c), default=None)


def reference_cases(benchmarks: Sequence[Benchmark]) -> list[tuple[str, str | None]]:
    """(label, case id or None when the benchmarks lack it); the compressed series only where present.

    The CT series is fixtures.profiles.CT_SERIES where measured, else the largest CT series.
    """
    # not the scale-out rows, nor a case's views (``<case>:header``, ``<case>:scan``: its headers, not its pixels)
    benchmarks = [b for b in benchmarks if not b.is_scaleout and ":" not in b.case]
    cases = {b.case for b in benchmarks}
    ct_series = CT_SERIES_CASE if CT_SERIES_CASE in cases else _largest(
        benchmarks, lambda c: bool(_SERIES.match(c)) and "_ct" in c and not is_compressed_case(c))
    refs = [
        ("Seed volume, 256 MiB", SEED_CASE if SEED_CASE in cases else None),
        ("CT series", ct_series),
        ("CT slice", next((c for c in CT_SLICE_CASES if c in cases), None)),
    ]
    compressed = _largest(benchmarks, lambda c: bool(_SERIES.match(c)) and is_compressed_case(c))
    if compressed:
        refs.append(("Compressed series", compressed))
    return refs


def headline(rows: Iterable[Row], case: str) -> Row | None:
    """kvdicom's row for ``case``: CUDA before CPU, warm before any other page cache."""
    found = [r for r in rows if r.bench.case == case and r.bench.loader == "kvdicom" and not r.bench.is_scaleout]
    rank = {"cuda": 0, "cpu": 1}
    return min(found, key=lambda r: (rank.get(r.bench.device, 2), (r.bench.page_cache or "warm") != "warm",
                                     r.bench.median_s), default=None)


def _whole(row: Row) -> bool:
    """kvdicom's row holds the whole comparison: its × pydicom and its % of ceiling, both from its own run."""
    return row.bench.speedup_vs_pydicom is not None and row.bench.pct_of_ceiling is not None


def _ratio(row: Row) -> bool:
    return row.bench.speedup_vs_pydicom is not None


def complete_headline(machine: Machine, case: str) -> Row | None:
    """:func:`headline` from the newest run holding the whole comparison (pydicom and the case's ceiling ran beside
    kvdicom), else from the newest with × pydicom, on the same device and page cache as the newest row; else the
    newest row itself. A run of a few rows (an A/B) then does not hide a complete one."""
    newest = headline(machine.rows, case)
    if newest is None:
        return None
    runs = sorted(machine.history, key=lambda r: r.started, reverse=True)
    for complete in (_whole, _ratio):
        if complete(newest):
            return newest
        for run in runs:
            found = [r for r in (Row(b, run) for b in run.benchmarks) if complete(r)
                     and (r.bench.device, r.bench.page_cache) == (newest.bench.device, newest.bench.page_cache)]
            if (row := headline(found, case)) is not None:
                return row
    return newest


def scorecard(machines: Iterable[Machine]) -> Table:
    rows = []
    for machine in machines:
        for label, case in reference_cases(machine.benchmarks):
            row = complete_headline(machine, case) if case else None
            if row is None:
                rows.append((machine.name, label, case or "not in any run", "", "", "", "", ""))
                continue
            bench = row.bench
            rows.append((
                machine.name, label, case, f"{bench.device}, {bench.page_cache or 'warm'}",
                formatting.gbps(bench.gbps), formatting.speedup(bench.speedup_vs_pydicom),
                formatting.percent(bench.pct_of_ceiling), run_label(row.run),
            ))
        for label, row in dataset_headlines(machine):
            bench = row.bench
            rows.append((
                machine.name, label, bench.case, f"{bench.device} through Dask, {bench.page_cache or 'warm'}",
                formatting.gbps(bench.gbps), formatting.speedup(bench.speedup_vs_pydicom),
                formatting.percent(bench.pct_of_ceiling), run_label(row.run),
            ))
    return Table(title="Scorecard", headers=SCORECARD_HEADERS, rows=tuple(rows))


def _ceiling_change(previous: Benchmark, last: Benchmark) -> str:
    """How the row's own ceiling moved between the same two runs (each run's ceiling, from its GB/s and % of
    ceiling): a loader slower by as much as its ceiling is the machine's drift between leases, not the code's."""
    if not (previous.pct_of_ceiling and last.pct_of_ceiling and previous.gbps and last.gbps):
        return ""
    before, now = previous.gbps / previous.pct_of_ceiling, last.gbps / last.pct_of_ceiling
    return f"{(before / now - 1) * 100:+.1f}% time"


def trend_table(machines: Iterable[Machine]) -> Table:
    """Every benchmark a machine ran in two runs or more: first and last GB/s, the last change, regressions."""
    rows = []
    for machine in machines:
        trends = trend_points(machine)
        for (case, loader, device, cache, gpus), points in sorted(trends.items(),
                                                                   key=lambda item: (item[0][:4], item[0][4] or 0)):
            last = points[-1]
            flagged = [p for p in points if p.regressed]
            rows.append((
                machine.name, case, formatting.scaleout_loader(loader, gpus), device, cache,
                str(len(points)),
                formatting.gbps(points[0].bench.gbps), formatting.gbps(last.bench.gbps),
                "" if last.change_pct is None else f"{last.change_pct:+.1f}% time",
                _ceiling_change(points[-2].bench, last.bench),
                ", ".join((p.run.commit_id or "?")[:7] for p in flagged) or "no",
            ))
    return Table(title="Trend", headers=TREND_HEADERS, rows=tuple(rows))


def trend_coverage(machines: Iterable[Machine]) -> list[str]:
    """One line per machine: how many runs it has and how many benchmarks can be followed across them."""
    lines = []
    for machine in machines:
        runs = len(machine.history) or 1
        followed = len(trend_points(machine))
        lines.append(f"{machine.name}: {runs} run{'s' if runs != 1 else ''}, "
                     f"{followed} benchmark{'s' if followed != 1 else ''} in two runs or more")
    return lines

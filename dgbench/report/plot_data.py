"""Choose what each plot shows, without drawing anything.

Kept apart from the drawing so the choice (which points, which panels, which
colours, which file names) can be tested without matplotlib.

* Throughput per machine (its rows from every run, ``Machine.benchmarks``): small
  multiples, a panel per page-cache state (warm, cold, unverified), a line per loader and device. Each loader keeps one
  colour in every plot (:func:`loader_colour`); ceilings are grey dashed lines;
  the y axis is logarithmic where the values span more than :data:`LOG_Y_RANGE`.
* Comparison: kvdicom on CUDA, a line per machine.
* Trend per machine (two runs or more): a panel per case, a line per loader
  with its IQR band across the runs, x = run (date and commit), regressions by
  the baseline rule marked.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from dgbench.config import DEFAULT_NOISE_K, REGRESSION_THRESHOLD_PCT
from dgbench.derived import regressed
from dgbench.schema import LOADERS, is_ceiling

from . import formatting
from .model import Benchmark, Machine, Run
from .tables import loader_rank

COMPARED_LOADER = "kvdicom"
COMPARED_DEVICE = "cuda"
COMPARISON_FILE = f"throughput_{COMPARED_LOADER}_{COMPARED_DEVICE}_by_machine.png"
#: Above this ratio of largest to smallest value, a panel's y axis is logarithmic.
LOG_Y_RANGE = 20.0
PAGE_CACHE_PANELS = ("warm", "cold", "unverified")
#: Trend panels per machine: the cases with the most history first.
MAX_TREND_PANELS = 12

#: One colour per loader in every plot (matplotlib's tab10, colour-blind-safe order).
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
            "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
LOADER_COLOURS = dict(zip(LOADERS, _PALETTE, strict=False))
CEILING_COLOUR = "#7f7f7f"


def loader_colour(loader: str) -> str:
    """The loader's colour; an unknown loader gets one of the spare colours, the same every time."""
    if loader in LOADER_COLOURS:
        return LOADER_COLOURS[loader]
    spare = _PALETTE[len(LOADER_COLOURS):] or _PALETTE
    return spare[sum(loader.encode()) % len(spare)]


@dataclass(frozen=True)
class Series:
    """One line: points (x, y), optionally a band (low, high) per point and indices of flagged points."""

    label: str
    points: tuple[tuple[float, float], ...]
    colour: str
    dashed: bool = False          # ceilings (grey, dashed)
    marker: str = "o"             # "o" on CUDA, "s" on the CPU
    dotted: bool = False          # a CPU loader: dash-dot, so kvdicom cpu and cuda (one colour) stay apart
    band: tuple[tuple[float, float], ...] = ()
    flagged: tuple[int, ...] = ()


@dataclass(frozen=True)
class Panel:
    """One axes of a figure. ``x_labels`` set: categorical x (runs), else pixel bytes on a log axis."""

    title: str
    series: tuple[Series, ...]
    log_y: bool = False
    x_labels: tuple[str, ...] = ()
    x_title: str = ""   # set: x is this quantity on a linear axis (GPUs), y is ``y_title``
    y_title: str = ""


@dataclass(frozen=True)
class PlotSpec:
    """One PNG: its file name inside the output folder, title, and panels."""

    filename: str
    title: str
    panels: tuple[Panel, ...]

    @property
    def series(self) -> tuple[Series, ...]:
        return tuple(s for panel in self.panels for s in panel.series)


def needs_log_y(series: Iterable[Series]) -> bool:
    values = [y for s in series for _, y in s.points if y > 0]
    return bool(values) and max(values) / min(values) > LOG_Y_RANGE


def _panel(title: str, series: list[Series], x_labels: tuple[str, ...] = ()) -> Panel:
    return Panel(title, tuple(series), needs_log_y(series), x_labels)


def per_machine_plots(machines: Iterable[Machine], used: set[str] | None = None) -> list[PlotSpec]:
    """One figure per machine: a panel per page-cache state, a line per loader and device."""
    used = used if used is not None else set()
    used.add(COMPARISON_FILE)
    specs = []
    for machine in machines:
        panels = []
        for cache in PAGE_CACHE_PANELS:
            benches = [b for b in machine.benchmarks if (b.page_cache or "warm") == cache and not b.is_scaleout]
            if benches:
                panels.append(_panel(f"page cache {cache}", throughput_series(benches)))
        filename = unique_filename("throughput_" + file_slug(machine.name), used)
        specs.append(PlotSpec(filename, f"Throughput on {machine.name}", tuple(panels)))
    return specs


def throughput_series(benches: list[Benchmark]) -> list[Series]:
    """Loaders first (coloured), then ceilings (grey, dashed); a loader's compressed cases (decode rates) are a
    line of their own (same colour, triangles), never in one median with raw reads of the same size."""
    groups: dict[tuple, list[Benchmark]] = defaultdict(list)
    for bench in benches:
        key = (bench.is_ceiling, bench.is_compressed, loader_rank(bench.loader), bench.loader, bench.device)
        groups[key].append(bench)
    series = []
    for (ceiling, compressed, _, loader, device), group in sorted(groups.items()):
        series.append(Series(
            label=f"{loader} ({device}, compressed)" if compressed else f"{loader} ({device})",
            points=median_points(group),
            colour=CEILING_COLOUR if ceiling else loader_colour(loader),
            dashed=ceiling,
            marker="^" if compressed else "s" if device == "cpu" else "o",
            dotted=device == "cpu" and not ceiling,
        ))
    return series


def comparison_plot(machines: Iterable[Machine]) -> PlotSpec | None:
    """``kvdicom`` on CUDA, a line per machine, a panel per page-cache state; ``None`` when no machine ran it."""
    machines = list(machines)
    panels = []
    for cache in PAGE_CACHE_PANELS:
        lines = []
        for index, machine in enumerate(machines):
            chosen = [b for b in machine.benchmarks if b.loader == COMPARED_LOADER and not b.is_scaleout
                      and b.device == COMPARED_DEVICE and (b.page_cache or "warm") == cache]
            for compressed in (False, True):   # decode rates apart from raw reads of the same size
                part = [b for b in chosen if b.is_compressed == compressed]
                if part:
                    lines.append(Series(f"{machine.name} (compressed)" if compressed else machine.name,
                                        median_points(part), _PALETTE[index % len(_PALETTE)],
                                        marker="^" if compressed else "o", dotted=compressed))
        if lines:
            panels.append(_panel(f"page cache {cache}", lines))
    if not panels:
        return None
    title = f"{COMPARED_LOADER} on {COMPARED_DEVICE}: throughput by machine"
    return PlotSpec(COMPARISON_FILE, title, tuple(panels))


# --------------------------------------------------------------------------- trend


@dataclass(frozen=True)
class TrendPoint:
    """One (case, loader, device, cache) in one run."""

    run: Run
    bench: Benchmark
    change_pct: float | None      # median change against the previous run that has this benchmark
    regressed: bool


def _stats(bench: Benchmark) -> dict:
    """The times a trend compares: a scale-out row's per series (a dataset of 8 series and one of 32 are the
    same benchmark at another size: runs 0055 and before on the H200 loaded 8, later ones 32)."""
    iqr = bench.q3_s - bench.q1_s if bench.q1_s is not None and bench.q3_s is not None else 0.0
    per = bench.series if bench.is_scaleout and bench.series else 1
    return {"median": bench.median_s / per, "iqr": iqr / per}


def trend_points(machine: Machine, threshold_pct: float = REGRESSION_THRESHOLD_PCT,
                 k: float = DEFAULT_NOISE_K) -> dict[tuple, list[TrendPoint]]:
    """Per :attr:`Benchmark.row_key` (case, loader, device, page cache, GPUs): its point in each run, oldest first,
    judged by the baseline rule against the previous run that has it. Only keys present in two runs or more."""
    by_key: dict[tuple, list[tuple[Run, Benchmark]]] = defaultdict(list)
    for run in machine.history:
        seen = set()
        for bench in run.benchmarks:
            key = bench.row_key
            if key not in seen:  # a repeated loader (a sweep) keeps its first row
                seen.add(key)
                by_key[key].append((run, bench))
    trends = {}
    for key, entries in by_key.items():
        if len(entries) < 2:
            continue
        points, previous = [], None
        for run, bench in entries:
            change, flag = (None, False) if previous is None else regressed(_stats(bench), _stats(previous),
                                                                            threshold_pct, k)
            points.append(TrendPoint(run, bench, change, flag))
            previous = bench
        trends[key] = points
    return trends


def run_label(run: Run) -> str:
    return f"{run.started.strftime('%Y-%m-%d')}\n{(run.commit_id or '?')[:7]}"


def trend_plot(machine: Machine, used: set[str]) -> PlotSpec | None:
    """A panel per case (most history first), a line per loader with its IQR band; regressions marked."""
    trends = trend_points(machine)
    if not trends:
        return None
    runs = list(machine.history)
    index = {id(run): i for i, run in enumerate(runs)}
    by_case: dict[str, list[tuple]] = defaultdict(list)
    for key in trends:
        by_case[key[0]].append(key)
    cases = sorted(by_case, key=lambda c: (-max(len(trends[k]) for k in by_case[c]), c))[:MAX_TREND_PANELS]
    panels = []
    for case in cases:
        series = []
        for key in sorted(by_case[case], key=lambda k: (is_ceiling(k[1]), loader_rank(k[1]), k[2], k[3])):
            _, loader, device, cache, gpus = key
            points = trends[key]
            band = []
            for p in points:
                b = p.bench
                low = b.pixel_bytes / b.q3_s / 1e9 if b.q3_s else b.gbps
                high = b.pixel_bytes / b.q1_s / 1e9 if b.q1_s else b.gbps
                band.append((low, high))
            ceiling = is_ceiling(loader)
            series.append(Series(
                label=f"{formatting.scaleout_loader(loader, gpus)} ({device}, {cache})",
                points=tuple((index[id(p.run)], p.bench.gbps) for p in points),
                colour=CEILING_COLOUR if ceiling else loader_colour(loader),
                dashed=ceiling,
                marker="s" if device == "cpu" else "o",
                dotted=device == "cpu" and not ceiling,
                band=tuple(band),
                flagged=tuple(i for i, p in enumerate(points) if p.regressed),
            ))
        panels.append(_panel(case, series, tuple(run_label(r) for r in runs)))
    filename = unique_filename("trend_" + file_slug(machine.name), used)
    return PlotSpec(filename, f"Trend on {machine.name}: GB/s by run (IQR band; x = regression)", tuple(panels))


def trend_plots(machines: Iterable[Machine], used: set[str]) -> list[PlotSpec]:
    return [spec for spec in (trend_plot(m, used) for m in machines) if spec is not None]


# --------------------------------------------------------------------------- helpers


def median_points(benches: Iterable[Benchmark]) -> tuple[tuple[int, float], ...]:
    """Sorted (pixel bytes, GB/s) points, one per size."""
    by_size: dict[int, list[float]] = defaultdict(list)
    for bench in benches:
        by_size[bench.pixel_bytes].append(bench.gbps)
    return tuple((size, statistics.median(values)) for size, values in sorted(by_size.items()))


def file_slug(name: str) -> str:
    """A file-name-safe form of a machine name (no separators, no dots)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-")
    return slug[:80] or "machine"


def unique_filename(stem: str, used: set[str]) -> str:
    """``stem.png``, numbered when two machines give the same stem."""
    candidate, number = f"{stem}.png", 2
    while candidate in used:
        candidate, number = f"{stem}-{number}.png", number + 1
    used.add(candidate)
    return candidate


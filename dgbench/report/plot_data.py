"""Choose what each throughput plot shows, without drawing anything.

Kept apart from the drawing so the choice (which points, which lines, which
file names) can be tested without matplotlib.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from .model import Benchmark, Machine
from .tables import loader_rank

COMPARED_LOADER = "kvdicom"
COMPARED_DEVICE = "cuda"
COMPARISON_FILE = f"throughput_{COMPARED_LOADER}_{COMPARED_DEVICE}_by_machine.png"


@dataclass(frozen=True)
class Series:
    """One line: GB/s against pixel bytes, median GB/s where several cases share a size."""

    label: str
    points: tuple[tuple[int, float], ...]
    dashed: bool = False


@dataclass(frozen=True)
class PlotSpec:
    """One PNG: its file name inside the output folder, title, and lines."""

    filename: str
    title: str
    series: tuple[Series, ...]


def per_machine_plots(machines: Iterable[Machine]) -> list[PlotSpec]:
    """One plot per machine, a line per loader (ceilings dashed, for reference)."""
    used: set[str] = {COMPARISON_FILE}
    specs = []
    for machine in machines:
        groups: dict[str, list[Benchmark]] = defaultdict(list)
        for bench in machine.run.benchmarks:
            groups[series_label(bench.loader, bench)].append(bench)
        series = tuple(
            Series(label, median_points(benches), dashed=benches[0].is_ceiling)
            for label, benches in sorted(
                groups.items(), key=lambda kv: (kv[1][0].is_ceiling, loader_rank(kv[1][0].loader), kv[0])
            )
        )
        filename = unique_filename("throughput_" + file_slug(machine.name), used)
        specs.append(PlotSpec(filename, f"Throughput on {machine.name}", series))
    return specs


def comparison_plot(machines: Iterable[Machine]) -> PlotSpec | None:
    """``kvdicom`` on CUDA, a line per machine; ``None`` when no machine ran it."""
    lines = []
    for machine in machines:
        benches = [
            b for b in machine.run.benchmarks if b.loader == COMPARED_LOADER and b.device == COMPARED_DEVICE
        ]
        caches = sorted({b.page_cache or "" for b in benches})
        for cache in caches:
            chosen = [b for b in benches if (b.page_cache or "") == cache]
            label = machine.name if len(caches) == 1 or not cache else f"{machine.name} ({cache})"
            lines.append(Series(label, median_points(chosen)))
    if not lines:
        return None
    title = f"{COMPARED_LOADER} on {COMPARED_DEVICE}: throughput by machine"
    return PlotSpec(COMPARISON_FILE, title, tuple(lines))


def series_label(name: str, bench: Benchmark) -> str:
    """Loader plus device and page cache, since a loader may run in several modes."""
    mode = ", ".join(part for part in (bench.device, bench.page_cache) if part)
    return f"{name} ({mode})" if mode else name


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

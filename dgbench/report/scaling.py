"""The scaling section: a dataset of series through Dask on 1, 2, … G GPUs (``bench/test_scaleout.py``).

Per machine and dataset: series/s against the GPU count for each loader, the ideal line (the 1-GPU rate times
G) and the ceilings measured in the same run with the same G (the host's page-cache read by G processes, the
GPUs' batch decode of the codestreams from memory); a table with each row's efficiency against the same
loader on one GPU of the same run. A 1-GPU host shows its one point: the ideal line starts there.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from . import formatting
from .model import Benchmark, Machine, Row
from .plot_data import CEILING_COLOUR, Panel, PlotSpec, Series, file_slug, loader_colour, unique_filename
from .tables import Table, loader_rank, run_label

SCALING_HEADERS = ("Machine", "Dataset", "Loader", "GPUs", "Series", "Median time", "Series/s", "GB/s",
                   "Efficiency vs 1 GPU", "% of ceiling", "Run")
IDEAL_COLOUR = "#2ca02c"


def scaleout_rows(machine: Machine) -> list[Row]:
    return [row for row in machine.rows if row.bench.is_scaleout]


def scaling_table(machines: Iterable[Machine]) -> Table:
    rows = []
    for machine in machines:
        entries = sorted(scaleout_rows(machine), key=lambda r: (r.bench.case, loader_rank(r.bench.loader),
                                                                 r.bench.loader, r.bench.gpus))
        for row in entries:
            bench = row.bench
            rows.append((machine.name, bench.case, bench.loader, str(bench.gpus), str(bench.series or ""),
                         formatting.seconds(bench.median_s),
                         "" if bench.series_per_s is None else f"{bench.series_per_s:.2f}",
                         formatting.gbps(bench.gbps), formatting.percent(_pct(bench.scaling_efficiency)),
                         formatting.percent(bench.pct_of_ceiling), run_label(row.run)))
    return Table(title="Scaling", headers=SCALING_HEADERS, rows=tuple(rows))


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * fraction


def _rate_points(benches: list[Benchmark]) -> tuple[tuple[float, float], ...]:
    best: dict[int, float] = {}
    for bench in benches:
        if bench.series_per_s is not None:
            best[bench.gpus] = max(best.get(bench.gpus, 0.0), bench.series_per_s)
    return tuple(sorted((float(g), rate) for g, rate in best.items()))


def scaling_plots(machines: Iterable[Machine], used: set[str]) -> list[PlotSpec]:
    """One figure per machine that ran scale-out rows: a panel per dataset."""
    specs = []
    for machine in machines:
        by_case: dict[str, list[Benchmark]] = defaultdict(list)
        for row in scaleout_rows(machine):
            by_case[row.bench.case].append(row.bench)
        panels = []
        for case, benches in sorted(by_case.items()):
            by_loader: dict[str, list[Benchmark]] = defaultdict(list)
            for bench in benches:
                by_loader[bench.loader].append(bench)
            series = []
            for loader in sorted(by_loader, key=loader_rank):
                points = _rate_points(by_loader[loader])
                if not points:
                    continue
                ceiling = by_loader[loader][0].is_ceiling
                series.append(Series(loader, points, CEILING_COLOUR if ceiling else loader_colour(loader),
                                     dashed=ceiling))
                if loader == "kvdicom" and points[0][0] == 1.0:
                    counts = sorted({float(b.gpus) for b in benches})
                    series.append(Series("kvdicom, ideal (1-GPU rate x GPUs)",
                                         tuple((g, points[0][1] * g) for g in counts), IDEAL_COLOUR, dotted=True))
            if series:
                panels.append(Panel(case, tuple(series), x_title="GPUs", y_title="series/s"))
        if panels:
            filename = unique_filename("scaling_" + file_slug(machine.name), used)
            specs.append(PlotSpec(filename, f"Dask scaling on {machine.name}",
                                  tuple(panels)))
    return specs


def dataset_headlines(machine: Machine) -> list[tuple[str, Row]]:
    """The scorecard's "Dataset, G GPUs" rows: kvdicom through Dask on the most GPUs, per dataset."""
    best: dict[str, Row] = {}
    for row in scaleout_rows(machine):
        bench = row.bench
        if bench.loader != "kvdicom":
            continue
        held = best.get(bench.case)
        if held is None or (bench.gpus, -bench.median_s) > (held.bench.gpus, -held.bench.median_s):
            best[bench.case] = row
    kind = {True: "compressed", False: "uncompressed"}
    return [(f"Dataset ({kind[row.bench.is_compressed]}), {formatting.gpu_count(row.bench.gpus)}", row)
            for _, row in sorted(best.items())]

"""Plain records passed between the report's steps, so no step re-reads raw JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dgbench.schema import is_ceiling

#: Case ids of compressed syntaxes name their codec (bench/test_compressed.py): their GB/s is a decode rate.
COMPRESSED_MARKERS = ("jpeg", "j2k", "jp2", "jls", "rle", "deflate", "htj2k", "compressed")


def is_compressed_case(case: str) -> bool:
    return any(marker in case.casefold() for marker in COMPRESSED_MARKERS)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of one run, reduced to what the tables and plots need."""

    name: str
    case: str
    loader: str
    device: str
    page_cache: str | None
    param: str | None
    pixel_bytes: int
    median_s: float
    gbps: float
    pct_of_ceiling: float | None
    speedup_vs_pydicom: float | None
    q1_s: float | None = None   # the round times' quartiles, for the trend's IQR band
    q3_s: float | None = None
    gpus: int | None = None     # scale-out rows (bench/test_scaleout.py): GPUs of the Dask cluster
    series: int | None = None   # scale-out rows: series loaded per round
    series_per_s: float | None = None
    scaling_efficiency: float | None = None  # series/s over GPUs x the same loader's 1-GPU rate, same run

    @property
    def row_key(self) -> tuple:
        """What one benchmark is across runs: (case, loader, device, page cache, GPUs of a scale-out row or None).
        A newer run's row replaces an older one of the same key (``machines.combine_rows``); the trend follows a
        key from run to run; a dataset through Dask on G GPUs is never the case's own single load."""
        return (self.case, self.loader, self.device, self.page_cache or "warm", self.gpus)

    @property
    def is_scaleout(self) -> bool:
        """A dataset through Dask on ``gpus`` GPUs: shown in the scaling section, not in the throughput plots."""
        return self.gpus is not None

    @property
    def is_ceiling(self) -> bool:
        """Ceilings (``ceiling:<name>``) are reference measurements, not loaders."""
        return is_ceiling(self.loader)

    @property
    def is_compressed(self) -> bool:
        """A compressed case: plotted apart, never in one median with raw reads of the same size."""
        return is_compressed_case(self.case)


@dataclass(frozen=True)
class Run:
    """One result file: a single ``pytest bench`` session on one machine."""

    path: Path
    display: str                # the path relative to the folder given on the command line
    started: datetime
    machine_info: dict[str, Any]
    commit_id: str | None
    benchmarks: tuple[Benchmark, ...]
    interrupted: str | None = None  # why the run stopped before the end of its selection (dgbench.interrupt)


@dataclass(frozen=True)
class Skipped:
    """A file (or one benchmark in it) left out of the report, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Row:
    """One benchmark shown for a machine, with the run it came from (a machine's rows may span runs)."""

    bench: Benchmark
    run: Run


@dataclass(frozen=True)
class Machine:
    """One machine as the report shows it: its name, newest run, and the rows taken from its runs.

    ``rows``: for each (case, loader, device, page cache), the benchmarks of the newest run that
    has it (``machines.combine_rows``), since one device session cannot run the whole matrix.
    ``older_runs``: the runs none of whose rows are shown.
    """

    name: str
    run: Run                    # the newest run: names the machine
    rows: tuple[Row, ...]
    older_runs: tuple[Path, ...] = field(default=())
    history: tuple[Run, ...] = field(default=())  # every run of this machine, oldest first (the trend)

    @property
    def benchmarks(self) -> tuple[Benchmark, ...]:
        """What the scorecard, the per-case tables and the plots show."""
        return tuple(row.bench for row in self.rows)

    @property
    def runs_used(self) -> tuple[Run, ...]:
        """The runs that give at least one shown row, newest first."""
        runs: dict[int, Run] = {}
        for row in self.rows:
            runs.setdefault(id(row.run), row.run)
        return tuple(sorted(runs.values(), key=lambda r: (r.started, str(r.path)), reverse=True))

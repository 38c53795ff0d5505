"""Plain records passed between the report's steps, so no step re-reads raw JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dgbench.schema import is_ceiling


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

    @property
    def is_ceiling(self) -> bool:
        """Ceilings (``ceiling:<name>``) are reference measurements, not loaders."""
        return is_ceiling(self.loader)


@dataclass(frozen=True)
class Run:
    """One result file: a single ``pytest bench`` session on one machine."""

    path: Path
    display: str                # the path relative to the folder given on the command line
    started: datetime
    machine_info: dict[str, Any]
    commit_id: str | None
    benchmarks: tuple[Benchmark, ...]


@dataclass(frozen=True)
class Skipped:
    """A file (or one benchmark in it) left out of the report, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Machine:
    """The run chosen for one machine, with the name the report shows for it."""

    name: str
    run: Run
    older_runs: tuple[Path, ...] = field(default=())
    history: tuple[Run, ...] = field(default=())  # every run of this machine, oldest first (the trend)

"""Build the report's tables as plain strings, ready for any renderer to escape."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from dgbench.schema import LOADERS as LOADER_ORDER

from . import formatting
from .model import Benchmark, Machine, Row, Run

CASE_HEADERS = (
    "Machine",
    "Loader",
    "Device",
    "Page cache",
    "Median time",
    "GB/s",
    "% of ceiling",
    "Speed-up vs pydicom",
    "Run",
)
CEILING_HEADERS = ("Machine", "Ceiling", "Case", "Device", "Page cache", "Bytes", "Median time", "GB/s", "Run")
MACHINE_HEADERS = (
    "Machine",
    "Machine slug",
    "Driver",
    "CUDA",
    "KvikIO",
    "Header walk",
    "Slice reads",
    "Profile",
    "Run started",
    "Commit",
    "Result file",
    "Rows shown",
    "Older runs ignored",
)


@dataclass(frozen=True)
class Table:
    """A titled grid of already-formatted cells."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def loader_rank(loader: str) -> tuple[int, str]:
    """Known loaders in the README's order, anything else after them."""
    try:
        return (LOADER_ORDER.index(loader), loader)
    except ValueError:
        return (len(LOADER_ORDER), loader)


def run_label(run: Run) -> str:
    """The "Run" column: which run a row's numbers (derived ones included) come from."""
    return formatting.run_label(run.started, run.commit_id)


def case_tables(machines: Iterable[Machine]) -> list[Table]:
    """One table per ``case``: a row per (machine, loader), ceilings left out, each naming its run."""
    by_case: dict[str, list[tuple[Machine, Row]]] = defaultdict(list)
    for machine in machines:
        for row in machine.rows:
            if not row.bench.is_ceiling and not row.bench.is_scaleout:  # scale-out rows: the scaling section
                by_case[row.bench.case].append((machine, row))

    def case_order(case: str) -> tuple[int, str]:
        return (min(r.bench.pixel_bytes for _, r in by_case[case]), case)

    tables = []
    for case in sorted(by_case, key=case_order):
        entries = sorted(
            by_case[case],
            key=lambda mr: (
                mr[0].name.casefold(),
                loader_rank(mr[1].bench.loader),
                mr[1].bench.device,
                mr[1].bench.page_cache or "",
                mr[1].bench.param or mr[1].bench.name,
            ),
        )
        labels = loader_labels([(machine, row.bench) for machine, row in entries])
        rows = tuple(
            (
                machine.name,
                label,
                row.bench.device,
                row.bench.page_cache or "",
                formatting.seconds(row.bench.median_s),
                formatting.gbps(row.bench.gbps),
                # Both derived within the row's own run (dgbench.derived), never against another run's rows.
                formatting.percent(row.bench.pct_of_ceiling),
                formatting.speedup(row.bench.speedup_vs_pydicom),
                run_label(row.run),
            )
            for (machine, row), label in zip(entries, labels, strict=True)
        )
        tables.append(Table(title=case, headers=CASE_HEADERS, rows=rows))
    return tables


def loader_labels(entries: list[tuple[Machine, Benchmark]]) -> list[str]:
    """The loader's name, plus its test id where one machine ran it twice in a case."""
    def key(mb: tuple[Machine, Benchmark]) -> tuple:
        return (mb[0].name, mb[1].loader, mb[1].device, mb[1].page_cache)

    counts: dict[tuple, int] = defaultdict(int)
    for entry in entries:
        counts[key(entry)] += 1
    return [
        f"{bench.loader} [{bench.param or bench.name}]" if counts[key((machine, bench))] > 1 else bench.loader
        for machine, bench in entries
    ]


def ceiling_table(machines: Iterable[Machine]) -> Table:
    """Every ``ceiling:*`` benchmark: what each machine's hardware allows at best."""
    entries: list[tuple[Machine, Row]] = [(m, r) for m in machines for r in m.rows
                                          if r.bench.is_ceiling and not r.bench.is_scaleout]
    entries.sort(key=lambda mr: (mr[0].name.casefold(), mr[1].bench.loader, mr[1].bench.pixel_bytes, mr[1].bench.case,
                                 mr[1].bench.page_cache or ""))
    rows = tuple(
        (
            machine.name,
            bench.loader,
            bench.case,
            bench.device,
            bench.page_cache or "",
            formatting.byte_count(bench.pixel_bytes),
            formatting.seconds(bench.median_s),
            formatting.gbps(bench.gbps),
            run_label(row.run),
        )
        for machine, row in entries
        for bench in (row.bench,)
    )
    return Table(title="Machine ceilings", headers=CEILING_HEADERS, rows=rows)


def machine_table(machines: Iterable[Machine]) -> Table:
    """Which files each machine's rows come from (a row per run used, newest first), and what that machine was."""
    rows = []
    for machine in machines:
        shown: dict[int, int] = defaultdict(int)
        for row in machine.rows:
            shown[id(row.run)] += 1
        for run in machine.runs_used:
            info = run.machine_info
            kvikio = str(info.get("kvikio_version") or "")
            if info.get("kvikio_compat_mode") is True:
                kvikio += " (compat mode)"
            elif info.get("gds_available") is True:
                kvikio += " (GDS)"
            rows.append(
                (
                    machine.name,
                    str(info.get("machine_slug") or ""),
                    str(info.get("gpu_driver") or ""),
                    str(info.get("cuda_runtime") or ""),
                    kvikio.strip(),
                    # kvdicom's header walk: runs from before the compiled walk record none, and walked in Python
                    str(info.get("kvdicom_header_walk") or "python"),
                    # kvdicom's series slice reads: runs from before the compiled reads record none, read in Python
                    str(info.get("kvdicom_slice_reads") or "python"),
                    str(info.get("profile") or ""),
                    formatting.timestamp(run.started),
                    (run.commit_id or "")[:12],
                    run.display + (f" ({run.interrupted})" if run.interrupted else ""),
                    str(shown[id(run)]),
                    str(len(machine.older_runs)),
                )
            )
    return Table(title="Machines", headers=MACHINE_HEADERS, rows=tuple(rows))

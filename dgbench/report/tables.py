"""Build the report's tables as plain strings, ready for any renderer to escape."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from dgbench.schema import LOADERS as LOADER_ORDER

from . import formatting
from .model import Benchmark, Machine, Run

CASE_HEADERS = (
    "Machine",
    "Loader",
    "Device",
    "Page cache",
    "Median time",
    "GB/s",
    "% of ceiling",
    "Speed-up vs pydicom",
)
CEILING_HEADERS = ("Machine", "Ceiling", "Case", "Device", "Page cache", "Bytes", "Median time", "GB/s")
MACHINE_HEADERS = (
    "Machine",
    "Machine slug",
    "Driver",
    "CUDA",
    "KvikIO",
    "Profile",
    "Run started",
    "Commit",
    "Result file",
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


def case_tables(machines: Iterable[Machine]) -> list[Table]:
    """One table per ``case``: a row per (machine, loader), ceilings left out."""
    by_case: dict[str, list[tuple[Machine, Benchmark]]] = defaultdict(list)
    for machine in machines:
        for bench in machine.run.benchmarks:
            if not bench.is_ceiling:
                by_case[bench.case].append((machine, bench))

    def case_order(case: str) -> tuple[int, str]:
        return (min(b.pixel_bytes for _, b in by_case[case]), case)

    tables = []
    for case in sorted(by_case, key=case_order):
        entries = sorted(
            by_case[case],
            key=lambda mb: (
                mb[0].name.casefold(),
                loader_rank(mb[1].loader),
                mb[1].device,
                mb[1].page_cache or "",
                mb[1].param or mb[1].name,
            ),
        )
        labels = loader_labels(entries)
        rows = tuple(
            (
                machine.name,
                label,
                bench.device,
                bench.page_cache or "",
                formatting.seconds(bench.median_s),
                formatting.gbps(bench.gbps),
                formatting.percent(bench.pct_of_ceiling),
                formatting.speedup(speedup_vs_pydicom(machine.run, bench)),
            )
            for (machine, bench), label in zip(entries, labels, strict=True)
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


def speedup_vs_pydicom(run: Run, bench: Benchmark) -> float | None:
    """pydicom's median over this one's, same case and page cache, same run (``dgbench.derived`` computed it)."""
    return bench.speedup_vs_pydicom


def ceiling_table(machines: Iterable[Machine]) -> Table:
    """Every ``ceiling:*`` benchmark: what each machine's hardware allows at best."""
    entries = [(m, b) for m in machines for b in m.run.benchmarks if b.is_ceiling]
    entries.sort(key=lambda mb: (mb[0].name.casefold(), mb[1].loader, mb[1].pixel_bytes, mb[1].case, mb[1].page_cache or ""))
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
        )
        for machine, bench in entries
    )
    return Table(title="Machine ceilings", headers=CEILING_HEADERS, rows=rows)


def machine_table(machines: Iterable[Machine]) -> Table:
    """Which file each machine's numbers come from, and what that machine was."""
    rows = []
    for machine in machines:
        info = machine.run.machine_info
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
                str(info.get("profile") or ""),
                formatting.timestamp(machine.run.started),
                (machine.run.commit_id or "")[:12],
                machine.run.display,
                str(len(machine.older_runs)),
            )
        )
    return Table(title="Machines", headers=MACHINE_HEADERS, rows=tuple(rows))

"""Decide which machine each run came from, what to call it, and which rows to show.

A machine is what ``results/<machine-slug>/`` names (GPU, driver, CUDA, KvikIO
mode). It is shown by its GPU, never by pytest-benchmark's default id (OS and
Python version), which cannot tell an H100 from a V100.

A machine's latest state may be split across runs (on the device one session
cannot run the whole matrix in one command), so each (case, loader, device,
page cache) row comes from the newest run that has it, not all from the newest
run. Derived numbers (% of ceiling, × pydicom) stay those of the row's own run.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from .model import Machine, Row, Run


def base_name(machine_info: dict[str, Any]) -> str:
    """GPU model plus KvikIO's mode; the CPU's brand for CPU-only runs."""
    gpu = text(machine_info.get("gpu_name"))
    if gpu:
        count = machine_info.get("gpu_count")
        name = f"{count} × {gpu}" if isinstance(count, int) and count > 1 else gpu
        if machine_info.get("gds_available") is True:
            name += " (GDS)"
        if machine_info.get("kvikio_compat_mode") is True:
            name += " (compat)"
        return name
    cpu = machine_info.get("cpu")
    brand = text(cpu.get("brand_raw")) if isinstance(cpu, dict) else None
    return brand or text(machine_info.get("machine_slug")) or text(machine_info.get("node")) or "unknown machine"


def machine_key(machine_info: dict[str, Any]) -> str:
    """The identity runs are grouped by: the slug, else the name on that host."""
    slug = text(machine_info.get("machine_slug"))
    if slug:
        return "slug:" + slug
    return f"name:{base_name(machine_info)}@{text(machine_info.get('node')) or '?'}"


def distinguishing_label(machine_info: dict[str, Any]) -> str | None:
    """What tells two machines with the same GPU name apart."""
    return text(machine_info.get("machine_slug")) or text(machine_info.get("node"))


def combine_rows(newest_first: Iterable[Run]) -> tuple[Row, ...]:
    """Each key's benchmarks from the newest run that has that key (all of them, so a sweep stays whole)."""
    owner: dict[tuple, int] = {}
    rows = []
    for run in newest_first:
        for bench in run.benchmarks:
            key = bench.row_key
            if owner.setdefault(key, id(run)) == id(run):
                rows.append(Row(bench, run))
    return tuple(rows)


def machines_from_runs(runs: Iterable[Run]) -> list[Machine]:
    """Group runs by machine and combine each machine's rows (:func:`combine_rows`), named uniquely.

    Runs are ordered by the file's ``datetime`` (then path); the newest names the machine.
    """
    by_key: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_key[machine_key(run.machine_info)].append(run)

    chosen: list[tuple[str, Run, tuple[Row, ...], tuple, tuple]] = []
    for group in by_key.values():
        ordered = sorted(group, key=lambda r: (r.started, str(r.path)), reverse=True)
        rows = combine_rows(ordered)
        used = {id(row.run) for row in rows}
        unused = tuple(r.path for r in ordered if id(r) not in used)
        chosen.append((base_name(ordered[0].machine_info), ordered[0], rows, unused, tuple(reversed(ordered))))

    names = unique_names([(name, run) for name, run, _, _, _ in chosen])
    machines = [Machine(name=unique, run=run, rows=rows, older_runs=unused, history=history)
                for unique, (_, run, rows, unused, history) in zip(names, chosen, strict=True)]
    return sorted(machines, key=lambda m: m.name.casefold())


def unique_names(named_runs: list[tuple[str, Run]]) -> list[str]:
    """Append the slug (or host) to names that more than one machine shares."""
    counts: dict[str, int] = defaultdict(int)
    for name, _ in named_runs:
        counts[name] += 1
    names = []
    for name, run in named_runs:
        if counts[name] > 1:
            label = distinguishing_label(run.machine_info) or run.path.stem
            name = f"{name} [{label}]"
        names.append(name)
    # Last resort (e.g. neither slug nor host recorded): the file name decides.
    seen: dict[str, int] = defaultdict(int)
    for name in names:
        seen[name] += 1
    return [
        f"{name} [{run.path.name}]" if seen[name] > 1 else name
        for name, (_, run) in zip(names, named_runs, strict=True)
    ]


def text(value: Any) -> str | None:
    """A stripped non-empty string, or ``None``."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None

"""How numbers look in the tables: one place, so Markdown and HTML always agree."""

from __future__ import annotations

import math
from datetime import datetime, timezone


def seconds(value: float) -> str:
    """A duration to three significant digits, in µs, ms or s (``500 µs``, ``2.00 ms``)."""
    if value < 1e-3:
        scaled, unit = value * 1e6, "µs"
    elif value < 1.0:
        scaled, unit = value * 1e3, "ms"
    else:
        scaled, unit = value, "s"
    decimals = max(0, 2 - math.floor(math.log10(scaled))) if scaled > 0 else 0
    return f"{scaled:.{decimals}f} {unit}"


def gbps(value: float) -> str:
    """Throughput in GB/s (10^9 bytes per second); three significant digits below 1."""
    if value >= 1:
        return f"{value:.2f}"
    decimals = 2 - math.floor(math.log10(value)) if value > 0 else 2
    return f"{value:.{decimals}f}"


#: Marks a share of a ceiling above 100%: the ceiling measured in that run read slower than the loader, so
#: it bounds nothing there (ROWS_NOTE says so under every table). Seen in run 0055 (H200 scale-out), whose
#: host-read ceiling read each series' files one after the other.
NOT_A_BOUND = " (ceiling below it)"


def percent(value: float | None) -> str:
    """A percentage, blank when unknown; a share of a ceiling above 100% is marked :data:`NOT_A_BOUND`."""
    if value is None:
        return ""
    return f"{value:.1f}%" + (NOT_A_BOUND if value > 100.0 else "")


def speedup(value: float | None) -> str:
    """A ratio such as ``12.30×``, blank when unknown."""
    return "" if value is None else f"{value:.2f}×"


def byte_count(value: int) -> str:
    """Bytes in binary units, so 1024x1024 u16 reads as 2.0 MiB."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if size.is_integer() else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def timestamp(value: datetime) -> str:
    """A run's start in UTC, to the second."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_label(started: datetime, commit_id: str | None) -> str:
    """Which run a row came from: its start (UTC, as in the machines table) and short commit."""
    return f"{started.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M:%S')} · {(commit_id or '?')[:7]}"


def gpu_count(gpus: int) -> str:
    """"1 GPU", "4 GPUs"."""
    return f"{gpus} GPU{'s' if gpus != 1 else ''}"


def scaleout_loader(loader: str, gpus: int | None) -> str:
    """A loader's name with the GPUs of its scale-out row (the plain loop is the one row not run through Dask)."""
    if not gpus:
        return loader
    count = gpu_count(gpus)
    return f"{loader} ({count}, no Dask)" if loader == "kvdicom-loop" else f"{loader} ({count} through Dask)"

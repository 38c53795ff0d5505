"""Numbers derived from a whole session's benchmarks: GB/s, % of ceiling, speed-up over pydicom.

The one place these are computed: the plugin fills them into ``extra_info``
before the JSON is saved and the summary printed, and the report recomputes
them with the same functions from each saved run (so old files and files from
other tools read the same way). They need the whole session: a loader's
ceiling and pydicom's time for the same case are other benchmarks.

A cold row is compared with the disk only if its drop of the page cache was
verified (``page_cache == "cold"`` with a residency reading at or below
``COLD_MAX_RESIDENT``); anything else is ``unverified`` and gets no % of ceiling.
A row meets only a ceiling of its own (effective) page-cache state: a cold series row
is held against the same files' cold disk read (``series_disk_read``, ``series_disk_h2d``:
``dgbench.schema.series_ceiling_for``), never the warm ``series_host_read`` / ``series_h2d``.
"""

from __future__ import annotations

import math

from dgbench.config import COLD_MAX_RESIDENT
from dgbench.schema import ceiling_loader, is_ceiling, is_stage

__all__ = ["add_derived_fields", "effective_page_cache", "format_table", "gbps", "noise_floor", "regressed",
           "summary_rows"]


def gbps(pixel_bytes: float, median_s: float) -> float | None:
    """Pixel bytes per second in GB/s (10^9), from the pixel bytes (not the file's): what a loader delivers."""
    if not (median_s > 0) or not math.isfinite(median_s):
        return None
    value = pixel_bytes / median_s / 1e9
    return value if math.isfinite(value) else None


def effective_page_cache(info: dict) -> str:
    """``warm``, ``cold`` (drop verified) or ``unverified``.

    A ``cold`` row without a residency reading is unverified."""
    state = info.get("page_cache") or "warm"
    if state != "cold":
        return state
    readings = [info.get(k) for k in ("resident_fraction_max", "cached_fraction_before")]
    readings = [r for r in readings if isinstance(r, (int, float)) and not isinstance(r, bool)]
    if not readings or max(readings) > COLD_MAX_RESIDENT:
        return "unverified"
    return "cold"


def _key(info: dict, loader: str, gpus=...) -> tuple:
    """(case, loader, page cache, GPUs): scale-out rows of each GPU count are their own (``gpus``; None elsewhere)."""
    return info.get("case"), loader, effective_page_cache(info), info.get("gpus") if gpus is ... else gpus


def _best_ceiling(by_key: dict, info: dict, name: str) -> dict | None:
    """The fastest ceiling of ``info``'s case called ``name`` or ``name_<variant>``, same page-cache state and GPUs."""
    case, _, cache, gpus = _key(info, name)
    found = [b for (c, lo, pc, g), b in by_key.items()
             if c == case and pc == cache and g == gpus and lo and (lo == name or lo.startswith(name + "_"))]
    return max(found, key=lambda b: b["extra_info"].get("gbps") or 0, default=None)


def add_derived_fields(benchmarks: list[dict]) -> None:
    """Fill ``gbps``, ``rounds``, ``spread``, ``ceiling_gbps``, ``pct_of_ceiling`` and
    ``speedup_vs_pydicom`` into each benchmark's ``extra_info``, in place (stale values are replaced);
    a scale-out row's ``speedup_vs_pydicom`` is against the same Dask job with pydicom + cupy on as many GPUs;
    a stage row (``stage:<name>``) gets ``pct_of_load``: its median as % of the whole kvdicom load's, same case,
    device and page-cache state.

    Each item is pytest-benchmark's dict form: ``{"extra_info": {...}, "stats": {...}}``.
    Benchmarks without stats (``--benchmark-disable``) or without ``pixel_bytes`` are left alone.
    """
    timed = [b for b in benchmarks if b.get("stats") and b["extra_info"].get("pixel_bytes")]
    by_key = {}
    for bench in timed:
        info, stats = bench["extra_info"], bench["stats"]
        median = stats["median"]
        for stale in ("ceiling_gbps", "pct_of_ceiling", "speedup_vs_pydicom", "pct_of_load", "series_per_s",
                      "scaling_efficiency"):
            info.pop(stale, None)
        info["gbps"] = gbps(info["pixel_bytes"], median)
        if info.get("frames") and median > 0:  # compressed cases: decoded frames per second
            info["frames_per_s"] = info["frames"] / median
        info["rounds"] = stats["rounds"]
        info["spread"] = stats["iqr"] / median if median > 0 else None
        if _count(info.get("series")) and median > 0:
            info["series_per_s"] = info["series"] / median
        by_key[_key(info, info.get("loader"))] = bench
    # the whole loads stage rows are parts of; kvdicom runs on cpu and cuda, so the device is part of the key
    loads = {_key(b["extra_info"], "kvdicom") + (b["extra_info"].get("device"),): b
             for b in timed if b["extra_info"].get("loader") == "kvdicom"}

    for bench in timed:
        info = bench["extra_info"]
        if is_stage(info.get("loader", "")):
            whole = loads.get(_key(info, "kvdicom") + (info.get("device"),))
            if whole is not None and whole["stats"]["median"] > 0:
                info["pct_of_load"] = 100.0 * bench["stats"]["median"] / whole["stats"]["median"]
            continue
        gpus = _count(info.get("gpus"))
        one = by_key.get(_key(info, info.get("loader"), 1)) if gpus else None
        if one is not None and info.get("series_per_s") and one["extra_info"].get("series_per_s"):
            info["scaling_efficiency"] = info["series_per_s"] / (gpus * one["extra_info"]["series_per_s"])
        if is_ceiling(info.get("loader", "")) or not info.get("gbps"):
            continue
        pydicom = by_key.get(_key(info, "pydicom"))
        if pydicom is None and gpus:  # a dataset through Dask: against the same job with pydicom + cupy, same GPUs
            pydicom = by_key.get(_key(info, "pydicom+cupy"))
        if pydicom is not None:
            info["speedup_vs_pydicom"] = pydicom["stats"]["median"] / bench["stats"]["median"]
        ceiling = info.get("ceiling")
        if ceiling and effective_page_cache(info) in ("warm", "cold"):
            ref = _best_ceiling(by_key, info, ceiling_loader(ceiling))
            if ref is not None and ref["extra_info"].get("gbps"):
                info["ceiling_gbps"] = ref["extra_info"]["gbps"]
                info["pct_of_ceiling"] = 100.0 * info["gbps"] / info["ceiling_gbps"]


def _count(value) -> int | None:
    """A positive int count from ``extra_info`` (``gpus``, ``series``), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def noise_floor(now_stats, base_stats, k: float, percent: bool) -> float:
    """k × the larger run-to-run spread of the two runs, in the check's units (the baseline rule's noise).

    Spread is IQR / median (the ``spread`` of ``extra_info``) for percentage
    checks, in percent; for absolute checks (seconds) it is the larger IQR.
    Stats are dicts or objects with ``median`` and ``iqr``.
    """
    def get(stats, field):
        return stats[field] if isinstance(stats, dict) else getattr(stats, field)

    if percent:
        spreads = [get(s, "iqr") / get(s, "median") for s in (now_stats, base_stats) if get(s, "median") > 0]
        return k * 100.0 * max(spreads, default=0.0)
    return k * max(get(now_stats, "iqr"), get(base_stats, "iqr"))


def regressed(now_stats, base_stats, threshold_pct: float, k: float) -> tuple[float, bool]:
    """(median change in %, whether it is a regression by the baseline rule: above both the threshold and the noise)."""
    def get(stats, field):
        return stats[field] if isinstance(stats, dict) else getattr(stats, field)

    change = 100.0 * (get(now_stats, "median") - get(base_stats, "median")) / get(base_stats, "median")
    return change, change > max(threshold_pct, noise_floor(now_stats, base_stats, k, percent=True))


def summary_rows(benchmarks: list[dict]) -> list[tuple]:
    """(case, loader, device, page cache, GB/s, % of ceiling, × pydicom) for the terminal table."""
    rows = []
    for bench in benchmarks:
        info = bench["extra_info"]
        if info.get("gbps") is None:
            continue
        rows.append((
            info.get("case", "?"),
            info.get("loader", "?"),
            info.get("device", "?"),
            effective_page_cache(info),
            info["gbps"],
            info.get("pct_of_ceiling"),
            info.get("speedup_vs_pydicom"),
        ))
    return sorted(rows, key=lambda r: (r[0], r[3], r[1]))


def format_table(rows: list[tuple]) -> list[str]:
    """Plain-text table lines for the terminal summary."""
    head = ("case", "loader", "device", "cache", "GB/s", "% ceiling", "x pydicom")
    cells = [head] + [
        (c, lo, d, pc, f"{g:.2f}", "" if p is None else f"{p:.0f}%", "" if s is None else f"{s:.1f}x")
        for c, lo, d, pc, g, p, s in rows
    ]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(head))]
    return ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]

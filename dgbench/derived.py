"""Numbers derived from a whole session's benchmarks: GB/s, % of ceiling, speed-up over pydicom.

They can only be computed once every benchmark of the session has run (a
loader's ceiling and pydicom's time for the same case are other benchmarks),
so they are filled in just before the JSON is saved and the summary printed.
"""

from __future__ import annotations

CEILING_PREFIX = "ceiling:"


def _key(bench: dict, loader: str) -> tuple:
    info = bench["extra_info"]
    return info.get("case"), loader, info.get("page_cache", "warm")


def _best_ceiling(by_key: dict, bench: dict, name: str) -> dict | None:
    """The fastest ceiling of ``bench``'s case called ``name`` or ``name_<variant>``."""
    case, _, cache = _key(bench, name)
    found = [b for (c, lo, pc), b in by_key.items()
             if c == case and pc == cache and lo and (lo == name or lo.startswith(name + "_"))]
    return max(found, key=lambda b: b["extra_info"].get("gbps") or 0, default=None)


def add_derived_fields(benchmarks: list[dict]) -> None:
    """Fill ``gbps``, ``rounds``, ``spread``, ``ceiling_gbps``, ``pct_of_ceiling`` and
    ``speedup_vs_pydicom`` into each benchmark's ``extra_info``, in place.

    Each item is pytest-benchmark's dict form: ``{"extra_info": {...}, "stats": {...}}``.
    Benchmarks without stats (``--benchmark-disable``) or without ``pixel_bytes`` are left alone.
    """
    timed = [b for b in benchmarks if b.get("stats") and b["extra_info"].get("pixel_bytes")]
    by_key = {}
    for bench in timed:
        info, stats = bench["extra_info"], bench["stats"]
        median = stats["median"]
        info["gbps"] = info["pixel_bytes"] / median / 1e9 if median > 0 else None
        if info.get("frames") and median > 0:  # compressed cases: decoded frames per second
            info["frames_per_s"] = info["frames"] / median
        info["rounds"] = stats["rounds"]
        info["spread"] = stats["iqr"] / median if median > 0 else None
        by_key[_key(bench, info.get("loader"))] = bench

    for bench in timed:
        info = bench["extra_info"]
        if str(info.get("loader", "")).startswith(CEILING_PREFIX):
            continue
        pydicom = by_key.get(_key(bench, "pydicom"))
        if pydicom is not None:
            info["speedup_vs_pydicom"] = pydicom["stats"]["median"] / bench["stats"]["median"]
        ceiling = info.get("ceiling")
        if ceiling:
            ref = _best_ceiling(by_key, bench, CEILING_PREFIX + ceiling)
            if ref is not None and ref["extra_info"].get("gbps"):
                info["ceiling_gbps"] = ref["extra_info"]["gbps"]
                info["pct_of_ceiling"] = 100.0 * info["gbps"] / info["ceiling_gbps"]


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
            info.get("page_cache", "warm"),
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

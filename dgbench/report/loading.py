"""Find result files, read them read-only, and keep only what is a usable result.

Anything that is not a pytest-benchmark result with the ``extra_info`` keys of
``results/README.md`` is reported as skipped (with the reason) instead of
stopping the report: one broken file must not hide every other machine.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from .model import Benchmark, Run, Skipped

REQUIRED_EXTRA_INFO = ("case", "loader", "device", "pixel_bytes")


class InvalidResult(ValueError):
    """Raised with a human-readable reason when a file is not a usable result."""


@dataclass(frozen=True)
class Loaded:
    """Every usable run found, plus everything that was left out."""

    files: tuple[Path, ...]
    runs: tuple[Run, ...]
    skipped: tuple[Skipped, ...]


def find_result_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Skipped]]:
    """Expand each argument: a file is taken as is, a folder gives its ``*.json`` (recursively)."""
    found: list[Path] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*.json") if p.is_file())
        elif path.is_file():
            candidates = [path]
        else:
            skipped.append(Skipped(str(path), "no such file or directory"))
            continue
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append(candidate)
    return found, skipped


def load_results(paths: Iterable[str | Path]) -> Loaded:
    """Read every result file under ``paths``; never raises for a bad file."""
    files, skipped = find_result_files(paths)
    runs: list[Run] = []
    for path in files:
        try:
            document = read_json(path)
            run, dropped = parse_run(path, document)
        except InvalidResult as exc:
            skipped.append(Skipped(str(path), str(exc)))
            continue
        skipped.extend(dropped)
        runs.append(run)
    return Loaded(tuple(files), tuple(runs), tuple(skipped))


def read_json(path: Path) -> Any:
    """Open read-only and parse; every failure becomes an ``InvalidResult``."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise InvalidResult(f"cannot read: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise InvalidResult("empty file")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidResult(f"not JSON ({exc})") from exc


def parse_run(path: Path, document: Any) -> tuple[Run, list[Skipped]]:
    """Check the pytest-benchmark shape and turn it into a ``Run``.

    Benchmarks lacking the ``extra_info`` this report needs are dropped one by
    one (and reported); the file is only rejected when none is left.
    """
    if not isinstance(document, dict):
        raise InvalidResult(
            f"not a pytest-benchmark result (top level is a JSON {type(document).__name__}, not an object)"
        )
    benchmarks = document.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise InvalidResult("not a pytest-benchmark result (no 'benchmarks' list)")
    machine_info = document.get("machine_info")
    if not isinstance(machine_info, dict):
        raise InvalidResult("not a pytest-benchmark result (no 'machine_info' object)")
    started = parse_datetime(document.get("datetime"))
    if not benchmarks:
        raise InvalidResult("no benchmarks in file")

    kept: list[Benchmark] = []
    dropped: list[Skipped] = []
    for index, raw in enumerate(benchmarks):
        try:
            kept.append(parse_benchmark(raw))
        except InvalidResult as exc:
            label = raw.get("name") if isinstance(raw, dict) else None
            label = label if isinstance(label, str) else f"#{index}"
            dropped.append(Skipped(str(path), f"benchmark {label}: {exc}"))
    if not kept:
        reasons = "; ".join(item.reason for item in dropped)
        raise InvalidResult(f"no usable benchmarks ({reasons})")

    commit_info = document.get("commit_info")
    commit_id = commit_info.get("id") if isinstance(commit_info, dict) else None
    run = Run(
        path=path,
        started=started,
        machine_info=machine_info,
        commit_id=commit_id if isinstance(commit_id, str) else None,
        benchmarks=tuple(kept),
    )
    return run, dropped


def parse_datetime(value: Any) -> datetime:
    """pytest-benchmark writes ISO 8601; old versions wrote it without a zone (UTC)."""
    if not isinstance(value, str):
        raise InvalidResult("no 'datetime' string, so runs cannot be ordered")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidResult(f"'datetime' is not ISO 8601: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def parse_benchmark(raw: Any) -> Benchmark:
    """Validate one entry of ``benchmarks`` against the README's contract."""
    if not isinstance(raw, dict):
        raise InvalidResult("not an object")
    stats = raw.get("stats")
    median = stats.get("median") if isinstance(stats, dict) else None
    if not is_positive_number(median):
        raise InvalidResult("no positive 'stats.median'")
    extra = raw.get("extra_info")
    if not isinstance(extra, dict):
        raise InvalidResult("no 'extra_info'")
    missing = [key for key in REQUIRED_EXTRA_INFO if extra.get(key) is None]
    if missing:
        raise InvalidResult("extra_info lacks " + ", ".join(missing))
    for key in ("case", "loader", "device"):
        if not isinstance(extra[key], str) or not extra[key]:
            raise InvalidResult(f"extra_info {key} is not a non-empty string")
    pixel_bytes = extra["pixel_bytes"]
    if not is_positive_number(pixel_bytes):
        raise InvalidResult("extra_info pixel_bytes is not a positive number")

    gbps = extra.get("gbps")
    if not is_positive_number(gbps):
        gbps = pixel_bytes / median / 1e9
    page_cache = extra.get("page_cache")
    param = raw.get("param")
    return Benchmark(
        name=str(raw.get("name") or raw.get("fullname") or ""),
        case=extra["case"],
        loader=extra["loader"],
        device=extra["device"],
        page_cache=page_cache if isinstance(page_cache, str) else None,
        param=param if isinstance(param, str) else None,
        pixel_bytes=int(pixel_bytes),
        median_s=float(median),
        gbps=float(gbps),
        pct_of_ceiling=optional_number(extra.get("pct_of_ceiling")),
        speedup_vs_pydicom=optional_number(extra.get("speedup_vs_pydicom")),
    )


def is_positive_number(value: Any) -> bool:
    """True for a finite number above zero (bool is not a number here)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def optional_number(value: Any) -> float | None:
    """A finite number, or ``None`` for anything absent or unusable (shown blank)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None

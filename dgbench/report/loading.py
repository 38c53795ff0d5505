"""Find result files, read them read-only, and keep only what is a usable result.

Anything that is not a pytest-benchmark result with the ``extra_info`` keys of
``results/README.md`` is reported as skipped (with the reason) instead of
stopping the report: one broken file, one malformed value (a datetime out of
range, an integer too large for a float, a median so small GB/s is infinite),
an unreadable folder, must not hide every other machine. Derived numbers
(GB/s, % of ceiling, × pydicom) are recomputed by ``dgbench.derived``, the
same code that wrote them, so one rule holds for every file. Paths are shown
relative to the folders given on the command line.
"""

from __future__ import annotations

from dgbench.store import RunFault, read_run, run_fault

import json
import math
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

from dgbench.derived import add_derived_fields, effective_page_cache
from dgbench.interrupt import INTERRUPTED, is_interrupted

from .model import Benchmark, Run, Skipped

REQUIRED_EXTRA_INFO = ("case", "loader", "device", "pixel_bytes")


#: Longest string field a report shows (machine names, case ids): longer ones are cut (machine_info) or refused.
MAX_FIELD_CHARS = 200
#: A run dated later than now by more than this is refused (clock skew between machines stays within it).
FUTURE_SLACK = timedelta(days=1)


class InvalidResult(ValueError):
    """Raised with a human-readable reason when a file is not a usable result."""


@dataclass(frozen=True)
class Loaded:
    """Every usable run found, plus everything that was left out."""

    files: tuple[Path, ...]
    runs: tuple[Run, ...]
    skipped: tuple[Skipped, ...]


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _regular(path: Path) -> str | None:
    """``None`` for a regular file (a symlink to one counts), else why it is not read."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if os.path.islink(path) else "no such file or directory"
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    return None if stat.S_ISREG(mode) else f"not a regular file ({kind_of(mode)})"


def _outside(path: Path, base: Path | None) -> str | None:
    """Why a file found under the folder ``base`` is not read: it links to a file outside it (another machine's
    folder, or anywhere at all, would pass for this one), else None."""
    if base is None or not path.is_symlink():
        return None
    target, root = path.resolve(), base.resolve()
    return None if target.is_relative_to(root) else f"a link to {target}, outside {base}"


def display_path(path: Path, base: Path | None, prefix: str) -> str:
    """``path`` relative to the folder ``base`` it was found under, led by ``prefix`` when several were given;
    a file given on the command line as typed."""
    if base is None:
        return str(path)  # a file argument: as the user typed it
    rel = path.relative_to(base).as_posix()
    return f"{prefix}/{rel}" if prefix else rel


def find_result_files(paths: Iterable[str | Path]) -> tuple[list[tuple[Path, str]], list[Skipped]]:
    """Expand each argument: a file is taken as is, a folder gives its ``*.json`` (recursively).

    Returns (path, display path) pairs; unreadable folders and ``*.json`` entries
    that are not regular files are listed as skipped with the reason.
    """
    args = [Path(a) for a in paths]
    found: list[tuple[Path, str]] = []
    skipped: list[Skipped] = []
    seen: set[Path] = set()
    for arg in args:
        prefix = (arg.name or str(arg)) if len(args) > 1 else ""
        if arg.is_dir():
            candidates: list[Path] = []

            def unreadable(exc: OSError, base=arg, prefix=prefix) -> None:
                where = display_path(Path(exc.filename), base, prefix) if exc.filename else prefix or "."
                skipped.append(Skipped(where + "/", f"cannot read folder: {exc.strerror or exc}"))

            for folder, dirs, files in os.walk(arg, onerror=unreadable, followlinks=False):
                dirs.sort()
                for name in sorted(files + [d for d in dirs if d.endswith(".json")]):
                    if name.endswith(".json"):
                        candidates.append(Path(folder) / name)
            base: Path | None = arg
        else:
            candidates, base = [arg], None
        for candidate in candidates:
            shown = display_path(candidate, base, prefix)
            fault = _regular(candidate) or _outside(candidate, base)
            if fault:
                skipped.append(Skipped(shown if base is not None else str(arg), fault))
                continue
            resolved = candidate.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append((candidate, shown))
    return found, skipped


def load_results(paths: Iterable[str | Path]) -> Loaded:
    """Read every result file under ``paths``; never raises for a bad file."""
    files, skipped = find_result_files(paths)
    runs: list[Run] = []
    for path, shown in files:
        try:
            document = read_json(path)
            run, dropped = parse_run(path, document, shown)
        except InvalidResult as exc:
            skipped.append(Skipped(shown, str(exc)))
            continue
        skipped.extend(dropped)
        runs.append(run)
    return Loaded(tuple(path for path, _ in files), tuple(runs), tuple(skipped))


def read_json(path: Path) -> Any:
    """Open read-only and parse; every failure becomes an ``InvalidResult``."""
    try:
        return read_run(path)
    except RunFault as exc:  # the store's words without the file name: the report names the file itself
        reason = str(exc).removeprefix(f"{path.name} ")
        raise InvalidResult("empty file" if reason == "is empty" else reason) from exc


def parse_run(path: Path, document: Any, shown: str | None = None) -> tuple[Run, list[Skipped]]:
    """Check the pytest-benchmark shape and turn it into a ``Run``.

    Benchmarks lacking the ``extra_info`` this report needs, or holding a value
    that cannot be used, are dropped one by one (and reported); the file is only
    rejected when none is left.
    """
    shown = shown if shown is not None else str(path)
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
    if started > datetime.now(timezone.utc) + FUTURE_SLACK:
        raise InvalidResult(f"dated {started:%Y-%m-%d %H:%M} UTC, in the future: as a machine's newest run it would "
                            "replace the rows of the real ones")
    machine_info = bounded(machine_info)
    if not benchmarks:
        raise InvalidResult("no benchmarks in file")

    kept: list[Benchmark] = []
    dropped: list[Skipped] = []
    checked: list[tuple[str, dict, dict]] = []
    for index, raw in enumerate(benchmarks):
        label = raw.get("name") if isinstance(raw, dict) else None
        label = label if isinstance(label, str) else f"#{index}"
        try:
            checked.append((label, raw, derivable(raw)))
        except InvalidResult as exc:
            dropped.append(Skipped(shown, f"benchmark {label}: {exc}"))
    add_derived_fields([item for _, _, item in checked])
    for label, raw, item in checked:
        try:
            kept.append(parse_benchmark(raw, item))
        except InvalidResult as exc:
            dropped.append(Skipped(shown, f"benchmark {label}: {exc}"))
    if not kept:
        reasons = "; ".join(item.reason for item in dropped)
        raise InvalidResult(f"no usable benchmarks ({reasons})")

    commit_info = document.get("commit_info")
    commit_id = commit_info.get("id") if isinstance(commit_info, dict) else None
    run = Run(
        path=path,
        display=shown,
        started=started,
        machine_info=machine_info,
        commit_id=commit_id if isinstance(commit_id, str) else None,
        benchmarks=tuple(kept),
        interrupted=str(document[INTERRUPTED]) if is_interrupted(document) else None,
    )
    return run, dropped


def parse_datetime(value: Any) -> datetime:
    """pytest-benchmark writes ISO 8601; old versions wrote it without a zone (UTC)."""
    if not isinstance(value, str):
        raise InvalidResult("no 'datetime' string, so runs cannot be ordered")
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        # In UTC now, so a date at the edge of the calendar fails here and not while rendering.
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise InvalidResult(f"'datetime' is not a usable ISO 8601 time: {value!r} ({exc})") from exc


def bounded(value: Any, depth: int = 0) -> Any:
    """``value`` with every string cut to :data:`MAX_FIELD_CHARS` (a 1.3 MB ``gpu_name`` took minutes and wrote
    hundreds of MB of report); nested containers too, to a few levels."""
    if isinstance(value, str):
        return value if len(value) <= MAX_FIELD_CHARS else value[:MAX_FIELD_CHARS] + f"… (cut from {len(value)})"
    if depth < 4 and isinstance(value, dict):
        return {bounded(k, depth + 1): bounded(v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, list):
        return [bounded(v, depth + 1) for v in value]
    return value


#: GPUs and series of a scale-out row at most (a larger count is not a count this suite writes).
MAX_COUNT = 1 << 20


def derivable(raw: Any) -> dict:
    """Check one entry of ``benchmarks`` and return the copy ``dgbench.derived`` computes on."""
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
        raise InvalidResult("extra_info pixel_bytes is not a positive number a float can hold")
    for key in ("page_cache", "ceiling"):
        if extra.get(key) is not None and not isinstance(extra[key], str):
            raise InvalidResult(f"extra_info {key} is not a string")
    for key in ("case", "loader", "device", "page_cache", "ceiling"):
        if isinstance(extra.get(key), str) and len(extra[key]) > MAX_FIELD_CHARS:
            raise InvalidResult(f"extra_info {key} is {len(extra[key])} characters long, over {MAX_FIELD_CHARS}")
    info = {k: extra.get(k) for k in ("case", "loader", "device", "page_cache", "ceiling",
                                      "resident_fraction_max", "cached_fraction_before")}
    info["pixel_bytes"] = pixel_bytes
    for key in ("resident_fraction_max", "cached_fraction_before"):
        info[key] = optional_number(info[key])
    for key in ("gpus", "series"):  # scale-out rows: counts, else left out
        value = extra.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_COUNT:
            info[key] = value
    if info.get("gpus") and info["loader"] == "kvdicom" and "plain_load_series_loop" in str(raw.get("name")):
        info["loader"] = "kvdicom-loop"  # runs saved before the loop had a loader name of its own (0019)
    iqr, rounds = stats.get("iqr"), stats.get("rounds")
    return {
        "extra_info": info,
        "stats": {"median": float(median), "iqr": float(iqr) if optional_number(iqr) is not None else 0.0,
                  "rounds": rounds if isinstance(rounds, int) and not isinstance(rounds, bool) else None},
    }


def parse_benchmark(raw: dict, derived: dict) -> Benchmark:
    """The report's record of one benchmark that :func:`derivable` accepted, with ``derived``'s numbers."""
    info = derived["extra_info"]
    if info.get("gbps") is None:
        raise InvalidResult(f"median {raw['stats']['median']!r} s gives no finite GB/s")
    stats = raw["stats"]
    param = raw.get("param")
    q1, q3 = optional_number(stats.get("q1")), optional_number(stats.get("q3"))
    return Benchmark(
        name=str(raw.get("name") or raw.get("fullname") or ""),
        case=info["case"],
        loader=info["loader"],
        device=info["device"],
        page_cache=effective_page_cache(info) if info.get("page_cache") is not None else None,
        param=param if isinstance(param, str) else None,
        pixel_bytes=int(info["pixel_bytes"]),
        median_s=float(stats["median"]),
        gbps=float(info["gbps"]),
        pct_of_ceiling=optional_number(info.get("pct_of_ceiling")),
        speedup_vs_pydicom=optional_number(info.get("speedup_vs_pydicom")),
        q1_s=q1 if q1 is not None and q1 > 0 else None,
        q3_s=q3 if q3 is not None and q3 > 0 else None,
        gpus=info.get("gpus"),
        series=info.get("series"),
        series_per_s=optional_number(info.get("series_per_s")),
        scaling_efficiency=optional_number(info.get("scaling_efficiency")),
    )


def is_positive_number(value: Any) -> bool:
    """True for a finite number above zero that a float can hold (bool is not a number here)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value)) and value > 0
    except OverflowError:  # an int too large for a float
        return False


def optional_number(value: Any) -> float | None:
    """A finite number, or ``None`` for anything absent or unusable (shown blank)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    return None

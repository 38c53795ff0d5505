"""The results store: reading one saved run safely, and what makes a run unusable. Used by the baseline
compare, merge_runs, repeats and the report, so a hostile or broken file is refused the same way everywhere.

A saved run is read only if it is a regular file (a FIFO would block, a link to ``/dev/zero`` would be read
until memory runs out) of at most :data:`MAX_RUN_BYTES`; every stats value a comparison reads must be a
number a float holds (a 400-digit median overflowed pytest-benchmark's arithmetic into an INTERNALERROR), and the
IQR must fit in the rounds' range (an IQR of 1e300 passed a 10x slow-down as noise).
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

#: The largest run file read: the biggest committed run is under 1 MiB; 64 MiB leaves room for nightly runs
#: with every round's data and still bounds what a wrong file can cost.
MAX_RUN_BYTES = 64 << 20
#: The stats every comparison and table reads, numbers all (``outliers`` is pytest-benchmark's "a;b" string).
NUMERIC_STATS = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "ld15iqr", "hd15iqr", "ops",
                 "total", "rounds", "iterations", "iqr_outliers", "stddev_outliers")
TEXT_STATS = ("outliers",)


class RunFault(ValueError):
    """A saved run that cannot be used; the message names the file and the problem."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: Path, limit: int = MAX_RUN_BYTES) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes; :class:`RunFault` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise RunFault(f"{path.name} cannot be read ({exc.strerror or exc})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RunFault(f"{path.name} is not a regular file ({_kind(st.st_mode)})")
        if st.st_size > limit:
            raise RunFault(f"{path.name} is {st.st_size} bytes, over the {limit}-byte limit for a saved run")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise RunFault(f"{path.name} grew past the {limit}-byte limit while read")
        return data
    except OSError as exc:
        raise RunFault(f"{path.name} cannot be read ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)


def read_run(path: Path) -> object:
    """The parsed JSON of a saved run (any shape: callers check it), or :class:`RunFault`."""
    data = read_bytes(path)
    if not data.strip():
        raise RunFault(f"{path.name} is empty")
    try:
        return json.loads(data)  # NaN, Infinity, huge integers parse: the checks of each value name them
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RunFault(f"{path.name} is not JSON pytest-benchmark wrote ({exc})") from exc


def finite(value) -> bool:
    """A JSON number a float holds exactly enough to compare: not a bool, finite, within float range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _shown(value) -> str:
    """``value`` for a message: repr, cut to 40 characters (a 400-digit number is not printed whole)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def stats_fault(stats, label: str) -> str | None:
    """What makes one benchmark's ``stats`` unusable in a comparison, or None."""
    if not isinstance(stats, dict):
        return f"benchmark {label} has no stats"
    for field in NUMERIC_STATS:
        if field not in stats:
            return f"benchmark {label} lacks stats.{field}"
        value = stats[field]
        if not finite(value):
            return f"benchmark {label} has a non-numeric or non-finite stats.{field} ({_shown(value)})"
        if value < 0:
            return f"benchmark {label} has a negative stats.{field} ({value!r})"
    for field in TEXT_STATS:
        if field not in stats:
            return f"benchmark {label} lacks stats.{field}"
        if not isinstance(stats[field], str):
            return f"benchmark {label} has a stats.{field} that is not text ({_shown(stats[field])})"
    if stats["median"] <= 0:
        return f"benchmark {label} has a zero stats.median"
    spread = stats["max"] - stats["min"]
    if stats["iqr"] > spread * (1 + 1e-9) + 1e-15:  # an IQR holds half the rounds: it fits in their range
        return (f"benchmark {label} has stats.iqr {_shown(stats['iqr'])} wider than its rounds' whole range "
                f"(max - min = {_shown(spread)}): not what pytest-benchmark computes")
    return None


def too_noisy(stats: dict) -> bool:
    """A real measurement whose IQR exceeds its median: no slow-down can be told from its noise, so the baseline
    compare leaves it unjudged and names it (:mod:`dgbench.baseline`). Not a fault of the file: a run holding one
    (an H100 run's MONAI row, 2026-12-05) is joined, continued from and reported like any other."""
    return stats["iqr"] > stats["median"]


def run_fault(path: Path) -> str | None:
    """What makes the saved run ``path`` unusable as a baseline or a part, or ``None``."""
    try:
        document = read_run(path)
    except RunFault as exc:
        return str(exc)
    benchmarks = document.get("benchmarks") if isinstance(document, dict) else None
    if not isinstance(benchmarks, list) or not benchmarks:
        return f"{path.name} holds no benchmarks"
    for index, bench in enumerate(benchmarks):
        name = bench.get("name") if isinstance(bench, dict) else None
        label = name if isinstance(name, str) else f"#{index}"
        fault = stats_fault(bench.get("stats") if isinstance(bench, dict) else None, label)
        if fault:
            return f"{path.name}: {fault}"
    return None

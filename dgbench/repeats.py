"""Judge a head commit against a base run with the head run more than once: a slow-down must show in every head run.

Why: on the lent VMs a run can drift as a whole between sessions of one lease (disk, page cache and
host-copy ceilings, which run no changed code, moved by 10-60 %). Comparing one head session
with one base session then flags rows that only drifted: on the H200, two sessions of the same
commit, one after the other, differed beyond the noise rule in 13 of 76 rows. Running the head
twice (``tools/device_compare.sh head`` twice after one ``base``) and keeping, per benchmark, the
head session with the lower median, a change that is real shows in both and is still flagged;
one that is drift is not. The rule is the suite's own (:func:`dgbench.derived.regressed`).

    python -m dgbench.repeats BASE.json HEAD1.json HEAD2.json [--threshold 10] [-k 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dgbench.config import DEFAULT_NOISE_K, REGRESSION_THRESHOLD_PCT
from dgbench.derived import regressed
from dgbench.store import RunFault, read_run, run_fault


def _stats(path: Path) -> dict[str, dict]:
    fault = run_fault(path)
    if fault:
        raise SystemExit(f"repeats: {path}: not a saved run ({fault})")
    try:
        return {b["name"]: b["stats"] for b in read_run(path)["benchmarks"] if b.get("stats")}
    except (RunFault, KeyError, TypeError) as exc:
        raise SystemExit(f"repeats: {path}: not a saved run ({type(exc).__name__}: {exc})") from exc


def judge(base: dict[str, dict], heads: list[dict[str, dict]], threshold: float, k: float):
    """(name, change in %, regressed) for every benchmark in the base and every head, the best head kept."""
    names = sorted(set(base).intersection(*heads))
    rows = []
    for name in names:
        now = min((h[name] for h in heads), key=lambda s: s["median"])
        change, flag = regressed(now, base[name], threshold, k)
        rows.append((name, change, flag))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dgbench.repeats", description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("heads", type=Path, nargs="+")
    parser.add_argument("--threshold", type=float, default=REGRESSION_THRESHOLD_PCT, help="percent")
    parser.add_argument("-k", type=float, default=DEFAULT_NOISE_K, help="noise multiple of IQR/median")
    args = parser.parse_args(argv)
    rows = judge(_stats(args.base), [_stats(h) for h in args.heads], args.threshold, args.k)
    slower = [r for r in rows if r[2]]
    for name, change, _ in slower:
        print(f"REGRESSED {name}: median {change:+.1f}% in every head run")
    print(f"{len(rows)} compared over {len(args.heads)} head run(s), {len(slower)} slower beyond noise in all of them")
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())

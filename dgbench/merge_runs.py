"""Join the parts of one run, saved by separate pytest sessions, into one numbered run file.

Why: the lent GPU machine stops any command after 10 minutes, and the ``full`` profile with its
series and compressed cases takes longer than that in one pytest session (the 256-slice
compressed series alone took 535 s on the H200), while pytest-benchmark saves only when a
session ends. So a full device run is taken as parts (``-k`` selections, same commit, same
machine, one lease) and joined here into the single file a ``BASELINE`` can name and
``--benchmark-compare`` can load. Parts that disagree on the machine or the commit, or that
hold the same benchmark twice, are refused: such a file would compare numbers that were not
taken together. The joined file lists its parts under ``"parts"``; where a part was stopped before
its end (:mod:`dgbench.interrupt`), the joined file is marked so too, unless a later part ran that part's rest
to its end: saved with ``--continue-from`` naming it (:mod:`dgbench.continue_run` records which parts and what
selection), not stopped itself, not narrowed by ``-k``, ``-m`` or ``--deselect``, on the same paths.

    python -m dgbench.merge_runs --into results/<machine> part1.json part2.json ...
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from dgbench.baseline import numbered_runs
from dgbench.interrupt import INTERRUPTED, is_interrupted
from dgbench.report.atomic_write import write_atomic
from dgbench.store import read_run, run_fault

#: What a part saved with ``--continue-from`` holds at the top of its JSON: the saved parts it went on from (file
#: names) and its selection (``{"args": [...], "keyword": str, "markexpr": str, "deselect": [...]}``).
CONTINUED_FROM = "continued_from"
SELECTION = "selection"


class MergeError(ValueError):
    """The parts cannot be one run; the message names the file and the problem."""


def load_part(path: Path) -> dict:
    fault = run_fault(path)
    if fault:
        raise MergeError(fault)
    document = read_run(path)
    for key in ("machine_info", "commit_info"):
        if not isinstance(document.get(key), dict):
            raise MergeError(f"{path.name} has no {key}")
    if not isinstance(document.get("datetime"), str):
        raise MergeError(f"{path.name} has no datetime")
    return document


#: ``machine_info`` fields that differ between two sessions of one machine: py-cpuinfo's ``hz_actual`` is the
#: clock of the moment (``cpu MHz`` in /proc/cpuinfo), which moves with frequency scaling on bare metal
#: (pytest-benchmark issue #255). Every other field, the CPU's model and advertised clock included, must agree.
MOMENTARY_FIELDS = frozenset({"machine_info.cpu.hz_actual", "machine_info.cpu.hz_actual_friendly"})


def disagreement(doc: dict, label: str, other: dict, other_label: str) -> str | None:
    """Why the runs ``doc`` and ``other`` cannot be parts of one run (another commit, another machine or
    profile: any ``machine_info`` field but :data:`MOMENTARY_FIELDS` differs), or None."""
    if doc["commit_info"].get("id") != other["commit_info"].get("id"):
        return f"{label} is of commit {doc['commit_info'].get('id')}, {other_label} of {other['commit_info'].get('id')}"
    found = _first_difference(doc["machine_info"], other["machine_info"], "machine_info")
    if found:
        where, mine, theirs = found
        return f"{label} and {other_label} differ in {where} ({mine!r} vs {theirs!r}): not one machine and profile"
    return None


def _first_difference(mine, theirs, where: str):
    """``(dotted key, value, other value)`` of the first field that differs, descending into dicts; or None."""
    if where in MOMENTARY_FIELDS:
        return None
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(set(mine) | set(theirs)):
            found = _first_difference(mine.get(key), theirs.get(key), f"{where}.{key}")
            if found:
                return found
        return None
    return None if mine == theirs else (where, mine, theirs)


def measured(doc: dict) -> list[str]:
    """The benchmarks a saved run holds, by node id (pytest-benchmark's ``fullname``; ``name`` in old files)."""
    return [bench.get("fullname") or bench.get("name") for bench in doc["benchmarks"]]


def merge(paths: list[Path]) -> dict:
    """One run document from the parts, in the order given; the run's time is its last part's."""
    if len(paths) < 2:
        raise MergeError("give at least two parts to join")
    docs = [load_part(p) for p in paths]
    first, first_path = docs[0], paths[0]
    seen: dict[str, str] = {}
    for path, doc in zip(paths, docs):
        problem = disagreement(doc, path.name, first, first_path.name)
        if problem:
            raise MergeError(problem)
        for name in measured(doc):
            if name in seen:
                raise MergeError(f"{name} is in both {seen[name]} and {path.name}")
            seen[name] = path.name
    last = max(docs, key=lambda d: datetime.fromisoformat(d["datetime"]))
    document = {
        "machine_info": first["machine_info"],
        "commit_info": first["commit_info"],
        "benchmarks": [bench for doc in docs for bench in doc["benchmarks"]],
        "datetime": last["datetime"],
        "version": first.get("version"),
        "parts": [{"file": p.name, "datetime": d["datetime"], "benchmarks": len(d["benchmarks"])}
                  for p, d in zip(paths, docs)],
    }
    covered = finished_later(paths, docs)
    stopped = [f"{p.name}: {d[INTERRUPTED]}" for p, d in zip(paths, docs)
               if is_interrupted(d) and p.name not in covered]
    if stopped:  # a part cut short, its rest never run to the end, leaves the joined run short too
        document[INTERRUPTED] = "; ".join(stopped)
    return document


def finished_later(paths: list[Path], docs: list[dict]) -> set[str]:
    """The stopped parts whose rest a later part ran to its end, by file name: a part that went on from them
    (``--continue-from``), was not stopped, and selected all that they did (the same paths, no ``-k``, ``-m`` or
    ``--deselect``). Parts saved without these records (before 2026-12-05) are never taken as finished."""
    covered: set[str] = set()
    for doc in docs:
        selection = doc.get(SELECTION)
        if is_interrupted(doc) or not isinstance(selection, dict) or not isinstance(doc.get(CONTINUED_FROM), list):
            continue
        if selection.get("keyword") or selection.get("markexpr") or selection.get("deselect"):
            continue
        for path, earlier in zip(paths, docs):
            if (path.name in doc[CONTINUED_FROM] and isinstance(earlier.get(SELECTION), dict)
                    and earlier[SELECTION].get("args") == selection.get("args")):
                covered.add(path.name)
    return covered


def run_file_name(folder: Path, document: dict) -> str:
    """pytest-benchmark's naming: next number, commit, time (of the last part)."""
    runs = numbered_runs(folder) if folder.is_dir() else []
    number = int(runs[-1].name[:4]) + 1 if runs else 1
    when = datetime.fromisoformat(document["datetime"]).strftime("%Y%m%d_%H%M%S")
    return f"{number:04d}_{document['commit_info']['id']}_{when}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dgbench.merge_runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--into", type=Path, required=True, help="the machine's results folder")
    parser.add_argument("parts", type=Path, nargs="+", help="saved runs of one commit and machine")
    args = parser.parse_args(argv)
    into = args.into.resolve()
    for part in args.parts:
        if part.resolve().parent == into:
            print(f"merge_runs: {part} is already in {args.into}; keep parts outside the results history "
                  "(they would count twice)", file=sys.stderr)
            return 2
    try:
        document = merge(args.parts)
    except MergeError as exc:
        print(f"merge_runs: {exc}", file=sys.stderr)
        return 2
    into.mkdir(parents=True, exist_ok=True)
    target = write_atomic(into, run_file_name(into, document), (json.dumps(document, indent=4) + "\n").encode())
    print(f"{target}: {len(document['benchmarks'])} benchmarks from {len(args.parts)} parts")
    return 0


if __name__ == "__main__":
    sys.exit(main())

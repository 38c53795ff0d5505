"""``--continue-from PART``: a benchmark run taken in parts leaves out what its saved parts already measured.

Why: the lent GPU machine ends every command after 10 minutes and a full-profile run takes about 20 (H200,
2026-12-05: 229 + 251 + 276 + 356 s in ``-k`` parts, and two of those selections outgrew their part). Cut by hand
into ``-k`` selections, a part that outgrew its time lost what it had not reached, and every part had to be planned
again after the suite grew. With this option each call runs the same command, ``DGB_TIMEOUT`` ends it in time
(:mod:`dgbench.interrupt` saves what finished), and the next call goes on where the saved parts stop; once a call
ends with nothing left, ``python -m dgbench.merge_runs`` joins the parts into one run.

A part of another commit, machine or profile is refused before anything runs (the message names the file and the
field), since :mod:`dgbench.merge_runs` would refuse to join it: its rows would not be one run's. PART is a saved
run (JSON) or a folder of them (a folder with none yet: the run's first call); the option may be given more
than once. The terminal summary says how many benchmarks this part measured; a part that measured none ("nothing
new measured") means the run is complete: what it still collects skips here (no GPU, a codec missing) or is no
benchmark, and it saves nothing.

Each part saved this way records the parts it went on from and its selection (``continued_from``, ``selection``),
so that :mod:`dgbench.merge_runs` can tell a joined run whose stopped parts a later part finished from one still
short.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pytest_benchmark.utils import safe_dumps

from dgbench.benchmark_session import benchmark_session
from dgbench.merge_runs import CONTINUED_FROM, SELECTION, MergeError, disagreement, load_part, measured


@dataclass
class _Left:
    parts: list[Path] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    deselected: int = 0


_LEFT = pytest.StashKey[_Left]()


def pytest_addoption(parser):
    parser.getgroup("dicom-gpu-bench").addoption(
        "--continue-from", action="append", default=[], metavar="PART",
        help="leave out the benchmarks that PART (a saved run, or a folder of them: earlier parts of this run, same "
             "commit, machine and profile) measured; join the parts with python -m dgbench.merge_runs",
    )


def part_files(options: list[str]) -> list[Path]:
    """The saved runs named by ``--continue-from``: files as given, a folder's ``*.json`` in name order."""
    files: list[Path] = []
    for option in options:
        path = Path(option)
        if path.is_dir():  # a folder with no part yet is a run's first call: nothing left out
            files.extend(sorted(p for p in path.glob("*.json") if p.is_file()))
        elif path.exists():
            files.append(path)
        else:
            raise pytest.UsageError(f"--continue-from {option}: no such file or folder")
    return files


def _this_run(config) -> dict:
    """What this session would save as its machine and commit, through pytest-benchmark's own hooks."""
    session = benchmark_session(config)
    commit_info = config.hook.pytest_benchmark_generate_commit_info(config=config)
    config.hook.pytest_benchmark_update_commit_info(config=config, commit_info=commit_info)
    # as saved: through JSON, so tuples compare as the lists a part holds
    return json.loads(safe_dumps({"machine_info": session.get_machine_info(), "commit_info": commit_info}))


@pytest.hookimpl(trylast=True)  # after dgbench.plugin and pytest-benchmark have set up their session
def pytest_collection_modifyitems(config, items):
    options = config.getoption("continue_from", default=[]) or []
    if not options:
        return
    if benchmark_session(config) is None:
        raise pytest.UsageError("--continue-from needs pytest-benchmark's plugin")
    # stashed only once every part is accepted: a refused session must not go on to report parts left out or
    # "the run is complete" (the summaries below read the stash), which would tell the user to join a refused part
    left = _Left(parts=part_files(options))
    this = _this_run(config)
    for path in left.parts:
        try:
            doc = load_part(path)
        except MergeError as exc:
            raise pytest.UsageError(f"--continue-from: {exc}") from None
        problem = disagreement(doc, path.name, this, "this run")
        if problem:
            raise pytest.UsageError(f"--continue-from: {problem}")
        left.names.update(measured(doc))
    config.stash[_LEFT] = left
    keep, done = [], []
    for item in items:
        (done if item.nodeid in left.names else keep).append(item)
    if done:
        config.hook.pytest_deselected(items=done)
        items[:] = keep
    left.deselected = len(done)


def selection(config) -> dict:
    """What this session selects beyond its profile: the paths given, ``-k``, ``-m``, ``--deselect``."""
    return {"args": [str(arg) for arg in config.args], "keyword": config.getoption("keyword", "") or "",
            "markexpr": config.getoption("markexpr", "") or "",
            "deselect": [str(d) for d in config.getoption("deselect", None) or []]}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    left = config.stash.get(_LEFT, None)
    if left is not None:
        output_json[CONTINUED_FROM] = [path.name for path in left.parts]
        output_json[SELECTION] = selection(config)


def pytest_report_collectionfinish(config):
    left = config.stash.get(_LEFT, None)
    if left is None:
        return None
    if not left.parts:
        return "dicom-gpu-bench: --continue-from names no saved part yet: nothing left out"
    return (f"dicom-gpu-bench: {left.deselected} benchmark(s) left out, measured in "
            f"{len(left.parts)} saved part(s) ({', '.join(p.name for p in left.parts)})")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    left = config.stash.get(_LEFT, None)
    if left is None:
        return
    session = benchmark_session(config)
    measured_here = sum(1 for bench in getattr(session, "benchmarks", []) if bench)
    if measured_here:
        terminalreporter.write_line(f"dicom-gpu-bench: this part measured {measured_here} benchmark(s), "
                                    f"{left.deselected} were measured in earlier parts")
    else:
        terminalreporter.write_line(f"dicom-gpu-bench: nothing new measured ({left.deselected} benchmark(s) in "
                                    "earlier parts): the run is complete; join its parts with "
                                    "python -m dgbench.merge_runs --into results/<machine> <parts>", yellow=True)

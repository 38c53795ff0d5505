"""dgbench/interrupt.py: a benchmark run stopped before its end saves what it measured, marked as stopped.

The end-to-end tests run pytest in a child process on a file of three benchmarks: the first finishes at once,
the second writes a marker file in each of its rounds, which take a minute in all, and the third comes after it.
The parent stops the child once the marker is there (SIGTERM, SIGINT), so between two rounds of the second, and
reads what was saved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dgbench import merge_runs
from dgbench.baseline import BASELINE_FILE, resolve_baseline
from dgbench.interrupt import INTERRUPTED
from dgbench.schema import bench_document, run_document
from tests.nested import benchmark_project, nested_pytest_env

ROOT = Path(__file__).resolve().parents[1]
MACHINE = "test-machine"

# Quick benchmarks take 9 rounds of 20 ms, not 3 of 10 ms: a baseline refuses a run whose IQR exceeds its median
# (dgbench.store), and on the H200 machine, under ``./dgb test -n 14``, one of 3 rounds of 10 ms overslept that much.
TWO_BENCHMARKS = """
import os
import pathlib
import time

import pytest


def test_a_finishes(benchmark):
    benchmark.pedantic(time.sleep, args=(0.02,), rounds=9, iterations=1)


def test_b_waits(benchmark):
    if os.environ.get("DGB_TEST_FAIL"):
        raise AssertionError("fails on purpose")
    if os.environ.get("DGB_TEST_EXIT"):
        benchmark.pedantic(time.sleep, args=(0.01,), rounds=1, iterations=1)
        pytest.exit("leaves on purpose", returncode=3)
    mark = pathlib.Path(os.environ["DGB_TEST_MARK"])
    wait = float(os.environ.get("DGB_TEST_WAIT", "0.2"))

    def one_round():  # the parent stops the run between these rounds
        mark.write_text("waiting")
        time.sleep(wait)

    benchmark.pedantic(one_round, rounds=300 if wait >= 0.1 else 9, iterations=1)


def test_c_after(benchmark):
    benchmark.pedantic(time.sleep, args=(0.02,), rounds=9, iterations=1)
"""

@pytest.fixture
def project(tmp_path):
    return benchmark_project(tmp_path, {"test_two.py": TWO_BENCHMARKS}, ["dgbench.interrupt", "dgbench.baseline"],
                             MACHINE)


def start(project: Path, *args: str, **env: str) -> subprocess.Popen:
    environ = nested_pytest_env(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                                DGB_TEST_MARK=str(project / "mark"), **env)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:warnings",
           f"--benchmark-storage=file://{project / 'store'}", "--benchmark-autosave", *args]
    return subprocess.Popen(cmd, cwd=project, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_when_waiting(project: Path, child: subprocess.Popen, signum: int) -> tuple[int, str]:
    """Send ``signum`` once the second benchmark waits; the child's exit status and output."""
    deadline = time.monotonic() + 120
    while not (project / "mark").exists():
        assert child.poll() is None, child.communicate()[0]
        assert time.monotonic() < deadline, "the second benchmark never started"
        time.sleep(0.05)
    child.send_signal(signum)
    output, _ = child.communicate(timeout=60)
    return child.returncode, output


def saved(project: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((project / "store" / MACHINE).glob("*.json"))]


@pytest.mark.parametrize("signum, why", [(signal.SIGTERM, "stopped by SIGTERM"),
                                         (signal.SIGINT, "interrupted (KeyboardInterrupt)")])
def test_a_stopped_run_saves_the_benchmarks_that_finished_marked_as_stopped(project, signum, why):
    rc, output = stop_when_waiting(project, start(project), signum)
    assert rc == pytest.ExitCode.INTERRUPTED, output  # not killed by the signal: pytest ended the session
    runs = saved(project)
    assert len(runs) == 1, output
    assert [b["name"] for b in runs[0]["benchmarks"]] == ["test_a_finishes"]
    assert runs[0][INTERRUPTED].startswith(why), runs[0].get(INTERRUPTED)
    assert "marked 'interrupted'" in output


def test_a_run_stopped_by_its_first_failure_is_marked(project):
    child = start(project, "-x", DGB_TEST_FAIL="1")
    output, _ = child.communicate(timeout=120)
    assert child.returncode == pytest.ExitCode.TESTS_FAILED, output
    (run,) = saved(project)
    assert [b["name"] for b in run["benchmarks"]] == ["test_a_finishes"]
    assert run[INTERRUPTED].startswith("stopped early: stopping after 1 failures"), run[INTERRUPTED]


def test_a_run_a_test_ends_with_pytest_exit_is_marked_and_leaves_that_test_out(project):
    child = start(project, DGB_TEST_EXIT="1")
    output, _ = child.communicate(timeout=120)
    assert child.returncode == 3, output
    (run,) = saved(project)
    assert [b["name"] for b in run["benchmarks"]] == ["test_a_finishes"]
    assert run[INTERRUPTED] == "stopped during test_two.py::test_b_waits", run[INTERRUPTED]


def test_a_bare_compare_passes_over_a_stopped_run_for_the_newest_whole_one(project):
    # 9 rounds of 50 ms: with 10 ms, the H100 under ./dgb test -n 15 overslept enough that the whole run's IQR
    # passed its median, and the baseline rule refused it (dgbench.store)
    whole = start(project, DGB_TEST_WAIT="0.05")
    output, _ = whole.communicate(timeout=120)
    assert whole.returncode == 0, output
    (project / "mark").unlink()
    rc, output = stop_when_waiting(project, start(project), signal.SIGTERM)
    first, stopped = saved(project)
    assert INTERRUPTED not in first and [b["name"] for b in first["benchmarks"]] == [
        "test_a_finishes", "test_b_waits", "test_c_after"]
    assert INTERRUPTED in stopped
    again = start(project, "--benchmark-compare", DGB_TEST_WAIT="0.05")
    output, _ = again.communicate(timeout=120)
    assert again.returncode == 0, output
    assert "(newest run not interrupted; 1 newer one(s) passed over)" in output
    assert "0001_" in output.split("(newest run not interrupted")[0].splitlines()[-1]


def _run(folder: Path, name: str, interrupted: str | None = None) -> Path:
    return _part(folder, name, "a", interrupted)


def test_the_newest_run_compared_against_is_one_that_was_not_stopped(tmp_path):
    complete = _run(tmp_path, "0001_abc_20261201_000000.json")
    _run(tmp_path, "0002_abc_20261202_000000.json", "stopped by SIGTERM before the end of its selection")
    _run(tmp_path, "0003_abc_20261203_000000.json", "interrupted (KeyboardInterrupt) before the end of its selection")
    chosen, how, reason = resolve_baseline(tmp_path)
    assert (chosen, reason) == (complete, None)
    assert how == "newest run not interrupted; 2 newer one(s) passed over"


def test_only_stopped_runs_is_no_baseline_unless_named(tmp_path):
    stopped = _run(tmp_path, "0001_abc_20261201_000000.json", "stopped by SIGTERM before the end of its selection")
    chosen, _, reason = resolve_baseline(tmp_path)
    assert chosen is None and "every saved run there was interrupted" in reason and stopped.name in reason
    (tmp_path / BASELINE_FILE).write_text(stopped.name + "\n")  # named: the user's choice stands
    assert resolve_baseline(tmp_path)[:2] == (stopped, BASELINE_FILE)


def _part(folder: Path, name: str, case: str, interrupted: str | None = None) -> Path:
    document = run_document({"machine_slug": MACHINE}, [bench_document(
        case, "kvdicom", 0.01, name=f"test_k[{case}]", fullname=f"bench/test_k.py::test_k[{case}]")])
    if interrupted:
        document[INTERRUPTED] = interrupted
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(document))
    return folder / name


def test_a_part_stopped_early_marks_the_joined_run(tmp_path):
    first = _part(tmp_path, "0001_abc_20261201_000000.json", "a")
    cut = _part(tmp_path, "0002_abc_20261201_000100.json", "b", "stopped by SIGTERM before the end of its selection")
    whole = _part(tmp_path, "0003_abc_20261201_000200.json", "c")
    why = merge_runs.merge([first, cut])[INTERRUPTED]
    assert why == f"{cut.name}: stopped by SIGTERM before the end of its selection"
    assert INTERRUPTED not in merge_runs.merge([first, whole])

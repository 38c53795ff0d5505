"""dgbench/continue_run.py: ``--continue-from`` leaves out what the saved parts of a run measured, and refuses parts
of another commit or machine before anything runs.

End to end, as on the device: pytest runs in a child process on tests/test_interrupt.py's three benchmarks; the
first call is stopped by SIGTERM in the second benchmark (what ``DGB_TIMEOUT`` does), the next goes on from its
saved part, and ``dgbench.merge_runs`` joins the two.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from dgbench import merge_runs
from dgbench.interrupt import INTERRUPTED
from tests.nested import benchmark_project
from tests.test_interrupt import MACHINE, TWO_BENCHMARKS, saved, start, stop_when_waiting


@pytest.fixture
def project(tmp_path):
    return benchmark_project(tmp_path, {"test_two.py": TWO_BENCHMARKS},
                             ["dgbench.interrupt", "dgbench.continue_run"], MACHINE)


def names(run: dict) -> list[str]:
    return [b["name"] for b in run["benchmarks"]]


def finish(child, timeout: float = 120) -> tuple[int, str]:
    output, _ = child.communicate(timeout=timeout)
    return child.returncode, output


def first_part(project: Path) -> Path:
    """A part with the first benchmark only, as a plain ``-k`` selection saves it."""
    rc, output = finish(start(project, "-k", "test_a"))
    assert rc == 0, output
    (path,) = sorted((project / "store" / MACHINE).glob("*.json"))
    return path


def cut_part(project: Path, parts: Path) -> Path:
    """The run's first call, as on the device (``--continue-from`` an empty folder), stopped by SIGTERM in its
    second benchmark; its saved part, moved into ``parts``."""
    rc, output = stop_when_waiting(project, start(project, "--continue-from", str(parts)), signal.SIGTERM)
    (cut,) = saved(project)
    assert names(cut) == ["test_a_finishes"] and INTERRUPTED in cut, output
    (first,) = (project / "store" / MACHINE).glob("*.json")
    return first.rename(parts / first.name)


def test_a_run_cut_by_sigterm_goes_on_from_its_saved_part_and_the_parts_join(project, tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    first = cut_part(project, parts)

    rc, output = finish(start(project, "--continue-from", str(parts), DGB_TEST_WAIT="0.01"))
    assert rc == 0, output
    assert "1 benchmark(s) left out, measured in 1 saved part(s)" in output
    assert "this part measured 2 benchmark(s), 1 were measured in earlier parts" in output
    (second,) = saved(project)
    assert names(second) == ["test_b_waits", "test_c_after"]
    assert INTERRUPTED not in second
    assert second["continued_from"] == [first.name]

    history = tmp_path / "results"
    (rest,) = (project / "store" / MACHINE).glob("*.json")
    assert merge_runs.main(["--into", str(history), str(first), str(rest)]) == 0
    (joined,) = history.glob("*.json")
    joined = json.loads(joined.read_text())
    assert names(joined) == ["test_a_finishes", "test_b_waits", "test_c_after"]
    # the cut part's rest ran to its end in the next: the joined run is whole, so a bare compare may use it
    assert INTERRUPTED not in joined, joined.get(INTERRUPTED)


def test_a_joined_run_stays_marked_stopped_where_the_later_part_was_narrowed(project, tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    first = cut_part(project, parts)
    rc, output = finish(start(project, "-k", "test_b", "--continue-from", str(parts), DGB_TEST_WAIT="0.01"))
    assert rc == 0, output
    (rest,) = (project / "store" / MACHINE).glob("*.json")
    history = tmp_path / "results"
    assert merge_runs.main(["--into", str(history), str(first), str(rest)]) == 0
    (joined,) = history.glob("*.json")
    joined = json.loads(joined.read_text())
    assert names(joined) == ["test_a_finishes", "test_b_waits"]  # test_c_after was never run
    assert joined[INTERRUPTED] == f"{first.name}: stopped by SIGTERM before the end of its selection"


def test_a_call_with_nothing_left_runs_nothing_saves_nothing_and_says_the_run_is_complete(project, tmp_path):
    part = first_part(project)
    rc, output = finish(start(project, "-k", "test_a", "--continue-from", str(part)))
    assert rc == pytest.ExitCode.NO_TESTS_COLLECTED, output
    assert "nothing new measured (1 benchmark(s) in earlier parts): the run is complete" in output
    assert len(saved(project)) == 1


@pytest.mark.parametrize("edit, named", [
    (lambda doc: doc["commit_info"].update(id="0123abc"), "is of commit 0123abc"),
    (lambda doc: doc["machine_info"].update(node="another-host"), "differ in machine_info.node"),
])
def test_a_part_of_another_commit_or_machine_is_refused_before_anything_runs(project, edit, named):
    part = first_part(project)
    doc = json.loads(part.read_text())
    edit(doc)
    part.write_text(json.dumps(doc))
    rc, output = finish(start(project, "--continue-from", str(part), DGB_TEST_WAIT="0.01"))
    assert rc == pytest.ExitCode.USAGE_ERROR, output
    assert part.name in output and named in output, output
    assert "test_b_waits" not in output and len(saved(project)) == 1
    # the refusal is all it says: no count of parts left out, no "the run is complete; join its parts" (on the
    # device both were printed above the refusal, which told the user to merge a part the refusal had rejected)
    assert "left out" not in output and "nothing new measured" not in output and "merge_runs" not in output, output


def test_a_part_whose_cpu_clock_of_the_moment_differs_is_continued(project):
    """One machine whose CPU clock moved between two calls (``cpu.hz_actual``, pytest-benchmark #255) still
    continues its run: the part is left out, not refused."""
    part = first_part(project)
    doc = json.loads(part.read_text())
    doc["machine_info"]["cpu"].update(hz_actual=[1234567000, 0], hz_actual_friendly="1.2346 GHz")
    part.write_text(json.dumps(doc))
    rc, output = finish(start(project, "--continue-from", str(part), DGB_TEST_WAIT="0.01"))
    assert rc == 0, output
    assert "1 benchmark(s) left out, measured in 1 saved part(s)" in output
    assert [names(run) for run in saved(project)] == [["test_a_finishes"], ["test_b_waits", "test_c_after"]]


def test_an_empty_folder_is_a_first_call_that_leaves_nothing_out(project, tmp_path):
    empty = tmp_path / "parts"
    empty.mkdir()
    rc, output = finish(start(project, "--continue-from", str(empty), DGB_TEST_WAIT="0.01"))
    assert rc == 0, output
    assert "names no saved part yet: nothing left out" in output
    (run,) = saved(project)
    assert names(run) == ["test_a_finishes", "test_b_waits", "test_c_after"]


def test_a_missing_part_and_a_broken_file_are_usage_errors(project, tmp_path):
    broken = tmp_path / "0001_broken.json"
    broken.write_text("{not json")
    for option, named in ((str(tmp_path / "nowhere"), "no such file or folder"),
                          (str(broken), "0001_broken.json is not JSON")):
        rc, output = finish(start(project, "--continue-from", option))
        assert rc == pytest.ExitCode.USAGE_ERROR, output
        assert named in output, output
    assert saved(project) == []

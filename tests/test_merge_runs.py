"""dgbench.merge_runs: parts of one device run (one commit, one machine) become one numbered run file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dgbench import merge_runs
from dgbench.baseline import resolve_baseline, run_fault
from dgbench.report.loading import load_results
from dgbench.schema import bench_document, run_document
from tests.test_report import machine_info

SLUG = "nvidia-h200_drv580.159.04_cuda13.2_kvikio-compat"
INFO = machine_info("NVIDIA H200", SLUG, compat=True)


def part(folder: Path, name: str, cases: list[str], when: str, commit: str = "abc1234", info: dict = INFO) -> Path:
    benches = [bench_document(case, "kvdicom", 0.01 * (i + 1), device="cuda", name=f"test_k[{case}]",
                              fullname=f"bench/test_k.py::test_k[{case}]") for i, case in enumerate(cases)]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(run_document(info, benches, when=when, commit=commit)))
    return path


@pytest.fixture
def parts(tmp_path):
    store = tmp_path / "cmp" / SLUG
    return [part(store, "0002_abc1234_20261128_100500.json", ["a", "b"], "2026-11-28T10:05:00+00:00"),
            part(store, "0003_abc1234_20261128_101500.json", ["c"], "2026-11-28T10:15:00+00:00")]


def test_parts_join_into_the_next_numbered_run_that_compares_and_reports(tmp_path, parts, capsys):
    history = tmp_path / "results" / SLUG
    part(history, "0007_0000000_20261101_000000.json", ["a"], "2026-11-01T00:00:00+00:00", commit="0000000")
    assert merge_runs.main(["--into", str(history), *map(str, parts)]) == 0
    joined = history / "0008_abc1234_20261128_101500.json"
    assert f"{joined}: 3 benchmarks from 2 parts" in capsys.readouterr().out
    doc = json.loads(joined.read_text())
    assert [b["extra_info"]["case"] for b in doc["benchmarks"]] == ["a", "b", "c"]
    assert doc["machine_info"] == INFO and doc["commit_info"]["id"] == "abc1234"
    assert doc["datetime"] == "2026-11-28T10:15:00+00:00"  # the run ended with its last part
    assert [p["file"] for p in doc["parts"]] == [p.name for p in parts]
    assert run_fault(joined) is None
    (history / "BASELINE").write_text(joined.name + "\n")
    assert resolve_baseline(history)[0] == joined
    loaded = load_results([tmp_path / "results"])
    assert not loaded.skipped and sorted(len(r.benchmarks) for r in loaded.runs) == [1, 3]


@pytest.mark.parametrize("change, expected", [
    (dict(commit="fff9999"), "is of commit fff9999"),
    (dict(info={**INFO, "gpu_name": "NVIDIA H100 80GB HBM3"}), "differ in machine_info.gpu_name"),
    (dict(cases=["b"]), "bench/test_k.py::test_k[b] is in both 0002_abc1234_20261128_100500.json and"),
])
def test_parts_that_are_not_one_run_are_refused_and_nothing_is_written(tmp_path, parts, capsys, change, expected):
    kwargs = dict(cases=["c"], when="2026-11-28T10:20:00+00:00") | change
    odd = part(parts[0].parent, "0004_x_20261128_102000.json", **kwargs)
    history = tmp_path / "results" / SLUG
    assert merge_runs.main(["--into", str(history), str(parts[0]), str(odd)]) == 2
    assert expected in capsys.readouterr().err
    assert not history.exists()


def _cpu(**fields) -> dict:
    return {**INFO, "cpu": {**INFO["cpu"], **fields}}


def test_parts_whose_cpu_clock_of_the_moment_differs_join_and_another_cpu_model_is_refused(tmp_path, parts, capsys):
    """py-cpuinfo's ``hz_actual`` moves between two sessions of one bare-metal machine (pytest-benchmark #255);
    the two H100 hosts of 2026-12-05 differed in it and in their CPU model, which still refuses them."""
    store = parts[0].parent
    first = part(store, "0005_abc1234_20261128_110000.json", ["a"], "2026-11-28T11:00:00+00:00",
                 info=_cpu(model=143, hz_actual=[2000000000, 0], hz_actual_friendly="2.0000 GHz"))
    later = part(store, "0006_abc1234_20261128_111000.json", ["c"], "2026-11-28T11:10:00+00:00",
                 info=_cpu(model=143, hz_actual=[2712000000, 0], hz_actual_friendly="2.7120 GHz"))
    history = tmp_path / "results" / SLUG
    assert merge_runs.main(["--into", str(history), str(first), str(later)]) == 0, capsys.readouterr().err
    (joined,) = history.glob("*.json")
    assert [b["extra_info"]["case"] for b in json.loads(joined.read_text())["benchmarks"]] == ["a", "c"]

    other_host = part(store, "0007_abc1234_20261128_112000.json", ["b"], "2026-11-28T11:20:00+00:00",
                      info=_cpu(model=207, hz_actual=[2000000000, 0], hz_actual_friendly="2.0000 GHz"))
    assert merge_runs.main(["--into", str(tmp_path / "other"), str(first), str(other_host)]) == 2
    assert "differ in machine_info.cpu.model (207 vs 143)" in capsys.readouterr().err


def test_a_broken_part_is_named(tmp_path, parts, capsys):
    broken = parts[0].parent / "0009_abc1234_x.json"
    broken.write_text('{"benchmarks": [')
    assert merge_runs.main(["--into", str(tmp_path / "out"), str(parts[0]), str(broken)]) == 2
    assert "0009_abc1234_x.json is not JSON" in capsys.readouterr().err


def test_parts_already_in_the_history_are_refused(tmp_path, parts, capsys):
    history = parts[0].parent
    before = sorted(p.name for p in history.iterdir())
    assert merge_runs.main(["--into", str(history), *map(str, parts)]) == 2
    assert "keep parts outside the results history" in capsys.readouterr().err
    assert sorted(p.name for p in history.iterdir()) == before


def test_one_part_is_not_a_join(tmp_path, parts, capsys):
    assert merge_runs.main(["--into", str(tmp_path / "out"), str(parts[0])]) == 2
    assert "at least two parts" in capsys.readouterr().err


def test_a_part_with_a_row_noisier_than_its_median_is_joined_and_continued_from(tmp_path, parts, capsys):
    # an H100 part of 2026-12-05 held a MONAI row with an IQR of 0.332 s against a median of 0.328 s: a real
    # measurement, which merge_runs and --continue-from (the same load_part) refused as "too noisy to compare"
    doc = json.loads(parts[1].read_text())
    median = doc["benchmarks"][0]["stats"]["median"]
    doc["benchmarks"][0]["stats"] |= {"iqr": median * 1.01, "min": median * 0.5, "max": median * 3}
    parts[1].write_text(json.dumps(doc))
    assert run_fault(parts[1]) is None and merge_runs.load_part(parts[1])["benchmarks"]
    history = tmp_path / "results" / SLUG
    assert merge_runs.main(["--into", str(history), *map(str, parts)]) == 0, capsys.readouterr().err
    (joined,) = history.glob("*.json")
    assert len(json.loads(joined.read_text())["benchmarks"]) == 3


def _record(path: Path, **fields) -> None:
    doc = json.loads(path.read_text())
    doc.update(fields)
    path.write_text(json.dumps(doc))


WHOLE = {"args": ["bench"], "keyword": "", "markexpr": "", "deselect": []}


@pytest.mark.parametrize("later, marked", [
    ({"continued_from": ["0002_abc1234_20261128_100500.json"], "selection": WHOLE}, False),
    ({"continued_from": ["0002_abc1234_20261128_100500.json"], "selection": WHOLE | {"keyword": "series"}}, True),
    ({"continued_from": ["0002_abc1234_20261128_100500.json"], "selection": WHOLE | {"markexpr": "gpu"}}, True),
    ({"continued_from": ["0002_abc1234_20261128_100500.json"], "selection": WHOLE | {"deselect": ["bench/x.py"]}},
     True),
    ({"continued_from": ["0002_abc1234_20261128_100500.json"], "selection": WHOLE | {"args": ["bench/x.py"]}},
     True),
    ({"continued_from": [], "selection": WHOLE}, True),
    ({"continued_from": ["0002_abc1234_20261128_100500.json"], "selection": WHOLE,
      "interrupted": "stopped by SIGTERM before the end of its selection"}, True),
    ({}, True),  # a part saved before these records
], ids=["finished-it", "narrowed-k", "narrowed-m", "deselected", "other-paths", "not-from-it", "stopped-too", "old"])
def test_a_stopped_part_leaves_the_joined_run_marked_unless_a_later_part_ran_its_rest_to_the_end(
        tmp_path, parts, later, marked):
    _record(parts[0], interrupted="stopped by SIGTERM before the end of its selection", continued_from=[],
            selection=WHOLE | {"keyword": "series256"})
    _record(parts[1], **later)
    joined = merge_runs.merge(parts)
    assert ("interrupted" in joined) is marked
    if marked:
        assert joined["interrupted"].startswith("0002_abc1234_20261128_100500.json: stopped by SIGTERM")

"""A machine's picture spread over several runs: each row from the newest run that has it, derived numbers per run.

On the GPU device one pytest session cannot run the whole matrix within the 10-minute command limit, so a
machine's latest state is split across runs at one commit (uncompressed and series cases in one, compressed
cases in another). The report must show both, name which run each row came from, and never compute a % of
ceiling or × pydicom from two runs.
"""

from __future__ import annotations

from pathlib import Path

from dgbench.report.loading import load_results
from dgbench.report.machines import machines_from_runs
from dgbench.report.plot_data import comparison_plot, per_machine_plots
from tests.test_report import (
    H100,
    SMALL,
    SMALL_BYTES,
    bench,
    machine_info,
    markdown_tables,
    result_document,
    row_for,
    run_report,
    write_result,
)

SLUG = "nvidia-h100_drv1_cuda13_kvikio-compat"
NAME = f"{H100} (compat)"
SEED = "f128_1024x1024_u16_explicit_le"
SEED_BYTES = 128 * 1024 * 1024 * 2
RLE_SERIES = "series16_512x512_i16_rle"   # a compressed series (bench/test_compressed.py)
RLE_BYTES = 16 * 512 * 512 * 2
COMMIT = "1ddcc87aaaaaaaaaaaaa"
EARLY, LATE, LATER = "2026-03-01T02:00:00+00:00", "2026-03-01T02:09:30+00:00", "2026-03-01T02:19:00+00:00"
EARLY_RUN, LATE_RUN = "2026-03-01 02:00:00 · 1ddcc87", "2026-03-01 02:09:30 · 1ddcc87"


def _write(folder: Path, name: str, benches: list[dict], when: str, commit: str = COMMIT) -> Path:
    info = machine_info(H100, SLUG, compat=True)
    return write_result(folder / SLUG / name, result_document(info, benches, when, commit=commit))


def _uncompressed() -> list[dict]:
    return [
        bench(SEED, "pydicom", "cpu", SEED_BYTES, 0.5),
        bench(SEED, "kvdicom", "cuda", SEED_BYTES, 0.01),
        bench(SEED, "ceiling:h2d_pinned", "cuda", SEED_BYTES, 0.008),
        bench(SMALL, "pydicom", "cpu", SMALL_BYTES, 0.008),
        bench(SMALL, "kvdicom", "cuda", SMALL_BYTES, 0.0004),
    ]


def _compressed() -> list[dict]:
    return [
        bench(RLE_SERIES, "pydicom", "cpu", RLE_BYTES, 0.2, codec="rle"),
        bench(RLE_SERIES, "kvdicom", "cuda", RLE_BYTES, 0.05, codec="rle"),
    ]


def _report(tmp_path: Path, capsys, results: Path) -> tuple[str, dict]:
    out = tmp_path / "out"
    code, _, err = run_report(capsys, results, "-o", out)
    assert code == 0, err
    markdown = (out / "report.md").read_text()
    return markdown, markdown_tables(markdown)


def test_two_runs_of_one_machine_with_disjoint_cases_both_appear(tmp_path, capsys):
    results = tmp_path / "results"
    _write(results, "0001.json", _uncompressed(), EARLY)
    _write(results, "0002.json", _compressed(), LATE)   # newer, compressed cases only
    _, tables = _report(tmp_path, capsys, results)

    seed = row_for(tables[f"Case: {SEED}"], NAME, "kvdicom")
    assert (seed["GB/s"], seed["Speed-up vs pydicom"], seed["% of ceiling"], seed["Run"]) == (
        f"{SEED_BYTES / 0.01 / 1e9:.2f}", "50.00×", "80.0%", EARLY_RUN)
    assert row_for(tables[f"Case: {SMALL}"], NAME, "kvdicom")["Run"] == EARLY_RUN
    rle = row_for(tables[f"Case: {RLE_SERIES}"], NAME, "kvdicom")
    assert (rle["Speed-up vs pydicom"], rle["Run"]) == ("4.00×", LATE_RUN)

    score = {r["Reference case"]: r for r in tables["Scorecard"]}
    assert (score["Seed volume, 256 MiB"]["Case id"], score["Seed volume, 256 MiB"]["Run"]) == (SEED, EARLY_RUN)
    assert (score["Compressed series"]["Case id"], score["Compressed series"]["Run"]) == (RLE_SERIES, LATE_RUN)
    assert {(r["Ceiling"], r["Case"], r["Run"]) for r in tables["Machine ceilings"]} == {
        ("ceiling:h2d_pinned", SEED, EARLY_RUN)}

    machines = tables["Machines"]   # both files are used: one row each, newest first
    assert [(r["Machine"], r["Result file"], r["Rows shown"], r["Older runs ignored"]) for r in machines] == [
        (NAME, f"{SLUG}/0002.json", "2", "0"), (NAME, f"{SLUG}/0001.json", "5", "0")]

    # The throughput plot draws both runs' cases (the compressed one as a line of its own).
    [machine] = machines_from_runs(load_results([results]).runs)
    [spec] = per_machine_plots([machine])
    lines = {s.label: [x for x, _ in s.points] for s in spec.panels[0].series}
    assert (lines["kvdicom (cuda)"], lines["kvdicom (cuda, compressed)"]) == ([SMALL_BYTES, SEED_BYTES], [RLE_BYTES])


def test_a_case_in_both_runs_comes_from_the_newer_and_each_row_names_its_run(tmp_path, capsys):
    results = tmp_path / "results"
    _write(results, "0000.json", [bench(SMALL, "kvdicom", "cuda", SMALL_BYTES, 0.0009)], "2026-02-28T02:00:00+00:00",
           commit="0000000aaaaaaaaaaaaa")   # older than both and superseded by them: ignored
    _write(results, "0001.json", _uncompressed(), EARLY)
    _write(results, "0002.json", [bench(SMALL, "pydicom", "cpu", SMALL_BYTES, 0.006),
                                  bench(SMALL, "kvdicom", "cuda", SMALL_BYTES, 0.0002)] + _compressed(), LATE)
    _, tables = _report(tmp_path, capsys, results)

    small = tables[f"Case: {SMALL}"]
    assert len(small) == 2   # one row per loader: the older runs' SMALL rows are replaced, not repeated
    kv = row_for(small, NAME, "kvdicom")
    assert (kv["Median time"], kv["Speed-up vs pydicom"], kv["Run"]) == ("200 µs", "30.00×", LATE_RUN)
    assert row_for(small, NAME, "pydicom")["Run"] == LATE_RUN
    assert row_for(tables[f"Case: {SEED}"], NAME, "kvdicom")["Run"] == EARLY_RUN   # only the older run has it
    machines = tables["Machines"]
    assert [(r["Result file"], r["Rows shown"], r["Older runs ignored"]) for r in machines] == [
        (f"{SLUG}/0002.json", "4", "1"), (f"{SLUG}/0001.json", "3", "1")]

    # The trend still follows every run, the superseded one included.
    trend = next(r for r in tables["Trend"] if r["Case"] == SMALL and r["Loader"] == "kvdicom")
    assert trend["Runs"] == "3"


def test_derived_numbers_are_never_combined_across_runs(tmp_path, capsys):
    """The newer run measured kvdicom and its own ceiling but not pydicom: its row gets its own run's % of ceiling
    (40 %, not 80 % against the older run's ceiling) and no × pydicom (not 100× against the older pydicom)."""
    results = tmp_path / "results"
    _write(results, "0001.json", _uncompressed(), EARLY)
    _write(results, "0002.json", [bench(SEED, "kvdicom", "cuda", SEED_BYTES, 0.005),
                                  bench(SEED, "ceiling:h2d_pinned", "cuda", SEED_BYTES, 0.002)], LATE)
    _write(results, "0003.json", _compressed(), LATER)
    _, tables = _report(tmp_path, capsys, results)

    seed = tables[f"Case: {SEED}"]
    kv = row_for(seed, NAME, "kvdicom")
    assert (kv["Median time"], kv["% of ceiling"], kv["Speed-up vs pydicom"], kv["Run"]) == (
        "5.00 ms", "40.0%", "", LATE_RUN)
    pyd = row_for(seed, NAME, "pydicom")   # still shown, from the run that measured it, with its own numbers
    assert (pyd["Speed-up vs pydicom"], pyd["Run"]) == ("1.00×", EARLY_RUN)
    # The scorecard takes the newest run holding the whole comparison (issue 23, item 5): the older one, with
    # its own numbers, rather than a row without × pydicom.
    score = next(r for r in tables["Scorecard"] if r["Reference case"] == "Seed volume, 256 MiB")
    assert (score["GB/s"], score["× pydicom"], score["% of ceiling"], score["Run"]) == (
        f"{SEED_BYTES / 0.01 / 1e9:.2f}", "50.00×", "80.0%", EARLY_RUN)
    # The ceiling shown is the one that row was held against: the newer run's.
    assert [(r["Case"], r["GB/s"], r["Run"]) for r in tables["Machine ceilings"]] == [
        (SEED, f"{SEED_BYTES / 0.002 / 1e9:.2f}", LATE_RUN)]



def test_compressed_cases_from_another_run_are_plotted_apart_from_raw_reads_of_the_same_size(tmp_path):
    """Combining runs puts decode rates next to raw reads: a J2K slice and a raw slice (both 512 KiB of pixels)
    must not be averaged into one point of the kvdicom line."""
    results = tmp_path / "results"
    raw, j2k = "f1_512x512_i16_explicit_le", "f1_512x512_i16_jpeg2000_lossless_oj2.6.0"
    _write(results, "0001.json", [bench(raw, "kvdicom", "cuda", SMALL_BYTES, 0.0002)], EARLY)
    _write(results, "0002.json", [bench(j2k, "kvdicom", "cuda", SMALL_BYTES, 0.012, codec="jpeg2000")], LATE)
    machines = machines_from_runs(load_results([results]).runs)
    [spec] = per_machine_plots(machines)
    lines = {s.label: s for s in spec.panels[0].series}
    assert lines["kvdicom (cuda)"].points == ((SMALL_BYTES, SMALL_BYTES / 0.0002 / 1e9),)
    assert lines["kvdicom (cuda, compressed)"].points == ((SMALL_BYTES, SMALL_BYTES / 0.012 / 1e9),)
    assert lines["kvdicom (cuda, compressed)"].colour == lines["kvdicom (cuda)"].colour   # one colour per loader
    comparison = comparison_plot(machines)
    assert {s.label: s.points for s in comparison.panels[0].series} == {
        NAME: ((SMALL_BYTES, SMALL_BYTES / 0.0002 / 1e9),),
        f"{NAME} (compressed)": ((SMALL_BYTES, SMALL_BYTES / 0.012 / 1e9),)}


def test_the_scorecard_prefers_a_run_with_the_ceiling_too_over_a_newer_one_with_the_ratio_only(tmp_path, capsys):
    """A newer run measured kvdicom and pydicom but not the case's ceiling (an A/B of a few rows, say): the
    scorecard takes the newest run holding the whole comparison, ratio and ceiling, with that run's own numbers."""
    results = tmp_path / "results"
    _write(results, "0001.json", _uncompressed(), EARLY)
    _write(results, "0002.json", [bench(SEED, "pydicom", "cpu", SEED_BYTES, 0.6),
                                  bench(SEED, "kvdicom", "cuda", SEED_BYTES, 0.012)], LATE)
    _, tables = _report(tmp_path, capsys, results)
    score = next(r for r in tables["Scorecard"] if r["Reference case"] == "Seed volume, 256 MiB")
    assert (score["GB/s"], score["× pydicom"], score["% of ceiling"], score["Run"]) == (
        f"{SEED_BYTES / 0.01 / 1e9:.2f}", "50.00×", "80.0%", EARLY_RUN)
    # with no run holding a ceiling, the newest with the ratio still stands
    _write(results, "0001.json", _uncompressed()[:2], EARLY)
    _, tables = _report(tmp_path, capsys, results)
    score = next(r for r in tables["Scorecard"] if r["Reference case"] == "Seed volume, 256 MiB")
    assert (score["× pydicom"], score["% of ceiling"], score["Run"]) == ("50.00×", "", LATE_RUN)

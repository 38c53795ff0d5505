"""The report's scaling section (issue 21): a dataset through Dask on 1, 2, … G GPUs gets a table with series/s,
efficiency against one GPU and % of the same-G ceiling, a plot of series/s against GPUs, and a scorecard row
"Dataset, G GPUs"; its rows never replace (nor are replaced by) the case's own single-load rows."""

from __future__ import annotations

from tests.test_report import H100, bench, machine_info, markdown_tables, result_document, run_report, write_result

SLUG = "nvidia-h100-x2_drv1_cuda13_kvikio-compat"
NAME = f"2 × {H100} (compat)"
CASE = "series256_512x512_i16_htj2k_lossless_ct_ic2026.10.10"
ONE = 256 * 512 * 512 * 2   # decoded bytes of one series
EARLY, LATE = "2026-03-01T02:00:00+00:00", "2026-03-01T03:00:00+00:00"


def scale(loader: str, gpus: int, median: float, series: int = 8) -> dict:
    extra = {} if loader.startswith("ceiling:") else {"ceiling": "dataset_decode"}
    return bench(CASE, loader, "cuda", series * ONE, median, gpus=gpus, series=series,
                 name=f"test_scaleout[{loader}-{gpus}]", **extra)


def info():
    data = machine_info(H100, SLUG, compat=True)
    data["gpu_count"] = 2
    return data


def test_scaling_table_plot_and_scorecard_row(tmp_path, capsys):
    results = tmp_path / "results"
    # the case's own single-load rows, in an older run
    write_result(results / SLUG / "0001.json", result_document(info(), [
        bench(CASE, "pydicom", "cpu", ONE, 2.0), bench(CASE, "kvdicom", "cuda", ONE, 0.1)], EARLY))
    # a newer scale-out run of the same case
    write_result(results / SLUG / "0002.json", result_document(info(), [
        scale("kvdicom", 1, 0.8), scale("kvdicom", 2, 0.5), scale("pydicom+cupy", 1, 16.0),
        scale("pydicom+cupy", 2, 9.0), scale("kvdicom-loop", 1, 0.85),
        scale("ceiling:dataset_decode", 1, 0.4), scale("ceiling:dataset_decode", 2, 0.25)], LATE))
    out = tmp_path / "out"
    code, _, err = run_report(capsys, results, "-o", out)
    assert code == 0, err
    markdown = (out / "report.md").read_text()
    tables = markdown_tables(markdown)

    scaling = {(r["Loader"], r["GPUs"]): r for r in tables["Scaling"]}
    kv2 = scaling[("kvdicom", "2")]
    assert (kv2["Series/s"], kv2["Efficiency vs 1 GPU"], kv2["% of ceiling"]) == ("16.00", "80.0%", "50.0%")
    assert scaling[("kvdicom", "1")]["Efficiency vs 1 GPU"] == "100.0%"
    assert scaling[("kvdicom-loop", "1")]["Series/s"] == "9.41"
    assert ("ceiling:dataset_decode", "2") in scaling
    assert f"![Dask scaling on {NAME}](scaling_" in markdown
    assert any(p.name.startswith("scaling_") for p in out.glob("*.png"))

    score = {r["Reference case"]: r for r in tables["Scorecard"]}
    row = score["Dataset (compressed), 2 GPUs"]
    assert (row["Case id"], row["× pydicom"], row["% of ceiling"]) == (CASE, "18.00×", "50.0%")
    assert row["kvdicom on"] == "cuda through Dask, warm"
    # the single-load rows stay the case's: the newer scale-out run does not replace them
    case = {r["Loader"]: r for r in tables[f"Case: {CASE}"]}
    assert set(case) == {"pydicom", "kvdicom"} and case["kvdicom"]["Median time"] == "100 ms"
    assert score["Compressed series"]["× pydicom"] == "20.00×"


def test_the_trend_never_mixes_a_dataset_through_dask_with_the_case_s_own_load(tmp_path, capsys):
    """Before, 8 series through Dask (0.8 s) stood as the next point of the single load's trend (0.1 s): a
    regression of the case that never happened."""
    results = tmp_path / "results"
    single = [bench(CASE, "pydicom", "cpu", ONE, 2.0), bench(CASE, "kvdicom", "cuda", ONE, 0.1)]
    write_result(results / SLUG / "0001.json", result_document(info(), single, EARLY))
    write_result(results / SLUG / "0002.json", result_document(info(), [scale("kvdicom", 1, 0.8)],
                                                               "2026-03-01T02:30:00+00:00"))
    write_result(results / SLUG / "0003.json", result_document(info(), single, LATE))
    out = tmp_path / "out"
    code, _, err = run_report(capsys, results, "-o", out)
    assert code == 0, err
    trend = [r for r in markdown_tables((out / "report.md").read_text())["Trend"] if r["Loader"] == "kvdicom"]
    assert [(r["Runs"], r["Regressed"]) for r in trend] == [("2", "no")], trend


def test_the_trend_names_each_scale_out_row_by_its_gpus_and_the_loop_as_not_through_dask(tmp_path, capsys):
    results = tmp_path / "results"
    for name, when in (("0001.json", EARLY), ("0002.json", LATE)):
        rows = [scale("kvdicom", 1, 0.8), scale("kvdicom", 2, 0.45), scale("kvdicom-loop", 1, 0.9)]
        write_result(results / SLUG / name, result_document(info(), rows, when))
    out = tmp_path / "out"
    code, _, err = run_report(capsys, results, "-o", out)
    assert code == 0, err
    loaders = {r["Loader"] for r in markdown_tables((out / "report.md").read_text())["Trend"]}
    assert loaders == {"kvdicom (1 GPU through Dask)", "kvdicom (2 GPUs through Dask)", "kvdicom-loop (1 GPU, no Dask)"}


def test_a_share_above_the_ceiling_is_marked_as_no_bound():
    """Run 0055 (H200 scale-out) measured map_series at 134.4% of its host-read ceiling, which had read each
    series' files one after the other: shown bare, that reads as the loader beating the machine."""
    from dgbench.report import formatting

    assert formatting.percent(134.4) == "134.4% (ceiling below it)"
    assert formatting.percent(100.0) == "100.0%" and formatting.percent(61.5) == "61.5%"
    assert formatting.percent(None) == ""


def test_the_trend_of_a_dataset_compares_time_per_series_across_dataset_sizes(tmp_path, capsys):
    """A run of 32 series after one of 8 (the scale-out dataset grew): 0.8 s -> 3.0 s is 0.1 -> 0.094 s a series,
    a 6.3% gain, not a regression of +275% time."""
    results = tmp_path / "results"
    write_result(results / SLUG / "0001.json", result_document(info(), [scale("kvdicom", 1, 0.8)], EARLY))
    write_result(results / SLUG / "0002.json", result_document(info(), [scale("kvdicom", 1, 3.0, series=32)], LATE))
    out = tmp_path / "out"
    code, _, err = run_report(capsys, results, "-o", out)
    assert code == 0, err
    (row,) = markdown_tables((out / "report.md").read_text())["Trend"]
    assert (row["Last change"], row["Regressed"]) == ("-6.3% time", "no"), row

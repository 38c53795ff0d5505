"""The report under faults and its new sections: malformed values, unwritable output, unreadable folders,
scorecard, trend, plots at a glance, and the page as Chromium renders it (issue 11)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dgbench.report import main
from dgbench.report.loading import load_results
from dgbench.report.machines import machines_from_runs
from dgbench.report.plot_data import CEILING_COLOUR, loader_colour, per_machine_plots
from tests.test_report import (
    H100,
    LARGE,
    LARGE_BYTES,
    SMALL,
    V100,
    bench,
    gpu_run,
    machine_info,
    markdown_tables,
    result_document,
    skipped_section,
    write_result,
)

SEED = "f128_1024x1024_u16_explicit_le"
SEED_BYTES = 128 * 1024 * 1024 * 2
SLUG = "nvidia-h100_drv1_cuda13_kvikio-compat"


def run_report(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _unescaped(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@pytest.fixture
def one_machine(tmp_path) -> Path:
    results = tmp_path / "results"
    write_result(results / "h100" / "0001_a.json",
                 result_document(machine_info(H100, SLUG, compat=True), gpu_run(0.0005, 0.0004),
                                 "2026-03-01T02:00:00+00:00"))
    return results


# --------------------------------------------------------------------------- malformed single values

@pytest.mark.parametrize(("fault", "reason"), [
    ("datetime out of range", "'datetime' is not a usable ISO 8601 time"),
    ("int too large for a float", "pixel_bytes is not a positive number a float can hold"),
    ("5e-324 median", "gives no finite GB/s"),
])
def test_one_malformed_value_skips_its_benchmark_or_file_and_the_rest_is_written(one_machine, tmp_path, capsys,
                                                                                fault, reason):
    benches = gpu_run(0.001, 0.0008)
    when = "2026-03-02T02:00:00+00:00"
    if fault == "datetime out of range":
        when = "0001-01-01T00:00:00+01:00"   # parses, but lies before year 1 in UTC
    elif fault == "int too large for a float":
        benches[2]["extra_info"]["pixel_bytes"] = 10**400
    else:
        benches[2]["stats"]["median"] = 5e-324
    doc = result_document(machine_info(V100, "v100", gds=True), benches, when, derived=False)
    write_result(one_machine / "v100" / "0001_b.json", doc)
    out = tmp_path / "out"
    code, _, err = run_report(capsys, one_machine, "-o", out)
    assert code == 0, err
    assert "Traceback" not in err
    markdown = (out / "report.md").read_text()
    listed = _unescaped(skipped_section(markdown))
    assert "v100/0001_b.json" in listed and reason in listed, listed
    assert f"{H100} (compat)" in markdown   # the rest of the report is there
    if fault != "datetime out of range":
        rows = markdown_tables(markdown)[f"Case: {LARGE}"]
        assert {r["Loader"] for r in rows if r["Machine"] == f"{V100} (GDS)"} == {"pydicom", "pydicom+cupy"}


# --------------------------------------------------------------------------- output and inputs

def test_an_unwritable_output_folder_is_one_line_and_exit_2(one_machine, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, _, err = run_report(capsys, one_machine, "-o", blocker / "report")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write the report into {blocker / 'report'}: ")


def test_a_failing_write_is_one_line_and_exit_2(one_machine, tmp_path, capsys, monkeypatch):
    from dgbench.report import cli

    def full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "write_atomic", full)
    code, _, err = run_report(capsys, one_machine, "-o", tmp_path / "out")
    assert code == 2
    assert err.strip() == f"error: cannot write the report into {tmp_path / 'out'}: No space left on device"


def test_unreadable_folders_and_non_regular_files_are_listed_with_the_true_reason(one_machine, tmp_path, capsys,
                                                                                 monkeypatch):
    locked = one_machine / "locked"
    locked.mkdir()
    (locked / "0001.json").write_text("{}")
    os.mkfifo(one_machine / "pipe.json")            # reading it would block forever
    (one_machine / "dangling.json").symlink_to(tmp_path / "gone.json")
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)     # running as root, chmod 000 would not stop us
    out = tmp_path / "out"
    code, _, err = run_report(capsys, one_machine, "-o", out)
    assert code == 0, err
    listed = _unescaped(skipped_section((out / "report.md").read_text()))
    assert "- locked/: cannot read folder: Permission denied" in listed
    assert "- pipe.json: not a regular file (a named pipe)" in listed
    assert "- dangling.json: a broken symbolic link" in listed


# --------------------------------------------------------------------------- issue 9 items in the report

def test_case_tables_are_sorted_by_size_not_by_name(one_machine, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_report(capsys, one_machine, "-o", out)[0] == 0
    headings = re.findall(r"^### Case: (.+)$", (out / "report.md").read_text(), re.M)
    assert SMALL > LARGE  # by name LARGE would come first
    assert headings == [SMALL, LARGE]


def test_markdown_skipped_files_keep_their_reason(one_machine, tmp_path, capsys):
    (one_machine / "empty.json").write_bytes(b"")
    (one_machine / "list.json").write_text("[1]")
    out = tmp_path / "out"
    assert run_report(capsys, one_machine, "-o", out)[0] == 0
    listed = _unescaped(skipped_section((out / "report.md").read_text()))
    assert "- empty.json: empty file" in listed
    assert "- list.json: not a pytest-benchmark result (top level is a JSON list, not an object)" in listed


def test_an_unverified_cold_row_is_shown_as_such_and_never_against_the_disk(tmp_path, capsys):
    benches = [
        bench(LARGE, "kvdicom", "cuda", LARGE_BYTES, 0.001, page_cache="cold", resident_fraction_max=0.6),
        bench(LARGE, "ceiling:disk_read", "cpu", LARGE_BYTES, 0.004, page_cache="cold"),
    ]
    path = write_result(tmp_path / "r.json",
                        result_document(machine_info(H100, "h"), benches, "2026-03-01T02:00:00+00:00"))
    out = tmp_path / "out"
    assert run_report(capsys, path, "-o", out)[0] == 0
    row = markdown_tables((out / "report.md").read_text())[f"Case: {LARGE}"][0]
    assert row["Page cache"] == "unverified" and row["% of ceiling"] == ""


# --------------------------------------------------------------------------- scorecard

def test_scorecard_comes_first_with_the_reference_cases(tmp_path, capsys):
    benches = [
        bench(SEED, "pydicom", "cpu", SEED_BYTES, 0.5),
        bench(SEED, "kvdicom", "cuda", SEED_BYTES, 0.01),
        bench(SEED, "kvdicom", "cpu", SEED_BYTES, 0.05),
        bench(SEED, "ceiling:h2d_pinned", "cuda", SEED_BYTES, 0.008),
        bench("series16_64x64_i16_explicit_le_ct", "kvdicom", "cuda", 16 * 64 * 64 * 2, 0.001),
        bench("series256_512x512_i16_explicit_le_ct", "pydicom", "cpu", 256 * 512 * 512 * 2, 0.4),
        bench("series256_512x512_i16_explicit_le_ct", "kvdicom", "cuda", 256 * 512 * 512 * 2, 0.02),
        bench("series1024_512x512_i16_explicit_le_ct", "kvdicom", "cuda", 1024 * 512 * 512 * 2, 0.08),
        bench("f1_512x512_i16_explicit_le", "kvdicom", "cpu", 512 * 512 * 2, 0.0002),
    ]
    path = write_result(tmp_path / "r" / "a.json",
                        result_document(machine_info(H100, SLUG), benches, "2026-03-01T02:00:00+00:00"))
    out = tmp_path / "out"
    assert run_report(capsys, path.parent, "-o", out)[0] == 0
    markdown = (out / "report.md").read_text()
    assert markdown.index("## Scorecard") < markdown.index("## Machines") < markdown.index("## Results by case")
    rows = {r["Reference case"]: r for r in markdown_tables(markdown)["Scorecard"]}
    assert list(rows) == ["Seed volume, 256 MiB", "CT series", "CT slice"]   # no compressed series in this run
    seed = rows["Seed volume, 256 MiB"]
    assert (seed["kvdicom on"], seed["GB/s"], seed["× pydicom"], seed["% of ceiling"]) == (
        "cuda, warm", f"{SEED_BYTES / 0.01 / 1e9:.2f}", "50.00×", "80.0%")
    assert rows["CT series"]["Case id"] == "series256_512x512_i16_explicit_le_ct"   # the profile's CT series
    assert rows["CT series"]["× pydicom"] == "20.00×"
    assert rows["CT slice"]["kvdicom on"] == "cpu, warm"


def test_a_cases_header_and_scan_rows_are_never_its_reference_row(tmp_path, capsys):
    """``<case>:scan`` and ``<case>:header`` rows time a case's headers: a run holding only those (a scan
    benchmark alone) has no CT series or compressed series in the scorecard, not the scan as one."""
    ct, htj2k = "series256_512x512_i16_explicit_le_ct", "series256_512x512_i16_htj2k_lossless_ct_ic2026.10.10"
    benches = [bench(f"{case}:scan", loader, "cpu", 256 * 1500, median)
               for case in (ct, htj2k) for loader, median in (("kvdicom", 0.007), ("pydicom", 0.29))]
    benches.append(bench("f1_512x512_i16_explicit_le_ct:header", "kvdicom", "cpu", 1500, 0.00002))
    path = write_result(tmp_path / "r" / "a.json",
                        result_document(machine_info(H100, SLUG), benches, "2026-03-01T02:00:00+00:00"))
    out = tmp_path / "out"
    assert run_report(capsys, path.parent, "-o", out)[0] == 0
    rows = markdown_tables((out / "report.md").read_text())["Scorecard"]
    assert {r["Reference case"]: r["Case id"] for r in rows} == {
        "Seed volume, 256 MiB": "not in any run", "CT series": "not in any run", "CT slice": "not in any run"}


def test_scorecard_says_when_a_reference_case_is_absent(one_machine, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_report(capsys, one_machine, "-o", out)[0] == 0
    rows = markdown_tables((out / "report.md").read_text())["Scorecard"]
    assert {r["Reference case"]: r["Case id"] for r in rows} == {
        "Seed volume, 256 MiB": "not in any run", "CT series": "not in any run", "CT slice": "not in any run"}


# --------------------------------------------------------------------------- trend

def test_trend_across_runs_marks_the_regression_by_the_baseline_rule(tmp_path, capsys):
    info = machine_info(H100, SLUG, compat=True)
    folder = tmp_path / "results" / "h100"
    for name, when, commit, median in (("0001", "2026-03-01T02:00:00+00:00", "aaaaaaa111", 0.0005),
                                       ("0002", "2026-03-02T02:00:00+00:00", "bbbbbbb222", 0.00051),  # noise
                                       ("0003", "2026-03-03T02:00:00+00:00", "ccccccc333", 0.0010)):  # 2x slower
        write_result(folder / f"{name}.json", result_document(info, gpu_run(median, 0.0004), when, commit=commit))
    out = tmp_path / "out"
    assert run_report(capsys, tmp_path / "results", "-o", out)[0] == 0
    markdown = (out / "report.md").read_text()
    rows = markdown_tables(markdown)["Trend"]
    kv = next(r for r in rows if r["Case"] == LARGE and r["Loader"] == "kvdicom")
    assert (kv["Runs"], kv["Regressed"], kv["Last change"]) == ("3", "ccccccc", "+96.1% time")
    steady = next(r for r in rows if r["Case"] == SMALL and r["Loader"] == "kvdicom")
    assert steady["Regressed"] == "no"
    trend_png = re.findall(r"\]\((trend_[^)]+\.png)\)", markdown)
    assert len(trend_png) == 1 and (out / trend_png[0]).read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- plots at a glance

def test_plots_are_small_multiples_with_one_colour_per_loader(tmp_path):
    results = tmp_path / "results"
    for name, slug, kv in ((H100, "h", 0.0005), (V100, "v", 0.002)):
        benches = gpu_run(kv, kv) + [
            bench(LARGE, "kvdicom", "cuda", LARGE_BYTES, kv * 5, page_cache="cold"),
            bench(LARGE, "ceiling:disk_read", "cpu", LARGE_BYTES, kv * 4, page_cache="cold"),
        ]
        write_result(results / slug / "0001.json",
                     result_document(machine_info(name, slug), benches, "2026-03-01T02:00:00+00:00"))
    machines = machines_from_runs(load_results([results]).runs)
    specs = per_machine_plots(machines)
    assert [[p.title for p in s.panels] for s in specs] == [["page cache warm", "page cache cold"]] * 2
    colours: dict[str, set] = {}
    for spec in specs:
        for series in spec.series:
            colours.setdefault(series.label.split(" ")[0], set()).add(series.colour)
            if series.label.startswith("ceiling:"):
                assert series.dashed and series.colour == CEILING_COLOUR
            else:
                assert not series.dashed and series.colour == loader_colour(series.label.split(" ")[0])
    assert all(len(c) == 1 for c in colours.values())
    loader_colours = [c.pop() for name, c in colours.items() if not name.startswith("ceiling:")]
    assert len(set(loader_colours)) == len(loader_colours)   # no two loaders share a colour
    warm = specs[0].panels[0]
    values = [y for s in warm.series for _, y in s.points]
    assert warm.log_y == (max(values) / min(values) > 20)


# --------------------------------------------------------------------------- as a person sees it

def test_trend_shows_how_the_rows_own_ceiling_moved_between_the_same_two_runs(tmp_path, capsys):
    """H100, 7ca1e32 -> 7a7e12f: every row of the second lease was 1.1-1.7x slower, its ceilings too; the trend
    flagged the loaders' regressions with nothing beside them to say the machine had moved."""
    info = machine_info(H100, SLUG, compat=True)
    folder = tmp_path / "results" / "h100"
    for name, when, commit, large, ceiling in (("0001", "2026-03-01T02:00:00+00:00", "aaaaaaa111", 0.0005, 1e-4),
                                               ("0002", "2026-03-02T02:00:00+00:00", "bbbbbbb222", 0.0010, 2e-4)):
        write_result(folder / f"{name}.json", result_document(info, gpu_run(large, 0.0004, ceiling), when,
                                                              commit=commit))
    out = tmp_path / "out"
    assert run_report(capsys, tmp_path / "results", "-o", out)[0] == 0
    rows = markdown_tables((out / "report.md").read_text())["Trend"]
    large = next(r for r in rows if r["Case"] == LARGE and r["Loader"] == "kvdicom")
    assert (large["Last change"], large["Its ceiling's last change"], large["Regressed"]) == (
        "+100.0% time", "+100.0% time", "bbbbbbb")  # the machine's drift: the rule still flags it, the column says why
    small = next(r for r in rows if r["Case"] == SMALL and r["Loader"] == "kvdicom")
    assert (small["Last change"], small["Its ceiling's last change"]) == ("+0.0% time", "+100.0% time")
    pydicom = next(r for r in rows if r["Case"] == LARGE and r["Loader"] == "pydicom")
    assert pydicom["Its ceiling's last change"] == ""  # a row with no ceiling of its own


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_html_has_no_horizontal_overflow_at_1400_px_in_chromium(tmp_path, capsys):
    results = Path(__file__).resolve().parents[1] / "results"
    out = tmp_path / "out"
    assert run_report(capsys, results, "-o", out)[0] == 0
    page = (out / "report.html").read_text()
    probe = out / "probe.html"    # a copy with a script that writes the page's width into the DOM
    script = ("<script>window.addEventListener('load',()=>{document.body.setAttribute('data-scroll-width',"
              "document.documentElement.scrollWidth);document.body.setAttribute('data-client-width',"
              "document.documentElement.clientWidth);});</script>")
    probe.write_text(page.replace("</body>", script + "</body>"))
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=1400,1000", "--virtual-time-budget=5000"]
    dom = subprocess.run(base + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-scroll-width="(\d+)"[^>]*data-client-width="(\d+)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    scroll, client = int(found[1]), int(found[2])
    assert client == 1400 and scroll <= client, f"page is {scroll} px wide at {client} px"
    shot = tmp_path / "report.png"   # for the eye: kept in the test's tmp folder
    subprocess.run(base + [f"--screenshot={shot}", probe.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000

"""Tests for ``python -m dgbench.report``: real result-shaped files in, real numbers out."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from dgbench.derived import add_derived_fields
from dgbench.report import main
from dgbench.report.atomic_write import write_atomic
from dgbench.schema import bench_document, run_document

REPO_ROOT = Path(__file__).resolve().parents[1]

H100 = "NVIDIA H100 80GB HBM3"
V100 = "Tesla V100-SXM2-32GB"
SMALL = "f1_512x512_u16_explicit_le"  # 512*512*2 bytes of pixels
LARGE = "f1_1024x1024_u16_explicit_le"  # 1024*1024*2 bytes of pixels
SMALL_BYTES = 512 * 512 * 2
LARGE_BYTES = 1024 * 1024 * 2


# --------------------------------------------------------------------------
# Building pytest-benchmark-shaped result files
# --------------------------------------------------------------------------


def bench(case: str, loader: str, device: str, pixel_bytes: int, median: float, page_cache: str = "warm",
          **extra) -> dict:
    """One ``benchmarks[]`` entry as ``bench/`` writes it (dgbench.schema's factory; derived fields filled later)."""
    if page_cache == "cold":
        extra.setdefault("resident_fraction_max", 0.0)  # a verified drop of the page cache
    if device == "cuda" and not loader.startswith("ceiling:"):
        extra.setdefault("kvikio_threads", 8)
        extra.setdefault("kvikio_task_size", 4 << 20)
    return bench_document(case, loader, median, device=device, pixel_bytes=pixel_bytes, page_cache=page_cache,
                          iqr=median * 0.13, rounds=20, **extra)


def machine_info(gpu_name: str | None, slug: str, *, gds: bool = False, compat: bool = False,
                 node: str = "gpu-node-1", cpu: str = "AMD EPYC 7763 64-Core Processor") -> dict:
    """``machine_info`` with pytest-benchmark's own keys and the suite's additions."""
    return {
        "node": node,
        "processor": "x86_64",
        "machine": "x86_64",
        "python_compiler": "GCC 12.2.0",
        "python_implementation": "CPython",
        "python_implementation_version": "3.11.7",
        "python_version": "3.11.7",
        "python_build": ["main", "May  9 2026 07:35:25"],
        "release": "6.8.0-49-generic",
        "system": "Linux",
        "cpu": {"brand_raw": cpu, "arch": "X86_64", "bits": 64, "count": 64},
        "machine_slug": slug,
        "gpu_name": gpu_name,
        "gpu_driver": "580.159.04" if gpu_name else None,
        "cuda_runtime": "13.0" if gpu_name else None,
        "gpu_memory_bytes": 85899345920 if gpu_name else None,
        "kvikio_version": "25.10.00",
        "kvikio_compat_mode": compat,
        "gds_available": gds,
        "kvikio_threads": 8,
        "kvikio_task_size": 4194304,
        "kvikio_bounce_buffer_size": 16777216,
        "cupy_version": "13.6.0",
        "pydicom_version": "3.0.1",
        "numpy_version": "2.3.4",
        "corpus_filesystem": "ext4",
        "corpus_dir": "/data/.corpus",
        "profile": "quick",
    }


def result_document(info: dict, benchmarks: list[dict], when: str, *, derived: bool = True,
                    commit: str = "0123456789abcdef0123") -> dict:
    """A whole saved result, as pytest-benchmark 5 writes it (derived fields by dgbench.derived, as the suite does)."""
    if derived:
        add_derived_fields(benchmarks)
    return run_document(info, benchmarks, when, commit)


def write_result(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=4))
    return path


def gpu_run(kvdicom_large: float, kvdicom_small: float, ceiling: float = 1e-4) -> list[dict]:
    """A small matrix: two cases, the reference loaders, and an H2D ceiling."""
    return [
        bench(LARGE, "pydicom", "cpu", LARGE_BYTES, 0.02),
        bench(LARGE, "pydicom+cupy", "cuda", LARGE_BYTES, 0.004),
        bench(LARGE, "kvdicom", "cuda", LARGE_BYTES, kvdicom_large),
        bench(LARGE, "ceiling:h2d_pinned", "cuda", LARGE_BYTES, ceiling),
        bench(SMALL, "pydicom", "cpu", SMALL_BYTES, 0.008),
        bench(SMALL, "kvdicom", "cuda", SMALL_BYTES, kvdicom_small),
        bench(SMALL, "ceiling:h2d_pinned", "cuda", SMALL_BYTES, ceiling / 2),
    ]


# --------------------------------------------------------------------------
# Reading the generated Markdown back
# --------------------------------------------------------------------------

_PIPE = re.compile(r"(?<!\\)\|")


def unescape(cell: str) -> str:
    return re.sub(r"\\(.)", r"\1", cell.strip())


def markdown_tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Every pipe table, keyed by the heading above it, as a list of {header: cell}."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading = None
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = unescape(line.lstrip("#").strip())
        elif line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|") and "---" in lines[i + 1]:
            headers = [unescape(c) for c in _PIPE.split(line)[1:-1]]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [unescape(c) for c in _PIPE.split(lines[i])[1:-1]]
                assert len(cells) == len(headers), f"broken table row: {lines[i]!r}"
                rows.append(dict(zip(headers, cells, strict=True)))
                i += 1
            tables[heading] = rows
            continue
        i += 1
    return tables


def row_for(rows: list[dict[str, str]], machine: str, loader: str) -> dict[str, str]:
    matches = [r for r in rows if r["Machine"] == machine and r["Loader"] == loader]
    assert len(matches) == 1, f"expected one row for {machine} / {loader}, got {matches}"
    return matches[0]


def skipped_section(markdown: str) -> str:
    return markdown.split("## Skipped files", 1)[1]


def run_report(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def two_machines(tmp_path: Path) -> Path:
    """An H100 in KvikIO compat mode and a V100 with GDS, one run each."""
    results = tmp_path / "results"
    write_result(
        results / "h100_compat" / "0001_abc_20260301.json",
        result_document(
            machine_info(H100, "nvidia-h100-80gb-hbm3_drv580.159.04_cuda13.0_kvikio-compat", compat=True),
            gpu_run(kvdicom_large=0.0005, kvdicom_small=0.0004),
            "2026-03-01T02:00:00+00:00",
        ),
    )
    write_result(
        results / "v100_gds" / "0001_abc_20260301.json",
        result_document(
            machine_info(V100, "tesla-v100-sxm2-32gb_drv580.159.04_cuda13.0_kvikio-gds", gds=True, node="old-box"),
            gpu_run(kvdicom_large=0.002, kvdicom_small=0.001, ceiling=4e-4),
            "2026-03-01T03:00:00+00:00",
        ),
    )
    return results


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


def test_two_machines_are_named_by_gpu_with_correct_numbers(two_machines, tmp_path, capsys):
    out = tmp_path / "report"
    code, _, err = run_report(capsys, two_machines, "-o", out)
    assert code == 0, err
    tables = markdown_tables((out / "report.md").read_text())

    large = tables[f"Case: {LARGE}"]
    assert {r["Machine"] for r in large} == {f"{H100} (compat)", f"{V100} (GDS)"}
    assert not any("3.11" in r["Machine"] or "CPython" in r["Machine"] for r in large)
    assert [r["Loader"] for r in large] == ["pydicom", "pydicom+cupy", "kvdicom"] * 2

    # H100: 2 MiB in 0.5 ms = 4.19 GB/s; ceiling 2 MiB in 0.1 ms -> 20.0 %; pydicom 20 ms -> 40x.
    h100 = row_for(large, f"{H100} (compat)", "kvdicom")
    assert (h100["Device"], h100["Page cache"]) == ("cuda", "warm")
    assert (h100["Median time"], h100["GB/s"], h100["% of ceiling"], h100["Speed-up vs pydicom"]) == (
        "500 µs",
        "4.19",
        "20.0%",
        "40.00×",
    )
    # V100: 2 ms -> 1.05 GB/s; its own ceiling is 0.4 ms -> 20.0 %; 10x over its pydicom.
    v100 = row_for(large, f"{V100} (GDS)", "kvdicom")
    assert (v100["Median time"], v100["GB/s"], v100["% of ceiling"], v100["Speed-up vs pydicom"]) == (
        "2.00 ms",
        "1.05",
        "20.0%",
        "10.00×",
    )
    pyd = row_for(large, f"{H100} (compat)", "pydicom")
    assert (pyd["Device"], pyd["Median time"], pyd["Speed-up vs pydicom"]) == ("cpu", "20.0 ms", "1.00×")

    small = tables[f"Case: {SMALL}"]
    assert row_for(small, f"{H100} (compat)", "kvdicom")["GB/s"] == f"{SMALL_BYTES / 0.0004 / 1e9:.2f}"

    ceilings = tables["Machine ceilings"]
    assert {(r["Machine"], r["Ceiling"], r["Case"], r["GB/s"]) for r in ceilings} == {
        (f"{H100} (compat)", "ceiling:h2d_pinned", LARGE, "20.97"),
        (f"{H100} (compat)", "ceiling:h2d_pinned", SMALL, "10.49"),
        (f"{V100} (GDS)", "ceiling:h2d_pinned", LARGE, "5.24"),
        (f"{V100} (GDS)", "ceiling:h2d_pinned", SMALL, "2.62"),
    }
    # Ceilings are not loaders: they stay out of the per-case tables.
    assert not any(r["Loader"].startswith("ceiling:") for r in large + small)

    machines = {r["Machine"]: r for r in tables["Machines"]}
    assert machines[f"{H100} (compat)"]["Result file"].endswith("h100_compat/0001_abc_20260301.json")
    assert machines[f"{V100} (GDS)"]["Result file"].endswith("v100_gds/0001_abc_20260301.json")
    assert "None." in skipped_section((out / "report.md").read_text())
    assert err == ""


def test_html_holds_the_same_rows(two_machines, tmp_path, capsys):
    out = tmp_path / "report"
    assert run_report(capsys, two_machines, "-o", out)[0] == 0
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    row = (
        f"<tr><td>{V100} (GDS)</td><td>kvdicom</td><td>cuda</td><td>warm</td>"
        '<td class="num">2.00 ms</td><td class="num">1.05</td><td class="num">20.0%</td>'
        '<td class="num">10.00×</td><td>2026-03-01 03:00:00 · 0123456</td></tr>'
    )
    assert row in page
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "http://" not in page and "https://" not in page


def test_newest_run_per_machine_is_used_and_its_file_named(tmp_path, capsys):
    results = tmp_path / "results" / "h100"
    slug = "nvidia-h100-80gb-hbm3_drv580.159.04_cuda13.0_kvikio-gds"
    info = machine_info(H100, slug, gds=True)
    # 23:30 at UTC-2 is 01:30 UTC on 2 March: newer than 01:00 UTC, although
    # its text sorts first and its file name (0001) sorts first too.
    newest = write_result(
        results / "0001_new.json",
        result_document(info, gpu_run(kvdicom_large=0.00025, kvdicom_small=0.0002), "2026-03-01T23:30:00-02:00"),
    )
    write_result(
        results / "0002_old.json",
        result_document(info, gpu_run(kvdicom_large=0.001, kvdicom_small=0.0008), "2026-03-02T01:00:00+00:00"),
    )
    write_result(
        results / "0000_oldest.json",
        result_document(info, gpu_run(kvdicom_large=0.004, kvdicom_small=0.003), "2026-02-01T01:00:00+00:00"),
    )
    out = tmp_path / "out"
    code, _, err = run_report(capsys, tmp_path / "results", "-o", out)
    assert code == 0, err
    tables = markdown_tables((out / "report.md").read_text())

    machine_rows = tables["Machines"]
    assert len(machine_rows) == 1
    assert machine_rows[0]["Machine"] == f"{H100} (GDS)"
    assert machine_rows[0]["Result file"] == "h100/0001_new.json" == newest.relative_to(tmp_path / "results").as_posix()
    assert machine_rows[0]["Older runs ignored"] == "2"
    assert machine_rows[0]["Run started"] == "2026-03-02 01:30:00 UTC"
    assert machine_rows[0]["Header walk"] == "python"  # recorded by no run before the compiled walk
    assert machine_rows[0]["Slice reads"] == "python"  # nor the compiled slice reads

    large = tables[f"Case: {LARGE}"]
    assert len(large) == 3  # one run only: no rows from the older files
    assert row_for(large, f"{H100} (GDS)", "kvdicom")["Median time"] == "250 µs"
    assert row_for(large, f"{H100} (GDS)", "kvdicom")["GB/s"] == "8.39"


def test_same_gpu_on_two_machines_is_told_apart(tmp_path, capsys):
    results = tmp_path / "results"
    for slug, median in (("h100_drv550_kvikio-compat", 0.001), ("h100_drv580_kvikio-compat", 0.0005)):
        write_result(
            results / slug / "0001.json",
            result_document(machine_info(H100, slug, compat=True), gpu_run(median, median),
                            "2026-03-01T02:00:00+00:00"),
        )
    out = tmp_path / "out"
    assert run_report(capsys, results, "-o", out)[0] == 0
    large = markdown_tables((out / "report.md").read_text())[f"Case: {LARGE}"]
    assert row_for(large, f"{H100} (compat) [h100_drv550_kvikio-compat]", "kvdicom")["Median time"] == "1.00 ms"
    assert row_for(large, f"{H100} (compat) [h100_drv580_kvikio-compat]", "kvdicom")["Median time"] == "500 µs"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 3  # a plot per machine (distinct files) plus the comparison


def test_cpu_only_run_is_named_by_processor_and_derived_fields_fall_back(tmp_path, capsys):
    info = machine_info(None, "cpu-amd-epyc-7763", cpu="AMD EPYC 7763 64-Core Processor")
    benchmarks = [
        bench(LARGE, "pydicom", "cpu", LARGE_BYTES, 0.012),
        bench(LARGE, "seed", "cpu", LARGE_BYTES, 0.003),
    ]
    # No pct_of_ceiling / speedup_vs_pydicom recorded: % blank, speed-up from this file's pydicom.
    path = write_result(tmp_path / "cpu.json",
                        result_document(info, benchmarks, "2026-03-01T02:00:00+00:00", derived=False))
    out = tmp_path / "out"
    assert run_report(capsys, path, "-o", out)[0] == 0
    rows = markdown_tables((out / "report.md").read_text())[f"Case: {LARGE}"]
    seed = row_for(rows, "AMD EPYC 7763 64-Core Processor", "seed")
    assert (seed["Median time"], seed["GB/s"], seed["% of ceiling"], seed["Speed-up vs pydicom"]) == (
        "3.00 ms",
        "0.699",
        "",
        "4.00×",
    )
    markdown = (out / "report.md").read_text()
    assert "No machine ran the kvdicom loader on cuda" in markdown


def test_malformed_files_are_skipped_and_listed(two_machines, tmp_path, capsys):
    bad = two_machines / "bad"
    bad.mkdir()
    not_json = bad / "not_json.json"
    not_json.write_text("{ this is not json")
    empty = bad / "empty.json"
    empty.write_bytes(b"")
    a_list = bad / "a_list.json"
    a_list.write_text("[1, 2, 3]")
    no_benchmarks = bad / "no_benchmarks.json"
    no_benchmarks.write_text(json.dumps({"machine_info": machine_info(H100, "x"), "datetime": "2026-03-01T00:00:00"}))
    no_machine = bad / "no_machine_info.json"
    no_machine.write_text(json.dumps({"benchmarks": [bench(LARGE, "kvdicom", "cuda", LARGE_BYTES, 0.001)],
                                      "datetime": "2026-03-01T00:00:00"}))
    # A real-looking run where one benchmark lacks its case: that benchmark goes, the rest stays.
    partial_doc = result_document(
        machine_info("NVIDIA A100-SXM4-80GB", "a100_slug"), gpu_run(0.0008, 0.0006), "2026-03-01T04:00:00+00:00"
    )
    del partial_doc["benchmarks"][2]["extra_info"]["case"]
    partial = write_result(bad / "partial.json", partial_doc)

    out = tmp_path / "report"
    code, _, err = run_report(capsys, two_machines, "-o", out)
    assert code == 0
    stderr_lines = err.splitlines()
    expected = {
        not_json: "not JSON",
        empty: "empty file",
        a_list: "not a pytest-benchmark result",
        no_benchmarks: "no 'benchmarks' list",
        no_machine: "no 'machine_info' object",
        partial: "lacks case",
    }
    markdown = (out / "report.md").read_text()
    listed = skipped_section(markdown)
    for path, reason in expected.items():
        shown = path.relative_to(two_machines).as_posix()  # relative to the folder on the command line
        assert any(line.startswith(f"skipped {shown}: ") and reason in line for line in stderr_lines), (path, err)
        assert re.sub(r"\\(.)", r"\1", listed).count(shown) == 1
        assert str(tmp_path) not in listed
    assert len(stderr_lines) == len(expected)

    tables = markdown_tables(markdown)
    large = tables[f"Case: {LARGE}"]
    assert {r["Machine"] for r in large} == {f"{H100} (compat)", f"{V100} (GDS)", "NVIDIA A100-SXM4-80GB"}
    a100_loaders = {r["Loader"] for r in large if r["Machine"] == "NVIDIA A100-SXM4-80GB"}
    assert a100_loaders == {"pydicom", "pydicom+cupy"}  # its kvdicom row had no case
    assert "not_json.json" in (out / "report.html").read_text().split("Skipped files", 1)[1]


@pytest.mark.parametrize("content", [b"", b"not json at all", b'{"benchmarks": "nope"}', b"\xff\xfe\x00garbage"])
def test_no_usable_file_exits_2(tmp_path, capsys, content):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    out = tmp_path / "out"
    code, _, err = run_report(capsys, bad, "-o", out)
    assert code == 2
    assert f"skipped {bad}: " in err
    assert "no usable pytest-benchmark result" in err
    assert not out.exists()


def test_command_line_entry_point(two_machines, tmp_path):
    """``python -m dgbench.report`` works as a command, exit codes included."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "cli_out"
    done = subprocess.run(
        [sys.executable, "-m", "dgbench.report", str(two_machines), "-o", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "report.md").is_file() and (out / "report.html").is_file()

    empty_dir = tmp_path / "nothing_here"
    empty_dir.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "dgbench.report", str(empty_dir), "-o", str(tmp_path / "never")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "no usable pytest-benchmark result" in done.stderr
    assert not (tmp_path / "never").exists()


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_inputs_are_left_byte_identical(two_machines, tmp_path, capsys):
    (two_machines / "junk.json").write_text("[]")
    before = snapshot(two_machines)
    out = tmp_path / "report"
    assert run_report(capsys, two_machines, "-o", out)[0] == 0
    assert snapshot(two_machines) == before  # same files, same bytes, untouched, nothing added


def test_report_inside_results_folder_writes_only_there(two_machines, capsys):
    """Writing the report into a folder that is also searched still leaves inputs alone."""
    before = snapshot(two_machines)
    out = two_machines / "report"
    assert run_report(capsys, two_machines, "-o", out)[0] == 0
    after = snapshot(two_machines)
    assert {k: v for k, v in after.items() if not k.startswith("report" + os.sep)} == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_plots_are_valid_pngs_referenced_by_both_reports(two_machines, tmp_path, capsys):
    out = tmp_path / "report"
    assert run_report(capsys, two_machines, "-o", out)[0] == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3  # H100, V100, and the kvdicom-on-cuda comparison
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 200
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    linked_md = set(re.findall(r"!\[[^\n]*?\]\(([^)]+\.png)\)", markdown))
    linked_html = set(re.findall(r'<img src="([^"]+\.png)"', page))
    assert linked_md == linked_html == {p.name for p in pngs}
    assert "throughput_kvdicom_cuda_by_machine.png" in linked_md
    assert not [p for p in out.iterdir() if p.suffix not in {".png", ".md", ".html"}]


def test_hostile_case_name_is_escaped(tmp_path, capsys):
    hostile = '<script>alert("x")</script>|**bold** & <img src=x onerror=alert(1)>'
    benchmarks = [
        bench(hostile, "pydicom", "cpu", LARGE_BYTES, 0.02),
        bench(hostile, "kvdicom", "cuda", LARGE_BYTES, 0.001),
    ]
    path = write_result(
        tmp_path / "hostile.json",
        result_document(machine_info("<b>GPU</b>", "evil"), benchmarks, "2026-03-01T02:00:00+00:00"),
    )
    out = tmp_path / "out"
    assert run_report(capsys, path, "-o", out)[0] == 0

    page = (out / "report.html").read_text()
    assert "<script" not in page.lower()
    assert "<img src=x" not in page and "<b>GPU</b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;|**bold** &amp; &lt;img src=x onerror=alert(1)&gt;" in page
    assert "<td>&lt;b&gt;GPU&lt;/b&gt;</td>" in page

    markdown = (out / "report.md").read_text()
    assert not re.search(r"(?<!\\)[<>]", markdown)  # every angle bracket is backslash-escaped
    tables = markdown_tables(markdown)
    rows = tables[f"Case: {hostile}"]  # the escaped heading reads back as the original name
    assert row_for(rows, "<b>GPU</b>", "kvdicom")["Speed-up vs pydicom"] == "20.00×"


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = write_atomic(tmp_path, "report.md", b"old complete report")

    def crash(_fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path, "report.md", b"new half-written rep")
    assert target.read_bytes() == b"old complete report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
    with pytest.raises(ValueError):
        write_atomic(tmp_path, "../escape.md", b"x")
    assert not (tmp_path.parent / "escape.md").exists()


def test_cold_and_warm_runs_and_repeated_loaders_get_their_own_rows(tmp_path, capsys):
    """A thread sweep (same loader twice in a case) is told apart by its test id."""
    benchmarks = [
        bench(LARGE, "pydicom", "cpu", LARGE_BYTES, 0.02, page_cache="warm"),
        bench(LARGE, "pydicom", "cpu", LARGE_BYTES, 0.05, page_cache="cold"),
        bench(LARGE, "kvdicom", "cuda", LARGE_BYTES, 0.001, page_cache="warm"),
        bench(LARGE, "kvdicom", "cuda", LARGE_BYTES, 0.005, page_cache="cold"),
        bench(LARGE, "seed", "cuda", LARGE_BYTES, 0.004, page_cache="warm"),
        bench(LARGE, "seed", "cuda", LARGE_BYTES, 0.002, page_cache="warm"),
    ]
    benchmarks[4]["param"] = "threads1"
    benchmarks[5]["param"] = "threads8"
    path = write_result(
        tmp_path / "r.json",
        result_document(machine_info(H100, "h100"), benchmarks, "2026-03-01T02:00:00+00:00", derived=False),
    )
    out = tmp_path / "out"
    assert run_report(capsys, path, "-o", out)[0] == 0
    rows = markdown_tables((out / "report.md").read_text())[f"Case: {LARGE}"]
    by_key = {(r["Loader"], r["Page cache"]): r for r in rows}
    assert len(by_key) == len(rows) == 6
    # Speed-up is against pydicom under the same page cache.
    assert by_key[("kvdicom", "warm")]["Speed-up vs pydicom"] == "20.00×"
    assert by_key[("kvdicom", "cold")]["Speed-up vs pydicom"] == "10.00×"
    assert by_key[("seed [threads1]", "warm")]["Median time"] == "4.00 ms"
    assert by_key[("seed [threads8]", "warm")]["Median time"] == "2.00 ms"


# --- the committed device results ------------------------------------------------------------

RESULTS = Path(__file__).resolve().parents[1] / "results"
SEED_CASE = "f128_1024x1024_u16_explicit_le"


def _committed_runs() -> list[Path]:
    """The runs git tracks under results/: a run the user's own ``./dgb bench`` just saved there is not one
    (a CPU-only machine's run names no GPU), and a checkout without git counts every run."""
    runs = sorted(RESULTS.glob("*/*.json"))
    try:
        tracked = subprocess.run(["git", "ls-files", "-z", "--", str(RESULTS)], cwd=RESULTS.parent,
                                 capture_output=True, text=True, check=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        return runs
    tracked_paths = {(RESULTS.parent / t).resolve() for t in tracked if t}
    return [p for p in runs if p.resolve() in tracked_paths]


@pytest.mark.skipif(not _committed_runs(), reason="no committed device results in results/")
def test_report_on_the_committed_device_results(tmp_path, capsys):
    from dgbench.report import formatting

    # The report reads a copy holding exactly the committed runs: a run ./dgb bench saved there since (untracked,
    # or not yet in a device's stale .git) would be the newest and is not what this test checks.
    committed = tmp_path / "results"
    for path in _committed_runs():
        (committed / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, committed / path.parent.name / path.name)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in committed.rglob("*") if p.is_file()}
    out = tmp_path / "report"
    code, _, err = run_report(capsys, committed, "-o", out)
    assert code == 0, err
    markdown = (out / "report.md").read_text()
    tables = markdown_tables(markdown)

    by_slug: dict[str, list[dict]] = {}
    for path in _committed_runs():
        doc = json.loads(path.read_text())
        by_slug.setdefault(doc["machine_info"]["machine_slug"], []).append(doc)
    seed_rows = tables[f"Case: {SEED_CASE}"]
    for docs in by_slug.values():
        docs.sort(key=lambda d: datetime.fromisoformat(d["datetime"]), reverse=True)
        gpu = docs[0]["machine_info"]["gpu_name"]
        assert gpu in markdown, f"machine {gpu} is not named in the report"
        # Every case any of the machine's runs measured has its rows in the report (runs split the matrix).
        for case in {b["extra_info"]["case"] for d in docs for b in d["benchmarks"]
                     if not b["extra_info"]["loader"].startswith("ceiling:")}:
            assert any(r["Machine"].startswith(gpu) for r in tables[f"Case: {case}"]), (gpu, case)
        # The seed's kvdicom row is the newest run's that has it, with that run's own derived numbers.
        doc, kv = next((d, b) for d in docs for b in d["benchmarks"] if b["extra_info"].get("case") == SEED_CASE
                       and b["extra_info"]["loader"] == "kvdicom" and b["extra_info"]["device"] == "cuda"
                       and b["extra_info"]["page_cache"] == "warm")
        row = next(r for r in seed_rows if r["Machine"].startswith(gpu) and r["Loader"] == "kvdicom"
                   and r["Device"] == "cuda" and r["Page cache"] == "warm")
        assert row["GB/s"] == formatting.gbps(kv["extra_info"]["gbps"])
        assert row["Speed-up vs pydicom"] == formatting.speedup(kv["extra_info"]["speedup_vs_pydicom"])
        assert row["Run"].endswith(" · " + doc["commit_info"]["id"][:7])
    assert not re.search(r"Python 3\.\d+", markdown.split("## Results by case")[0])
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in committed.rglob("*") if p.is_file()}
    assert after == before, "the report modified the results it read"


def test_machines_table_says_which_header_walk_and_slice_reads_each_run_used(tmp_path, capsys):
    results = tmp_path / "results" / "h100"
    slug = "nvidia-h100-80gb-hbm3_drv580.159.04_cuda13.0_kvikio-gds"
    info = {**machine_info(H100, slug, gds=True), "kvdicom_header_walk": "compiled", "kvdicom_slice_reads": "compiled"}
    run = result_document(info, gpu_run(0.00025, 0.0002), "2026-03-02T01:00:00+00:00")
    write_result(results / "0001_new.json", run)
    out = tmp_path / "out"
    code, _, err = run_report(capsys, tmp_path / "results", "-o", out)
    assert code == 0, err
    rows = markdown_tables((out / "report.md").read_text())["Machines"]
    assert [(r["Header walk"], r["Slice reads"]) for r in rows] == [("compiled", "compiled")]


def test_machines_table_marks_a_run_that_stopped_before_its_end(tmp_path, capsys):
    results = tmp_path / "results" / "h100"
    slug = "nvidia-h100-80gb-hbm3_drv580.159.04_cuda13.0_kvikio-gds"
    run = result_document(machine_info(H100, slug, gds=True), gpu_run(0.00025, 0.0002), "2026-03-02T01:00:00+00:00")
    run["interrupted"] = "stopped by SIGTERM before the end of its selection"
    write_result(results / "0001_cut.json", run)
    out = tmp_path / "out"
    code, _, err = run_report(capsys, tmp_path / "results", "-o", out)
    assert code == 0, err
    (row,) = markdown_tables((out / "report.md").read_text())["Machines"]
    assert row["Result file"] == "h100/0001_cut.json (stopped by SIGTERM before the end of its selection)"

"""Lay the report out as GitHub-flavoured Markdown, escaping every value.

Case and machine names come from result files, so a ``|`` or ``<script>`` in
one must show as text, not break a table or inject HTML.
"""

from __future__ import annotations

import re

from dgbench.config import DEFAULT_NOISE_K, REGRESSION_THRESHOLD_PCT

from . import formatting
from .content import ReportContent
from .tables import Table

TITLE = "DICOM to GPU loading benchmarks"
SCORECARD_NOTE = ("kvdicom on the reference cases, per machine: GB/s of pixel data (on CUDA with a warm page "
                  "cache where it ran there), speed-up over pydicom, and % of that machine's ceiling, all from "
                  "the newest run that measured kvdicom, pydicom and the case's ceiling together (else the newest with "
                  "kvdicom and pydicom, else the newest with kvdicom's row).")
TREND_NOTE = ("Every benchmark a machine ran in two runs or more, in the order of the runs' dates. A run is "
              f"marked regressed when its median time rose more than both {REGRESSION_THRESHOLD_PCT:g}% and "
              f"{DEFAULT_NOISE_K:g} × the larger IQR/median of it and the run before (the nightly's baseline "
              "rule); a dataset through Dask compares its time per series, so runs of another dataset size "
              "follow on. Its ceiling's last change: how the row's own ceiling moved between the same two runs; a "
              "loader slower by as much as its ceiling is the machine's drift between leases, not the code's. "
              "Plots: median GB/s with its IQR band, x = run.")
ROWS_NOTE = ("A machine's runs may each hold part of the matrix: each (case, loader, device, page cache) row comes "
             "from the newest run (by its `datetime`) that has it, and names that run (start, commit) in its Run "
             "column. % of ceiling and × pydicom are those of the row's own run, never combined across runs; "
             "a share above 100% is marked \"(ceiling below it)\": that run's ceiling read slower than the "
             "loader, so it bounds nothing there. The files used are listed below.")
SCALING_NOTE = ("A dataset of series through Dask (`kvdicom.dask.map_series`, `bench/test_scaleout.py`, profile "
                "`scaleout`) on 1, 2, … G GPUs of one host: series/s, efficiency against the same loader on one "
                "GPU of the same run, and % of the ceiling measured in that run with the same G (the host's "
                "page-cache read by G processes; the GPUs' batch decode of the codestreams from memory).")
_SPECIAL = re.compile(r"([\\`*\[\]<>|&~])")
_LONE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def escape(value: str) -> str:
    """Backslash-escape Markdown syntax; underscores inside words stay readable."""
    flat = " ".join(str(value).split())
    escaped = _SPECIAL.sub(r"\\\1", flat)
    return _LONE_UNDERSCORE.sub(r"\\_", escaped)


def table(t: Table) -> list[str]:
    """A pipe table; an empty one says so instead of leaving a header alone."""
    if not t.rows:
        return ["_None._", ""]
    lines = ["| " + " | ".join(escape(h) for h in t.headers) + " |"]
    lines.append("|" + "|".join(" --- " for _ in t.headers) + "|")
    for row in t.rows:
        lines.append("| " + " | ".join(escape(cell) for cell in row) + " |")
    lines.append("")
    return lines


def render_markdown(content: ReportContent) -> str:
    """The whole report as one Markdown document."""
    lines = [f"# {TITLE}", "", f"Generated {formatting.timestamp(content.generated)}.", ""]
    if content.sources:
        lines += ["Paths are relative to: " + ", ".join(f"`{s}`" for s in content.sources) + ".", ""]
    lines += ["## Scorecard", "", SCORECARD_NOTE, ""]
    lines += table(content.scorecard)
    lines += [
        ROWS_NOTE,
        "",
        "## Machines",
        "",
    ]
    lines += table(content.machines)
    for note in content.notes:
        lines += [f"> {escape(note)}", ""]

    lines += ["## Throughput plots", ""]
    if not content.figures:
        lines += ["_No plots._", ""]
    for figure in content.figures:
        lines += [f"![{escape(figure.title)}]({figure.filename})", ""]

    lines += ["## Trend", "", TREND_NOTE, ""]
    lines += [f"- {escape(line)}" for line in content.trend_coverage] + [""]
    lines += table(content.trend)
    for figure in content.trend_figures:
        lines += [f"![{escape(figure.title)}]({figure.filename})", ""]

    lines += ["## Results by case", ""]
    if not content.cases:
        lines += ["_No loader benchmarks._", ""]
    for case in content.cases:
        lines += [f"### Case: {escape(case.title)}", ""]
        lines += table(case)

    lines += [f"## {content.ceilings.title}", ""]
    lines += table(content.ceilings)

    lines += ["## Scaling", "", SCALING_NOTE, ""]
    lines += table(content.scaling)
    for figure in content.scaling_figures:
        lines += [f"![{escape(figure.title)}]({figure.filename})", ""]

    lines += ["## Skipped files", ""]
    if not content.skipped:
        lines += ["None.", ""]
    for item in content.skipped:
        lines.append(f"- {escape(item.path)}: {escape(item.reason)}")
    return "\n".join(lines).rstrip("\n") + "\n"

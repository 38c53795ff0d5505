"""``python -m dgbench.report PATH... -o DIR``: read results, write the report into DIR.

Exit status 0 when a report was written (even if some files were skipped),
2 when no usable result file was found, the output folder cannot be written,
or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from .atomic_write import write_atomic
from .content import build_content
from .loading import load_results
from .machines import machines_from_runs
from .plot_data import comparison_plot, per_machine_plots, trend_plots
from .scaling import scaling_plots
from .render_html import render_html
from .readme import update_readme
from .render_markdown import render_markdown

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: result files or folders, and the output folder."""
    parser = argparse.ArgumentParser(
        prog="python -m dgbench.report",
        description="Summarise pytest-benchmark result files from any number of machines "
        "into report.md, report.html and PNG plots.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="result JSON file, or folder searched for *.json")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write the report into")
    parser.add_argument("--readme", metavar="README", help="also write the scorecard into this README's headline block")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report; returns the exit status."""
    args = parse_args(argv)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: output {out_dir} exists and is not a folder", file=sys.stderr)
        return 2

    loaded = load_results(args.paths)
    for item in loaded.skipped:
        print(f"skipped {item.path}: {item.reason}", file=sys.stderr)
    if not loaded.runs:
        print(
            f"error: no usable pytest-benchmark result among {len(loaded.files)} file(s) "
            f"found under: {' '.join(args.paths)}",
            file=sys.stderr,
        )
        return 2

    machines = machines_from_runs(loaded.runs)
    used: set[str] = set()
    specs = per_machine_plots(machines, used)
    comparison = comparison_plot(machines)
    notes = []
    if comparison is None:
        notes.append("No machine ran the kvdicom loader on cuda, so there is no comparison plot.")
    else:
        specs.append(comparison)
    trends = trend_plots(machines, used)
    scaling = scaling_plots(machines, used)

    outputs = [spec.filename for spec in specs + trends + scaling] + [REPORT_MD, REPORT_HTML]
    inputs = {path.resolve() for path in loaded.files}
    clashes = [name for name in outputs if (out_dir / name).resolve() in inputs]
    if clashes:
        print(f"error: refusing to overwrite input file(s): {', '.join(clashes)}", file=sys.stderr)
        return 2

    try:
        status = _write(out_dir, machines, specs, trends, loaded, notes, args.paths, scaling)
        if status == 0 and args.readme:
            update_readme(Path(args.readme), (out_dir / REPORT_MD).read_text())
            print(f"wrote the scorecard into {args.readme}")
        return status
    except ValueError as exc:  # a README without its headline markers
        print(f"error: {args.readme}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write the report into {out_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _write(out_dir, machines, specs, trends, loaded, notes, sources, scaling=()) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    drawn, drawn_trends, drawn_scaling = [], [], []
    try:
        from .plots import render_png

        for spec in specs:
            write_atomic(out_dir, spec.filename, render_png(spec))
            drawn.append(spec)
        for spec in trends:
            write_atomic(out_dir, spec.filename, render_png(spec))
            drawn_trends.append(spec)
        for spec in scaling:
            write_atomic(out_dir, spec.filename, render_png(spec))
            drawn_scaling.append(spec)
    except ImportError as exc:
        message = f"plots not drawn: {exc}"
        print(f"warning: {message}", file=sys.stderr)
        notes.append(message.capitalize())

    content = build_content(machines, drawn, loaded.skipped, notes, datetime.now(timezone.utc),
                            sources=sources, trend_plots=drawn_trends, scaling_plots=drawn_scaling)
    # The reports last, so they never point at a plot that was not written.
    write_atomic(out_dir, REPORT_MD, render_markdown(content).encode("utf-8"))
    write_atomic(out_dir, REPORT_HTML, render_html(content).encode("utf-8"))
    print(f"wrote {out_dir / REPORT_MD} and {out_dir / REPORT_HTML} ({len(machines)} machine(s), {len(drawn)} plot(s))")
    return 0

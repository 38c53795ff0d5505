"""Lay the report out as one self-contained HTML page: no JavaScript, no external CSS.

Every value goes through ``html.escape``: case and machine names come from
result files and must never become markup.
"""

from __future__ import annotations

import html

from . import formatting
from .content import ReportContent
from .render_markdown import ROWS_NOTE, SCALING_NOTE, SCORECARD_NOTE, TITLE, TREND_NOTE
from .tables import Table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 100%; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.wrap { overflow-wrap: anywhere; min-width: 10em; }
code { overflow-wrap: anywhere; }
li { overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { border-left: 4px solid #c90; padding-left: 0.6em; }
"""

#: Columns of long unbroken names (slugs, paths, case ids): wrapped anywhere so a table never outgrows the page.
WRAP_HEADERS = {"Machine slug", "Result file", "Case id", "Case"}
NUMERIC_HEADERS = {"Median time", "GB/s", "% of ceiling", "Speed-up vs pydicom", "Bytes", "Older runs ignored",
                   "Rows shown", "× pydicom", "Runs", "First GB/s", "Last GB/s", "Last change",
                   "Its ceiling's last change"}


def esc(value: object) -> str:
    """``html.escape`` with quotes, for text and attribute values alike."""
    return html.escape(str(value), quote=True)


def table(t: Table) -> str:
    """An HTML table; an empty one says so."""
    if not t.rows:
        return "<p><em>None.</em></p>"
    kinds = ["num" if h in NUMERIC_HEADERS else "wrap" if h in WRAP_HEADERS else "" for h in t.headers]
    head = "".join(f"<th>{esc(h)}</th>" for h in t.headers)
    body = "\n".join(
        "<tr>"
        + "".join(
            f'<td class="{kind}">{esc(cell)}</td>' if kind else f"<td>{esc(cell)}</td>"
            for cell, kind in zip(row, kinds, strict=True)
        )
        + "</tr>"
        for row in t.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def render_html(content: ReportContent) -> str:
    """The whole report as one HTML document."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(TITLE)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(TITLE)}</h1>",
        f"<p>Generated {esc(formatting.timestamp(content.generated))}.</p>",
    ]
    if content.sources:
        parts.append("<p>Paths are relative to: " + ", ".join(f"<code>{esc(s)}</code>" for s in content.sources) + ".</p>")
    parts += [
        "<h2>Scorecard</h2>",
        f"<p>{esc(SCORECARD_NOTE)}</p>",
        table(content.scorecard),
        f"<p>{esc(ROWS_NOTE.replace('`', ''))}</p>",
        "<h2>Machines</h2>",
        table(content.machines),
    ]
    parts += [f'<p class="note">{esc(note)}</p>' for note in content.notes]

    parts.append("<h2>Throughput plots</h2>")
    if not content.figures:
        parts.append("<p><em>No plots.</em></p>")
    for figure in content.figures:
        parts.append(
            f'<figure><img src="{esc(figure.filename)}" alt="{esc(figure.title)}">'
            f"<figcaption>{esc(figure.title)}</figcaption></figure>"
        )

    parts += ["<h2>Trend</h2>", f"<p>{esc(TREND_NOTE)}</p>"]
    if content.trend_coverage:
        parts.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in content.trend_coverage) + "</ul>")
    parts.append(table(content.trend))
    for figure in content.trend_figures:
        parts.append(
            f'<figure><img src="{esc(figure.filename)}" alt="{esc(figure.title)}">'
            f"<figcaption>{esc(figure.title)}</figcaption></figure>"
        )

    parts.append("<h2>Results by case</h2>")
    if not content.cases:
        parts.append("<p><em>No loader benchmarks.</em></p>")
    for case in content.cases:
        parts.append(f"<h3>Case: <code>{esc(case.title)}</code></h3>")
        parts.append(table(case))

    parts += [f"<h2>{esc(content.ceilings.title)}</h2>", table(content.ceilings)]

    parts += ["<h2>Scaling</h2>", f"<p>{esc(SCALING_NOTE.replace('`', ''))}</p>", table(content.scaling)]
    for figure in content.scaling_figures:
        parts.append(
            f'<figure><img src="{esc(figure.filename)}" alt="{esc(figure.title)}">'
            f"<figcaption>{esc(figure.title)}</figcaption></figure>"
        )

    parts.append("<h2>Skipped files</h2>")
    if content.skipped:
        items = "\n".join(f"<li><code>{esc(s.path)}</code>: {esc(s.reason)}</li>" for s in content.skipped)
        parts.append(f"<ul>\n{items}\n</ul>")
    else:
        parts.append("<p>None.</p>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)

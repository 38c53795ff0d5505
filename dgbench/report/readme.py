"""The README's headline numbers, written from the generated report: never typed by hand.

``python -m dgbench.report results -o reports/latest --readme README.md`` replaces what stands between
:data:`BEGIN` and :data:`END` in the README with the report's scorecard (the table and the paragraph that
says where each row comes from). A README without both markers is left as it is, with an error.
"""

from __future__ import annotations

from pathlib import Path

from .atomic_write import write_atomic

BEGIN = "<!-- headline:begin (written by python -m dgbench.report --readme; do not edit) -->"
END = "<!-- headline:end -->"
SCORECARD = "## Scorecard"


def scorecard(report_md: str) -> str:
    """The scorecard section of a generated report.md, without its heading."""
    lines = report_md.splitlines()
    start = lines.index(SCORECARD) + 1
    stop = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:stop]).strip()


def with_headline(readme: str, report_md: str) -> str:
    """``readme`` with its headline block replaced by the scorecard of ``report_md``."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ValueError(f"the README needs one {BEGIN!r} line and, after it, one {END!r} line")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{scorecard(report_md)}\n{END}{tail}"


def update_readme(readme: Path, report_md: str) -> None:
    """Rewrite ``readme``'s headline block atomically (a crash never leaves it half written)."""
    write_atomic(readme.parent, readme.name, with_headline(readme.read_text(), report_md).encode("utf-8"))

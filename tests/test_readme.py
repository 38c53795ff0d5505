"""The README is a reference: at most 250 lines, and its headline numbers are the generated report's scorecard,
written by ``python -m dgbench.report --readme``, never typed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from dgbench.report import cli
from dgbench.report.readme import BEGIN, END, scorecard, with_headline

ROOT = Path(__file__).resolve().parent.parent
REPORT = "# T\n\n## Scorecard\n\nintro\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n## Machines\n\nrest\n"


def test_the_readme_is_a_reference_of_at_most_250_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_committed_headline_is_the_committed_reports_scorecard():
    readme = (ROOT / "README.md").read_text()
    block = readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == scorecard((ROOT / "reports" / "latest" / "report.md").read_text())


def test_with_headline_replaces_only_the_block():
    readme = f"top\n{BEGIN}\nold numbers\n{END}\nbottom\n"
    new = with_headline(readme, REPORT)
    assert new == f"top\n{BEGIN}\nintro\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n{END}\nbottom\n"
    assert with_headline(new, REPORT) == new


@pytest.mark.parametrize("readme", ["no markers", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{BEGIN}\n{END}\n"])
def test_a_readme_without_one_ordered_pair_of_markers_is_left_alone_with_an_error(tmp_path, readme, capsys):
    results = tmp_path / "results"
    results.mkdir()
    path = tmp_path / "README.md"
    path.write_text(readme)
    with pytest.raises(ValueError, match="headline"):
        with_headline(readme, REPORT)
    source = next((ROOT / "results").glob("*/0008_*.json"))
    (results / source.name).write_bytes(source.read_bytes())
    assert cli.main([str(results), "-o", str(tmp_path / "out"), "--readme", str(path)]) == 2
    assert path.read_text() == readme and "headline" in capsys.readouterr().err

"""Gather everything the report says, once, for both the Markdown and the HTML."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from .model import Machine, Skipped
from .plot_data import PlotSpec
from .scaling import scaling_table
from .scorecard import scorecard, trend_coverage, trend_table
from .tables import Table, case_tables, ceiling_table, machine_table


@dataclass(frozen=True)
class PlotLink:
    """A PNG written next to the report, by file name (relative link)."""

    filename: str
    title: str


@dataclass(frozen=True)
class ReportContent:
    """The report's sections, as plain text; renderers only escape and lay out."""

    generated: datetime
    sources: tuple[str, ...]
    scorecard: Table
    machines: Table
    figures: tuple[PlotLink, ...]
    trend: Table
    trend_coverage: tuple[str, ...]
    trend_figures: tuple[PlotLink, ...]
    cases: tuple[Table, ...]
    ceilings: Table
    scaling: Table
    scaling_figures: tuple[PlotLink, ...]
    notes: tuple[str, ...]
    skipped: tuple[Skipped, ...]


def build_content(
    machines: Sequence[Machine],
    plots: Sequence[PlotSpec],
    skipped: Sequence[Skipped],
    notes: Sequence[str],
    generated: datetime,
    sources: Sequence[str] = (),
    trend_plots: Sequence[PlotSpec] = (),
    scaling_plots: Sequence[PlotSpec] = (),
) -> ReportContent:
    """Assemble the sections from the chosen runs and the plots that were drawn."""
    return ReportContent(
        generated=generated,
        sources=tuple(sources),
        scorecard=scorecard(machines),
        machines=machine_table(machines),
        figures=tuple(PlotLink(spec.filename, spec.title) for spec in plots),
        trend=trend_table(machines),
        trend_coverage=tuple(trend_coverage(machines)),
        trend_figures=tuple(PlotLink(spec.filename, spec.title) for spec in trend_plots),
        cases=tuple(case_tables(machines)),
        ceilings=ceiling_table(machines),
        scaling=scaling_table(machines),
        scaling_figures=tuple(PlotLink(spec.filename, spec.title) for spec in scaling_plots),
        notes=tuple(notes),
        skipped=tuple(skipped),
    )

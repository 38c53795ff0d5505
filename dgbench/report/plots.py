"""Draw ``PlotSpec``s to PNG bytes with matplotlib's Agg backend (no display needed).

Uses ``Figure`` directly rather than ``pyplot`` so no global figure state or
interactive backend is involved. Panels are laid out as small multiples that
share nothing but the legend's meaning: a loader's colour is the same in every
panel and every figure (``plot_data.loader_colour``); ceilings are grey dashed.
"""

from __future__ import annotations

import io
import math

from . import formatting
from .plot_data import Panel, PlotSpec

PANEL_WIDTH_IN, PANEL_HEIGHT_IN = 6.0, 4.2


def _draw_panel(axes, panel: Panel) -> None:
    from matplotlib.ticker import FuncFormatter

    for series in panel.series:
        xs = [x for x, _ in series.points]
        ys = [y for _, y in series.points]
        axes.plot(xs, ys, linestyle="--" if series.dashed else "-." if series.dotted else "-", marker=series.marker, markersize=4,
                  color=series.colour, label=series.label, linewidth=1.4)
        if series.band:
            axes.fill_between(xs, [lo for lo, _ in series.band], [hi for _, hi in series.band],
                              color=series.colour, alpha=0.15, linewidth=0)
        if series.flagged:
            axes.plot([xs[i] for i in series.flagged], [ys[i] for i in series.flagged], linestyle="none",
                      marker="x", markersize=11, markeredgewidth=2.5, color="#d62728")
    if panel.x_title:  # a linear quantity (GPUs): a tick at each value measured
        axes.set_xticks(sorted({x for series in panel.series for x, _ in series.points}))
        axes.set_xlabel(panel.x_title)
    elif panel.x_labels:
        axes.set_xticks(range(len(panel.x_labels)))
        axes.set_xticklabels(panel.x_labels, fontsize="x-small")
        axes.set_xlim(-0.3, len(panel.x_labels) - 0.7)
        axes.set_xlabel("run (date, commit)")
    else:
        axes.set_xscale("log", base=2)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: formatting.byte_count(int(value))))
        axes.set_xlabel("pixel data per load (log scale)")
    if panel.log_y:
        axes.set_yscale("log")
        axes.set_ylabel("throughput (GB/s, log scale)")
    else:
        axes.set_ylim(bottom=0)
        axes.set_ylabel(panel.y_title or "throughput (GB/s)")
    axes.set_title(panel.title, fontsize="medium")
    axes.grid(True, which="both", alpha=0.3)
    if panel.series:
        axes.legend(fontsize="x-small", loc="best")


def render_png(spec: PlotSpec) -> bytes:
    """Throughput panels side by side (at most three a row), one figure per ``PlotSpec``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count = max(1, len(spec.panels))
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    figure = Figure(figsize=(PANEL_WIDTH_IN * cols, PANEL_HEIGHT_IN * rows + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    for index, panel in enumerate(spec.panels or (Panel("no data", ()),)):
        _draw_panel(figure.add_subplot(rows, cols, index + 1), panel)
    figure.suptitle(spec.title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

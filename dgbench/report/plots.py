"""Draw ``PlotSpec``s to PNG bytes with matplotlib's Agg backend (no display needed).

Uses ``Figure`` directly rather than ``pyplot`` so no global figure state or
interactive backend is involved.
"""

from __future__ import annotations

import io

from . import formatting
from .plot_data import PlotSpec


def render_png(spec: PlotSpec) -> bytes:
    """Throughput (GB/s) against pixel bytes on a log x axis, one line per series."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for series in spec.series:
        xs = [x for x, _ in series.points]
        ys = [y for _, y in series.points]
        axes.plot(xs, ys, linestyle="--" if series.dashed else "-", marker="o", markersize=4, label=series.label)
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: formatting.byte_count(int(value))))
    axes.set_xlabel("pixel data per load (log scale)")
    axes.set_ylabel("throughput (GB/s)")
    axes.set_ylim(bottom=0)
    axes.set_title(spec.title)
    axes.grid(True, which="both", alpha=0.3)
    if spec.series:
        axes.legend(fontsize="small", loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

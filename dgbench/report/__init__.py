"""Turn saved pytest-benchmark results from any number of machines into one report.

The benchmarks (``bench/``) save pytest-benchmark's JSON into ``results/``;
this package reads those files back (never modifying them) and writes
``report.md``, ``report.html`` and throughput plots into one output folder::

    python -m dgbench.report results/ -o report/

Kept free of heavy imports: matplotlib is only imported when plots are drawn.
"""

from .cli import main

__all__ = ["main"]

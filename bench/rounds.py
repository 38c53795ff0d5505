"""How many calls a benchmark spends: slow peers get a few fixed rounds, everything else pytest-benchmark's rule.

pytest-benchmark's ``benchmark(fn)`` calls ``fn`` once to calibrate, then at least
``--benchmark-min-rounds`` (5) timed rounds, then once more for the value it returns.
On the H200 the pydicom loop over the 256-slice JPEG 2000 series takes 12.7 s a call, so
that rule, with the correctness call before it, spent 8 calls (about 100 s) on each of the
four slow peers of that case, and the whole compressed-series session (535 s) ran close to
the device's 10-minute command limit. A call that is this slow is timed with
:data:`SLOW_ROUNDS` fixed rounds instead (``benchmark.pedantic``: no calibration call, and
the last round's value is the one returned and checked). The compressed files' peers use it too: pydicom on
the full profile's 256-frame JPEG 2000 file spent 63.5 s in its five timed rounds alone (H100, run 0009), the
JPEG 2000 peers of the file and series cases about 190 s of that run's 465 s of timed rounds.
"""

from __future__ import annotations

import time

#: A first (untimed, warming) call at least this long, in seconds, marks the callable as slow.
SLOW_CALL_S = 1.0
#: Timed rounds of a slow callable; the median of three 12.7 s rounds is what the targets divide by.
SLOW_ROUNDS = 3


def timed(benchmark, fn, *args, **kwargs):
    """Benchmark ``fn(*args, **kwargs)`` and return the value of a timed call, to be checked by the caller.

    The first call is untimed: it warms caches and decides the rule (pytest-benchmark's for
    calls under :data:`SLOW_CALL_S`, else :data:`SLOW_ROUNDS` pedantic rounds). With
    ``--benchmark-disable`` (``./dgb test``) ``fn`` runs once.
    """
    if benchmark.disabled:
        return benchmark(fn, *args, **kwargs)
    start = time.perf_counter()
    fn(*args, **kwargs)
    if time.perf_counter() - start < SLOW_CALL_S:
        return benchmark(fn, *args, **kwargs)
    return benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=SLOW_ROUNDS, iterations=1, warmup_rounds=0)

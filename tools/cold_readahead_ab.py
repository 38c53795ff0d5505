"""Cold ``load_series`` with and without the read-ahead hints (docs/loader.md, "Cold series").

    .venv/bin/python tools/cold_readahead_ab.py SERIES_FOLDER [ROUNDS] [cpu|cuda] [pool]

Every file of the series is dropped from the page cache, and the drop verified, before each call; the calls
alternate in one process: the O_DIRECT and the buffered disk ceilings of the same files
(``bench.series_disk.SeriesDiskRead``), then the load without hints, with them, and with the heads' hints alone
(``kvdicom.settings.READAHEAD_MIN_FILES``, ``READAHEAD_MAX_BYTES`` = 0: no whole-file pass, where the header
workers announce the whole files they read themselves). ``pool``: headers parsed by two worker processes, as a
16-core machine parses a long series. Prints the medians and each against the O_DIRECT ceiling.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kvdicom  # noqa: E402
from bench import peers  # noqa: E402
from bench.ceilings import drop_page_cache  # noqa: E402
from bench.series_disk import SeriesDiskRead  # noqa: E402
from kvdicom import settings  # noqa: E402
from kvdicom._series import headers  # noqa: E402


def main(folder: str, rounds: int = 7, device: str = "cpu", *flags: str) -> None:
    paths = [str(p) for p in peers.series_files(folder)]
    if "pool" in flags:
        kvdicom.configure(processes=2)
        headers.use_pool = lambda count: True

    whole_bytes = settings.READAHEAD_MAX_BYTES

    def load(on: bool, whole: bool = True):
        def run():
            settings.READAHEAD_MIN_FILES = 2 if on else 1 << 30
            settings.READAHEAD_MAX_BYTES = whole_bytes if whole else 0
            kvdicom.load_series(folder, device=device)
            if device == "cuda":
                import cupy

                cupy.cuda.Device().synchronize()
        return run

    direct = SeriesDiskRead(paths, device, direct=True)
    buffered = SeriesDiskRead(paths, device, direct=False)
    kvdicom.load_series(folder, device=device)
    cases = {"O_DIRECT": direct, "buffered": buffered, "load off": load(False), "load on": load(True),
             "load heads": load(True, whole=False)}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, call in cases.items():
            for path in paths:
                left = drop_page_cache(path)
                if left is None or left > 0:
                    raise SystemExit(f"{path}: the page cache cannot be dropped and verified here ({left})")
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    ceiling = statistics.median(times["O_DIRECT"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:10s} median {median:7.1f} ms  min {min(values):7.1f}  {100 * ceiling / median:5.1f}% of O_DIRECT")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) if a.isdigit() else a for a in sys.argv[2:]))

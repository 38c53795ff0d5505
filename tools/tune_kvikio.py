"""Sweep KvikIO settings for kvdicom's GPU read on this machine and print what each gives.

Run on a GPU machine: ``python tools/tune_kvikio.py [--out DIR]``. It measures,
with a warm page cache, the pinned host→device ceiling and kvdicom's GPU load
for each (threads, task size, bounce buffer size), on the seed notebook's
256 MiB file and a 1 GiB file, plus where the time of a one-frame load goes.
The defaults in ``kvdicom/io_tuning.py`` are chosen from its output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cupy
import kvikio
import kvikio.defaults

import kvdicom
from bench.ceilings import HostToDevice
from fixtures.cache import Corpus
from fixtures.profiles import CT_SLICE, SEED_VOLUME
from fixtures.spec import DicomSpec

GIB_VOLUME = DicomSpec(frames=512, rows=1024, cols=1024, bits_allocated=16, bits_stored=16)


def median_seconds(fn, repeat: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        cupy.cuda.Device().synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_raw(path, layout, buffer, task_size):
    with kvikio.CuFile(path, "r") as f:
        f.pread(buffer, layout.nbytes, layout.offset, task_size=task_size).get()


def sweep(path, rows):
    layout = kvdicom.inspect(path)
    buffer = cupy.empty(layout.nbytes, dtype=cupy.uint8)
    h2d = HostToDevice(layout.nbytes, pinned=True)
    ceiling = layout.nbytes / median_seconds(h2d) / 1e9
    print(f"\n{Path(path).name}: {layout.nbytes / 2**20:.0f} MiB, pinned h2d ceiling {ceiling:.1f} GB/s")
    for bounce in (16 << 20, 32 << 20):
        for threads in (1, 4, 8, 16, 32):
            with kvikio.defaults.set({"num_threads": threads, "bounce_buffer_size": bounce}):
                for task in (1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20):
                    gbps = layout.nbytes / median_seconds(lambda: read_raw(path, layout, buffer, task)) / 1e9
                    rows.append(dict(file=Path(path).name, nbytes=layout.nbytes, bounce_mib=bounce >> 20,
                                     threads=threads, task_mib=task >> 20, gbps=gbps, ceiling_gbps=ceiling,
                                     pct=100 * gbps / ceiling))
                    print(f"  bounce {bounce >> 20:>2} MiB threads {threads:>2} task {task >> 20:>2} MiB: "
                          f"{gbps:6.1f} GB/s ({100 * gbps / ceiling:5.1f}%)")


def host_limits(path):
    """Page cache → host memory with the machine's threads: the copy every compat-mode read must make."""
    import cupyx
    import numpy as np

    from kvdicom._io import host_read

    layout = kvdicom.inspect(path)
    out = {}
    for name, buf in (("pageable", np.empty(layout.nbytes, np.uint8)),
                      ("pinned", cupyx.empty_pinned(layout.nbytes, dtype=np.uint8))):
        buf[:] = 0
        for threads in (8, 16, 32):
            kvdicom.configure(threads)  # sizes kvdicom's host read pool
            secs = median_seconds(lambda: host_read.read_into(str(path), buf, layout.offset))
            out[f"{name}_{threads}"] = layout.nbytes / secs / 1e9
            print(f"  page cache -> {name:8} host, {threads:>2} threads: {out[f'{name}_{threads}']:6.1f} GB/s")
    kvdicom.configure("auto")
    return out


def small_file_breakdown(path):
    """Where the time of a one-frame GPU load goes."""
    layout = kvdicom.inspect(path)
    buffer = cupy.empty(layout.nbytes, dtype=cupy.uint8)
    parts = {
        "inspect (header parse)": lambda: kvdicom.inspect(path),
        "CuFile open+pread": lambda: read_raw(path, layout, buffer, 1 << 20),
        "kvdicom.load cuda": lambda: kvdicom.load(path, "cuda"),
        "kvdicom.load cpu": lambda: kvdicom.load(path, "cpu"),
        "kvdicom.load cpu + cupy.asarray": lambda: cupy.asarray(kvdicom.load(path, "cpu")),
    }
    print(f"\none frame {Path(path).name}:")
    out = {}
    for name, fn in parts.items():
        out[name] = median_seconds(fn, repeat=200) * 1e6
        print(f"  {name:<34} {out[name]:8.1f} us")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=".")
    parser.add_argument("--corpus-dir", default=".corpus")
    parser.add_argument("--sweep", action="store_true", help="also sweep threads x task size x bounce buffer")
    args = parser.parse_args()
    corpus = Corpus(args.corpus_dir, 8 << 30)
    print(cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "kvikio", kvikio.__version__,
          "compat" if kvikio.defaults.is_compat_mode_preferred() else "gds")
    small = small_file_breakdown(corpus.ensure(CT_SLICE))
    limits = {}
    for spec in (SEED_VOLUME, GIB_VOLUME):
        print(f"\nhost limits, {spec.case_id}:")
        limits[spec.case_id] = host_limits(corpus.ensure(spec))
    rows = []
    for spec in (SEED_VOLUME, GIB_VOLUME) if args.sweep else ():
        sweep(corpus.ensure(spec), rows)
    best = {}
    for r in rows:
        key = r["file"]
        if key not in best or r["gbps"] > best[key]["gbps"]:
            best[key] = r
    print("\nbest:", json.dumps(best, indent=1))
    summary = {"small": small, "limits": limits, "sweep": rows, "best": best}
    Path(args.out, "tune_kvikio.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

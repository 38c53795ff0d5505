"""The one description of a benchmark's ``extra_info``: its keys, the loader and ceiling names.

Written by ``bench/`` (through :func:`bench_extra`), completed by
``dgbench/derived.py``, read by ``dgbench/report``; tests build their
documents with :func:`bench_document` and :func:`run_document` instead of
hand-rolling pytest-benchmark's shape. Imports nothing but the standard
library, so the report can use it without pytest.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

#: Loaders measured, in the order tables and legends show them (``+rescale``: with each slice's modality LUT).
LOADERS = ("pydicom", "pydicom+cupy", "seed", "kvdicom", "monai",
           "pydicom+rescale", "kvdicom+rescale", "dicomsdl", "dicomsdl+cupy", "sitk", "sitk+cupy",
           "pydicom+gdcm", "pydicom+nvimgcodec+cupy",
           # MONAI's LoadImage with each reader (bench/test_monai.py)
           "monai+pydicom", "monai+itk", "monai+nvimgcodec", "monai+kvdicom", "monai+kvdicom-cpu",
           # bench/test_scaleout.py: the plain load_series loop the Dask rows are held against
           "kvdicom-loop")
#: A ceiling's ``loader`` is ``ceiling:<name>``; ``<name>_<variant>`` rows (``disk_read_direct``) count for ``<name>``.
CEILING_PREFIX = "ceiling:"
CEILINGS = ("h2d_pinned", "h2d_pageable", "host_read", "disk_read", "series_h2d", "series_host_read",
            "series_disk_read", "series_disk_h2d", "decode", "decode_host", "dataset_host_read", "dataset_decode")
#: Compressed cases' rows are ``decode_gpu`` (nvImageCodec, one batch into device memory) and
#: ``decode_host[_<library>]`` (imagecodecs on every core), the same codestreams from memory
#: (:func:`decode_ceiling_for`).

#: A stage of a kvdicom load timed alone (``bench/test_series_stages.py``): ``loader`` is ``stage:<name>``.
STAGE_PREFIX = "stage:"
#: ``cold`` only where every round's drop of the page cache was verified; ``unverified`` where it was not.
PAGE_CACHE_STATES = ("warm", "cold", "unverified")
PageCache = Literal["warm", "cold", "unverified"]


class ExtraInfo(TypedDict, total=False):
    """``extra_info`` of one benchmark (results/README.md explains each key)."""

    # written by the benchmark
    case: str
    loader: str
    device: str                  # "cpu" | "cuda"
    file_bytes: int
    pixel_bytes: int             # what GB/s is computed from
    page_cache: PageCache
    matches_pydicom: bool | None
    kvikio_threads: int | None
    kvikio_task_size: int | None
    ceiling: str | None          # name in CEILINGS this row is held against
    resident_fraction_max: float | None  # cold rows: page-cache residency after the drop, worst round (mincore)
    cached_fraction_before: float | None  # the same, as KvikIO reports it (None without KvikIO)
    resident_fraction_after: float | None  # cold scan rows: the files' pages cached right after a cold scan (mincore)
    direct_io: bool              # disk ceilings
    bytes_read: int              # disk ceilings
    slices: int                  # series: slices in the volume, and files in the folder
    files: int
    rescale: bool                # series peers that apply the modality LUT
    matches_pydicom_values: bool  # peers returning their own dtype: compared by value
    output_dtype: str
    sort_rule: str               # series: the rule kvdicom.load_series ordered by ("position" | "instance_number")
    compressed_bytes: int        # compressed cases (bench/test_compressed.py): encapsulated bytes read
    compression_ratio: float     # decoded pixel bytes / file bytes
    frames: int                  # decoded frames (frames_per_s is derived from it)
    codec: str                   # kvdicom's codec name: jpeg, jpeg_lossless, jpegls, jpeg2000, htj2k, rle
    decoder: str                 # which decoder ran: "nvimgcodec", "host:<plugin> (<why>)", "pydicom:<plugin>"…
    lossless: bool
    series_stand_in: bool        # a multi-frame file standing in for a series of single-frame files
    gpus: int                    # scale-out rows (bench/test_scaleout.py): GPUs the Dask cluster used
    series: int                  # scale-out rows: series loaded per round
    series_per_s: float          # scale-out rows (derived): series / median
    scaling_efficiency: float    # scale-out rows (derived): series/s over G x the same loader's 1-GPU rate
    stage: str                   # stage rows: which stage of the load (``loader`` is ``stage:<stage>``)
    stage_of: str                # stage rows: the whole they are part of ("kvdicom.load_series")
    stage_covers: str            # stage rows: what the timed call does, and what it leaves out
    stage_part_of: str | None    # stage rows: the stage whose time already includes this one (not summed)
    # filled in by dgbench.derived after the session
    gbps: float
    rounds: int
    spread: float                # IQR / median
    ceiling_gbps: float
    pct_of_ceiling: float
    speedup_vs_pydicom: float
    frames_per_s: float          # compressed cases
    pct_of_load: float           # stage rows: median as % of the whole kvdicom load's (same case, device)


def ceiling_for(device: str, page_cache: str) -> str:
    """The ceiling a loader row is held against: the disk when cold, else the copy it cannot avoid."""
    if page_cache != "warm":
        return "disk_read"
    return "h2d_pinned" if device == "cuda" else "host_read"


def series_ceiling_for(device: str, page_cache: str) -> str:
    """The ceiling an uncompressed series row is held against (``bench/test_series.py``).

    Warm: the files' pixel ranges read from the page cache (``series_host_read``), on ``cuda`` then copied to
    the device span by span while later files are still read (``series_h2d``). Cold: every file read whole from
    the disk after the drop, O_DIRECT where the file system allows (``series_disk_read``), on ``cuda`` then
    copied to the device the same way (``series_disk_h2d``).
    Derived numbers pair a row only with a ceiling of its own page-cache state, so cold never meets warm.
    """
    if page_cache != "warm":
        return "series_disk_h2d" if device == "cuda" else "series_disk_read"
    return "series_h2d" if device == "cuda" else "series_host_read"


def decode_ceiling_for(device: str) -> str:
    """The ceiling a compressed loader row is held against: the fastest decode of its codestreams from memory.

    ``cpu``: the host's (``decode_host``, any library). ``cuda``: the faster of the GPU's and the host's
    (``decode``: ``decode_gpu`` or ``decode_host*``), since a loader may decode on either before the result is
    on the device; the host variant leaves out the copy to the device (small beside the decode).
    """
    return "decode" if device == "cuda" else "decode_host"


def ceiling_loader(name: str) -> str:
    return CEILING_PREFIX + name


def is_ceiling(loader: str) -> bool:
    return str(loader).startswith(CEILING_PREFIX)


def stage_loader(name: str) -> str:
    return STAGE_PREFIX + name


def is_stage(loader: str) -> bool:
    return str(loader).startswith(STAGE_PREFIX)


def bench_extra(
    case: str,
    loader: str,
    device: str,
    file_bytes: int,
    pixel_bytes: int,
    page_cache: PageCache = "warm",
    *,
    matches_pydicom: bool | None = None,
    kvikio_threads: int | None = None,
    kvikio_task_size: int | None = None,
    ceiling: str | None | Literal["auto"] = "auto",
    **extra: Any,
) -> ExtraInfo:
    """``extra_info`` of one benchmark; ``ceiling="auto"`` picks :func:`ceiling_for` (none for ceilings).

    A ceiling row records ``matches_pydicom`` when given (decode ceilings check their own output)."""
    if page_cache not in PAGE_CACHE_STATES:
        raise ValueError(f"page_cache must be one of {PAGE_CACHE_STATES}, not {page_cache!r}")
    unknown = set(extra) - set(ExtraInfo.__annotations__)
    if unknown:
        raise TypeError(f"extra_info keys not in dgbench.schema.ExtraInfo: {sorted(unknown)}")
    if ceiling == "auto":
        ceiling = None if is_ceiling(loader) else ceiling_for(device, page_cache)
    info: ExtraInfo = {
        "case": case,
        "loader": loader,
        "device": device,
        "file_bytes": int(file_bytes),
        "pixel_bytes": int(pixel_bytes),
        "page_cache": page_cache,
    }
    if not is_ceiling(loader):
        info.update(matches_pydicom=matches_pydicom, kvikio_threads=kvikio_threads,
                    kvikio_task_size=kvikio_task_size, ceiling=ceiling)
    elif matches_pydicom is not None:
        info["matches_pydicom"] = matches_pydicom
    info.update(extra)  # type: ignore[typeddict-item]
    return info


# --------------------------------------------------------------------------- test documents

def stats_for(median: float, iqr: float | None = None, rounds: int = 7) -> dict:
    """pytest-benchmark's ``stats`` block around ``median`` (IQR 10 % of it unless given)."""
    iqr = median / 10 if iqr is None else iqr
    q1, q3 = median - iqr / 2, median + iqr / 2
    return {
        "min": q1, "max": q3 + iqr, "mean": median, "stddev": iqr, "rounds": rounds, "median": median,
        "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0",
        "ld15iqr": q1, "hd15iqr": q3, "ops": 1 / median if median else 0.0, "total": median * rounds,
        "iterations": 1,
    }


def bench_document(
    case: str,
    loader: str,
    median: float,
    *,
    device: str = "cpu",
    pixel_bytes: int = 10**9,
    file_bytes: int | None = None,
    page_cache: PageCache = "warm",
    iqr: float | None = None,
    rounds: int = 7,
    name: str | None = None,
    fullname: str | None = None,
    **extra: Any,
) -> dict:
    """One ``benchmarks[]`` entry as pytest-benchmark saves it, ``extra_info`` built by :func:`bench_extra`."""
    info = bench_extra(case, loader, device, pixel_bytes + 1362 if file_bytes is None else file_bytes,
                       pixel_bytes, page_cache, **extra)
    test = "test_ceiling" if is_ceiling(loader) else "test_load"
    param = f"{case}-{loader}-{device}-{page_cache}"
    name = name or f"{test}[{param}]"
    return {
        "group": None, "name": name, "fullname": fullname or f"bench/test_x.py::{name}", "params": {"spec": case},
        "param": param, "extra_info": info, "options": {}, "stats": stats_for(median, iqr, rounds),
    }


def run_document(machine_info: dict, benchmarks: list[dict], when: str = "2026-03-01T02:00:00+00:00",
                 commit: str = "0123456789abcdef0123") -> dict:
    """A whole saved run, as pytest-benchmark 5 writes it."""
    return {
        "machine_info": machine_info,
        "commit_info": {"id": commit, "time": when, "dirty": False, "project": "dicom-gpu-bench", "branch": "main"},
        "benchmarks": benchmarks,
        "datetime": when,
        "version": "5.2.3",
    }

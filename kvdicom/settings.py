"""kvdicom's settings: what a caller may set (:class:`Settings`, :func:`configure`, :func:`current`) and every
tuning constant, each with the measurement that justifies it.

``kvdicom.configure(threads=8)`` sets values for the process; ``with kvdicom.configure(processes=0): ...``
sets them for the block and restores the previous ones after it, as ``kvikio.defaults.set`` does. The
values are process-wide (not per thread): a Dask or DataLoader worker sets its own.

Environment variables give the starting values; ``configure`` overrides them:

======================  =======================================================================
``KVDICOM_THREADS``     ``threads``: ``auto``, ``none`` or a count
``KVDICOM_PROCESSES``   ``processes``: ``auto`` or a count (``0``: never start a worker process)
``KVDICOM_MAX_RATIO``   ``max_compression_ratio``: a number, or ``none`` for no limit
``KVIKIO_NTHREADS``     KvikIO's own; with ``threads="auto"`` kvdicom then leaves KvikIO's pool alone
======================  =======================================================================
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import threading
from dataclasses import dataclass

#: Threads and worker processes at most, whatever the machine: one per core up to this (16-core H100/H200
#: machines; KvikIO 256 MiB reads measured 40 GB/s at 4-8 threads, see docs/io.md).
MAX_THREADS = 16
MAX_PROCESSES = 16


# --- Host reads (kvdicom._io.host_read) ------------------------------------------------------------------

#: Reads below this size use one ``preadv`` loop in the caller's thread; larger ones are split across
#: the pool. Measured on an H200 machine (16 cores, page cache warm): the
#: 25 MiB pixels of the 200-frame enhanced MR file took 2.8 ms on one thread and 0.84 ms on the pool in
#: 4 MiB chunks (0.94 ms in 2 MiB, 1.33 ms in 1 MiB chunks); the old threshold of 32 MiB kept it on one thread.
READ_PARALLEL_BYTES = 8 << 20
#: With fewer pool threads than this, the threshold is :data:`READ_FEW_THREADS_FACTOR` times higher (32 MiB, the
#: old threshold): on the 2-core CPU dev machine the pool lost below it (8 MiB: 0.48 ms one thread, 0.73 ms
#: pooled; 16 MiB: 1.6 vs 2.8 ms; 25 MiB: 3.2 vs 3.2 ms; other work running).
READ_FEW_THREADS = 4
READ_FEW_THREADS_FACTOR = 4
#: Largest chunk per pool task, buffered reads (large files).
READ_CHUNK_BYTES = 8 << 20
#: Smallest chunk per pool task: a read is cut in about :data:`READ_CHUNKS_PER_READ` chunks of whole MiB
#: between this and :data:`READ_CHUNK_BYTES` (25 MiB -> 4 MiB chunks, as measured above).
READ_MIN_CHUNK_BYTES = 2 << 20
READ_CHUNKS_PER_READ = 8
#: Chunk per pool task with O_DIRECT (bench/ceilings.py's disk ceiling).
READ_DIRECT_CHUNK_BYTES = 16 << 20

# --- GPU reads through KvikIO (kvdicom._io.tuning; the reasons are in its docstring) ---------------------

#: KvikIO task size per read: about KVIKIO_TASKS_PER_THREAD tasks per thread, so a slow task does not leave the
#: others idle at the end, between these bounds. H100, 16 threads: 256 MiB read at 28 / 40 / 38 / 28 GB/s with
#: 1 / 4 / 8 / 16 MiB tasks, 1 GiB at 27 / 43 / 45 / 36 GB/s; below 1 MiB per-task overhead dominates.
KVIKIO_MIN_TASK_BYTES = 1 << 20
KVIKIO_MAX_TASK_BYTES = 8 << 20
KVIKIO_TASKS_PER_THREAD = 4
#: In compat mode (no GDS) reads below this go through one preadv into pinned memory and one copy, not KvikIO:
#: a 2 MiB file loaded at 1.9 GB/s through KvikIO, slower than the 1-thread seed loader (2.6 GB/s), H200.
KVIKIO_SMALL_READ_BYTES = 4 << 20

# --- GPU decoding (kvdicom._codecs.gpu_codec) ------------------------------------------------------------

#: Files decoding to fewer bytes than this decode on the host: each nvImageCodec batch has a fixed cost
#: that small files do not repay. Measured on an H200 (nvImageCodec 0.9.0.20), warm, kvdicom GPU vs pydicom:
#: one 128² int16 J2K frame 12.0 vs 3.7 ms; 4 × 128² int16 HTJ2K 2.6 vs 1.8 ms; 4 × 64 × 80 RGB JPEG
#: 2.0 vs 2.0 ms; one 512² int16 J2K frame (512 KiB) 12.1 vs 51.7 ms.
GPU_MIN_DECODED_BYTES = 256 << 10

# --- The CPU volume faulted in while the headers are parsed in-process (kvdicom._series.prefault) ----------

#: Series predicted at fewer bytes than this (the first file's size times the files) are not pre-faulted: the
#: thread, the first header read twice and a stat a file cost more than the faults. 2-core CPU dev machine, CT
#: slices of 512², interleaved, medians: 32 slices (16 MiB) 4.42 ms with against 3.64 ms without; 64 slices
#: (32 MiB) 8.71 against 10.82 ms; 128 slices (64 MiB) 17.95 against 20.40 ms (the reads' ceiling 8.96 ms).
PREFAULT_MIN_BYTES = 32 << 20

# --- Cold series read ahead (kvdicom._io.readahead) -----------------------------------------------------

#: A cold series (its last file's first page not cached) gets ``POSIX_FADV_WILLNEED`` hints on a thread while its
#: headers are parsed: first this many bytes of every file (the fast walk reads a header in chunks of 16 KiB),
#: then every whole file. 2-core CPU dev machine, every file dropped and verified before each call, alternated,
#: medians of 7-9, ``load_series(cpu)``: 256 CT slices of 512² 120.4 -> 97.4 ms (its O_DIRECT ceiling 65.4 ms, read
#: whole through the page cache 99.3 ms), with the header workers 92.7 -> 83.2 ms; 128 CT slices 61.9 -> 52.9 ms.
#: Warm, the probe costs 2.6 µs a load. H100 device, the same A/B, medians of 7: 256 CT slices, cpu 96.3 -> 87.2 ms,
#: cuda 98.0 -> 90.1 ms (O_DIRECT ceilings 64.2 / 76.0 ms); 256 HTJ2K slices on cuda 71.9 -> 74.1 ms (no gain).
READAHEAD_HEAD_BYTES = 16 << 10
#: Series of fewer files are not read ahead (one file: its header read starts the kernel's own read-ahead).
READAHEAD_MIN_FILES = 2
#: Files larger than this get only their head hinted, never the whole file (a video or a large multi-frame file
#: in the folder is refused or skipped, not worth reading ahead); a 4096² RGB 16-bit slice is 96 MiB.
READAHEAD_MAX_FILE_BYTES = 256 << 20
#: Whole files hinted per load at most, in listing order: past this the kernel could drop the first files
#: read ahead before the parse reached them; the files after it are read as before.
READAHEAD_MAX_BYTES = 4 << 30

# --- Series reads by the header workers (kvdicom._io.shared_staging) ------------------------------------

#: Long series (headers parsed in the process pool) whose files hold at most this many bytes are read by the
#: header workers into one shared host buffer (a memfd; page-locked once a GPU load uses it), which is kept,
#: at the size of the largest such series, for the life of the process; larger series read as before. H200
#: device, 256 CT slices of 512² warm, one process, interleaved, medians of 8: GPU 22.0 / 20.7 ms this way
#: against 44.5 / 44.4 ms read by the parent's threads (the I/O ceiling beside them 14.9-17.4 ms); cold, 99.7 /
#: 89.5 against 97.0 / 87.0 ms. CPU (medians of 12, another lease): 29.5 ms against 54.5 ms (ceiling 17.1 ms).
SHARED_STAGING_MAX_BYTES = 2 << 30

# --- Series decoding (kvdicom._series.decode) ------------------------------------------------------------

#: Decoded bytes per nvImageCodec call at most: a longer group is split into calls of this size. Not a speed
#: setting (one call per group is the point) but a bound on the transient device memory of a call, about twice
#: this (the decoder's own images plus the batch they are copied into); 256 × 512² int16 (128 MiB) is one call.
GPU_BATCH_MAX_DECODED_BYTES = 1 << 30

#: A compressed series' slices are read and checked (open, identity, preadv, codestream header, route) in this
#: many tasks on the read pool, each a run of consecutive slices: the work per slice is mostly Python, and one
#: task per slice left 16 threads fighting for the GIL. 256 × 512² HTJ2K slices on the H200 (16 threads),
#: medians of 30: one task per slice 59.7 ms; 1 / 2 / 4 / 8 / 16 tasks 33.7 / 23.1 / 30.5 / 34.4 / 50.9 ms;
#: the whole GPU load_series 106.4 ms with one per slice, 65.8 / 67.6 / 77.7 / 83.3 / 95.0 ms (medians of 10).
SERIES_READ_TASKS = 2

# --- RLE (kvdicom._codecs.rle) ---------------------------------------------------------------------------

#: Decoded bytes per host-to-device copy (GPU path): big enough that each copy runs near the link's
#: rate, small enough that the first copy starts after a few frames.
RLE_COPY_CHUNK_BYTES = 2 << 20
#: Frames decode concurrently (imagecodecs, kvdicom's pool) from this many decoded bytes per file; below it
#: the hand-off to the pool costs more than it saves (2 frames of 128² int16: 2.0 ms pooled vs 1.6 ms).
RLE_CONCURRENT_MIN_BYTES = 1 << 20
#: ... and only with at least this many cores: on the 2-core CPU machine two pool threads were no faster
#: than one (16 × 512² int16: 11.4–12.1 ms vs 9.9–10.7 ms, medians of 41, other work running). Whether
#: they pay on the device is for a one-off measure_rle profiler (since removed) to show there.
RLE_CONCURRENT_MIN_CPUS = 4

# --- imagecodecs on the host (kvdicom._codecs.host_codecs) -----------------------------------------------

#: Frames of one file decode concurrently on kvdicom's pool only with at least this many cores (on the
#: 2-core CPU machine two threads gave 1.2-1.4x on 2-3 frames of 64² JPEG 2000, nothing on JPEG-LS). On the
#: H200's 16 (``results/…/0016``, medians against pixel_array): 2-4 frames of 64²-128² JPEG 2000 / HTJ2K
#: 1.39-2.52x, 2 x 128² JPEG-LS 6.25x, 16 x 512² JPEG-LS 33.5x, 32 x 512² JPEG 2000 12.8x.
IMAGECODECS_CONCURRENT_MIN_CPUS = 4
#: A JPEG 2000 frame of at least this many pixels gets openjpeg's own threads too, when the file has fewer
#: frames than kvdicom has threads: one 512² int16 frame took 44 ms on one thread, 21 ms on two (CPU dev
#: machine), 7.85 ms on 16 against pixel_array's 45.1 ms (H200, ``results/…/0016``); one 128² frame 2.9 vs
#: 2.6 ms on two (CPU dev machine), so smaller frames keep one thread (128² on the H200: 4.72 ms against
#: pixel_array's 5.27; more threads there not yet measured).
IMAGECODECS_INTRA_FRAME_MIN_PIXELS = 256 * 256

# --- Decompression bombs (kvdicom._header.compressed.check_expansion) ------------------------------------

#: A compressed file (or series) decoding to fewer bytes than this is never refused for its compression ratio:
#: allocating it harms nothing, and real content can compress without bound (a blank 4096² int16 frame is a
#: 141-byte lossless JPEG 2000 codestream, 238,000:1; a blank 4096² uint8 JPEG-LS frame 621 bytes, 27,000:1;
#: imagecodecs 2026.10, CPU dev machine). Above it, :attr:`Settings.max_compression_ratio` applies: a 4.4 KB
#: lossless JPEG claiming 30000² took 41 s and 6.9 GB to decode, a 4.9 KB JPEG-LS 104 s and 5.2 GB (issue 24).
RATIO_CHECK_MIN_DECODED_BYTES = 256 << 20
#: Lossless JPEG (Process 14) codes every sample with a Huffman code of at least one bit, so a frame decodes to
#: at most this many bytes per compressed byte times its sample's bytes (16:1 for 16-bit samples), whatever
#: its size: more is a lie of the header, refused at any size.
JPEG_LOSSLESS_MAX_SAMPLES_PER_BYTE = 8

# --- Series reads, copies and rescale (kvdicom._series.native, worker_reads, volume) ------------------------

#: Bytes per host copy task when the CPU path copies the slices the header workers read to their places in
#: the volume: below it a series is copied in the caller's thread. Not tuned: 4 MiB gives 256 CT slices of
#: 512² 32 tasks (two per thread on 16 cores); with it that CPU load took 29.5 ms on the H200 device (above).
HOST_COPY_TASK_BYTES = 4 << 20

#: Native series read in-process (the CPU path without header workers): runs of consecutive slices a read-pool
#: thread, not one task a file, whose submissions and hand-overs queued on the GIL.
SERIES_READS_PER_THREAD = 4

#: Elements per host task over a volume (the rescale, MONAI's axis reversal): below this it runs in the caller's
#: thread.
RESCALE_TASK_ELEMENTS = 1 << 18

# --- Freed host arrays kept for the next load (kvdicom._io.host_memory) -------------------------------------

#: Host arrays of at least this many bytes live in memory kvdicom keeps once they are freed (the size from which
#: pre-faulting a series volume paid on the 2-core CPU dev machine: :data:`PREFAULT_MIN_BYTES`).
HOST_CACHE_MIN_BYTES = 32 << 20


@dataclass(frozen=True)
class Settings:
    """kvdicom's settings in force.

    ``threads``: kvdicom's host read pool and KvikIO's process-wide pool. ``"auto"`` sizes both from the
    cores this process may use (at most :data:`MAX_THREADS`) and leaves KvikIO alone where
    ``KVIKIO_NTHREADS`` is set; an integer sets both; ``None`` never changes KvikIO's pool.

    ``processes``: worker processes for work that holds the GIL (parsing the headers of long series,
    frame-parallel decoding with pydicom's plugins). ``"auto"``: one per core this process may use, at
    most :data:`MAX_PROCESSES`; an integer caps it; ``0`` does all work in the calling process.

    ``max_compression_ratio``: see the field; raise it (or ``None``) for data that truly compresses more.

    ``host_cache_bytes``: see the field; 0 where the process must give freed host memory back at once.
    """

    threads: str | int | None = "auto"
    processes: str | int = "auto"
    #: Decoded bytes per compressed byte above which a compressed file or series decoding to more than
    #: :data:`RATIO_CHECK_MIN_DECODED_BYTES` is refused before anything is allocated (a decompression bomb);
    #: ``None``: no limit. Lossy JPEG 2000 of CT is typically 10-50:1, lossless 2-4:1.
    max_compression_ratio: float | None = 1000.0
    #: Bytes of freed host arrays (series volumes, large files) kept by each process, their pages faulted in, for
    #: the next load of that size (:mod:`kvdicom._io.host_memory`); 0 keeps none. 512 MiB holds a 128-slice CT series
    #: rescaled (its float64 volume and int16 scratch, 320 MiB), or one of a 256-slice one's two (512 / 128 MiB: the
    #: scratch is then faulted in afresh each load). 128 CT slices on the 2-core CPU dev machine: 17.5 -> 13.1 ms when
    #: the last load's volume is reused (the read ceiling 7.0-7.4 ms).
    host_cache_bytes: int = 512 << 20


def _threads(value) -> str | int | None:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    raise ValueError(f"threads must be 'auto', a positive int or None, not {value!r}")


def _processes(value) -> str | int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if isinstance(value, str) and value == "auto":
        return value
    raise ValueError(f"processes must be 'auto' or an int >= 0, not {value!r}")


def _ratio(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= 1 and value == value:
        return float(value)
    raise ValueError(f"max_compression_ratio must be a number >= 1 or None, not {value!r}")


def _cache_bytes(value) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    raise ValueError(f"host_cache_bytes must be an int >= 0, not {value!r}")


def _count_or_word(raw: str):
    """An environment value as ``configure`` takes it: ``none`` -> None, digits -> int, else the word."""
    return None if raw == "none" else int(raw) if raw.isdigit() else raw


def _ratio_text(raw: str) -> float | None:
    if raw == "none":
        return None
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"max_compression_ratio must be a number >= 1 or 'none', not {raw!r}") from None
    return _ratio(number)


def _from_environment() -> Settings:
    """The starting values, from ``KVDICOM_THREADS`` / ``KVDICOM_PROCESSES`` / ``KVDICOM_MAX_RATIO`` /
    ``KVDICOM_HOST_CACHE_BYTES`` (a bad value is an error naming it)."""
    found = {}
    variables = (("KVDICOM_THREADS", "threads", lambda raw: _threads(_count_or_word(raw))),
                 ("KVDICOM_PROCESSES", "processes", lambda raw: _processes(_count_or_word(raw))),
                 ("KVDICOM_MAX_RATIO", "max_compression_ratio", _ratio_text),
                 ("KVDICOM_HOST_CACHE_BYTES", "host_cache_bytes", lambda raw: _cache_bytes(_count_or_word(raw))))
    for name, field, parse in variables:
        raw = os.environ.get(name, "").strip().lower()
        if raw:
            try:
                found[field] = parse(raw)
            except ValueError as exc:
                raise ValueError(f"{name}={os.environ[name]!r}: {exc}") from None
    return Settings(**found)


_current = _from_environment()
_lock = threading.Lock()
_UNSET = object()
_listeners: list = []  # called with the new settings after every change (kvdicom._io.host_memory trims its keep)


def on_change(listener) -> None:
    """Call ``listener(settings)`` after every change of the settings in force."""
    _listeners.append(listener)


def _changed() -> None:
    for listener in _listeners:
        listener(_current)


def current() -> Settings:
    """The settings in force now."""
    return _current


def cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or a Dask worker's share)."""
    return len(os.sched_getaffinity(0))


class configure:
    """Set kvdicom's settings (see :class:`Settings`); as a context manager, only until the block ends.

    ``kvdicom.configure(threads=8)`` applies for the process. ``with kvdicom.configure(processes=0):``
    applies inside the block and restores the settings that were in force before it. Arguments left
    out keep their current value. A bad value raises ``ValueError`` and changes nothing.
    """

    def __init__(self, threads=_UNSET, *, processes=_UNSET, max_compression_ratio=_UNSET,
                 host_cache_bytes=_UNSET) -> None:
        global _current
        changes = {}
        if threads is not _UNSET:
            changes["threads"] = _threads(threads)
        if processes is not _UNSET:
            changes["processes"] = _processes(processes)
        if max_compression_ratio is not _UNSET:
            changes["max_compression_ratio"] = _ratio(max_compression_ratio)
        if host_cache_bytes is not _UNSET:
            changes["host_cache_bytes"] = _cache_bytes(host_cache_bytes)
        with _lock:
            self._previous = _current
            _current = dataclasses.replace(_current, **changes)
            self.settings = _current
        _changed()

    def __enter__(self) -> Settings:
        return self.settings

    def __exit__(self, *exc) -> None:
        global _current
        with _lock:
            _current = self._previous
        _changed()

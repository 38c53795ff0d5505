"""The machine's own limits, measured on the same bytes as the loaders.

A loader's GB/s means little alone: 40 GB/s is the limit on one machine and
poor on another. Each ceiling moves the same number of bytes as the case it
is compared with, so small-file latency and large-file bandwidth are both fair.
Compressed cases are held against the decode of their own codestreams, already
in memory (:class:`GpuDecode`, :class:`HostDecode`): no read, no header, no check.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import mmap
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from dgbench.config import COLD_MAX_RESIDENT, COLD_ROUNDS
from dgbench.schema import ceiling_loader
from kvdicom._io import host_read
from kvdicom._io.tuning import machine_threads

DIRECT_IO_ALIGN = 4096


def drop_page_cache(path) -> float | None:
    """Evict ``path`` from the page cache and return the fraction still resident (``None``: cannot tell).

    POSIX_FADV_DONTNEED needs no privilege; where pages stay (tmpfs, some
    overlay file systems, pages mapped elsewhere) KvikIO's ``drop_file_page_cache``
    is tried too. The fraction is read with ``mincore`` (:func:`resident_fraction`).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    left = resident_fraction(path)
    if left is None or left > COLD_MAX_RESIDENT:
        try:
            import kvikio

            kvikio.drop_file_page_cache(str(path))
            left = resident_fraction(path)
        except Exception:  # no KvikIO, an older one without it, or no privilege
            pass
    return left


_PROT_READ, _MAP_SHARED = 0x1, 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    return libc


def resident_fraction(path) -> float | None:
    """Fraction of ``path``'s pages in the page cache, by ``mincore`` on a read-only mapping
    (which touches no page); ``None`` where that cannot be asked (no libc mincore, mapping refused)."""
    try:
        libc = _libc()
        size = os.stat(path).st_size
    except (OSError, AttributeError):
        return None
    if size == 0:
        return 0.0
    page = mmap.PAGESIZE
    pages = -(-size // page)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, _PROT_READ, _MAP_SHARED, fd, 0)
        if addr in (None, _MAP_FAILED):
            return None
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                return None
            return sum(b & 1 for b in vec) / pages
        finally:
            libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def cached_fraction(path) -> float | None:
    """Fraction of ``path``'s pages in the page cache (``None`` without KvikIO)."""
    try:
        import kvikio
    except Exception:
        return None
    cached, total = kvikio.get_page_cache_info(str(path))
    return cached / total if total else 1.0


def time_cold(benchmark, paths, target) -> None:
    """Time ``target`` with ``paths`` (one file, or every file of a series) evicted from the page cache before
    every round.

    The row stays ``page_cache: "cold"`` only if every round's drop was verified
    (at most COLD_MAX_RESIDENT of the pages resident, in every file); otherwise it becomes
    ``"unverified"``, which the report and the derived numbers never hold against
    the disk ceiling. ``resident_fraction_max`` records the worst round (of a series: its worst file).
    """
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    readings: list[float | None] = []

    def setup():
        readings.append(_worst(drop_page_cache(p) for p in files))
        benchmark.extra_info["cached_fraction_before"] = _worst(cached_fraction(p) for p in files)

    benchmark.pedantic(target, setup=setup, rounds=COLD_ROUNDS, iterations=1, warmup_rounds=0)
    record_cold_verdict(benchmark.extra_info, readings)


def _worst(readings) -> float | None:
    """The largest of the files' fractions; ``None`` if any file could not tell (or there were none)."""
    readings = list(readings)
    return None if not readings or None in readings else max(readings)


def record_cold_verdict(extra_info: dict, readings: list[float | None]) -> None:
    """Set ``page_cache`` to ``cold`` or ``unverified`` from each round's residency after the drop."""
    known = [r for r in readings if r is not None]
    verified = bool(readings) and len(known) == len(readings) and max(known) <= COLD_MAX_RESIDENT
    extra_info["resident_fraction_max"] = max(known) if known else None
    extra_info["page_cache"] = "cold" if verified else "unverified"


class HostToDevice:
    """One host→device copy of ``nbytes`` from pinned or pageable memory, synchronized."""

    def __init__(self, nbytes: int, pinned: bool):
        import cupy
        import cupyx

        self.cupy = cupy
        self.host = cupyx.empty_pinned(nbytes, dtype=np.uint8) if pinned else np.empty(nbytes, dtype=np.uint8)
        self.host[:] = 1  # touch every page so no first-touch faults land in the timing
        self.device = cupy.empty(nbytes, dtype=cupy.uint8)

    def __call__(self):
        self.device.set(self.host)
        self.cupy.cuda.get_current_stream().synchronize()


class PageCacheRead:
    """Multi-threaded read of the file's pixel bytes from the page cache into host memory."""

    def __init__(self, path, offset: int, nbytes: int):
        self.path, self.offset = str(path), offset
        self.buffer = np.empty(nbytes, dtype=np.uint8)
        self.buffer[:] = 0

    def __call__(self):
        return host_read.read_into(self.path, self.buffer, self.offset)


class DiskRead:
    """Sequential read of the whole file from the disk, threaded: O_DIRECT, or buffered after a cache drop.

    Call ``drop_page_cache`` before each round. Both ways are measured because
    neither is always faster (buffered reads get the kernel's readahead); the
    cold ceiling is the faster of the two. Where O_DIRECT is refused (tmpfs,
    some overlay file systems) ``direct`` falls back to buffered. Both go
    through kvdicom's own chunked reader and pool (``host_read.read_into``).
    """

    def __init__(self, path, direct: bool = True):
        self.path = str(path)
        self.size = os.stat(self.path).st_size
        self.aligned = self.size // DIRECT_IO_ALIGN * DIRECT_IO_ALIGN
        self.buffer = mmap.mmap(-1, -(-max(self.size, 1) // DIRECT_IO_ALIGN) * DIRECT_IO_ALIGN)  # page-aligned
        self.direct = direct and self._direct_io_works()

    def _direct_io_works(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT)
        except (OSError, AttributeError):
            return False
        try:
            os.preadv(fd, [memoryview(self.buffer)[:DIRECT_IO_ALIGN]], 0)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    @property
    def nbytes(self) -> int:
        return self.aligned if self.direct else self.size

    def __call__(self) -> int:
        out = np.frombuffer(self.buffer, dtype=np.uint8)[: self.nbytes]  # page-aligned start
        return host_read.read_into(self.path, out, 0, direct=self.direct)



def read_fully(path, flags: int, view: memoryview, offset: int, n: int, what: str = "early") -> int:
    """``n`` bytes of ``path`` from ``offset`` into ``view`` (``os.preadv`` until done); a short file is an OSError."""
    fd = os.open(path, flags)
    try:
        got = 0
        while got < n:
            step = os.preadv(fd, [view[got:]], offset + got)
            if step == 0:
                raise OSError(f"{path}: file ended {n - got} bytes {what}")
            got += step
        return got
    finally:
        os.close(fd)


#: Runs of adjacent files per reader thread: each run is one task of the pool (and on ``cuda`` one copy). A task per
#: file cost its dispatch: 2-core machine, 128 / 256 CT slices of 512 KiB, medians of 15: 7.7-10.8 / 15.7-16.5 ms a
#: task per file, 5.4-5.8 / 11.6-12.0 ms with 2 runs per reader (1: 5.8-6.3 / 11.7-12.1, 4: 5.5-5.9 / 11.5-11.9,
#: 16: 6.6-7.1 / 12.9-13.4). Two also matches kvdicom's chunks per header worker
#: (``kvdicom._series.headers.CHUNKS_PER_WORKER``), so the ceiling overlaps reads and copies as finely.
SPANS_PER_READER = 2


def file_spans(files: int, spans: int) -> list[tuple[int, int]]:
    """``files`` split into at most ``spans`` runs of adjacent files, ``(first, end)`` each, sizes within one."""
    spans = max(1, min(spans, files))
    bounds = [files * k // spans for k in range(spans + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(spans) if bounds[k] < bounds[k + 1]]


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align


def _aligned_empty(nbytes: int, empty, align: int) -> np.ndarray:
    """``nbytes`` of ``empty(n)`` memory starting on an ``align`` boundary (pinned pools align less than pages)."""
    if align == 1:
        return empty(nbytes)
    raw = empty(nbytes + align)
    skip = -raw.ctypes.data % align
    return raw[skip : skip + nbytes]


class SeriesRead:
    """The I/O ceiling of a series: every file's pixel range, offsets known in advance, read concurrently (a
    run of adjacent files per task, :data:`SPANS_PER_READER`).

    CPU: into one host buffer. GPU (``device="cuda"``): into one pinned host buffer, each run of adjacent files
    copied to the device on one stream as soon as its reads are done, so the copies overlap the reads still
    running, as kvdicom's own series path overlaps them (H100, 7ca1e32: reading everything and then copying
    once was 12.55 ms for the 256 CT slices, slower than kvdicom's 9.73 ms, so it bounded nothing). No header is
    parsed inside the timed call, so a series loader is held against the bytes alone. ``align``: each range's
    slot starts on this boundary and spans a multiple of it (O_DIRECT: :class:`bench.series_disk.SeriesDiskRead`).
    ``threads``: readers at once (default: one per core, at most ``MAX_THREADS``).
    """

    #: open flags of every read; the end a short file is reported against
    flags, short = os.O_RDONLY, "before the pixel data's end"

    def __init__(self, ranges: list[tuple[str, int, int]], device: str = "cpu", align: int = 1,
                 threads: int | None = None):
        self.ranges = ranges  # (path, offset, nbytes) per file, in volume order
        self.nbytes = sum(n for _, _, n in ranges)
        self.device, self.align = device, align
        self.starts = np.cumsum([0] + [_round_up(n, align) for _, _, n in ranges]).tolist()
        total = self.starts[-1]
        if device == "cuda":
            import cupy
            import cupyx

            self.host = _aligned_empty(total, lambda n: cupyx.empty_pinned(n, dtype=np.uint8), align)
            self.gpu = cupy.empty(total, dtype=cupy.uint8)
            self.stream = cupy.cuda.Stream(non_blocking=True)
        else:
            self.host = _aligned_empty(total, lambda n: np.empty(n, dtype=np.uint8), align)
        self.host[:] = 0  # touch every page before timing
        readers = threads or machine_threads()
        self.spans = file_spans(len(ranges), SPANS_PER_READER * readers)
        self.pool = ThreadPoolExecutor(max_workers=readers)

    def _read(self, i: int, flags: int) -> int:
        path, offset, n = self.ranges[i]
        start = self.starts[i]
        return read_fully(path, flags, memoryview(self.host[start : start + _round_up(n, self.align)]), offset, n,
                          self.short)

    def _read_span(self, span: tuple[int, int], flags: int) -> int:
        return sum(self._read(i, flags) for i in range(*span))

    def __call__(self) -> int:
        flags = self.flags
        if self.device != "cuda":
            return sum(self.pool.map(lambda span: self._read_span(span, flags), self.spans))
        reads = [self.pool.submit(self._read_span, span, flags) for span in self.spans]
        got = 0
        for (first, end), read in zip(self.spans, reads):  # in volume order: a span is copied once it is read
            got += read.result()
            start, stop = self.starts[first], self.starts[end]
            self.gpu[start:stop].set(self.host[start:stop], stream=self.stream)
        self.stream.synchronize()
        return got

    def close(self) -> None:
        self.pool.shutdown()


# --- compressed cases: the decode of the same codestreams, already in memory ---------------------------------


@dataclass(frozen=True)
class HostCodec:
    """An imagecodecs decoder of one codec's codestreams, for :class:`HostDecode`."""

    function: str  #: imagecodecs function
    codec: str  #: imagecodecs codec object whose ``available`` says the library is in this install
    library: str
    variant: str = ""  #: "" for the codec's first decoder (``ceiling:decode_host``), else ``decode_host_<variant>``


#: The imagecodecs decoders of each kvdicom codec, first the one kvdicom's host route uses where it has one.
#: Lossless JPEG goes through libjpeg-turbo (``jpeg8_decode``): ``ljpeg_decode`` crashed the process on damaged
#: streams (``kvdicom._codecs.host_codecs``). OpenJPH decodes HTJ2K only (2.4x openjpeg there, host_codecs).
HOST_CODECS = {
    "jpeg2000": (HostCodec("jpeg2k_decode", "JPEG2K", "openjpeg"),),
    "htj2k": (HostCodec("jpeg2k_decode", "JPEG2K", "openjpeg"),
              HostCodec("htj2k_decode", "HTJ2K", "OpenJPH", "openjph")),
    "jpegls": (HostCodec("jpegls_decode", "JPEGLS", "CharLS"),),
    "jpeg": (HostCodec("jpeg8_decode", "JPEG8", "libjpeg-turbo"),),
    "jpeg_lossless": (HostCodec("jpeg8_decode", "JPEG8", "libjpeg-turbo"),),
    "rle": (HostCodec("dicomrle_decode", "DICOMRLE", "imagecodecs"),),
}


def host_codec(layout, variant: str = "") -> HostCodec | str:
    """The imagecodecs decoder of ``layout``'s codestreams called ``variant``, or why there is none here."""
    found = [c for c in HOST_CODECS.get(layout.codec, ()) if c.variant == variant]
    if not found:
        return f"imagecodecs has no {variant or 'decoder'} for {layout.codec} ({layout.transfer_syntax.name})"
    if layout.codec == "rle" and layout.samples_per_pixel > 1:
        return "imagecodecs' DICOM RLE decoder returns colour planes, not pydicom's interleaved samples"
    try:
        import imagecodecs
    except ImportError as exc:
        return f"imagecodecs is not installed ({exc})"
    codec = found[0]
    if not getattr(imagecodecs, codec.codec).available:
        return f"this imagecodecs has no {codec.library} ({codec.codec})"
    return codec


def time_checked_decode(benchmark, decode, result, check, record) -> None:
    """Time a decode ceiling that never times a wrong decode: ``decode()`` once untimed, its output
    (``result()``) checked by ``check(output, decode.name)`` (which fails the test or returns it) and recorded by
    ``record(output)``; then ``benchmark(decode)``, and the timed calls' output checked too."""
    decode()
    record(check(result(), decode.name))
    benchmark(decode)
    check(result(), decode.name)


def host_ceiling(benchmark, layout, frames: list, infos: list, variant: str, check, record) -> None:
    """``ceiling:decode_host[_<variant>]``: :class:`HostDecode` of ``frames`` (``layout``: the file's, or a series'
    batch), through :func:`time_checked_decode`; ``record(loader, output, decoder)``. Skips where this
    imagecodecs cannot decode them."""
    codec = host_codec(layout, variant)
    if isinstance(codec, str):
        pytest.skip(codec)
    decode = HostDecode(frames, layout, codec)
    loader = ceiling_loader("decode_host" + (f"_{variant}" if variant else ""))
    try:
        time_checked_decode(benchmark, decode, lambda: decode.result(layout, infos), check,
                            lambda out: record(loader, out, decode.name))
    finally:
        decode.close()


class HostDecode:
    """The host's decode ceiling: imagecodecs decoding ``frames`` (codestreams in memory) into one preallocated
    buffer, one task per frame on a pool of every core this process may run on (imagecodecs releases the GIL).

    openjpeg may also get the cores left over once each frame has one (``numthreads``): whichever of one thread or
    those a frame was faster in a short untimed trial (on a 128² frame two threads were slower than one, 2-core
    CPU dev machine). ``raw`` holds each frame as the library returns it (its own container and sign);
    :meth:`result` applies pydicom's corrections to a copy.
    """

    def __init__(self, frames: list, layout, codec: HostCodec):
        import imagecodecs

        self.frames, self.layout, self.codec = frames, layout, codec
        self.fn = getattr(imagecodecs, codec.function)
        self.threads = len(os.sched_getaffinity(0))
        self.per_frame = max(1, self.threads // len(frames)) if codec.function == "jpeg2k_decode" else 1
        if codec.function == "dicomrle_decode":
            frame_bytes = layout.rows * layout.columns * layout.samples_per_pixel * layout.dtype.itemsize
            self.raw = np.empty((len(frames), frame_bytes), dtype=np.uint8)
        else:
            first = self._decode(0, None)  # the library's own container and shape, found once (untimed)
            self.raw = np.empty((len(frames),) + first.shape, dtype=first.dtype)
        self.raw[...] = 0  # touch every page before timing
        self.pool = ThreadPoolExecutor(max_workers=self.threads)
        if self.per_frame > 1:
            self.per_frame = min((1, self.per_frame), key=self._trial)

    def _trial(self, per_frame: int, calls: int = 3) -> float:
        """Best time of ``calls`` decodes with ``per_frame`` openjpeg threads a frame (and leaves it set)."""
        self.per_frame = per_frame
        best = float("inf")
        for _ in range(calls):
            start = time.perf_counter()
            self()
            best = min(best, time.perf_counter() - start)
        return best

    @property
    def name(self) -> str:
        """What decodes, for ``extra_info['decoder']``."""
        within = f", {self.per_frame} openjpeg threads a frame" if self.per_frame > 1 else ""
        return (f"imagecodecs.{self.codec.function} ({self.codec.library}): {len(self.frames)} frames on "
                f"{self.threads} threads{within}, codestreams in memory")

    def _decode(self, i: int, out):
        kwargs = {"numthreads": self.per_frame} if self.codec.function == "jpeg2k_decode" else {}
        if self.codec.function == "dicomrle_decode":
            return self.fn(self.frames[i], self.layout.dtype.str, out=out)
        return self.fn(self.frames[i], out=out, **kwargs)

    def _into(self, i: int) -> None:
        got = self._decode(i, self.raw[i])
        if got is not self.raw[i] and not np.shares_memory(got, self.raw[i]):
            raise ValueError(f"{self.codec.function} returned frame {i} elsewhere, not into the buffer given")

    def __call__(self) -> int:
        futures = [self.pool.submit(self._into, i) for i in range(len(self.frames))]
        concurrent.futures.wait(futures)
        for future in futures:
            future.result()
        return len(futures)

    def result(self, batch_layout, infos: list) -> np.ndarray:
        """The last call's frames as ``pixel_array`` gives them (pydicom's corrections on a copy)."""
        from kvdicom._pixels.corrections import finish

        if self.codec.function == "dicomrle_decode":
            return self.raw.view(batch_layout.dtype).reshape(batch_layout.shape).copy()
        last = infos[-1]
        how = SimpleNamespace(raw_itemsize=self.raw.dtype.itemsize, precision=last.precision, signed=last.signed)
        return finish(self.raw.copy(), batch_layout, how)

    def close(self) -> None:
        self.pool.shutdown()


class GpuDecode:
    """The GPU's decode ceiling: nvImageCodec decoding ``frames`` (codestreams in host memory) into device memory,
    all of them in ONE ``Decoder.decode`` call (as ``kvdicom._codecs.gpu_codec._decode_batch``, without its file
    reads, output slots, copies and corrections), the stream synchronized.

    ``how`` is ``gpu_codec.plan``'s plan (its colour conversion); the code streams are built once, untimed.
    """

    def __init__(self, frames: list, how):
        import cupy
        from nvidia import nvimgcodec

        from kvdicom._codecs import gpu_codec

        self.cupy, self.how, self.frames = cupy, how, len(frames)
        self.decoder = gpu_codec._decoder()
        color = nvimgcodec.ColorSpec.SRGB if how.color == "srgb" else nvimgcodec.ColorSpec.UNCHANGED
        self.params = nvimgcodec.DecodeParams(allow_any_depth=True, color_spec=color)
        self.streams = [nvimgcodec.CodeStream(np.ascontiguousarray(f)) for f in frames]
        self.stream = cupy.cuda.get_current_stream()
        self.images: list = []

    name = property(lambda self: f"nvimgcodec: one Decoder.decode of {self.frames} frames, codestreams in memory")

    def __call__(self) -> int:
        self.images = []  # the last round's images go first
        self.images = self.decoder.decode(self.streams, params=self.params, cuda_stream=self.stream.ptr)
        self.stream.synchronize()
        return len(self.images)

    def result(self, batch_layout):
        """The last call's images as ``pixel_array`` gives them (pydicom's corrections), or why they cannot be."""
        from kvdicom._pixels.corrections import finish

        cupy = self.cupy
        shape = (batch_layout.rows, batch_layout.columns, batch_layout.samples_per_pixel)
        arrays = []
        for i, image in enumerate(self.images):
            arr = None if image is None else cupy.asarray(image)
            if arr is None or tuple(arr.shape) != shape or arr.dtype.itemsize != self.how.raw_itemsize:
                got = None if arr is None else (tuple(arr.shape), str(arr.dtype))
                return f"frame {i}: nvImageCodec returned {got}, not {shape} of {self.how.raw_itemsize}-byte samples"
            arrays.append(arr)
        if len(arrays) != self.frames:
            return f"nvImageCodec returned {len(arrays)} images for {self.frames} code streams"
        return finish(cupy.ascontiguousarray(cupy.stack(arrays)), batch_layout, self.how)

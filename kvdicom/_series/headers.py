"""Reading the headers of a series: the fast walk, pydicom where it steps aside, a process pool for long series.

Each file gives a :class:`Header`: its layout and series keys, or why it is
skipped (not DICOM, no image) or refused. Never raises for a bad file; the
caller decides what a bad file means for the series.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import operator
import os
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
from pydicom.uid import UID

from kvdicom import _loader, settings
from kvdicom._header import compressed, fast_header
from kvdicom._header.codestream import FrameInfo
from kvdicom._header.compressed import CompressedLayout
from kvdicom._header.encapsulated import FrameTable
from kvdicom._header.inspect import _layout_dataset
from kvdicom._header.layout import ModalityLUT, ModalityTransform, PixelLayout
from kvdicom._io import process_pool, shared_staging
from kvdicom._io.bounded_file import BoundedReader
from kvdicom._io.fileid import open_identified
from kvdicom._io.readahead import will_need
from kvdicom._series import keys as series_keys
from kvdicom.errors import DicomLoadError, NoPixelDataError

#: Series at least this long parse their headers in the process pool, on
#: machines with at least :data:`POOL_MIN_PROCESSES` cores. On the 2-core CPU
#: dev machine (shared by other jobs) the pool showed no reliable gain: 256
#: CT headers took 53 / 72 ms in-process against 43 / 99 ms pooled in two
#: runs, and starting the pool took 665 ms (once per process). A worker parses
#: a header in about 0.25 ms there, and the parent unpacks a result in about
#: 0.015 ms (plain tuples; pickled dataclasses cost 0.1 ms), so with 16 cores
#: the pool should cut the header time several-fold; 64 files is a guess to
#: confirm on the device (bench/test_series.py).
POOL_MIN_FILES = 64
POOL_MIN_PROCESSES = 4
#: Worker processes at most; headers are CPU-bound Python, one per core (the shared pool's size).
MAX_HEADER_PROCESSES = process_pool.MAX_PROCESSES
#: Chunks per worker: small enough to balance and to start reads early, large enough that each task's
#: hand-over (about 0.2 ms) stays below its parsing. a one-off profile_series profiler (since removed) on the
#: H200 (16 processes, 256 CT slices of 512², warm; median of the pooled headers / of ``load_series``
#: on cuda): 1: 13.8 / 39.4 ms, 2: 10.4 / 41.4 ms, 4: 12.3 / 44.6 ms, 8: 20.4 / 51.3 ms. 2 parses
#: fastest and keeps a second wave of chunks whose reads overlap the parsing on longer series. Those numbers are
#: from the pool with a feeding thread per worker; measured again since (process_pool.run, H200, alternated
#: processes, medians of 15 loads, 1 against 2): 256 HTJ2K on cuda 55.1 / 53.3 against 50.4 / 54.9 / 56.8 ms,
#: CT on cuda 18.6 / 19.9 against 21.9 / 20.5 ms, CT on the CPU 23.3 / 24.3 against 20.9 / 25.4 ms: within
#: the noise, so 2 stays.
CHUNKS_PER_WORKER = 2


@dataclass(frozen=True)
class Header:
    """One file of a series folder, as far as its header tells."""

    path: str
    layout: PixelLayout | None = None
    keys: series_keys.SliceKeys | None = None
    skip: str | None = None  #: why the file is not part of any series
    error: str | None = None  #: why the file is refused


def list_files(source) -> tuple[list[str], str]:
    """The candidate files and a name for the source (used in errors)."""
    if isinstance(source, (str, os.PathLike)):
        folder = os.fspath(source)
        if not os.path.exists(folder):  # as kvdicom.load: the OSError of a path that is not there
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", folder)
        if not os.path.isdir(folder):
            raise DicomLoadError(folder, "not a directory (pass a folder or an iterable of paths)")
        # absolute and normalised once: an entry's path is then that folder, a slash and its name, as abspath
        # would make it (0.21 -> 0.10 ms for 256 files, 2-core CPU dev machine)
        with os.scandir(os.path.abspath(folder)) as entries:
            paths = sorted(e.path for e in entries if _file_or_unreadable(e))
        if not paths:
            raise DicomLoadError(folder, "empty folder: no files to load")
        return paths, folder
    # absolute, so that header workers (started in another directory) open the same files
    paths = [os.path.abspath(os.fspath(p)) for p in source]
    if not paths:
        raise DicomLoadError("<no paths>", "no files to load")
    return paths, paths[0]


def _file_or_unreadable(entry: os.DirEntry) -> bool:
    """A regular file, or an entry that cannot be looked at (a symlink loop: ELOOP): its header read then
    reports it, naming it, instead of a raw OSError out of the folder listing."""
    try:
        return entry.is_file()
    except OSError:
        return True


def _has_dicm(fd: int) -> bool:
    head = os.pread(fd, 132, 0)
    return len(head) == 132 and head[128:] == b"DICM"


def _read_open(path: str, fd: int, file_id) -> Header:
    """The header of the open ``fd`` (closed here): the buffered reader pydicom needs is built only where
    the fast walk steps aside (7 µs a file otherwise, 2-core CPU dev machine)."""
    handed_over = False
    try:
        header = fast_header.scan_fd(fd, path, False, file_id=file_id)
        if header is not None:
            try:
                return Header(path, header.layout, series_keys.from_raw(path, header.keys))
            except series_keys.Unprovable:
                pass
        if not _has_dicm(fd):
            return Header(path, skip="not a DICOM file (no 128-byte preamble and DICM prefix)")
        handed_over = True  # the reader closes ``fd``, also where it fails to start
        with BoundedReader(path, fd=fd, file_id=file_id) as fp:
            layout, ds = _layout_dataset(path, fp, False)
        return Header(path, layout, series_keys.from_dataset(path, ds))
    finally:
        if not handed_over:
            os.close(fd)


def read_header(path: str) -> Header:
    """One file's header, through one open: fast walk first, pydicom where it steps aside. Never raises."""
    try:
        return _read_open(path, *open_identified(path))
    except NoPixelDataError as exc:
        if exc.has_rows:
            return Header(path, error="an image header (it has Rows) without pixel data: truncated?")
        if exc.image_class:
            return Header(path, error=f"a {exc.image_class} file without pixel data: truncated in its header?")
        return Header(path, skip="no pixel data (not an image: DICOMDIR, report, ...)")
    except DicomLoadError as exc:
        return Header(path, error=exc.reason)
    except OSError as exc:
        return Header(path, error=f"unreadable ({type(exc).__name__}: {exc})")


def _read_chunk(paths: list[str]) -> list[Header]:
    return [read_header(p) for p in paths]


_LAYOUT_FIELDS = tuple(f.name for f in dataclasses.fields(PixelLayout))
_MODALITY_FIELDS = tuple(f.name for f in dataclasses.fields(ModalityTransform))
_LUT_FIELDS = tuple(f.name for f in dataclasses.fields(ModalityLUT))
_INFO_FIELDS = tuple(f.name for f in dataclasses.fields(FrameInfo))
_KEY_FIELDS = tuple(f.name for f in dataclasses.fields(series_keys.SliceKeys))
_TABLE_FIELDS = tuple(f.name for f in dataclasses.fields(FrameTable))
_HEADER_FIELDS = tuple(f.name for f in dataclasses.fields(Header))
#: not ``dataclasses.astuple``, which deep-copies every value: one frame's FrameInfo took 5.7 µs with it, 0.13 µs
#: with these (2-core CPU dev machine), paid by a header worker for every compressed file
_lut_values = operator.attrgetter(*_LUT_FIELDS)
_info_values = operator.attrgetter(*_INFO_FIELDS)
_key_values = operator.attrgetter(*_KEY_FIELDS)


def _rebuild(cls, names: tuple[str, ...], values):
    """``cls(*values)`` for a frozen dataclass without its generated ``__init__``, which sets each field through
    ``object.__setattr__``: a PixelLayout took 2.1 µs with it, 0.8 µs here (2-core CPU dev machine), and the
    parent rebuilds four or five objects a file while the workers wait for it. Only for values taken from an
    instance a worker built (:func:`pack`): none of these classes checks anything in its ``__init__``."""
    obj = object.__new__(cls)
    obj.__dict__.update(zip(names, values))
    return obj


def pack(header: Header) -> tuple:
    """``header`` as plain tuples: unpickling frozen dataclasses, dtypes and UIDs cost the parent
    ~0.1 ms per file (25 ms for 256 CT slices on the 2-core CPU dev machine), tuples far less."""
    layout = header.layout
    packed_layout = None
    if isinstance(layout, CompressedLayout):
        packed_layout = _pack_compressed(layout)
    elif layout is not None:
        values = [getattr(layout, name) for name in _LAYOUT_FIELDS]
        values[_TS_INDEX] = str(layout.transfer_syntax)
        values[_DTYPE_INDEX] = layout.dtype.str
        values[_MODALITY_INDEX] = _pack_modality(layout.modality)
        packed_layout = tuple(values)
    keys = None if header.keys is None else _key_values(header.keys)
    return (header.path, packed_layout, keys, header.skip, header.error)


_TS_INDEX = _LAYOUT_FIELDS.index("transfer_syntax")
_DTYPE_INDEX = _LAYOUT_FIELDS.index("dtype")
_MODALITY_INDEX = _LAYOUT_FIELDS.index("modality")
_LUT_INDEX = _MODALITY_FIELDS.index("lut")
_uids: dict[str, UID] = {}
_dtypes: dict[str, np.dtype] = {}


_COMPRESSED_FIELDS = tuple(f.name for f in dataclasses.fields(CompressedLayout))
_C_TS_INDEX = _COMPRESSED_FIELDS.index("transfer_syntax")
_C_DTYPE_INDEX = _COMPRESSED_FIELDS.index("dtype")
_C_TABLE_INDEX = _COMPRESSED_FIELDS.index("frame_table")
_C_MODALITY_INDEX = _COMPRESSED_FIELDS.index("modality")
#: Marks a packed CompressedLayout (a packed PixelLayout is a plain tuple of its fields).
_COMPRESSED_MARK = "compressed"


def _pack_modality(modality: ModalityTransform) -> tuple:
    values = [getattr(modality, name) for name in _MODALITY_FIELDS]
    lut = modality.lut
    values[_LUT_INDEX] = None if lut is None else _lut_values(lut)
    return tuple(values)


def _unpack_modality(values: tuple) -> ModalityTransform:
    if values[_LUT_INDEX] is not None:
        values = list(values)
        values[_LUT_INDEX] = _rebuild(ModalityLUT, _LUT_FIELDS, values[_LUT_INDEX])
    return _rebuild(ModalityTransform, _MODALITY_FIELDS, values)


def _pack_compressed(layout: CompressedLayout) -> tuple:
    """A CompressedLayout as plain tuples, as :func:`pack` does for PixelLayout: unpickling the dataclass
    cost the parent 28 µs a file on the 2-core CPU dev machine (a 512² JPEG 2000 ``ct`` slice, best of 7 x 2000),
    the tuples and their unpacking 14 µs."""
    values = [getattr(layout, name) for name in _COMPRESSED_FIELDS]
    values[_C_TS_INDEX] = str(layout.transfer_syntax)
    values[_C_DTYPE_INDEX] = layout.dtype.str
    table = layout.frame_table
    values[_C_TABLE_INDEX] = (table.span, table.frames, table.split_on_eoi)
    values[_C_MODALITY_INDEX] = _pack_modality(layout.modality)
    return (_COMPRESSED_MARK, tuple(values))


def _unpack_compressed(packed: tuple) -> CompressedLayout:
    values = list(packed)
    ts = values[_C_TS_INDEX]
    values[_C_TS_INDEX] = _uids.get(ts) or _uids.setdefault(ts, UID(ts))
    dtype = values[_C_DTYPE_INDEX]
    values[_C_DTYPE_INDEX] = _dtypes.get(dtype) or _dtypes.setdefault(dtype, np.dtype(dtype))
    values[_C_TABLE_INDEX] = _rebuild(FrameTable, _TABLE_FIELDS, values[_C_TABLE_INDEX])
    values[_C_MODALITY_INDEX] = _unpack_modality(values[_C_MODALITY_INDEX])
    return _rebuild(CompressedLayout, _COMPRESSED_FIELDS, values)


def unpack(packed: tuple) -> Header:
    path, packed_layout, keys, skip, error = packed
    layout = None if packed_layout is None or isinstance(packed_layout, tuple) else packed_layout
    if isinstance(packed_layout, tuple) and len(packed_layout) == 2 and packed_layout[0] == _COMPRESSED_MARK:
        layout = _unpack_compressed(packed_layout[1])
    elif isinstance(packed_layout, tuple):
        values = list(packed_layout)
        ts = values[_TS_INDEX]
        values[_TS_INDEX] = _uids.get(ts) or _uids.setdefault(ts, UID(ts))
        dtype = values[_DTYPE_INDEX]
        values[_DTYPE_INDEX] = _dtypes.get(dtype) or _dtypes.setdefault(dtype, np.dtype(dtype))
        values[_MODALITY_INDEX] = _unpack_modality(values[_MODALITY_INDEX])
        layout = _rebuild(PixelLayout, _LAYOUT_FIELDS, values)
    keys = None if keys is None else _rebuild(series_keys.SliceKeys, _KEY_FIELDS, keys)
    return _rebuild(Header, _HEADER_FIELDS, (path, layout, keys, skip, error))


def _read_chunk_packed(paths: list[str], pixels: bool = True) -> list[tuple]:
    """In a worker: each file's packed header. The chunk's files are announced first (:func:`will_need`), as
    :func:`_read_chunk_shared` does: whole where the parent reads their pixels after the sort, from a cold page
    cache then already on their way; their heads only where it reads none (``pixels=False``: a headers-only scan
    must not pull every file's pixel data through the page cache)."""
    for path in paths:
        will_need(path, 0 if pixels else settings.READAHEAD_HEAD_BYTES)
    return [pack(read_header(p)) for p in paths]


@dataclass
class SharedReads:
    """Pixel reads done by the header workers into the pool's shared buffer (:mod:`kvdicom._io.shared_staging`).

    File ``i`` may fill ``slots[i] = (offset, capacity)`` of the buffer, capacity its size on disk, so no
    header can make a worker write more than the files hold. ``results[i]`` after the headers: the bytes read
    (from the pixel data value's offset: native pixels, or a compressed value as
    :func:`kvdicom._header.compressed.read_frames` reads it), or why the read failed (str), or None: not
    read (parsed here, not of ``series_uid``, larger than its slot, not an image). ``infos[i]``: for a compressed
    file read, its frames' codestream facts as :func:`kvdicom._header.compressed.check_frames` gives them,
    checked in the worker (a frame that disagrees with its header is the read's failure, its reason).
    """

    fd: int
    size: int  #: the buffer's size, as the parent mapped it
    slots: list[tuple[int, int]]
    series_uid: str | None = None
    results: dict[int, int | str | None] = dataclasses.field(default_factory=dict)
    infos: dict[int, list] = dataclasses.field(default_factory=dict)


def staged_nbytes(layout) -> int:
    """Bytes a worker reads for ``layout`` into its slot: native pixels, or the whole encapsulated value."""
    return compressed.value_nbytes(layout) if isinstance(layout, CompressedLayout) else layout.nbytes


def _read_into_slot(header: Header, slot: np.ndarray, series_uid: str | None) -> tuple[int | str | None, tuple | None]:
    """In a worker: ``header``'s pixel bytes into ``slot``, checked as ``load`` checks them (the file is the one
    parsed, before and after; every byte read; a compressed file's codestreams against its header); the bytes
    read, or why not, and a compressed file's packed frame facts (:func:`pack_infos`)."""
    layout = header.layout
    if layout is None or header.keys is None or (series_uid is not None and header.keys.series_uid != series_uid):
        return None, None
    nbytes = staged_nbytes(layout)
    if not 0 < nbytes <= len(slot):
        return None, None
    infos = None
    try:
        if isinstance(layout, CompressedLayout):
            _, frames = compressed.read_frames(layout, into=slot[:nbytes])
            if len(frames) == layout.number_of_frames:  # else the parent reports it, as for its own reads
                infos = pack_infos(compressed.check_frames(layout, frames))
        else:  # the parent's own slice read (in C where built)
            _loader.read_host_slice(layout, slot[:nbytes])
    except DicomLoadError as exc:
        return exc.reason, None
    except OSError as exc:
        return f"cannot read the pixel data ({type(exc).__name__}: {exc})", None
    return nbytes, infos


def pack_infos(infos: list) -> tuple:
    """Frame facts as plain tuples (cheaper for the parent to unpickle than dataclasses, as :func:`pack`)."""
    return tuple(None if info is None else _info_values(info) for info in infos)


def unpack_infos(packed: tuple) -> list:
    return [None if values is None else _rebuild(FrameInfo, _INFO_FIELDS, values) for values in packed]


def _read_chunk_shared(paths: list[str], slots: list[tuple[int, int]], fd: int, size: int,
                       series_uid: str | None) -> list[tuple]:
    """In a worker: each file's packed header and :func:`_read_into_slot`'s answer.

    Every file of the chunk is first announced to the kernel (:func:`will_need`): from a cold page cache
    the chunk's files then arrive side by side, not one after the other in this worker (the parent's
    16 read threads overlapped them before the workers read).
    """
    for path in paths:
        will_need(path)
    buffer = shared_staging.worker_view(fd, size)
    out = []
    for path, (offset, capacity) in zip(paths, slots):
        header = read_header(path)
        read, infos = _read_into_slot(header, buffer[offset : offset + capacity], series_uid)
        out.append((pack(header), read, infos))
    return out


def header_processes() -> int:
    """Worker processes for header parsing on this machine (:func:`kvdicom._io.process_pool.processes`)."""
    return process_pool.processes()


def header_pool() -> process_pool.WorkerPool:
    """The persistent process pool (:mod:`kvdicom._io.process_pool`, shared with frame-parallel host decoding)."""
    return process_pool.pool()


def _shutdown_pool() -> None:
    process_pool.mark_broken()


def use_pool(count: int) -> bool:
    """Whether ``count`` headers are parsed in the process pool on this machine."""
    return count >= POOL_MIN_FILES and header_processes() >= POOL_MIN_PROCESSES and not process_pool.broken()


def header_batches(paths: list[str], parallel: bool | None = None,
                   reads: SharedReads | None = None, pixels: bool = True) -> Iterator[list[tuple[int, Header]]]:
    """Headers as they are parsed: batches of ``(index in paths, header)``, in the order they finish.

    In-process (short series, few cores): one batch of all. In the pool: one
    batch per chunk as its worker returns it, so a caller can start the pixel
    reads of a chunk while later chunks are still being parsed. Every index
    comes exactly once; a pool that breaks mid-way parses the chunks not yet
    given out here instead. With ``reads`` the workers also read each file's
    pixel bytes into the shared buffer (``reads.results``). ``pixels=False``: the caller reads no pixel data
    (a headers-only scan), so the workers announce only the files' heads to the kernel.
    """
    if parallel is None:
        parallel = use_pool(len(paths))
    processes = header_processes()
    if not parallel or processes < 1:  # configure(processes=0): no workers to ask
        yield list(enumerate(_read_chunk(paths)))
        return
    size = max(1, math.ceil(len(paths) / (processes * CHUNKS_PER_WORKER)))
    starts = list(range(0, len(paths), size))
    left = set(starts)  # chunk starts not yet given out here
    if reads is None:
        calls = [(_read_chunk_packed, (paths[s : s + size], pixels)) for s in starts]
    else:
        calls = [(_read_chunk_shared, (paths[s : s + size], reads.slots[s : s + size], reads.fd, reads.size,
                                       reads.series_uid)) for s in starts]
    here = False  # the chunks left are parsed in this process
    try:
        with contextlib.closing(header_pool().run(calls)) as answered:
            for k, answers in answered:
                start = starts[k]
                if reads is not None:
                    reads.results.update((start + j, read) for j, (_, read, _) in enumerate(answers))
                    reads.infos.update((start + j, unpack_infos(infos)) for j, (_, _, infos) in enumerate(answers)
                                       if infos is not None)
                    answers = [h for h, _, _ in answers]
                batch = [(start + j, unpack(h)) for j, h in enumerate(answers)]
                left.discard(start)
                yield batch
    except process_pool.PoolUnavailable:  # shut down, or all busy: the rest here, not a broken pool
        here = True
    except BrokenProcessPool:  # a worker died (killed, out of memory): parse the rest here, and from now on
        here = True
        _shutdown_pool()
    if here:
        for start in sorted(left):
            yield list(enumerate(_read_chunk(paths[start : start + size]), start))


def read_headers(paths: list[str], parallel: bool | None = None, reads: SharedReads | None = None,
                 on_batch=None, pixels: bool = True) -> list[Header]:
    """Every header, in the order of ``paths`` (with ``reads``: and the workers' pixel reads); ``on_batch``
    is called with each batch of :func:`header_batches` as it arrives. ``pixels=False``: no pixel data will be
    read after them (:func:`header_batches`)."""
    headers: list = [None] * len(paths)
    # closed here, not when collected: a failed ``on_batch`` must not leave the run holding the pool's workers
    with contextlib.closing(header_batches(paths, parallel, reads, pixels)) as batches:
        for batch in batches:
            for index, header in batch:
                headers[index] = header
            if on_batch is not None:
                on_batch(batch)
    return headers

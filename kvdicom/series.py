"""``kvdicom.load_series``: a folder of single-frame slices into one volume, sorted as GDCM sorts them.

Steps, each with its own helper:

1. list the files (:func:`_list_files`), read every header
   (:func:`_read_headers`: the fast walk, pydicom where it steps aside; in a
   persistent process pool when the series and the machine are large enough);
2. skip what is not DICOM or has no pixel data (listed in the record), refuse
   unreadable or corrupt files, pick the series (:func:`_pick_series`), refuse
   slices that cannot stack (:func:`_check_stackable`);
3. order the slices (:func:`_order`): by Image Position (Patient) projected
   on the normal of Image Orientation (Patient), as GDCM's ``SerieHelper``
   and highdicom do, else by Instance Number; work out slice spacing, gantry
   tilt and the LPS affine as highdicom's ``VolumeGeometry`` gives it;
4. read every slice's pixel bytes concurrently into one preallocated buffer
   (:func:`_read_all`): the volume itself where the stored bytes are the
   output, else one scratch buffer; for ``device="cuda"`` a pinned host
   staging buffer and one host-to-device copy; each read checks that the file
   is the one whose header was parsed;
5. decode on the target device (the whole volume at once when all slices share
   a layout) and, with ``rescale=True``, apply each slice's own modality LUT.

A refusal is a :class:`DicomLoadError` naming the file(s); nothing is returned
unless every slice was read and checked.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import threading
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
from pydicom.uid import UID

from kvdicom import fast_header, host_read, modality, series_keys
from kvdicom.decode import CONVERTED_TO_RGB, decode
from kvdicom.errors import DicomLoadError, NoPixelDataError
from kvdicom.fileid import identify
from kvdicom.layout import ModalityLUT, ModalityTransform, PixelLayout, inspect_dataset

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
#: Worker processes at most; headers are CPU-bound Python, one per core.
MAX_HEADER_PROCESSES = 16
#: Chunks per worker: small enough to balance, large enough that pickling a
#: chunk's layouts back costs less than parsing them.
CHUNKS_PER_WORKER = 4
#: Read threads for the pixel reads (page-cache copies and NVMe queue depth).
READ_THREADS = 16

#: highdicom's tolerances: slice gaps equal within this (mm) are uniform, and
#: the stack direction is the normal when |cos - 1| is below it.
SPACING_TOLERANCE = 1e-4
#: Positions closer than this along the normal (mm) are the same position.
DUPLICATE_TOLERANCE = 1e-4


@dataclass(frozen=True, eq=False)
class SeriesInfo:
    """What :func:`load_series` loaded, in slice order (index 0 of the volume first)."""

    paths: tuple[str, ...]
    positions: tuple[tuple[float, float, float] | None, ...]
    spacing: float | None  #: mean gap between slice planes along the normal (mm); None if unknown
    orientation: tuple[float, ...] | None  #: Image Orientation (Patient): row cosines, column cosines
    pixel_spacing: tuple[float, float] | None  #: (row spacing, column spacing) as in (0028,0030)
    #: 4x4 map from (slice, row, column, 1) indices to LPS mm, as highdicom's
    #: ``VolumeGeometry`` builds it; None when position, orientation or pixel spacing is missing
    affine: np.ndarray | None
    sort_rule: str  #: "position", "instance_number", or "none" for a single unordered slice
    irregularities: tuple[str, ...]  #: non-uniform spacing, gantry tilt, differing pixel spacing
    skipped: tuple[tuple[str, str], ...]  #: (path, reason) of files that are not DICOM images
    series_uid: str | None = None
    instance_numbers: tuple[int | None, ...] = ()
    layouts: tuple[PixelLayout, ...] = ()


@dataclass(frozen=True)
class _Header:
    path: str
    layout: PixelLayout | None = None
    keys: series_keys.SliceKeys | None = None
    skip: str | None = None  #: why the file is not part of any series
    error: str | None = None  #: why the file is refused


# 1. files and headers ------------------------------------------------------------

def _list_files(source) -> tuple[list[str], str]:
    """The candidate files and a name for the source (used in errors)."""
    if isinstance(source, (str, os.PathLike)):
        folder = os.fspath(source)
        if not os.path.isdir(folder):
            raise DicomLoadError(folder, "not a directory (pass a folder or an iterable of paths)")
        with os.scandir(folder) as entries:
            paths = sorted(os.path.abspath(e.path) for e in entries if e.is_file())
        if not paths:
            raise DicomLoadError(folder, "empty folder: no files to load")
        return paths, folder
    # absolute, so that header workers (started in another directory) open the same files
    paths = [os.path.abspath(os.fspath(p)) for p in source]
    if not paths:
        raise DicomLoadError("<no paths>", "no files to load")
    return paths, paths[0]


def _has_dicm(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def read_header(path: str) -> _Header:
    """One file's header: fast walk first, pydicom where it steps aside. Never raises."""
    try:
        header = fast_header.scan(path)
        if header is not None:
            try:
                return _Header(path, header.layout, series_keys.from_raw(path, header.keys))
            except series_keys.Unprovable:
                pass
        if not _has_dicm(path):
            return _Header(path, skip="not a DICOM file (no 128-byte preamble and DICM prefix)")
        layout, ds = inspect_dataset(path)
        return _Header(path, layout, series_keys.from_dataset(path, ds))
    except NoPixelDataError as exc:
        if exc.has_rows:
            return _Header(path, error="an image header (it has Rows) without pixel data: truncated?")
        return _Header(path, skip="no pixel data (not an image: DICOMDIR, report, ...)")
    except DicomLoadError as exc:
        return _Header(path, error=exc.reason)
    except OSError as exc:
        return _Header(path, error=f"unreadable ({type(exc).__name__}: {exc})")


def _read_chunk(paths: list[str]) -> list[_Header]:
    return [read_header(p) for p in paths]


_LAYOUT_FIELDS = tuple(f.name for f in dataclasses.fields(PixelLayout))
_MODALITY_FIELDS = tuple(f.name for f in dataclasses.fields(ModalityTransform))


def _pack(header: _Header) -> tuple:
    """``header`` as plain tuples: unpickling frozen dataclasses, dtypes and UIDs cost the parent
    ~0.1 ms per file (25 ms for 256 CT slices on the 2-core CPU dev machine), tuples far less."""
    layout = header.layout
    packed_layout = None
    if layout is not None:
        values = [getattr(layout, name) for name in _LAYOUT_FIELDS]
        values[_LAYOUT_FIELDS.index("transfer_syntax")] = str(layout.transfer_syntax)
        values[_LAYOUT_FIELDS.index("dtype")] = layout.dtype.str
        modality_values = [getattr(layout.modality, name) for name in _MODALITY_FIELDS]
        lut = layout.modality.lut
        modality_values[_MODALITY_FIELDS.index("lut")] = None if lut is None else dataclasses.astuple(lut)
        values[_LAYOUT_FIELDS.index("modality")] = tuple(modality_values)
        packed_layout = tuple(values)
    keys = None if header.keys is None else tuple(getattr(header.keys, f.name) for f in dataclasses.fields(header.keys))
    return (header.path, packed_layout, keys, header.skip, header.error)


_TS_INDEX = _LAYOUT_FIELDS.index("transfer_syntax")
_DTYPE_INDEX = _LAYOUT_FIELDS.index("dtype")
_MODALITY_INDEX = _LAYOUT_FIELDS.index("modality")
_LUT_INDEX = _MODALITY_FIELDS.index("lut")
_uids: dict[str, UID] = {}
_dtypes: dict[str, np.dtype] = {}


def _unpack(packed: tuple) -> _Header:
    path, packed_layout, keys, skip, error = packed
    layout = None
    if packed_layout is not None:
        values = list(packed_layout)
        ts = values[_TS_INDEX]
        values[_TS_INDEX] = _uids.get(ts) or _uids.setdefault(ts, UID(ts))
        dtype = values[_DTYPE_INDEX]
        values[_DTYPE_INDEX] = _dtypes.get(dtype) or _dtypes.setdefault(dtype, np.dtype(dtype))
        modality_values = list(values[_MODALITY_INDEX])
        if modality_values[_LUT_INDEX] is not None:
            modality_values[_LUT_INDEX] = ModalityLUT(*modality_values[_LUT_INDEX])
        values[_MODALITY_INDEX] = ModalityTransform(*modality_values)
        layout = PixelLayout(*values)
    return _Header(path, layout, None if keys is None else series_keys.SliceKeys(*keys), skip, error)


def _read_chunk_packed(paths: list[str]) -> list[tuple]:
    return [_pack(read_header(p)) for p in paths]


_pool: ProcessPoolExecutor | None = None
_pool_broken = False  #: a worker died once: parse in-process from then on
_pool_lock = threading.Lock()


def header_processes() -> int:
    """Worker processes for header parsing on this machine."""
    return max(1, min(MAX_HEADER_PROCESSES, len(os.sched_getaffinity(0))))


def header_pool() -> ProcessPoolExecutor:
    """The persistent header pool, created on first use.

    ``forkserver`` (``spawn`` where it is missing): a forked child of a
    process that has initialised CUDA cannot use it, and a fresh interpreter
    never inherits the parent's CUDA context or threads.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            _pool = ProcessPoolExecutor(max_workers=header_processes(), mp_context=context)
        return _pool


def _shutdown_pool() -> None:
    global _pool, _pool_broken
    with _pool_lock:
        _pool_broken = True
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None


def _read_headers(paths: list[str], parallel: bool | None = None) -> list[_Header]:
    """Every header, in the order of ``paths``."""
    workers = header_processes()
    if parallel is None:
        parallel = len(paths) >= POOL_MIN_FILES and workers >= POOL_MIN_PROCESSES and not _pool_broken
    if not parallel:
        return _read_chunk(paths)
    size = max(1, math.ceil(len(paths) / (workers * CHUNKS_PER_WORKER)))
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    try:
        return [_unpack(h) for chunk in header_pool().map(_read_chunk_packed, chunks) for h in chunk]
    except BrokenProcessPool:  # a worker died (killed, out of memory): parse here instead
        _shutdown_pool()
        return _read_chunk(paths)


# 2. which files make the volume ----------------------------------------------------

def _names(paths, limit: int = 5) -> str:
    paths = list(paths)
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _refuse_errors(headers: list[_Header]) -> None:
    bad = [h for h in headers if h.error is not None]
    if bad:
        others = f"; also refused: {_names(h.path for h in bad[1:])}" if len(bad) > 1 else ""
        raise DicomLoadError(bad[0].path, f"{bad[0].error}{others}")


def _pick_series(headers: list[_Header], series_uid: str | None, source: str) -> list[_Header]:
    if not headers:
        raise DicomLoadError(source, "no DICOM image files (every file was skipped)")
    groups: dict[str | None, list[_Header]] = {}
    for h in headers:
        groups.setdefault(h.keys.series_uid, []).append(h)
    if series_uid is not None:
        if series_uid not in groups:
            raise DicomLoadError(source, f"no file has Series Instance UID {series_uid}; found {sorted(map(str, groups))}")
        return groups[series_uid]
    if len(groups) > 1:
        listing = "; ".join(f"{uid} ({len(g)} files, e.g. {g[0].path})" for uid, g in groups.items())
        raise DicomLoadError(source, f"{len(groups)} series in one load, pass series_uid= to pick one: {listing}")
    return headers


def _check_stackable(headers: list[_Header]) -> None:
    """Refuse multi-frame files and slices whose arrays cannot stack."""
    multi = [h.path for h in headers if h.layout.number_of_frames > 1]
    if multi:
        raise DicomLoadError(multi[0], f"multi-frame file in a series of slices (also: {_names(multi[1:]) or 'none'}); "
                                       "load it with kvdicom.load")
    first = headers[0]
    for what, get in (("rows", lambda l: l.rows), ("columns", lambda l: l.columns),
                      ("samples per pixel", lambda l: l.samples_per_pixel), ("dtype", lambda l: l.dtype),
                      ("shape", lambda l: l.shape)):
        odd = [h for h in headers if get(h.layout) != get(first.layout)]
        if odd:
            raise DicomLoadError(odd[0].path, f"{what} {get(odd[0].layout)} differs from {get(first.layout)} in "
                                              f"{first.path}; slices of one volume must match")


# 3. order and geometry ----------------------------------------------------------

def _normal(orientation) -> np.ndarray:
    row, col = np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:], dtype=float)
    return np.cross(row, col)


def _order(headers: list[_Header]) -> tuple[list[_Header], str, np.ndarray | None]:
    """Slices in order, the rule used, and their distances along the normal (position rule only)."""
    keys = [h.keys for h in headers]
    if all(k.position is not None and k.orientation is not None for k in keys):
        orientation = keys[0].orientation
        odd = [h for h in headers if not np.allclose(h.keys.orientation, orientation)]
        if odd:
            raise DicomLoadError(odd[0].path, f"Image Orientation (Patient) {odd[0].keys.orientation} differs from "
                                              f"{orientation} in {headers[0].path}")
        distances = np.array([k.position for k in keys]) @ _normal(orientation)
        order = np.argsort(distances, kind="stable")
        ordered = [headers[i] for i in order]
        distances = distances[order]
        same = np.flatnonzero(np.diff(distances) <= DUPLICATE_TOLERANCE)
        if same.size:
            a, b = ordered[same[0]], ordered[same[0] + 1]
            raise DicomLoadError(a.path, f"same slice position as {b.path} ({a.keys.position}); several images per "
                                         "position (echoes, phases, times) are not one volume")
        return ordered, "position", distances
    if all(k.instance_number is not None for k in keys):
        ordered = sorted(headers, key=lambda h: h.keys.instance_number)
        for a, b in zip(ordered, ordered[1:]):
            if a.keys.instance_number == b.keys.instance_number:
                raise DicomLoadError(a.path, f"same Instance Number {a.keys.instance_number} as {b.path}, and no "
                                             "Image Position/Orientation to order them by")
        return ordered, "instance_number", None
    if len(headers) == 1:
        return headers, "none", None
    missing = [h.path for h in headers if h.keys.instance_number is None]
    raise DicomLoadError(missing[0], "cannot order the slices: Image Position/Orientation (Patient) and Instance "
                                     f"Number are missing (also in {_names(missing[1:]) or 'no other file'})")


def _geometry(ordered: list[_Header], rule: str, distances):
    """(spacing, irregularities, pixel spacing, affine)."""
    irregular = []
    first = ordered[0].keys
    spacing = None
    if rule == "position" and len(ordered) > 1:
        gaps = np.diff(distances)
        spacing = float(gaps.mean())
        if not np.isclose(spacing, gaps, atol=SPACING_TOLERANCE).all():
            irregular.append(f"non-uniform spacing: slice gaps from {gaps.min():.6g} to {gaps.max():.6g} mm "
                             f"(mean {spacing:.6g})")
        span = np.asarray(ordered[-1].keys.position) - np.asarray(first.position)
        cosine = float(_normal(first.orientation) @ (span / np.linalg.norm(span)))
        if abs(cosine - 1.0) >= SPACING_TOLERANCE:
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cosine))))
            irregular.append(f"gantry tilt: slices are stacked {angle:.3g} degrees off the orientation normal")
    spacings = {h.keys.pixel_spacing for h in ordered}
    if len(spacings) > 1:
        irregular.append(f"differing pixel spacing: {sorted(spacings, key=str)}")
    affine = None
    if rule in ("position", "none") and first.position and first.orientation and first.pixel_spacing:
        step = spacing if spacing is not None else (first.slice_thickness or 1.0)
        row_cos, col_cos = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
        affine = np.eye(4)
        affine[:3, 0] = _normal(first.orientation) * step  # slice index: along the normal
        affine[:3, 1] = col_cos * first.pixel_spacing[0]  # row index: down the columns
        affine[:3, 2] = row_cos * first.pixel_spacing[1]  # column index: along the rows
        affine[:3, 3] = first.position
    return spacing, tuple(irregular), first.pixel_spacing, affine


# 4. pixel reads ---------------------------------------------------------------------

_read_pool: ThreadPoolExecutor | None = None


def _threads() -> ThreadPoolExecutor:
    """The process-wide read pool (``kvdicom.host_read.pool()`` where it exists)."""
    global _read_pool
    shared = getattr(host_read, "pool", None)
    if shared is not None:
        return shared()
    with _pool_lock:
        if _read_pool is None:
            _read_pool = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="kvdicom-series")
        return _read_pool


def _read_slice(layout: PixelLayout, view: memoryview) -> None:
    """``layout``'s pixel bytes into ``view``, from the same file whose header was parsed."""
    fd = os.open(layout.path, os.O_RDONLY)
    try:
        before = identify(fd)
        if layout.file_id is not None and before != layout.file_id:
            raise DicomLoadError(layout.path, "file changed between header and pixel read")
        got = host_read._pread_exact(fd, view, layout.offset)
        if got != len(view):
            raise DicomLoadError(layout.path, f"read {got} of {len(view)} pixel bytes at offset {layout.offset}; "
                                              "the file is shorter than its header says (truncated?)")
        if identify(fd) != before:
            raise DicomLoadError(layout.path, "file changed between header and pixel read")
    finally:
        os.close(fd)


def _read_all(layouts: list[PixelLayout], host: np.ndarray, starts: list[int]) -> None:
    """Every slice's bytes into ``host`` (1-D uint8) at ``starts``, concurrently; all or an error."""
    view = memoryview(host).cast("B")
    futures = [_threads().submit(_read_slice, layout, view[s : s + layout.nbytes])
               for layout, s in zip(layouts, starts)]
    errors = [f.exception() for f in futures]  # waits for every read, so none writes after we return
    for exc in errors:
        if exc is not None:
            raise exc


# 5. decode and rescale --------------------------------------------------------------

#: Layout fields that decide how bytes decode; slices equal in these decode as one multi-frame block.
_DECODE_FIELDS = ("transfer_syntax", "pixel_keyword", "nbytes", "dtype", "shape", "rows", "columns",
                  "samples_per_pixel", "planar_configuration", "bits_allocated", "bits_stored",
                  "pixel_representation", "photometric_interpretation", "little_endian", "swap_8bit_words")


def _decodes_in_place(layout: PixelLayout) -> bool:
    """Whether the stored bytes are the output array's bytes (so they are read straight into it)."""
    return (layout.bits_allocated != 1 and not layout.swap_8bit_words
            and (layout.little_endian or layout.dtype.itemsize == 1)
            and layout.photometric_interpretation not in CONVERTED_TO_RGB
            and not (layout.samples_per_pixel > 1 and layout.planar_configuration == 1)
            and layout.nbytes == math.prod(layout.shape) * layout.dtype.itemsize)


def _output_dtype(layouts: list[PixelLayout], rescale: bool) -> np.dtype:
    """What ``np.stack`` of pydicom's per-slice arrays would have."""
    if not rescale:
        return layouts[0].dtype
    kinds = []
    for layout in layouts:
        transform = layout.modality
        if transform.kind == "rescale":
            kinds.append(np.dtype(np.float64))
        elif transform.kind == "lut":
            kinds.append(np.dtype(transform.lut.dtype))
        else:
            kinds.append(layout.dtype)
    return np.result_type(*set(kinds))


def _stored_volume(layouts, xp, raw, target):
    """Decode ``raw`` (all slices' bytes, slice order) into ``target`` (stored dtype) on ``xp``'s device.

    Where ``raw`` is ``target``'s own memory (:func:`_decodes_in_place`), decoding
    returns a view of it and nothing is copied; ``may_share_memory`` (a bounds
    check: CuPy's exact ``shares_memory`` sorts every element's address) tells.
    """
    first = layouts[0]
    n = len(layouts)
    uniform = all(getattr(l, f) == getattr(first, f) for l in layouts for f in _DECODE_FIELDS)
    bits = first.pixel_count * first.bits_allocated
    if first.photometric_interpretation == "YBR_FULL_422":
        bits = bits // 3 * 2
    contiguous = bits % 8 == 0 and first.nbytes == bits // 8  # slices' bytes join into one multi-frame block
    if uniform and contiguous and n > 1:
        block = dataclasses.replace(first, number_of_frames=n, shape=(n,) + first.shape, nbytes=first.nbytes * n)
        decoded = decode(raw, block)
        if decoded is not target and not xp.may_share_memory(decoded, target):
            target[...] = decoded
        return
    start = 0
    for i, layout in enumerate(layouts):
        decoded = decode(raw[start : start + layout.nbytes], layout)
        if not xp.may_share_memory(decoded, target[i]):
            target[i] = decoded
        start += layout.nbytes


def _apply_modality(stored, layouts, out, xp) -> None:
    """``out[i] = apply_modality_lut(stored[i], ds_i)`` for every slice, as pydicom computes it."""
    transforms = [l.modality for l in layouts]
    scalar = all(t.kind == "rescale" and not isinstance(t.slope, tuple) and not isinstance(t.intercept, tuple)
                 for t in transforms)
    if scalar and out.dtype == np.float64:
        # float64(x) * slope, then + intercept: pydicom's two steps, element by element
        extra = (1,) * (stored.ndim - 1)
        slopes = xp.asarray(np.array([t.slope for t in transforms], dtype=np.float64).reshape((-1,) + extra))
        intercepts = xp.asarray(np.array([t.intercept for t in transforms], dtype=np.float64).reshape((-1,) + extra))
        out[...] = stored
        out *= slopes
        out += intercepts
        return
    for i, layout in enumerate(layouts):
        out[i] = modality.apply(stored[i], layout)


# the entry point --------------------------------------------------------------------

def _check_out(out, shape, dtype, device):
    expected = "cupy" if device == "cuda" else "numpy"
    if type(out).__module__.split(".")[0] != expected:
        raise ValueError(f"out= must be a {expected} array for device={device!r}")
    if tuple(out.shape) != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out= must be a C-contiguous array of shape {shape} and dtype {dtype}, "
                         f"not {tuple(out.shape)} {out.dtype}")


def load_series(source, device: str = "cuda", *, rescale: bool = False, series_uid: str | None = None, out=None):
    """Load a series of single-frame DICOM slices as one volume.

    ``source`` is a folder (its regular files, not recursing) or an iterable
    of paths. Returns ``(volume, SeriesInfo)``: a CuPy (``device="cuda"``) or
    NumPy (``"cpu"``) array of shape ``(slices, rows, columns)`` (samples last
    for colour), equal to ``np.stack`` of pydicom's ``pixel_array`` of each
    slice in the order of :attr:`SeriesInfo.paths`. With ``rescale=True`` each
    slice gets its own modality LUT as ``pydicom.pixels.apply_modality_lut``
    applies it (float64 where Rescale Slope/Intercept apply). ``out=`` is
    filled instead of allocating. Raises :class:`DicomLoadError` naming the
    files for anything that is not one loadable volume.
    """
    from kvdicom.loader import DEVICES

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    if device == "cuda":
        try:
            import cupy as xp
            import cupyx
        except ImportError as exc:  # before any file work, as kvdicom.load does
            import kvdicom

            unavailable = getattr(kvdicom, "GpuUnavailableError", None)
            if unavailable is not None:
                raise unavailable(f"device='cuda' needs CuPy: {exc}") from exc
            raise
    else:
        xp = np
    paths, name = _list_files(source)
    headers = _read_headers(paths)
    skipped = tuple((h.path, h.skip) for h in headers if h.skip is not None)
    _refuse_errors(headers)
    images = _pick_series([h for h in headers if h.layout is not None], series_uid, name)
    _check_stackable(images)
    ordered, rule, distances = _order(images)
    spacing, irregular, pixel_spacing, affine = _geometry(ordered, rule, distances)
    layouts = [h.layout for h in ordered]
    if rescale:
        for layout in layouts:
            modality.check(layout)

    n, first = len(layouts), layouts[0]
    shape = (n,) + first.shape
    out_dtype = _output_dtype(layouts, rescale)
    if out is not None:
        _check_out(out, shape, out_dtype, device)
    volume = out if out is not None else xp.empty(shape, dtype=out_dtype)
    direct = out_dtype == first.dtype and all(_decodes_in_place(l) for l in layouts)
    # where the stored-dtype slices are decoded: the volume itself, or one scratch volume
    stored = volume if out_dtype == first.dtype else xp.empty(shape, dtype=first.dtype)
    starts = np.concatenate([[0], np.cumsum([l.nbytes for l in layouts])]).tolist()
    total = starts[-1]

    if device == "cuda":
        staging = cupyx.empty_pinned(total, dtype=np.uint8)  # one pinned buffer for the whole series
        _read_all(layouts, staging, starts)
        raw = stored.view(xp.uint8).reshape(-1) if direct else xp.empty(total, dtype=xp.uint8)
        raw.set(staging)  # the one host-to-device copy
        # asynchronous from pinned memory: finish it before ``staging`` goes back to CuPy's pinned pool
        xp.cuda.get_current_stream().synchronize()
    else:
        raw = stored.view(np.uint8).reshape(-1) if direct else np.empty(total, dtype=np.uint8)
        _read_all(layouts, raw, starts)
    _stored_volume(layouts, xp, raw, stored)
    if stored is not volume:
        _apply_modality(stored, layouts, volume, xp)
    elif rescale and any(l.modality.kind != "none" for l in layouts):
        _apply_modality(stored.copy(), layouts, volume, xp)  # LUT to the same dtype

    info = SeriesInfo(
        paths=tuple(l.path for l in layouts),
        positions=tuple(h.keys.position for h in ordered),
        spacing=spacing,
        orientation=ordered[0].keys.orientation,
        pixel_spacing=pixel_spacing,
        affine=affine,
        sort_rule=rule,
        irregularities=irregular,
        skipped=skipped,
        series_uid=ordered[0].keys.series_uid,
        instance_numbers=tuple(h.keys.instance_number for h in ordered),
        layouts=tuple(layouts),
    )
    return volume, info

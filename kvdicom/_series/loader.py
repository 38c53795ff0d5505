"""``kvdicom.load_series``: a folder of single-frame slices into one volume, sorted as GDCM sorts them.

Steps, each with its own helper:

1. list the files and read every header (:mod:`kvdicom._series.headers`: the
   fast walk, pydicom where it steps aside; in a persistent process pool when
   the series and the machine are large enough);
2. skip what is not DICOM or has no pixel data (listed in the record), refuse
   unreadable or corrupt files, pick the series, refuse slices that cannot
   stack (:mod:`kvdicom._series.order`);
3. order the slices (:mod:`kvdicom._series.order`): by Image Position (Patient) projected
   on the normal of Image Orientation (Patient), as GDCM's ``SerieHelper``
   and highdicom do, else by Instance Number; work out slice spacing, gantry
   tilt and the LPS affine as highdicom's ``VolumeGeometry`` gives it;
4. read every slice's pixel bytes concurrently into one preallocated buffer
   (:func:`_read_all`): the volume itself where the stored bytes are the
   output, else one scratch buffer; on long series the header workers read
   each file's bytes right after parsing it, into one buffer they share
   (:class:`_Shared`, :mod:`kvdicom._io.shared_staging`): on the CPU each
   slice is then copied from it to its sorted place on the host threads; for
   ``device="cuda"`` the buffer is page-locked, each native chunk goes to the
   device as it arrives and the sorted slices are gathered there
   (:mod:`kvdicom._series.early_copy`); otherwise on the GPU path the reads start
   while later headers are still being parsed, into one pinned host staging
   buffer (:mod:`kvdicom._series.stage`); each read checks that
   the file is the one whose header was parsed (compressed slices: every
   file's fragments read concurrently, then one nvImageCodec batch for the
   frames the GPU decodes, the host for the rest, each into its slot:
   :mod:`kvdicom._series.decode`);
5. decode on the target device (the whole volume at once when all slices share
   a layout) and, with ``rescale=True``, apply each slice's own modality LUT.

A refusal is a :class:`DicomLoadError` naming the file(s); nothing is returned
unless every slice was read and checked.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import itertools
import operator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from kvdicom import _loader as loader
from kvdicom import settings
from kvdicom._header.layout import PixelLayout
from kvdicom._io import device as devices
from kvdicom._io import host_memory, host_read, process_pool
from kvdicom._io import tuning as io_tuning
from kvdicom._pixels import modality
from kvdicom._pixels.decode import decode, decodes_in_place
from kvdicom._series import decode as series_decode
from kvdicom._series import early_copy
from kvdicom._series import headers as series_headers
from kvdicom._series import order as series_order
from kvdicom._series import stage as series_stage
from kvdicom._series.prefault import Prefault
from kvdicom.errors import DicomLoadError


@dataclass(frozen=True, eq=False)
class SeriesInfo:
    """What :func:`load_series` loaded, in slice order (index 0 of the volume first)."""

    paths: tuple[str, ...]
    positions: tuple[tuple[float, float, float] | None, ...]
    spacing: float | None  #: mean gap between slice planes along the normal (mm); None if unknown
    orientation: tuple[float, ...] | None  #: Image Orientation (Patient): row cosines, column cosines
    pixel_spacing: tuple[float, float] | None  #: (row spacing, column spacing) as in (0028,0030)
    #: 4x4 map from (slice, row, column, 1) indices to LPS mm, slices in GDCM / SimpleITK's order (position along
    #: the normal, ascending); the slice column is the measured step between slice centres (with gantry tilt
    #: too); None when position, orientation or pixel spacing is missing or unusable
    affine: np.ndarray | None
    sort_rule: str  #: "position", "instance_number", or "none" for a single unordered slice
    irregularities: tuple[str, ...]  #: non-uniform spacing, gantry tilt, differing pixel spacing
    skipped: tuple[tuple[str, str], ...]  #: (path, reason) of files that are not DICOM images
    series_uid: str | None = None
    instance_numbers: tuple[int | None, ...] = ()
    layouts: tuple[PixelLayout, ...] = ()
    #: compressed slices: "<decoder> (<why>): <n> slices" for each decoder that ran (``kvdicom._series.decode``);
    #: empty for native slices, which are read, not decoded
    decoders: tuple[str, ...] = ()


# pixel reads ---------------------------------------------------------------------------

def _read_slice(layout: PixelLayout, view: np.ndarray) -> None:
    """``layout``'s pixel bytes into ``view`` (host), from the same file whose header was parsed: ``load``'s own
    read, so both wrap read errors and short reads alike."""
    loader.read_pixels(layout, "cpu", view)


def _submit_read(layout: PixelLayout, view) -> concurrent.futures.Future:
    return host_read.pool().submit(_read_slice, layout, view)


def _gpu_backend() -> series_stage.Backend:
    """Pinned staging, reads on kvdicom's pool, one async host-to-device copy per run of slots, one sync."""
    import cupy
    import cupyx

    stream = cupy.cuda.get_current_stream()

    def copy(dst, dst_offset, staging, staging_offset, nbytes):
        cupy.cuda.runtime.memcpyAsync(dst.data.ptr + dst_offset, staging.ctypes.data + staging_offset, nbytes,
                                      cupy.cuda.runtime.memcpyHostToDevice, stream.ptr)

    return series_stage.Backend(allocate=lambda n: cupyx.empty_pinned(n, dtype=np.uint8), read=_submit_read,
                                copy=copy, finish=stream.synchronize)


def _read_slices(layouts: list[PixelLayout], host: np.ndarray, starts: list[int], first: int, stop: int) -> None:
    for k in range(first, stop):
        _read_slice(layouts[k], host[starts[k] : starts[k] + layouts[k].nbytes])


def _read_all(layouts: list[PixelLayout], host: np.ndarray, starts: list[int]) -> None:
    """Every slice's bytes into ``host`` (1-D uint8) at ``starts``, concurrently; all or an error (the first in
    slice order: a run stops at its first)."""
    n = len(layouts)
    _in_runs(_read_slices, n, min(n, io_tuning.host_threads() * settings.SERIES_READS_PER_THREAD), layouts, host,
             starts)


# decode and rescale --------------------------------------------------------------

#: Layout fields that decide how bytes decode; slices equal in these decode as one multi-frame block.
_DECODE_FIELDS = ("transfer_syntax", "pixel_keyword", "nbytes", "dtype", "shape", "rows", "columns",
                  "samples_per_pixel", "planar_configuration", "bits_allocated", "bits_stored",
                  "pixel_representation", "photometric_interpretation", "little_endian", "swap_8bit_words")
#: one tuple per layout: 256 CT slices compared in 0.10 ms, field by field 0.37 ms (2-core CPU dev machine)
_decode_key = operator.attrgetter(*_DECODE_FIELDS)


def _output_dtype(layouts: list[PixelLayout], rescale: bool) -> np.dtype:
    """What ``np.stack`` of pydicom's per-slice arrays would have: the common type of what ``load`` gives each."""
    if not rescale:
        return layouts[0].dtype  # the slices share their stored dtype (series_order.check_stackable)
    return np.result_type(*{loader.output_dtype(layout, rescale) for layout in layouts})


def _stored_volume(layouts, xp, raw, target):
    """Decode ``raw`` (all slices' bytes, slice order) into ``target`` (stored dtype) on ``xp``'s device.

    Where ``raw`` is ``target``'s own memory (:func:`kvdicom._pixels.decode.decodes_in_place`), decoding
    returns a view of it and nothing is copied; ``may_share_memory`` (a bounds
    check: CuPy's exact ``shares_memory`` sorts every element's address) tells.
    """
    first = layouts[0]
    n = len(layouts)
    decode_key = _decode_key(first)
    uniform = all(_decode_key(layout) == decode_key for layout in layouts)
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


def _rescale_slices(stored, slopes, intercepts, out, first: int, stop: int) -> None:
    for i in range(first, stop):
        # pydicom: arr.astype(float64) * slope, then += intercept; the float64 loop casts each
        # element exactly as astype does, so the results are the same bits
        np.multiply(stored[i], slopes[i], out=out[i], dtype=np.float64)
        np.add(out[i], intercepts[i], out=out[i])


def _in_runs(fn, n: int, tasks: int, *args) -> None:
    """``fn(*args, first, stop)`` over ``range(n)`` cut into ``tasks`` runs of slices, side by side on
    ``host_read.pool()`` threads (in the caller's thread for one); every run done, errors or not, before the
    first error is raised (no task still writes after it returns)."""
    if tasks <= 1:
        fn(*args, 0, n)
        return
    bounds = np.linspace(0, n, tasks + 1).astype(int).tolist()
    host_read.wait_all([host_read.pool().submit(fn, *args, a, b) for a, b in itertools.pairwise(bounds) if b > a])


def _rescale_host(stored, slopes, intercepts, out) -> None:
    """``out[i] = float64(stored[i]) * slopes[i] + intercepts[i]`` on ``host_read.pool()`` threads.

    One pass per slice instead of three over the whole volume, and the
    float64 pages are first touched in parallel (NumPy releases the GIL in
    ufunc loops); 256 x 512² int16 took 276 ms in one thread on the H200
    device's host (a one-off profiler, since removed).
    """
    n = len(stored)
    tasks = min(n, io_tuning.host_threads() * 4, max(1, stored.size // settings.RESCALE_TASK_ELEMENTS))
    _in_runs(_rescale_slices, n, tasks, stored, slopes, intercepts, out)


def _apply_modality(stored, layouts, out, xp) -> None:
    """``out[i] = apply_modality_lut(stored[i], ds_i)`` for every slice, as pydicom computes it."""
    transforms = [layout.modality for layout in layouts]
    scalar = all(t.kind == "rescale" and not isinstance(t.slope, tuple) and not isinstance(t.intercept, tuple)
                 for t in transforms)
    if scalar and out.dtype == np.float64 and xp is np:
        _rescale_host(stored, [t.slope for t in transforms], [t.intercept for t in transforms], out)
        return
    if scalar and out.dtype == np.float64:
        # float64(x) * slope, then + intercept: pydicom's two steps, element by element
        extra = (1,) * (stored.ndim - 1)
        slopes = xp.asarray(np.array([t.slope for t in transforms], dtype=np.float64).reshape((-1,) + extra))
        intercepts = xp.asarray(np.array([t.intercept for t in transforms], dtype=np.float64).reshape((-1,) + extra))
        modality.to_float64(stored, out)  # CuPy's plain cast flushes float32 subnormals
        out *= slopes
        out += intercepts
        return
    for i, layout in enumerate(layouts):
        out[i] = modality.apply(stored[i], layout)


def _starts(sizes) -> list[int]:
    """Each piece's offset when ``sizes`` are laid end to end, and their total last."""
    return np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()


def _slice_starts(layouts) -> list[int]:
    """Each slice's byte offset in the series' stored bytes, and their total last."""
    return _starts([layout.nbytes for layout in layouts])


def _raw_bytes(layouts, stored, out_dtype, xp, total: int):
    """Where the slices' stored bytes go (1-D uint8): ``stored``'s own memory where they are the output as they
    are (:func:`kvdicom._pixels.decode.decodes_in_place`), else ``total`` bytes of scratch to decode from."""
    direct = out_dtype == layouts[0].dtype and all(decodes_in_place(layout) for layout in layouts)
    return stored.view(xp.uint8).reshape(-1) if direct else xp.empty(total, dtype=xp.uint8)


def _read_native(layouts, stored, out_dtype, device, xp) -> None:
    """Native slices: all bytes read concurrently into one buffer, decoded into ``stored``."""
    starts = _slice_starts(layouts)
    raw = _raw_bytes(layouts, stored, out_dtype, xp, starts[-1])
    if devices.named(device).on_gpu:
        import cupyx

        staging = cupyx.empty_pinned(starts[-1], dtype=np.uint8)  # one pinned buffer for the whole series
        _read_all(layouts, staging, starts)
        raw.set(staging)  # the one host-to-device copy
        # asynchronous from pinned memory: finish it before ``staging`` goes back to CuPy's pinned pool
        xp.cuda.get_current_stream().synchronize()
    else:
        _read_all(layouts, raw, starts)
    _stored_volume(layouts, xp, raw, stored)


def _gather_native(staging, indices, layouts, stored, out_dtype, xp, backend) -> None:
    """Native slices already read into ``staging`` (input order): copied to their sorted slots, decoded."""
    raw = _raw_bytes(layouts, stored, out_dtype, xp, staging.slot * len(layouts))
    series_stage.gather(staging, indices, raw, backend)
    _stored_volume(layouts, xp, raw, stored)


def _decode_compressed(layouts, stored, device: str, values: list | None = None,
                       infos: list | None = None) -> tuple[str, ...]:
    """A series with compressed slices: all read concurrently, decoded together (:mod:`kvdicom._series.decode`).

    Native slices among them (a mixed series) are read and decoded one by one into their slots.
    ``values``, ``infos``: per slice, its bytes read already by a header worker and the frame facts it checked,
    or None. Returns which decoders ran.
    """
    packed = [(i, layout) for i, layout in enumerate(layouts) if layout.compressed]
    decoders = series_decode.decode_into([layout for _, layout in packed], stored, device, [i for i, _ in packed],
                                         None if values is None else [values[i] for i, _ in packed],
                                         None if infos is None else [infos[i] for i, _ in packed])
    native = [(i, layout) for i, layout in enumerate(layouts) if not layout.compressed]
    for i, layout in native:
        stored[i] = decode(loader.read_pixels(layout, device), layout)
    return decoders + ((f"native: {len(native)} slices",) if native else ())


# pixel bytes the header workers read (long series) ----------------------------------------------


@dataclass
class _Shared:
    """This load's use of the pool's shared buffer: the buffer, the workers' reads into it, the input order."""

    owner: object  #: kvdicom._io.shared_staging.SharedStaging, released after the load
    buffer: np.ndarray  #: the reserved bytes, page-locked
    reads: series_headers.SharedReads
    index: dict = dataclasses.field(default_factory=dict)  #: id(header) -> input index
    early: early_copy.EarlyCopy | None = None  #: native chunks copied to the device as they arrive

    def read_headers(self, paths: list[str]) -> list:
        """Every header, the workers reading each file's bytes; each chunk's span copied to the device as it
        arrives (:mod:`kvdicom._series.early_copy`)."""
        copy = None if self.early is None else lambda batch: self.early.chunk(batch, self.reads.results)
        headers = series_headers.read_headers(paths, True, self.reads, on_batch=copy)
        self.index = {id(h): i for i, h in enumerate(headers)}
        return headers

    def values(self, ordered) -> list:
        """Per ordered header, its bytes in the buffer, or None where no worker read them (read them here);
        a worker's failed read of a slice of the volume is its :class:`DicomLoadError`."""
        out = []
        for header in ordered:
            i = self.index[id(header)]
            got = self.reads.results.get(i)
            if isinstance(got, str):
                raise DicomLoadError(header.path, got)
            if got is None or got != series_headers.staged_nbytes(header.layout):
                out.append(None)
                continue
            offset = self.reads.slots[i][0]
            out.append(self.buffer[offset : offset + got])
        return out

    def frame_infos(self, ordered) -> list:
        """Per ordered header, the frame facts its worker checked (compressed slices), or None."""
        return [self.reads.infos.get(self.index[id(header)]) for header in ordered]


def _take_shared(paths: list[str], series_uid: str | None, pin: bool = True, xp=None) -> _Shared | None:
    """The pool's shared buffer sized for ``paths`` (a slot per file, its size on disk), taken for this load;
    None where the headers are not parsed in the pool, the buffer is missing or busy, or the files too large.

    ``pin``: page-locked for CUDA. ``xp``: the device array module whose copy of the buffer native chunks go to
    as they arrive (:mod:`kvdicom._series.early_copy`; NumPy stands in for CuPy in the CPU tests); None on the
    CPU path, which copies each slice from the buffer to the volume once the slices are sorted."""
    if not series_headers.use_pool(len(paths)):
        return None
    try:
        series_headers.header_pool().start()
    except BrokenProcessPool:
        return None
    owner = process_pool.staging()
    if owner is None or not owner.acquire():
        return None
    try:
        sizes = [series_stage.file_size(p) for p in paths]
        total = sum(sizes)
        if not 0 < total <= settings.SHARED_STAGING_MAX_BYTES:
            owner.release()
            return None
        buffer = owner.reserve(total, pin=pin)
    except OSError:  # no memory for the buffer: read as before
        owner.release()
        return None
    except BaseException:
        owner.release()
        raise
    offsets = _starts(sizes)
    reads = series_headers.SharedReads(owner.fd, owner.size, list(zip(offsets, sizes)), series_uid)
    early = None if xp is None else early_copy.EarlyCopy(buffer, reads.slots, xp)
    return _Shared(owner, buffer, reads, early=early)


def _copy_slices(values: list, raw: np.ndarray, starts: list[int], first: int, stop: int) -> None:
    for k in range(first, stop):
        np.copyto(raw[starts[k] : starts[k] + values[k].nbytes], values[k])


def _copy_on_host(values: list, raw: np.ndarray, starts: list[int]) -> None:
    """Each slice from the shared buffer to its place in ``raw``, on ``host_read.pool()`` threads (NumPy's copy
    releases the GIL), a few slices a task."""
    n = len(values)
    tasks = min(n, io_tuning.host_threads() * 2, max(1, starts[-1] // settings.HOST_COPY_TASK_BYTES))
    _in_runs(_copy_slices, n, tasks, values, raw, starts)


def _place_shared(values: list, layouts, stored, out_dtype, xp, early=None, indices=None) -> None:
    """Native slices a header worker read into the (page-locked) shared buffer, each to its sorted place on
    the device, then decoded as :func:`_read_native` decodes: gathered from the chunks already copied there
    (``early``, ``indices``: each slice's input index) where they cover every slice, else one async copy
    each from the host and one sync."""
    starts = _slice_starts(layouts)
    raw = _raw_bytes(layouts, stored, out_dtype, xp, starts[-1])
    nbytes = layouts[0].nbytes
    if early is not None and early.covers(indices) and all(layout.nbytes == nbytes for layout in layouts):
        early.gather(indices, nbytes, raw)
        _stored_volume(layouts, xp, raw, stored)
        return
    if xp is np:  # the CPU path (and the tests' stand-in for the device)
        _copy_on_host(values, raw, starts)
        _stored_volume(layouts, xp, raw, stored)
        return
    stream = xp.cuda.get_current_stream()
    try:
        for value, start in zip(values, starts):
            xp.cuda.runtime.memcpyAsync(raw.data.ptr + start, value.ctypes.data, value.nbytes,
                                        xp.cuda.runtime.memcpyHostToDevice, stream.ptr)
    finally:
        stream.synchronize()  # the shared buffer is reused by the next load only after its copies ran
    _stored_volume(layouts, xp, raw, stored)


def _empty(xp, shape, dtype, shared: _Shared | None, prefault: Prefault | None = None):
    """``xp.empty``; where the device has no room, the load's early device copy (as many bytes as the files)
    is given back first and the volume tried again, so a load that fitted before early copies still fits. On
    the CPU path, the memory faulted in while the headers were parsed, where it has the size asked for, else
    a freed volume's memory kept for the next load (:mod:`kvdicom._io.host_memory`)."""
    if prefault is not None:
        array = prefault.take(shape, dtype)
        if array is not None:
            return array
    if xp is np:
        return host_memory.empty(shape, dtype)
    try:
        return xp.empty(shape, dtype=dtype)
    except MemoryError:  # CuPy's OutOfMemoryError is one
        if shared is None or shared.early is None or shared.early.mirror is None:
            raise
        shared.early.drop()
        return xp.empty(shape, dtype=dtype)


# the entry point --------------------------------------------------------------------

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
    where = devices.get(device)  # ValueError, GpuUnavailableError: before any file work, as kvdicom.load
    loader.check_out_array(out, device)  # ValueError for the wrong kind of array, as kvdicom.load
    return _load(source, where.xp, device, rescale, series_uid, out, _gpu_backend() if where.on_gpu else None)


def _load(source, xp, device, rescale, series_uid, out, backend: series_stage.Backend | None):
    """:func:`load_series` on ``xp``'s device; with ``backend``, the header workers read the pixel bytes into
    the pool's shared buffer (long series), else reads overlap the header parse (staged)."""
    paths, name = series_headers.list_files(source)
    # the header workers read the pixel bytes into the shared buffer (long series); on the GPU path (``backend``)
    # page-locked, its native chunks copied to the device as they arrive
    shared = _take_shared(paths, series_uid, pin=backend is not None and xp is not np,
                          xp=xp if backend is not None else None)
    try:
        return _load_files(paths, name, xp, device, rescale, series_uid, out, backend, shared)
    finally:
        if shared is not None:
            try:
                if shared.early is not None:
                    shared.early.finish()  # copies from the buffer done before another load may fill it
            finally:
                shared.owner.release()


def _load_files(paths, name, xp, device, rescale, series_uid, out, backend, shared: _Shared | None):
    prefault = Prefault(paths) if shared is None and backend is None and out is None else None
    try:
        return _load_parsed(paths, name, xp, device, rescale, series_uid, out, backend, shared, prefault)
    finally:
        if prefault is not None:
            prefault.close()  # a failed load, or a volume of another size: its memory is dropped


def _load_parsed(paths, name, xp, device, rescale, series_uid, out, backend, shared: _Shared | None,
                 prefault: Prefault | None):
    staging = None
    if shared is not None:
        headers = shared.read_headers(paths)
    elif backend is not None:
        # closed here, not when collected: a failed stage must not leave the header run holding the workers
        with contextlib.closing(series_headers.header_batches(paths)) as batches:
            staging = series_stage.stage(paths, batches, backend, series_uid)
        headers = staging.headers
    else:
        headers = series_headers.read_headers(paths)
    skipped = tuple((h.path, h.skip) for h in headers if h.skip is not None)
    if series_uid is not None:  # a broken file beside the series asked for is not its business: listed, not fatal
        broken = [h for h in headers if h.error is not None]
        skipped += tuple((h.path, f"unreadable, so not known to be of series {series_uid}: {h.error}") for h in broken)
        headers = [h for h in headers if h.error is None]
    series_order.refuse_errors(headers)
    images = series_order.pick_series([h for h in headers if h.layout is not None], series_uid, name)
    series_order.check_stackable(images)
    ordered, rule, distances = series_order.order(images)
    spacing, irregular, pixel_spacing, affine = series_order.geometry(ordered, rule, distances)
    layouts = [h.layout for h in ordered]
    if rescale:
        for layout in layouts:
            modality.check(layout)

    n, first = len(layouts), layouts[0]
    shape = (n,) + first.shape
    out_dtype = _output_dtype(layouts, rescale)
    if out is not None:
        loader.check_out_fits(name, out, shape, out_dtype, rescale, "the series")
    series_decode.check_expansion(name, layouts)  # before anything is allocated for the volume
    if prefault is not None:  # a prediction of another size is dropped before the volume is allocated
        prefault.keep_if(shape, out_dtype, first.dtype)
    volume = out if out is not None else _empty(xp, shape, out_dtype, shared, prefault)
    # where the stored-dtype slices are decoded: the volume itself, or one scratch volume
    stored = volume if out_dtype == first.dtype else _empty(xp, shape, first.dtype, shared, prefault)
    indices = staging.indices(ordered) if staging is not None else None
    values = shared.values(ordered) if shared is not None else None
    decoders: tuple[str, ...] = ()
    if any(layout.compressed for layout in layouts):
        decoders = _decode_compressed(layouts, stored, device, values,
                                      shared.frame_infos(ordered) if shared is not None else None)
    elif values is not None and all(v is not None for v in values):
        _place_shared(values, layouts, stored, out_dtype, xp, shared.early, [shared.index[id(h)] for h in ordered])
    elif staging is not None and staging.covers(indices):
        _gather_native(staging, indices, layouts, stored, out_dtype, xp, backend)
    else:  # not staged (slices of differing byte counts): read after sorting
        _read_native(layouts, stored, out_dtype, device, xp)
    if stored is not volume:
        _apply_modality(stored, layouts, volume, xp)
    elif rescale and any(layout.modality.kind != "none" for layout in layouts):
        _apply_modality(stored.copy(), layouts, volume, xp)  # LUT to the same dtype

    info = SeriesInfo(
        paths=tuple(layout.path for layout in layouts),
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
        decoders=decoders,
    )
    return volume, info

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
   (:func:`kvdicom._series.native.read_all`): the volume itself where the stored bytes are the
   output, else one scratch buffer; on long series the header workers read
   each file's bytes right after parsing it, into one buffer they share
   (:mod:`kvdicom._series.worker_reads`, :mod:`kvdicom._io.shared_staging`): on the CPU each
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
   a layout) and, with ``rescale=True``, apply each slice's own modality LUT
   (:mod:`kvdicom._series.volume`).

A refusal is a :class:`DicomLoadError` naming the file(s); nothing is returned
unless every slice was read and checked.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from kvdicom import _loader as loader
from kvdicom._header.layout import PixelLayout
from kvdicom._io import device as devices
from kvdicom._io import host_memory
from kvdicom._io.readahead import Readahead
from kvdicom._pixels import modality
from kvdicom._pixels.decode import decode
from kvdicom._series import decode as series_decode
from kvdicom._series import headers as series_headers
from kvdicom._series import native, worker_reads
from kvdicom._series import order as series_order
from kvdicom._series import stage as series_stage
from kvdicom._series import volume as series_volume
from kvdicom._series.prefault import Prefault
from kvdicom._series.worker_reads import WorkerReads


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


def _empty(xp, shape, dtype, shared: WorkerReads | None, prefault: Prefault | None = None):
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
    return _load(source, where.xp, device, rescale, series_uid, out, native.gpu_backend() if where.on_gpu else None)


def _load(source, xp, device, rescale, series_uid, out, backend: series_stage.Backend | None):
    """:func:`load_series` on ``xp``'s device; with ``backend``, the header workers read the pixel bytes into
    the pool's shared buffer (long series), else reads overlap the header parse (staged)."""
    paths, name = series_headers.list_files(source)
    with Readahead(paths):  # a cold series: every file hinted to the kernel while the headers are parsed
        return _load_listed(paths, name, xp, device, rescale, series_uid, out, backend)


def _load_listed(paths, name, xp, device, rescale, series_uid, out, backend: series_stage.Backend | None):
    # the header workers read the pixel bytes into the shared buffer (long series); on the GPU path (``backend``)
    # page-locked, its native chunks copied to the device as they arrive. On the CPU a native series is read by
    # this process after the sort, straight into the volume, and the workers parse only: 256 CT slices of 512²
    # on an H200, three rounds of alternated processes: 14.98 / 14.42 / 18.62 ms against 19.40 / 18.23 / 20.96
    # with the workers' reads and the copy from their buffer (docs/loader.md)
    first, images_from = _first_native_image(paths) if backend is None else (None, 0)
    shared = None
    if first is None:
        shared = worker_reads.take(paths, series_uid, pin=backend is not None and xp is not np,
                                   xp=xp if backend is not None else None)
    try:
        return _load_files(paths, name, xp, device, rescale, series_uid, out, backend, shared, first, images_from)
    finally:
        if shared is not None:
            try:
                if shared.early is not None:
                    shared.early.finish()  # copies from the buffer done before another load may fill it
            finally:
                shared.owner.release()


#: Files looked at for the first image's layout: a folder may list files that are no image first (a
#: ``DICOMDIR``, which sorts before lower-case names, a text file), and one of those sent a native series to the
#: workers' reads and the copy from their buffer.
FIRST_IMAGE_LOOKS = 4


def _first_native_image(paths: list[str]) -> tuple[PixelLayout | None, int]:
    """The layout of the listing's first image and its index in ``paths`` (past up to :data:`FIRST_IMAGE_LOOKS`
    files that are skipped: not DICOM, no image) where the headers go to the workers (a long series) and it is
    native, else ``(None, 0)``: then the CPU path reads the slices itself after the sort (compiled reads, the GIL
    released), not the workers into the shared buffer and a copy from it. Compressed series keep the workers'
    reads (and their codestream checks). Both serve the volume's prediction (:class:`Prefault`): the layout, which
    it would read again, and the files from that image on (those skipped before it are no slices)."""
    if not paths or not series_headers.use_pool(len(paths)):
        return None, 0
    for index, path in enumerate(paths[:FIRST_IMAGE_LOOKS]):
        header = series_headers.read_header(path)
        if header.skip is None:
            return (header.layout, index) if isinstance(header.layout, PixelLayout) else (None, 0)
    return None, 0


def _load_files(paths, name, xp, device, rescale, series_uid, out, backend, shared: WorkerReads | None,
                first: PixelLayout | None, images_from: int = 0):
    """``first``: the first image's native layout where :func:`_first_native_image` read it already, the
    ``images_from``-th of ``paths``."""
    predict = shared is None and backend is None and out is None
    prefault = Prefault(paths[images_from:], first) if predict else None
    try:
        return _load_parsed(paths, name, xp, device, rescale, series_uid, out, backend, shared, prefault)
    finally:
        if prefault is not None:
            prefault.close()  # a failed load, or a volume of another size: its memory is dropped


def _load_parsed(paths, name, xp, device, rescale, series_uid, out, backend, shared: WorkerReads | None,
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
    out_dtype = series_volume.output_dtype(layouts, rescale)
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
        worker_reads.place(values, layouts, stored, out_dtype, xp, shared.early, [shared.index[id(h)] for h in ordered])
    elif staging is not None and staging.covers(indices):
        native.gather_native(staging, indices, layouts, stored, out_dtype, xp, backend)
    else:  # not staged (slices of differing byte counts): read after sorting
        native.read_native(layouts, stored, out_dtype, device, xp)
    if stored is not volume:
        series_volume.apply_modality(stored, layouts, volume, xp)
    elif rescale and any(layout.modality.kind != "none" for layout in layouts):
        series_volume.apply_modality(stored.copy(), layouts, volume, xp)  # LUT to the same dtype

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

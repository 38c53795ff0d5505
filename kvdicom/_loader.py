"""``kvdicom.load``: header parse → pixel layout → read at the pixel-data offset → decode."""

from __future__ import annotations

import os

import numpy as np

from kvdicom._codecs import route
from kvdicom._header.inspect import opened_layout
from kvdicom._header.layout import PixelLayout
from kvdicom._io import device as devices
from kvdicom._io import host_read, known_reads
from kvdicom._pixels import modality
from kvdicom._pixels.decode import _correct_unused_bits, array_module, decode, decodes_in_place
from kvdicom.errors import DicomLoadError

DEVICES = devices.DEVICES


def _allocate(layout: PixelLayout, device: str):
    """The read buffer, sized from a layout already checked against the file size."""
    return devices.named(device).empty(layout.nbytes, np.uint8)


def _bits_per_chunk(layout: PixelLayout, device: str, buffer):
    """The unused-bit correction as a per-chunk step of the host read, or None where decode must do it.

    Only where decoding is a view of the read bytes (:func:`decodes_in_place`): each read chunk is then
    corrected by the thread that read it, while in cache. On the 25 MiB enhanced MR file (12 of 16 bits
    stored) the separate pass took 1.1 ms on the H200 machine after a 0.7 ms pooled read.
    """
    if devices.named(device).on_gpu or not layout.unused_high_bits or not decodes_in_place(layout):
        return None
    shift = layout.unused_high_bits
    return lambda start, stop: _correct_unused_bits(buffer[start:stop].view(layout.dtype), shift)


def read_pixels(layout: PixelLayout, device: str = "cuda", buffer=None, *, correct_bits: bool = False,
                fd: int | None = None):
    """The raw pixel bytes of ``layout`` as a 1-D uint8 array on ``device``.

    Read into ``buffer`` (a contiguous 1-D uint8 array or view of ``layout.nbytes``
    bytes on ``device``) when given, else into a new one. The file must still be
    the one ``layout.file_id`` names, before and after the read; any failure
    after the header was read (file changed, deleted, unreadable) is a
    :class:`DicomLoadError` naming the file.

    ``correct_bits``: on the host, correct unused high bits as each chunk is
    read, where that can be done (then ``decode(..., bits_corrected=True)``);
    returns ``(buffer, corrected)`` instead of the buffer. ``fd``: the header's open file (else the path is
    opened again).
    """
    if buffer is None:
        buffer = _allocate(layout, device)
    then = _bits_per_chunk(layout, device, buffer) if correct_bits else None
    checked_read(layout, devices.named(device).read_into, layout.path, buffer, layout.offset,
                 file_id=layout.file_id, fd=fd, then=then)
    return (buffer, then is not None) if correct_bits else buffer


def checked_read(layout: PixelLayout, read, *args, **kwargs) -> None:
    """``read(*args, **kwargs)`` of ``layout``'s pixel bytes: an ``OSError`` or a short count becomes a
    :class:`DicomLoadError` naming the file (every pixel read after a header goes through here)."""
    try:
        got = read(*args, **kwargs)
    except DicomLoadError:
        raise
    except OSError as exc:
        raise DicomLoadError(
            layout.path, f"cannot read the pixel data after the header ({type(exc).__name__}: {exc}); "
            "the file was changed, removed or made unreadable in between"
        ) from exc
    if got != layout.nbytes:
        raise DicomLoadError(
            layout.path, f"read {got} of {layout.nbytes} pixel bytes at offset {layout.offset}; did the file change?"
        )


def read_host_slice(layout: PixelLayout, view: np.ndarray) -> None:
    """``layout``'s pixel bytes into the host ``view``, from the same file whose header was parsed: the one slice
    read of a series, in its parent (:mod:`kvdicom._series.native`) and in its header workers
    (:mod:`kvdicom._series.headers`). In C where built (:mod:`kvdicom._io.known_reads`), else, and for a file
    where C stops, :func:`read_host_python`, which raises the file's :class:`DicomLoadError`."""
    known_reads.read_range(layout.path, layout.offset, view, layout.file_id, lambda: read_host_python(layout, view))


def read_host_python(layout: PixelLayout, view: np.ndarray) -> None:
    """:func:`read_host_slice` in Python: with the fewest calls where the header gave the file's identity
    (:func:`kvdicom._io.host_read.read_known`), else as ``load`` reads (:func:`read_pixels`)."""
    if layout.file_id is None:
        read_pixels(layout, "cpu", view)
    else:
        checked_read(layout, host_read.read_known, layout.path, view, layout.offset, layout.file_id)


def _read_decoded(layout: PixelLayout, device: str, buffer=None, fd: int | None = None):
    """Read then decode, the unused bits corrected during the host read where possible."""
    raw, corrected = read_pixels(layout, device, buffer, correct_bits=True, fd=fd)
    return decode(raw, layout, bits_corrected=corrected)


def output_dtype(layout: PixelLayout, rescale: bool = False) -> np.dtype:
    """The dtype ``load`` returns for ``layout`` (shape: ``layout.shape``)."""
    if rescale and layout.modality.kind == "lut":
        return np.dtype(layout.modality.lut.dtype)
    if rescale and layout.modality.kind == "rescale":
        return np.dtype(np.float64)
    return layout.dtype


def check_out_array(out, device: str) -> None:
    """``out`` must be a writeable, C-contiguous array on ``device`` (checked before any file work)."""
    if out is None:
        return
    module = type(out).__module__.split(".")[0]
    expected = devices.named(device).library
    if module != expected or not hasattr(out, "flags"):
        raise ValueError(f"out must be a {expected} array for device={device!r}, "
                         f"not {type(out).__module__}.{type(out).__name__}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if module == "numpy" and not out.flags.writeable:
        raise ValueError("out must be writeable")


def check_out_fits(path: str, out, shape: tuple, dtype, rescale: bool, what: str = "this file's pixel data") -> None:
    """``out`` must have the shape and dtype the load returns (``load`` and ``load_series`` alike)."""
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise DicomLoadError(
            path, f"out has shape {tuple(out.shape)} and dtype {out.dtype}, but {what} "
                  f"{'(rescaled) ' if rescale else ''}is {tuple(shape)} {dtype}",
        )


def _check_out_fits(layout: PixelLayout, out, rescale: bool) -> None:
    check_out_fits(layout.path, out, layout.shape, output_dtype(layout, rescale), rescale)


def _load_into(layout: PixelLayout, device: str, rescale: bool, out, fd: int):
    """Decode into ``out``: straight into its memory where decoding is a view, else decode then copy."""
    if not rescale and decodes_in_place(layout) and out.nbytes == layout.nbytes:
        raw = out.reshape(-1).view(np.uint8)
        _read_decoded(layout, device, raw, fd)  # in place: unused bits corrected in out
        return out
    arr = _read_decoded(layout, device, fd=fd)
    if rescale:
        arr = modality.apply(arr, layout)
    array_module(out).copyto(out, arr)
    return out


def load(path: str | os.PathLike, device: str = "cuda", *, force: bool = False, rescale: bool = False, out=None):
    """Load the pixel data of a DICOM file (native, or compressed: see :mod:`kvdicom._header.compressed`).

    Returns what ``pydicom.dcmread(path, force=force).pixel_array`` returns, in
    native byte order: a CuPy array for ``device="cuda"``, a NumPy array for
    ``device="cpu"``. With ``rescale=True``, returns
    ``pydicom.pixels.apply_modality_lut(pixel_array, ds)`` instead, computed on
    the same device (see :mod:`kvdicom._pixels.modality`).

    ``out``: an array on ``device`` of the shape and dtype that would be
    returned (see :func:`output_dtype`), filled and returned instead of a new
    one; where no decoding is needed the pixels are read straight into it.
    After an error its contents are undefined.

    Raises (see the README's contract): :class:`GpuUnavailableError` for
    ``device="cuda"`` without CuPy/KvikIO, ``ValueError`` for a bad ``device``
    or ``out`` array, all before any file work; the ``OSError`` of ``open()``
    (``FileNotFoundError``, ``PermissionError``) when the path cannot be
    opened; :class:`DicomLoadError` for everything after that, before
    allocating any pixel buffer where the header is at fault.
    """
    devices.get(device)  # ValueError, GpuUnavailableError: before any file work
    check_out_array(out, device)
    # The header's file stays open until the pixels are read: its inode cannot be
    # reused, so a file re-created at ``path`` meanwhile never passes for it.
    with opened_layout(path, force=force) as (layout, fd):
        if rescale:
            modality.check(layout)
        if layout.compressed:
            if out is not None:
                _check_out_fits(layout, out, rescale)
            arr = route.load(layout, device, fd)
            arr = modality.apply(arr, layout) if rescale else arr
            if out is None:
                return arr
            array_module(out).copyto(out, arr)
            return out
        if out is not None:
            _check_out_fits(layout, out, rescale)
            return _load_into(layout, device, rescale, out, fd)
        arr = _read_decoded(layout, device, fd=fd)
    return modality.apply(arr, layout) if rescale else arr

"""``kvdicom.load``: header parse → pixel layout → read at the pixel-data offset → decode."""

from __future__ import annotations

import os

import numpy as np

from kvdicom import device_read, host_read, modality
from kvdicom.decode import decode
from kvdicom.errors import DicomLoadError
from kvdicom.layout import PixelLayout, inspect

DEVICES = ("cuda", "cpu")


def _allocate(layout: PixelLayout, device: str):
    """The read buffer, sized from a layout already checked against the file size."""
    if device == "cuda":
        import cupy

        return cupy.empty(layout.nbytes, dtype=cupy.uint8)
    return np.empty(layout.nbytes, dtype=np.uint8)


def read_pixels(layout: PixelLayout, device: str = "cuda"):
    """The raw pixel bytes of ``layout`` as a 1-D uint8 array on ``device``."""
    buffer = _allocate(layout, device)
    reader = device_read if device == "cuda" else host_read
    got = reader.read_into(layout.path, buffer, layout.offset)
    if got != layout.nbytes:
        raise DicomLoadError(
            layout.path, f"read {got} of {layout.nbytes} pixel bytes at offset {layout.offset}; did the file change?"
        )
    return buffer


def _load_compressed_gpu(layout):
    from kvdicom import gpu_codec

    return gpu_codec.load(layout)


def load(path: str | os.PathLike, device: str = "cuda", *, force: bool = False, rescale: bool = False):
    """Load the pixel data of a DICOM file (native, or compressed: see :mod:`kvdicom.compressed`).

    Returns what ``pydicom.dcmread(path, force=force).pixel_array`` returns, in
    native byte order: a CuPy array for ``device="cuda"``, a NumPy array for
    ``device="cpu"``. With ``rescale=True``, returns
    ``pydicom.pixels.apply_modality_lut(pixel_array, ds)`` instead, computed on
    the same device (see :mod:`kvdicom.modality`). Raises
    :class:`DicomLoadError` for files it cannot load exactly, before
    allocating any pixel buffer.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    layout = inspect(path, force=force)
    if rescale:
        modality.check(layout)
    if getattr(layout, "compressed", False):
        from kvdicom import compressed

        arr = compressed.load_cpu(layout) if device == "cpu" else _load_compressed_gpu(layout)
        return modality.apply(arr, layout) if rescale else arr
    arr = decode(read_pixels(layout, device), layout)
    return modality.apply(arr, layout) if rescale else arr

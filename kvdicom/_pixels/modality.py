"""Opt-in modality LUT (``kvdicom.load(..., rescale=True)``), matching pydicom's ``apply_modality_lut``.

pydicom's rules (``pydicom.pixels.apply_modality_lut``, alias ``apply_rescale``):

* a non-empty (0028,3000) Modality LUT Sequence wins: each value is looked up
  in the first item's LUT Data (values below the first mapped value take entry
  0, values past the end take the last entry); the result is
  ``uint<LUT Descriptor[2]>``;
* otherwise, when **both** (0028,1053) Rescale Slope and (0028,1052) Rescale
  Intercept are present, ``arr.astype(float64) * slope + intercept`` (float64
  even for slope 1 and intercept 0);
* otherwise the array is returned unchanged (same dtype).

The header values are read once, by :func:`kvdicom._header.inspect.inspect`, into
:class:`kvdicom._header.layout.ModalityTransform`; anything pydicom would fail on, or that
kvdicom could not reproduce exactly, is recorded there as ``problem`` and
refused by :func:`check` before any pixel buffer is allocated. :func:`apply`
runs on the array's own device (NumPy or CuPy) with the same operations, so
the values are pydicom's bit for bit.
"""

from __future__ import annotations

import numpy as np

from kvdicom._header.layout import PixelLayout
from kvdicom._pixels.decode import array_module
from kvdicom.errors import DicomLoadError


def check(layout: PixelLayout) -> None:
    """Raise :class:`DicomLoadError` if ``rescale=True`` cannot match pydicom for ``layout``."""
    transform = layout.modality
    if transform.problem:
        raise DicomLoadError(layout.path, transform.problem)
    if transform.kind == "rescale":
        try:
            out = np.broadcast_shapes(layout.shape, np.shape(transform.slope))
            if np.broadcast_shapes(out, np.shape(transform.intercept)) != out:
                raise ValueError("the intercept would change the shape")
        except ValueError as exc:
            raise DicomLoadError(
                layout.path,
                f"(0028,1053) Rescale Slope {transform.slope!r} and (0028,1052) Rescale Intercept "
                f"{transform.intercept!r} do not broadcast over pixel data of shape {layout.shape} "
                f"({exc}); kvdicom supports single values",
            ) from exc


def _lookup(arr, layout: PixelLayout):
    """pydicom's Modality LUT Sequence lookup, with xp operations."""
    xp = array_module(arr)
    lut = layout.modality.lut
    table = xp.asarray(np.asarray(lut.data, dtype=lut.dtype))
    info = np.iinfo(arr.dtype)
    # ``arr >= first_map`` with first_map outside the dtype's range, exactly.
    if lut.first_map > info.max:
        mapped = xp.zeros(arr.shape, dtype=bool)
    elif lut.first_map <= info.min:
        mapped = xp.ones(arr.shape, dtype=bool)
    else:
        mapped = arr >= arr.dtype.type(lut.first_map)
    clipped = xp.zeros(arr.shape, dtype=arr.dtype)
    clipped[mapped] = arr[mapped] - arr.dtype.type(lut.first_map)  # wraps like NumPy; range checked in inspect
    xp.clip(clipped, 0, min(lut.nr_entries - 1, int(info.max)), out=clipped)
    if len(lut.data) < lut.nr_entries and clipped.size and int(clipped.max()) >= len(lut.data):
        raise DicomLoadError(
            layout.path,
            f"a pixel maps past the {len(lut.data)} entries of the (0028,3006) LUT Data, which "
            f"(0028,3002) LUT Descriptor says has {lut.nr_entries}; pydicom fails on it too",
        )
    return table[clipped]


#: float32 bits → float64, subnormals kept: ``mantissa × 2**-149`` is exact in float64; other values
#: (normal, zero, inf, NaN) convert exactly through the ordinary cast. Checked bit for bit on the H200.
_WIDEN_FLOAT32 = r"""
unsigned int e = (b >> 23) & 0xFF, m = b & 0x7FFFFF;
if (e == 0) { y = ((b >> 31) ? -1.0 : 1.0) * ((double)m * 1.401298464324817e-45); }
else { y = (double)__int_as_float((int)b); }
"""


def to_float64(arr, out=None):
    """``arr.astype(float64)`` as NumPy computes it, also for float32 subnormals on the GPU.

    Measured on the H200 (CuPy 14.2, CUDA 13.2): CuPy's float32 → float64 cast flushed subnormals to
    zero (1.4e-45 became 0.0, also in a kernel compiled with ``-ftz=false``), where NumPy and pydicom
    keep them; the GPU rescale property test caught it on Float Pixel Data. So float32 arrays on the
    GPU are widened from their bits (:data:`_WIDEN_FLOAT32`); everything else is the plain cast.
    """
    xp = array_module(arr)
    if xp is np or arr.dtype != np.float32:
        if out is None:
            return arr.astype(xp.float64)
        out[...] = arr
        return out
    bits = arr.view(xp.uint32)
    return _widen_kernel()(bits) if out is None else _widen_kernel()(bits, out)


def _widen_kernel():
    global _widen
    if _widen is None:
        import cupy

        _widen = cupy.ElementwiseKernel("uint32 b", "float64 y", _WIDEN_FLOAT32, "kvdicom_widen_float32")
    return _widen


_widen = None


def apply(arr, layout: PixelLayout):
    """The modality LUT of ``layout`` applied to the decoded ``arr``, on its own device."""
    check(layout)
    transform = layout.modality
    if transform.kind == "lut":
        return _lookup(arr, layout)
    if transform.kind == "rescale":
        xp = array_module(arr)
        slope, intercept = transform.slope, transform.intercept
        if isinstance(slope, tuple):
            slope = xp.asarray(slope, dtype=xp.float64)
        if isinstance(intercept, tuple):
            intercept = xp.asarray(intercept, dtype=xp.float64)
        out = to_float64(arr) * slope
        out += intercept
        return out
    return arr

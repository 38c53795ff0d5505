"""Raw pixel bytes to pydicom's ``pixel_array``, on NumPy or CuPy alike.

Every step takes the array module (``numpy`` or ``cupy``) from its input, so
the CPU and GPU loaders run the same code and any difference between them is
a difference in where the bytes came from, never in how they were decoded.
"""

from __future__ import annotations

from kvdicom._header.layout import PixelLayout
from kvdicom._pixels.color import ybr_full_to_rgb

#: Photometric interpretations pydicom's ``pixel_array`` converts to RGB by default.
CONVERTED_TO_RGB = ("YBR_FULL", "YBR_FULL_422")


def array_module(arr):
    """``cupy`` for a CuPy array, ``numpy`` otherwise, without importing CuPy on a CPU."""
    if type(arr).__module__.startswith("cupy"):
        import cupy

        return cupy
    import numpy

    return numpy


def _swap_bytes(raw, itemsize: int):
    """Reverse the bytes of each ``itemsize``-wide word (big endian → native)."""
    xp = array_module(raw)
    return xp.ascontiguousarray(raw.reshape(-1, itemsize)[:, ::-1]).reshape(-1)


def _unpack_bits(raw, count: int):
    """Bit-packed (Bits Allocated 1) data, least significant bit first, as uint8 0/1."""
    xp = array_module(raw)
    return xp.unpackbits(raw, bitorder="little")[:count]


def _expand_ybr_422(arr):
    """Y1 Y2 Cb Cr → Y1 Cb Cr Y2 Cb Cr, as pydicom does for native YBR_FULL_422."""
    xp = array_module(arr)
    out = xp.empty(arr.shape[0] // 2 * 3, dtype=arr.dtype)
    out[0::6] = arr[0::4]
    out[3::6] = arr[1::4]
    out[1::6] = arr[2::4]
    out[4::6] = arr[2::4]
    out[2::6] = arr[3::4]
    out[5::6] = arr[3::4]
    return out


def _reshape(arr, layout: PixelLayout):
    """pydicom's frame/row/column/sample order, planar configuration 1 transposed."""
    samples = layout.samples_per_pixel
    if samples > 1 and layout.planar_configuration == 1:
        planes = (samples, layout.rows, layout.columns)
        if layout.number_of_frames > 1:
            return arr.reshape((layout.number_of_frames,) + planes).transpose(0, 2, 3, 1)
        return arr.reshape(planes).transpose(1, 2, 0)
    return arr.reshape(layout.shape)


def _correct_unused_bits(arr, shift: int):
    """Clear the unused high bits of unsigned samples, sign-extend signed ones (pydicom's shift out and back).

    Unsigned host samples take one AND pass instead of two shifts, the same bits: on 200 × 256² uint16
    with 12 bits stored (the ``enhanced_mr`` case), 1.4 ms against 3.5 ms, one thread on the 2-core CPU
    dev machine. On the GPU the two shifts stay (not yet measured there; a pass costs microseconds).
    """
    xp = array_module(arr)
    if arr.dtype.kind == "u" and xp.__name__ == "numpy":
        xp.bitwise_and(arr, arr.dtype.type((1 << (arr.dtype.itemsize * 8 - shift)) - 1), out=arr)
        return arr
    xp.left_shift(arr, shift, out=arr)
    xp.right_shift(arr, shift, out=arr)
    return arr


def decode(raw, layout: PixelLayout, *, bits_corrected: bool = False):
    """Return the pixel array for ``raw``, the ``layout.nbytes`` bytes at ``layout.offset``.

    ``raw`` is a 1-D uint8 NumPy or CuPy array; the result lives on the same
    device and may share its memory. ``bits_corrected``: the unused high bits
    were already corrected in ``raw`` (during the read, ``kvdicom._loader``).
    """
    if layout.bits_allocated == 1:
        arr = _reshape(_unpack_bits(raw, layout.pixel_count), layout)
        # pydicom converts the unpacked samples too (found by bench/test_fuzz.py: 1-bit YBR_FULL, 3 columns)
        return ybr_full_to_rgb(arr) if layout.photometric_interpretation in CONVERTED_TO_RGB else arr

    itemsize = layout.dtype.itemsize
    stored = layout.stored_nbytes
    if layout.swap_8bit_words:
        raw = _swap_bytes(raw, 2)[:stored]
    elif not layout.little_endian and itemsize > 1:
        raw = _swap_bytes(raw[:stored], itemsize)
    arr = raw[:stored].view(layout.dtype)

    if layout.photometric_interpretation == "YBR_FULL_422":
        arr = _expand_ybr_422(arr)
    arr = _reshape(arr, layout)
    if layout.unused_high_bits and not bits_corrected:
        arr = _correct_unused_bits(arr, layout.unused_high_bits)
    if layout.photometric_interpretation in CONVERTED_TO_RGB:
        arr = ybr_full_to_rgb(arr)
    return arr


def decodes_in_place(layout: PixelLayout) -> bool:
    """Whether :func:`decode` returns a view of ``raw`` itself (no new array).

    True when the stored bytes already are the output array in native order:
    no bit unpacking, byte swap, YBR expansion or conversion, or planar
    transpose; the unused-bit correction runs in place. ``load(..., out=)``
    then reads straight into ``out``'s memory.
    """
    return (
        layout.bits_allocated != 1
        and not layout.swap_8bit_words
        and (layout.little_endian or layout.dtype.itemsize == 1)
        and layout.photometric_interpretation not in CONVERTED_TO_RGB
        and (layout.samples_per_pixel == 1 or layout.planar_configuration == 0)
        and layout.nbytes == layout.pixel_count * layout.dtype.itemsize
    )

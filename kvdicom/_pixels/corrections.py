"""pydicom's corrections on samples as a codec returned them, NumPy or CuPy alike.

A codec (nvImageCodec on the GPU, imagecodecs on the host) returns samples in
the codestream's own container and signedness; pydicom reinterprets them with
the header's Pixel Representation, widens to Bits Allocated, then corrects
(``pydicom.pixels.decoders.base``): JPEG 2000 re-signs from the codestream's
precision (``_apply_sign_correction``), JPEG-LS sign-extends signed samples
from the codestream's precision (the same function), and JPEG shifts out the
unused bits (``_correct_unused_bits``). One function for both routes, so the
host route's tests on the CPU check the GPU route's corrections too.
"""

from __future__ import annotations

import numpy as np

from kvdicom._pixels.decode import array_module


def finish(raw, layout, how):
    """pydicom's corrections on ``raw`` (frames, rows, cols, samples) as the decoder returned it.

    ``layout`` is a :class:`kvdicom._header.compressed.CompressedLayout`; ``how`` says what the codestream holds:
    ``raw_itemsize`` (bytes per sample the decoder returned), ``precision`` and ``signed`` (of the last
    frame, as pydicom takes them). Returns an array of ``layout.shape`` and ``layout.dtype``, in place
    where the decoder's container already has the header's width.
    """
    xp = array_module(raw)
    kind = "i" if layout.pixel_representation else "u"
    arr = raw.view(np.dtype(f"{kind}{how.raw_itemsize}"))
    if arr.dtype != layout.dtype:
        arr = arr.astype(layout.dtype)
    if layout.codec in ("jpeg2000", "htj2k"):
        mono = layout.photometric_interpretation in ("MONOCHROME1", "MONOCHROME2")
        shift = 8 * layout.dtype.itemsize - how.precision
        if mono and shift and how.signed != bool(layout.pixel_representation):
            xp.left_shift(arr, shift, out=arr)
            xp.right_shift(arr, shift, out=arr)
    elif layout.codec == "jpegls":
        shift = 8 * layout.dtype.itemsize - how.precision
        if layout.pixel_representation and shift:  # JPEG-LS has no sign: pydicom sign-extends from the precision
            xp.left_shift(arr, shift, out=arr)
            xp.right_shift(arr, shift, out=arr)
    elif layout.bits_allocated > layout.bits_stored:
        shift = layout.bits_allocated - layout.bits_stored
        xp.left_shift(arr, shift, out=arr)
        xp.right_shift(arr, shift, out=arr)
    return arr.reshape(layout.shape)

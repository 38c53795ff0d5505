"""YBR_FULL → RGB exactly as pydicom converts it, on NumPy or CuPy.

pydicom converts with a float32 matrix product, rounding at x.5; a GPU
re-implementation could round a few values the other way. Instead, pydicom's
own ``convert_color_space`` is run once per process over every (Y, Cb, Cr)
triple, and both devices look the result up: the same numbers by construction.
"""

from __future__ import annotations

import functools

import numpy as np
from pydicom.pixels.processing import convert_color_space


@functools.lru_cache(maxsize=1)
def _host_table() -> np.ndarray:
    """RGB for every 8-bit (Y, Cb, Cr), shape (256, 256, 256, 3), from pydicom (~50 MB, ~1 s)."""
    table = np.empty((256, 256, 256, 3), dtype=np.uint8)
    cb, cr = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), indexing="ij")
    for y in range(256):
        plane = np.stack([np.full_like(cb, y), cb, cr], axis=-1)
        table[y] = convert_color_space(plane, "YBR_FULL", "RGB")
    return table


@functools.lru_cache(maxsize=1)
def _device_table():
    import cupy

    return cupy.asarray(_host_table())


def ybr_full_to_rgb(arr):
    """``arr`` (..., 3) uint8 YBR_FULL as RGB, on the array's own device."""
    table = _host_table() if isinstance(arr, np.ndarray) else _device_table()
    return table[arr[..., 0], arr[..., 1], arr[..., 2]]

"""A series volume's stored bytes made into the volume: decoded as one block where the slices allow, and each
slice's modality LUT applied on kvdicom's host threads (:func:`apply_modality`)."""

from __future__ import annotations

import dataclasses
import itertools
import operator

import numpy as np

from kvdicom import _loader as loader
from kvdicom import settings
from kvdicom._header.layout import PixelLayout
from kvdicom._io import host_read
from kvdicom._io import tuning as io_tuning
from kvdicom._pixels import modality
from kvdicom._pixels.decode import decode

#: Layout fields that decide how bytes decode; slices equal in these decode as one multi-frame block.
_DECODE_FIELDS = ("transfer_syntax", "pixel_keyword", "nbytes", "dtype", "shape", "rows", "columns",
                  "samples_per_pixel", "planar_configuration", "bits_allocated", "bits_stored",
                  "pixel_representation", "photometric_interpretation", "little_endian", "swap_8bit_words")
#: one tuple per layout: 256 CT slices compared in 0.10 ms, field by field 0.37 ms (2-core CPU dev machine)
_decode_key = operator.attrgetter(*_DECODE_FIELDS)


def output_dtype(layouts: list[PixelLayout], rescale: bool) -> np.dtype:
    """What ``np.stack`` of pydicom's per-slice arrays would have: the common type of what ``load`` gives each."""
    if not rescale:
        return layouts[0].dtype  # the slices share their stored dtype (series_order.check_stackable)
    return np.result_type(*{loader.output_dtype(layout, rescale) for layout in layouts})


def stored_volume(layouts, xp, raw, target):
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


def rescale_slices(stored, slopes, intercepts, out, first: int, stop: int) -> None:
    for i in range(first, stop):
        # pydicom: arr.astype(float64) * slope, then += intercept; the float64 loop casts each
        # element exactly as astype does, so the results are the same bits
        np.multiply(stored[i], slopes[i], out=out[i], dtype=np.float64)
        np.add(out[i], intercepts[i], out=out[i])


def in_runs(fn, n: int, tasks: int, *args) -> None:
    """``fn(*args, first, stop)`` over ``range(n)`` cut into ``tasks`` runs of slices, side by side on
    ``host_read.pool()`` threads (in the caller's thread for one, and on a pool thread, where the runs could wait
    behind the very task that waits for them); every run done, errors or not, before the first error is raised
    (no task still writes after it returns)."""
    if tasks <= 1 or host_read.in_pool():
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
    in_runs(rescale_slices, n, tasks, stored, slopes, intercepts, out)


def apply_modality(stored, layouts, out, xp) -> None:
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


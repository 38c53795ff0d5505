"""Native (uncompressed) slices: every slice's bytes read concurrently into one buffer (the volume itself where the
stored bytes are the output), or gathered from the pinned staging their reads went to while the headers came in.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np

from kvdicom import _loader as loader
from kvdicom import settings
from kvdicom._header.layout import PixelLayout
from kvdicom._io import device as devices
from kvdicom._io import host_read, known_reads
from kvdicom._io import tuning as io_tuning
from kvdicom._pixels.decode import decodes_in_place
from kvdicom._series import stage as series_stage
from kvdicom._series.volume import in_runs, stored_volume


def submit_read(layout: PixelLayout, view) -> concurrent.futures.Future:
    return host_read.pool().submit(loader.read_host_slice, layout, view)


def gpu_backend() -> series_stage.Backend:
    """Pinned staging, reads on kvdicom's pool, one async host-to-device copy per run of slots, one sync."""
    import cupy
    import cupyx

    stream = cupy.cuda.get_current_stream()

    def copy(dst, dst_offset, staging, staging_offset, nbytes):
        cupy.cuda.runtime.memcpyAsync(dst.data.ptr + dst_offset, staging.ctypes.data + staging_offset, nbytes,
                                      cupy.cuda.runtime.memcpyHostToDevice, stream.ptr)

    return series_stage.Backend(allocate=lambda n: cupyx.empty_pinned(n, dtype=np.uint8), read=submit_read,
                                copy=copy, finish=stream.synchronize)


def _read_slices(layouts: list[PixelLayout], host: np.ndarray, starts: list[int], first: int, stop: int) -> None:
    known_reads.read_run(layouts, host, starts, first, stop,
                         lambda k: loader.read_host_python(layouts[k], host[starts[k] : starts[k] + layouts[k].nbytes]))


def read_all(layouts: list[PixelLayout], host: np.ndarray, starts: list[int]) -> None:
    """Every slice's bytes into ``host`` (1-D uint8) at ``starts``, concurrently; all or an error (the first in
    slice order: a run stops at its first)."""
    n = len(layouts)
    in_runs(_read_slices, n, min(n, io_tuning.host_threads() * settings.SERIES_READS_PER_THREAD), layouts, host,
            starts)


def offsets_of(sizes) -> list[int]:
    """Each piece's offset when ``sizes`` are laid end to end, and their total last."""
    return np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()


def slice_offsets(layouts) -> list[int]:
    """Each slice's byte offset in the series' stored bytes, and their total last."""
    return offsets_of([layout.nbytes for layout in layouts])


def raw_bytes(layouts, stored, out_dtype, xp, total: int):
    """Where the slices' stored bytes go (1-D uint8): ``stored``'s own memory where they are the output as they
    are (:func:`kvdicom._pixels.decode.decodes_in_place`), else ``total`` bytes of scratch to decode from."""
    direct = out_dtype == layouts[0].dtype and all(decodes_in_place(layout) for layout in layouts)
    return stored.view(xp.uint8).reshape(-1) if direct else xp.empty(total, dtype=xp.uint8)


def read_native(layouts, stored, out_dtype, device, xp) -> None:
    """Native slices: all bytes read concurrently into one buffer, decoded into ``stored``."""
    starts = slice_offsets(layouts)
    raw = raw_bytes(layouts, stored, out_dtype, xp, starts[-1])
    if devices.named(device).on_gpu:
        import cupyx

        staging = cupyx.empty_pinned(starts[-1], dtype=np.uint8)  # one pinned buffer for the whole series
        read_all(layouts, staging, starts)
        raw.set(staging)  # the one host-to-device copy
        # asynchronous from pinned memory: finish it before ``staging`` goes back to CuPy's pinned pool
        xp.cuda.get_current_stream().synchronize()
    else:
        read_all(layouts, raw, starts)
    stored_volume(layouts, xp, raw, stored)


def gather_native(staging, indices, layouts, stored, out_dtype, xp, backend) -> None:
    """Native slices already read into ``staging`` (input order): copied to their sorted slots, decoded."""
    raw = raw_bytes(layouts, stored, out_dtype, xp, staging.slot * len(layouts))
    series_stage.gather(staging, indices, raw, backend)
    stored_volume(layouts, xp, raw, stored)


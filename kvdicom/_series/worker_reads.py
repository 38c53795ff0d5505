"""Long series: the pixel bytes the header workers read into the pool's shared buffer, taken for one load and
placed in the volume (:mod:`kvdicom._io.shared_staging`; docs/loader.md, "Long series: the header workers read the
pixels")."""

from __future__ import annotations

import dataclasses
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from kvdicom import settings
from kvdicom._io import process_pool
from kvdicom._io import tuning as io_tuning
from kvdicom._series import early_copy
from kvdicom._series import headers as series_headers
from kvdicom._series import stage as series_stage
from kvdicom._series.native import offsets_of, raw_bytes, slice_offsets
from kvdicom._series.volume import in_runs, stored_volume
from kvdicom.errors import DicomLoadError


@dataclass
class WorkerReads:
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


def take(paths: list[str], series_uid: str | None, pin: bool = True, xp=None) -> WorkerReads | None:
    """The pool's shared buffer sized for ``paths`` (a slot per file, its size on disk), taken for this load;
    None where the headers are not parsed in the pool, the buffer is missing or busy, or the files too large.

    ``pin``: page-locked for CUDA. ``xp``: the device array module whose copy of the buffer native chunks go to
    as they arrive (:mod:`kvdicom._series.early_copy`; NumPy stands in for CuPy in the CPU tests); None on the
    CPU path, which decodes a compressed series' codestreams from the buffer (a series whose first file is a native
    image is read after the sort, not through the buffer)."""
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
    offsets = offsets_of(sizes)
    reads = series_headers.SharedReads(owner.fd, owner.size, list(zip(offsets, sizes)), series_uid)
    early = None if xp is None else early_copy.EarlyCopy(buffer, reads.slots, xp)
    return WorkerReads(owner, buffer, reads, early=early)


def copy_slices(values: list, raw: np.ndarray, starts: list[int], first: int, stop: int) -> None:
    for k in range(first, stop):
        np.copyto(raw[starts[k] : starts[k] + values[k].nbytes], values[k])


def copy_on_host(values: list, raw: np.ndarray, starts: list[int]) -> None:
    """Each slice from the shared buffer to its place in ``raw``, on ``host_read.pool()`` threads (NumPy's copy
    releases the GIL), a few slices a task."""
    n = len(values)
    tasks = min(n, io_tuning.host_threads() * 2, max(1, starts[-1] // settings.HOST_COPY_TASK_BYTES))
    in_runs(copy_slices, n, tasks, values, raw, starts)


def place(values: list, layouts, stored, out_dtype, xp, early=None, indices=None) -> None:
    """Native slices a header worker read into the (page-locked) shared buffer, each to its sorted place on
    the device, then decoded as :func:`read_native` decodes: gathered from the chunks already copied there
    (``early``, ``indices``: each slice's input index) where they cover every slice, else one async copy
    each from the host and one sync."""
    starts = slice_offsets(layouts)
    raw = raw_bytes(layouts, stored, out_dtype, xp, starts[-1])
    nbytes = layouts[0].nbytes
    if early is not None and early.covers(indices) and all(layout.nbytes == nbytes for layout in layouts):
        early.gather(indices, nbytes, raw)
        stored_volume(layouts, xp, raw, stored)
        return
    if xp is np:  # a CPU load whose first file was no native image (else it reads after the sort); the tests' stand-in
        copy_on_host(values, raw, starts)
        stored_volume(layouts, xp, raw, stored)
        return
    stream = xp.cuda.get_current_stream()
    try:
        for value, start in zip(values, starts):
            xp.cuda.runtime.memcpyAsync(raw.data.ptr + start, value.ctypes.data, value.nbytes,
                                        xp.cuda.runtime.memcpyHostToDevice, stream.ptr)
    finally:
        stream.synchronize()  # the shared buffer is reused by the next load only after its copies ran
    stored_volume(layouts, xp, raw, stored)


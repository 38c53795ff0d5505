"""Pixel reads started while later headers are still being parsed (``load_series(device="cuda")``).

Header parsing (process pool) and pixel reads (``kvdicom._io.host_read.pool()``)
ran one after the other and added up: 11.8 ms + 18.4 ms of a 44.7 ms GPU load
of 256 CT slices of 512² on the H200 device. Here, as each chunk of headers
comes back (:func:`kvdicom._series.headers.header_batches`), the reads of those
files are submitted at once, into one staging buffer (pinned host memory on
the GPU path) with a fixed-size slot per file; the slice order is only known
once every header is in, so :func:`gather` then copies each file's slot to
its sorted place in the destination (one host-to-device copy per run of
consecutive slots, no per-slice allocation).

Bounds: the slot size is the pixel bytes of the first single-frame native
(uncompressed) image header to arrive, and only files at least that large
(``os.stat``) get a slot, so the staging buffer never exceeds the bytes the
files hold; a file whose pixel bytes differ from the slot is not staged (the
caller then reads the series after sorting, as the CPU path does). Every
read checks the file's identity before and after (``file_id``); a read error
is kept per file and raised only for files that end up in the volume.

The buffer, the read submission and the copies are parameters
(:class:`Backend`), so the scheduling runs on the CPU with NumPy stand-ins
in the tests.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kvdicom._header.layout import PixelLayout
from kvdicom._series.headers import Header
from kvdicom.errors import DicomLoadError


@dataclass(frozen=True)
class Backend:
    """Where staged bytes go and how they move: pinned memory + CUDA copies, or NumPy stand-ins."""

    allocate: Callable[[int], Any]  #: a 1-D uint8 host buffer of that many bytes
    read: Callable[[PixelLayout, Any], concurrent.futures.Future]  #: submit one file's read into a view
    copy: Callable[[Any, int, Any, int, int], None]  #: (dst, dst offset, staging, staging offset, bytes)
    finish: Callable[[], None] = lambda: None  #: wait for the copies (before the staging buffer is freed)


@dataclass
class Staging:
    """The headers (input order) and what was read where."""

    headers: list[Header | None]
    slot: int | None = None  #: bytes per slot
    buffer: Any = None
    slots: dict[int, int] = field(default_factory=dict)  #: input index -> slot number
    errors: dict[int, BaseException] = field(default_factory=dict)  #: input index -> why its read failed
    _index: dict[int, int] = field(default_factory=dict)  #: id(header) -> input index

    def indices(self, ordered: list[Header]) -> list[int]:
        """Input indices of ``ordered`` headers."""
        return [self._index[id(h)] for h in ordered]

    def covers(self, indices: list[int]) -> bool:
        """Whether every one of these files was read into a slot (failed reads count as covered: they raise)."""
        return self.slot is not None and all(
            i in self.slots and self.headers[i].layout.nbytes == self.slot for i in indices
        )


def _stageable(header: Header, series_uid: str | None) -> bool:
    layout = header.layout
    return (
        isinstance(layout, PixelLayout)
        and not layout.compressed
        and layout.number_of_frames == 1
        and layout.nbytes > 0
        and (series_uid is None or header.keys.series_uid == series_uid)
    )


def file_size(path: str) -> int:
    """``path``'s size on disk, 0 where it cannot be looked at (its header parse says why): what bounds a slot."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # its header parse says what is wrong


def stage(
    paths: list[str],
    batches: Iterable[list[tuple[int, Header]]],
    backend: Backend,
    series_uid: str | None = None,
) -> Staging:
    """Collect every header from ``batches`` and submit each stageable file's read as soon as its header is in.

    Returns only after every submitted read has finished (also when
    something here raises), so no read writes into the buffer afterwards.
    """
    staging = Staging(headers=[None] * len(paths))
    futures: dict[int, concurrent.futures.Future] = {}
    ranks: dict[int, int] = {}
    try:
        for batch in batches:
            for index, header in batch:
                staging.headers[index] = header
                staging._index[id(header)] = index
                if not _stageable(header, series_uid):
                    continue
                nbytes = header.layout.nbytes
                if staging.slot is None:
                    # one slot per file large enough to hold these pixel bytes: never more than the files hold
                    big = [i for i, p in enumerate(paths) if file_size(p) >= nbytes]
                    ranks = {i: r for r, i in enumerate(big)}
                    staging.slot = nbytes
                    if big:
                        staging.buffer = backend.allocate(len(big) * nbytes)
                if nbytes != staging.slot or index not in ranks:
                    continue
                start = ranks[index] * nbytes
                staging.slots[index] = ranks[index]
                futures[index] = backend.read(header.layout, staging.buffer[start : start + nbytes])
    finally:
        concurrent.futures.wait(futures.values())  # none may write into the buffer after we return
    for index, future in futures.items():
        if future.exception() is not None:
            staging.errors[index] = future.exception()
    missing = [p for p, h in zip(paths, staging.headers) if h is None]
    if missing:  # header_batches gives every index; this guards the invariant
        raise DicomLoadError(missing[0], "no header was read for this file")
    return staging


def raise_read_errors(staging: Staging, indices: list[int]) -> None:
    """Raise the first read error among ``indices`` (slice order) as :class:`DicomLoadError`."""
    for i in indices:
        exc = staging.errors.get(i)
        if exc is None:
            continue
        if isinstance(exc, DicomLoadError):
            raise exc
        path = staging.headers[i].path
        raise DicomLoadError(path, f"cannot read the pixel data ({type(exc).__name__}: {exc})") from exc


def runs(slots: list[int]) -> list[tuple[int, int, int]]:
    """``(destination slice, first slot, count)`` for each run of consecutive slots in slice order."""
    out: list[tuple[int, int, int]] = []
    for k, s in enumerate(slots):
        if out and out[-1][1] + out[-1][2] == s and out[-1][0] + out[-1][2] == k:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + 1)
        else:
            out.append((k, s, 1))
    return out


def gather(staging: Staging, indices: list[int], dst, backend: Backend) -> None:
    """Copy the slot of file ``indices[k]`` to slice ``k`` of ``dst`` (1-D uint8, ``len(indices) * slot``)."""
    raise_read_errors(staging, indices)
    slot = staging.slot
    try:
        for k, first, count in runs([staging.slots[i] for i in indices]):
            backend.copy(dst, k * slot, staging.buffer, first * slot, count * slot)
    finally:
        backend.finish()

"""A long native series on the CPU: each slice read straight into the volume slot its Instance Number predicts,
while later headers are still being parsed in the process pool.

Where the headers are parsed in the pool (64+ files, 4+ cores), the load used to read the slices only once they
were sorted, which needs every header: on the H100 (results 0013, 256 CT slices of 512²) headers 4.1 ms, order
1.6 ms, then the reads 7.1 ms, against 6.4 ms for the same bytes read into one volume with nothing before them.
Here, as each chunk of headers comes back (:func:`kvdicom._series.headers.header_batches`), its files are read
(compiled reads, the GIL released, :mod:`kvdicom._io.known_reads`) into the slots their Instance Numbers give:
``number - 1`` where the numbers climb with the position along the normal of Image Orientation (Patient), as
the volume is sorted, ``files - number`` where they fall (which way is told by the first two numbered slices
with positions, and a later slice against the first two that disagrees stops the guessing), ``number - 1``
without positions (the volume then sorted by Instance Number). Nothing is assumed: once sorted, every slice
that was not read into its own slot (no number, a number out of range or already taken, a read that failed, a
wrong guess) is read again into it after all the first reads are done, so no read writes over another, and
each file is still checked against its header (``file_id``) as every read is.

Bounds: one slot per listed file, of the first file's pixel bytes, and only where that is no more than the
files hold (:func:`kvdicom._series.prefault.predicted_bytes`, as the prediction of the volume always was); the
volume is a view of that memory (where decoding is a view of the stored bytes) from the first sorted slice's
slot on, so files that are not slices of the series (skipped, another series) cost slots, not copies.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from kvdicom import _loader as loader
from kvdicom import settings
from kvdicom._header.layout import PixelLayout
from kvdicom._io import host_memory, host_read, known_reads
from kvdicom._io import tuning as io_tuning
from kvdicom._series.headers import Header
from kvdicom._series.prefault import predicted_bytes
from kvdicom.errors import DicomLoadError


@dataclass
class Direction:
    """Which way Instance Numbers run against the position along the normal, told by the numbered slices seen."""

    normal: np.ndarray | None = None
    first: tuple[int, float] | None = None  #: (number, distance) of the first numbered slice with a position
    sign: int = 0  #: +1: numbers climb with the distance; -1: they fall; 0: not known yet
    broken: bool = False  #: a slice disagreed: no more guesses

    def see(self, keys) -> None:
        """Take one slice's number and position into account."""
        if self.broken or keys.instance_number is None or keys.position is None or keys.orientation is None:
            return
        if self.normal is None:
            row, col = np.asarray(keys.orientation[:3], float), np.asarray(keys.orientation[3:], float)
            self.normal = np.cross(row, col)
        distance = float(np.dot(keys.position, self.normal))
        if self.first is None:
            self.first = (keys.instance_number, distance)
            return
        step = (keys.instance_number - self.first[0]) * (distance - self.first[1])
        sign = 1 if step > 0 else -1 if step < 0 else 0
        if sign == 0 or self.sign and sign != self.sign:
            self.broken = True
        else:
            self.sign = sign


@dataclass
class Predicted:
    """The headers (input order) and which file was read into which slot of ``buffer``."""

    headers: list[Header | None]
    buffer: np.ndarray | None = None  #: 1-D uint8, ``files`` slots of ``slot`` bytes; None: nothing read
    slot: int = 0
    files: int = 0
    slots: dict[int, int] = field(default_factory=dict)  #: input index -> slot its bytes are in
    _index: dict[int, int] = field(default_factory=dict)  #: id(header) -> input index

    def raw(self, ordered: list[Header]) -> np.ndarray | None:
        """The sorted slices' stored bytes in slice order: one 1-D uint8 view of the buffer from the first sorted
        slice's slot on, every slice not read into its own slot read again into it (raising the file's
        :class:`DicomLoadError`, as the reads after the sort do); None where the slices do not fit that view
        (another size, more slices than slots), and then nothing is read here."""
        n = len(ordered)
        if self.buffer is None or any(h.layout.nbytes != self.slot for h in ordered):
            return None
        indices = [self._index[id(h)] for h in ordered]
        start = self.slots.get(indices[0], 0)
        if start + n > self.files:
            start = 0
        if n > self.files:
            return None
        view = self.buffer[start * self.slot : (start + n) * self.slot]
        again = [k for k, i in enumerate(indices) if self.slots.get(i) != start + k]
        if again:
            layouts = [ordered[k].layout for k in again]
            starts = [k * self.slot for k in again]
            known_reads.read_run(layouts, view, starts, 0, len(again),
                                 lambda j: _read_python(layouts[j], view, starts[j]))
        return view


def _read_python(layout: PixelLayout, buffer: np.ndarray, start: int) -> None:
    loader.read_host_python(layout, buffer[start : start + layout.nbytes])


def _predicted_slot(keys, direction: Direction, files: int) -> int | None:
    number = keys.instance_number
    if number is None:
        return None
    if keys.position is None or keys.orientation is None:
        slot = number - 1  # sorted by Instance Number (where no slice has a position)
    elif direction.broken or not direction.sign:
        return None
    else:
        slot = number - 1 if direction.sign > 0 else files - number
    return slot if 0 <= slot < files else None


def _read_run(layouts: list[PixelLayout], buffer: np.ndarray, starts: list[int]) -> None:
    known_reads.read_run(layouts, buffer, starts, 0, len(layouts),
                         lambda k: _read_python(layouts[k], buffer, starts[k]))


def _readable(header: Header, first: PixelLayout, series_uid: str | None) -> bool:
    layout = header.layout
    return (isinstance(layout, PixelLayout) and not layout.compressed and layout.number_of_frames == 1
            and layout.nbytes == first.nbytes and (series_uid is None or header.keys.series_uid == series_uid))


def read(paths: list[str], batches: Iterable[list[tuple[int, Header]]], first: PixelLayout,
         series_uid: str | None = None) -> Predicted:
    """Every header from ``batches``, each file read into its predicted slot as soon as its header is in.

    Returns only after every read submitted here has finished (also when something here raises), so that none
    writes into the buffer afterwards. A read that failed leaves its file without a slot (read again, and its
    error raised, only if it is a slice of the volume)."""
    predicted = Predicted(headers=[None] * len(paths), slot=first.nbytes, files=len(paths))
    if first.number_of_frames == 1 and first.nbytes and predicted_bytes(paths, first, minimum=0):
        predicted.buffer = host_memory.empty((len(paths) * first.nbytes,), np.uint8)
    direction = Direction()
    waiting: list[int] = []  # readable files whose slot waits for the direction
    taken: set[int] = set()
    futures: dict[concurrent.futures.Future, list[int]] = {}

    def claim(indices: list[int]) -> list[int]:
        claimed = []
        for index in indices:
            slot = _predicted_slot(predicted.headers[index].keys, direction, predicted.files)
            if slot is not None and slot not in taken:
                taken.add(slot)
                predicted.slots[index] = slot
                claimed.append(index)
        return claimed

    pending: list[int] = []  # claimed, not yet submitted

    def flush(tasks: int) -> None:
        nonlocal pending
        bounds = np.linspace(0, len(pending), min(tasks, len(pending)) + 1).astype(int).tolist()
        for a, b in zip(bounds, bounds[1:]):
            submit(pending[a:b])
        pending = []

    def submit(indices: list[int]) -> None:
        if not indices:
            return
        layouts = [predicted.headers[i].layout for i in indices]
        starts = [predicted.slots[i] * predicted.slot for i in indices]
        if host_read.in_pool():  # on one of the pool's threads: read here, not behind tasks that may wait for it
            try:
                _read_run(layouts, predicted.buffer, starts)
            except Exception:  # noqa: BLE001 - read again after the sort, where its error is raised if it counts
                for index in indices:
                    predicted.slots.pop(index, None)
            return
        futures[host_read.pool().submit(_read_run, layouts, predicted.buffer, starts)] = indices

    try:
        for batch in batches:
            ready = []
            for index, header in batch:
                predicted.headers[index] = header
                predicted._index[id(header)] = index
                if predicted.buffer is None or not _readable(header, first, series_uid):
                    continue
                direction.see(header.keys)
                ready.append(index)
            if predicted.buffer is None:
                continue
            if not direction.sign and not direction.broken:
                waiting += ready
                continue
            pending += claim(waiting + ready)
            waiting = []
            if len(pending) >= settings.PREDICTED_TASK_FILES:
                flush(1)
        flush(io_tuning.host_threads())  # every header in: the rest side by side
    finally:
        concurrent.futures.wait(futures)  # none may write into the buffer after we return
    for future, indices in futures.items():
        if future.exception() is not None:  # a run stops at its first failure: its files are read again
            for index in indices:
                predicted.slots.pop(index, None)
    missing = [p for p, h in zip(paths, predicted.headers) if h is None]
    if missing:  # header_batches gives every index; this guards the invariant
        raise DicomLoadError(missing[0], "no header was read for this file")
    return predicted

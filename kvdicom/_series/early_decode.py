"""Compressed slices the header workers read, decoded on the GPU while later headers are still parsed.

Why: on a long compressed series the decode waited for the last header. 256 HTJ2K slices of 512² on the H200
(fresh machine): the headers, read and checked by the workers, were all in after 12.6 ms; nvImageCodec then
decoded the 256 codestreams in one batch in 23.9 ms, so the load took 44.5 ms. The decoder can start on the
slices already in: the first chunk arrived after 3.8 ms, 40 files after 5.8 ms (``.diag/arrive.py``, a
one-off, not committed).

A batch pays a fixed cost per call (the same 256 codestreams in batches of 8 / 16 / 32 / 64 / 128 / 256:
66.6 / 57.6 / 36.3 / 27.4 / 25.3 / 23.9 ms), so the decoder is not fed each chunk: whenever it is idle and at
least :data:`kvdicom.settings.EARLY_DECODE_MIN_FRAMES` slices of one batch key wait, it takes them all, on a
thread of kvdicom's read pool (nvImageCodec releases the GIL), one batch at a time; what is left when the
last header is in goes as one more batch.

Each slice decoded here went through the checks the series path makes (the worker read every byte of the
file it parsed and checked its codestream against the header; one frame; the route's GPU plan; a batch's
decoded bytes proven by its compressed bytes before anything is allocated), and is used only if it belongs
to the volume once the slices are sorted. Anything not decoded here (another series' files, a failed batch,
a frame nvImageCodec returned blank, a slice routed to the host) goes the series' own path afterwards
(:mod:`kvdicom._series.decode`), which names a bad file. The outputs cost as many device bytes as the
decoded slices, for the length of the load.

The route is chosen with the batch size of every file listed (a series' plan sees its batch's bytes:
``route.choose(batch_frames=)``); the series' own path would see only the volume's slices, which can route a
short series to the host where this one decodes it on the GPU, equally exactly.
"""

from __future__ import annotations

import collections

import numpy as np

from kvdicom import settings
from kvdicom._codecs import route
from kvdicom._header import compressed
from kvdicom._header.compressed import CompressedLayout
from kvdicom._io import host_read
from kvdicom._series import decode as series_decode
from kvdicom.errors import DicomLoadError


class EarlyDecode:
    """One load's decodes of the slices the workers read (``xp``: CuPy; NumPy stands in in the CPU tests,
    with ``gpu_codec._decode_batch`` a host stand-in)."""

    def __init__(self, buffer: np.ndarray, reads, files: int, xp) -> None:
        self.buffer, self.reads, self.files, self.xp = buffer, reads, files, xp
        self.pending: dict[tuple, list[series_decode.Slice]] = {}
        #: per batch decoded: (its slices, slot input indices; their frames or None; positions to redo)
        self.done: list[tuple[list[series_decode.Slice], object, set[int]]] = []
        self.batches = 0
        self._future = None
        self._context = None
        if xp is not np:  # the task runs on the caller's device and stream
            self._context = (xp.cuda.Device(), xp.cuda.get_current_stream())

    def chunk(self, batch: list) -> None:
        """After a worker's chunk (``(index, header)`` pairs): queue its compressed slices the GPU decodes, and
        start a batch where the decoder is idle and enough wait."""
        for index, header in batch:
            piece = self._piece(index, header.layout)
            if piece is not None:
                self.pending.setdefault(series_decode.batch_key(piece), []).append(piece)
        if self._idle():
            ready = [key for key, pieces in self.pending.items() if len(pieces) >= settings.EARLY_DECODE_MIN_FRAMES]
            if ready:
                self._start([self.pending.pop(key) for key in ready])

    def _piece(self, index: int, layout) -> series_decode.Slice | None:
        """``index``'s slice as the series path would read it from the buffer, where the GPU decodes it."""
        if not isinstance(layout, CompressedLayout) or layout.number_of_frames != 1:
            return None
        got, infos = self.reads.results.get(index), self.reads.infos.get(index)
        if type(got) is not int or got != compressed.value_nbytes(layout) or infos is None or len(infos) != 1:
            return None
        offset = self.reads.slots[index][0]
        value = self.buffer[offset : offset + got]
        try:
            frames = compressed.frames_of(layout, value)
            compressed.check_expansion(layout)
            if len(frames) != 1:
                return None
            choice = route.choose(layout, frames, infos, "cuda", batch_frames=self.files)
        except DicomLoadError:
            return None
        if not choice.on_gpu:
            return None
        return series_decode.Slice(index, layout, value, frames, infos, choice)

    def _idle(self) -> bool:
        if self._future is None:
            return True
        if not self._future.done():
            return False
        self._future.result()  # the task catches what a batch raises; this re-raises only what it could not
        self._future = None
        return True

    def _start(self, groups: list[list[series_decode.Slice]]) -> None:
        if host_read.in_pool():  # a load on one of the pool's threads waits on no other: decode here
            self._decode(groups)
            return
        self._future = host_read.pool().submit(self._decode, groups)

    def _decode(self, groups: list[list[series_decode.Slice]]) -> None:
        if self._context is None:
            self._decode_groups(groups)
            return
        device, stream = self._context
        with device, stream:
            self._decode_groups(groups)

    def _decode_groups(self, groups: list[list[series_decode.Slice]]) -> None:
        for group in groups:
            for batch in series_decode.split(group):
                layout = batch[0].layout
                if compressed.expansion_problem(layout.codec, layout.dtype.itemsize,
                                                sum(p.layout.decoded_nbytes for p in batch),
                                                sum(p.layout.nbytes for p in batch)) is not None:
                    continue  # the series' own check refuses it, naming the files
                out, again, _ = series_decode.decode_batch(batch)
                self.batches += 1
                self.done.append((batch, out, set(again)))

    def close(self) -> None:
        """After the last header: what waits goes as one more batch (the caller sorts the slices meanwhile)."""
        self.wait()
        if self.pending:
            groups, self.pending = list(self.pending.values()), {}
            self._start(groups)

    def wait(self) -> None:
        """The batch in flight done: its frames are in ``done`` and it no longer reads the shared buffer."""
        if self._future is not None:
            future, self._future = self._future, None
            future.result()

    def place(self, indices: list[int], layouts: list, stored) -> tuple[set[int], tuple[str, ...]]:
        """Write every slice decoded here into ``stored[slot]`` (``indices[slot]``: the input index of the slot's
        file, ``layouts[slot]`` its layout); returns the slots written and the decoder that wrote them."""
        self.wait()
        slot_of = {index: slot for slot, index in enumerate(indices)}
        written: set[int] = set()
        counts: collections.Counter = collections.Counter()
        for batch, out, again in self.done:
            if out is None:
                continue
            pairs = [(slot_of[p.slot], j) for j, p in enumerate(batch)
                     if j not in again and p.slot in slot_of and layouts[slot_of[p.slot]] is p.layout]
            if not pairs:
                continue
            slots, rows = (list(x) for x in zip(*pairs))
            series_decode.scatter(stored, slots, out if rows == list(range(len(out))) else out[self.xp.asarray(rows)])
            written.update(slots)
            counts[batch[0].layout.codec] += len(slots)
        names = tuple(f"nvimgcodec ({codec}, {self.batches} batches while the headers were read): {n} slices"
                      for codec, n in counts.items())
        return written, names

    def drop(self) -> None:
        """Give the decoded frames' device memory back (the volume needs the room); those slices are decoded
        again by the series' path."""
        self.wait()
        self.done.clear()

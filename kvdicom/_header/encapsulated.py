"""Where each frame of encapsulated (compressed) pixel data lies in the file, and one read for all of them.

The item headers of the encapsulated value (Basic Offset Table, then one
8-byte header per fragment) are walked in the file itself, seeking over the
fragment data, so locating frames costs a few small reads whatever the file
size, and every offset is checked against the file size before anything is
allocated. Frames are then assigned to fragments with pydicom's rules
(``pydicom.encaps.generate_fragmented_frames``): Extended Offset Table, else
Basic Offset Table, else one fragment per frame, else all fragments for a
single frame, else JPEG EOI markers. The bytes of all frames are read with one
``pread`` of the span from the first fragment to the last. Items that do not walk
to the sequence delimiter inside the file are taken as pydicom takes them (the
value ends at the first delimiter tag, an item running past it is read short),
so a file pydicom decodes is decoded the same, and one it cannot is refused.

Both the walk and the read open the path with :func:`kvdicom._io.fileid.open_regular`
(a FIFO is refused, never waited on) and check the file they opened against the
header's ``file_id`` before and after: a file swapped, truncated, rewritten or
deleted since the header was parsed is a :class:`DicomLoadError` naming it,
never its new bytes read with the old layout.
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass

import numpy as np

from kvdicom._io import fileid, host_read, known_reads
from kvdicom.errors import DicomLoadError

ITEM = 0xE000FFFE  #: (FFFE,E000) read as one little-endian uint32 (group first)
SEQUENCE_DELIMITER = 0xE0DDFFFE  #: (FFFE,E0DD)
HEADER = 8
UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class FrameTable:
    """The fragments of every frame, as (file offset, length) of their values."""

    span: tuple[int, int]  #: (first byte, end) of the fragment values in the file
    frames: tuple[tuple[tuple[int, int], ...], ...]
    #: frames still to be split on JPEG EOI markers after reading (no offset table, more fragments than frames)
    split_on_eoi: bool = False

    @property
    def nbytes(self) -> int:
        return self.span[1] - self.span[0]


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise OSError(f"short read at offset {offset}")
    return data


def _strict_items(fd: int, offset: int, file_size: int) -> list[tuple[int, int]] | None:
    """(value offset, length) of every item up to the sequence delimiter, or ``None`` where pydicom gives up.

    pydicom's own parse of an undefined-length value (``_try_read_encapsulated_pixel_data``): it
    succeeds only on item headers followed by the sequence delimiter tag, all inside the file.
    One 8-byte ``pread`` per item header (unbuffered: a buffered reader would read 8 KiB of
    fragment data at every seek).
    """
    pos = offset
    items: list[tuple[int, int]] = []
    while pos + 4 <= file_size:
        head = _pread(fd, min(HEADER, file_size - pos), pos)
        tag = struct.unpack_from("<I", head)[0]
        if tag == SEQUENCE_DELIMITER:
            return items
        if tag != ITEM or len(head) < HEADER:
            return None
        length = struct.unpack_from("<I", head, 4)[0]
        items.append((pos + HEADER, length))
        pos += HEADER + length
    return None


#: Bytes per read of the delimiter scan (only corrupt files get there).
_SCAN_CHUNK = 1 << 20


def _find_delimiter(fd: int, start: int, file_size: int) -> int | None:
    """File offset of the first sequence delimiter tag at or after ``start``: pydicom's fallback scan."""
    needle = struct.pack("<I", SEQUENCE_DELIMITER)
    pos = start
    while pos < file_size:
        chunk = _pread(fd, min(_SCAN_CHUNK, file_size - pos), pos)
        found = chunk.find(needle)
        if found >= 0:
            return pos + found
        if pos + len(chunk) >= file_size:
            return None
        pos += len(chunk) - (len(needle) - 1)  # a tag split over two chunks is still found
    return None


def _value_items(path: str, fd: int, offset: int, end: int, table_only: bool = False) -> list[tuple[int, int]]:
    """The items of the value ``[offset, end)`` as pydicom reads fragments from it (``generate_fragments``).

    An item running past the value's end is read short, as ``buffer.read(length)`` is; as
    ``(value offset, declared length)``, cut at ``end`` by the caller. ``table_only``: only the first
    item (the Basic Offset Table) must be one; the walk stops at anything else after it.
    """
    pos = offset
    items: list[tuple[int, int]] = []
    while pos + 4 <= end:
        head = _pread(fd, min(HEADER, end - pos), pos)
        tag = struct.unpack_from("<I", head)[0]
        if tag == SEQUENCE_DELIMITER or (table_only and items and tag != ITEM):
            break
        if tag != ITEM:
            raise DicomLoadError(path, f"encapsulated pixel data: expected an item tag (FFFE,E000) at offset {pos}, "
                                 f"found {tag & 0xFFFF:04X},{tag >> 16:04X}")
        if len(head) < HEADER:
            raise DicomLoadError(path, f"encapsulated pixel data: the item at offset {pos} has no length "
                                 "before the end of the value")
        length = struct.unpack_from("<I", head, 4)[0]
        if length == UNDEFINED_LENGTH:
            raise DicomLoadError(path, f"encapsulated pixel data: the item at offset {pos} has an undefined length")
        items.append((pos + HEADER, length))
        pos += HEADER + length
    return items


def _items(path: str, fd: int, offset: int, file_size: int,
           undefined: bool = True, table_only: bool = False) -> tuple[list[int], list[tuple[int, int]]]:
    """(Basic Offset Table, fragments as (value offset, length)) of the value at ``offset``, as pydicom finds them.

    An undefined-length value whose items pydicom cannot walk to the sequence delimiter (an
    item running past the end of the file, say) is what pydicom then takes it to be: the
    bytes up to the first sequence delimiter tag (none: pydicom has no pixel data, and this is
    refused), with the item that runs past that point read short. A defined-length value
    (``undefined=False``, non-standard) is read that way from the start.

    ``table_only`` (files with an Extended Offset Table, whose frames pydicom reads at the table's
    offsets without reading the item headers after the Basic Offset Table): the fragments are one
    stand-in covering the rest of the value, from the Basic Offset Table's end.
    """
    end = file_size
    items = _strict_items(fd, offset, file_size) if undefined else None
    walked = items is not None
    if items is None:
        if undefined:
            found = _find_delimiter(fd, offset, file_size)
            if found is None:
                raise DicomLoadError(path, "encapsulated pixel data: its items do not end in a sequence delimiter "
                                     f"(FFFE,E0DD) inside the file ({file_size} bytes; truncated?)")
            end = found
        items = _value_items(path, fd, offset, end, table_only)
    if not items:
        raise DicomLoadError(path, "encapsulated pixel data has no Basic Offset Table item")
    (table_at, table_length), rest = items[0], items[1:]
    if table_length % 4:
        raise DicomLoadError(path, f"Basic Offset Table length {table_length} is not a multiple of 4")
    if table_at + table_length > end:
        raise DicomLoadError(path, f"encapsulated pixel data: the Basic Offset Table of {table_length} bytes at "
                             f"offset {table_at - HEADER} runs past the end of the value ({end})")
    table = list(struct.unpack(f"<{table_length // 4}I", _pread(fd, table_length, table_at)))
    if table_only:
        if walked:  # every item walked to the delimiter: the value ends after the last one
            end = items[-1][0] + items[-1][1]
        first = table_at + table_length + HEADER
        return table, [(first, max(0, end - first))]
    fragments = [(value, max(0, min(length, end - value))) for value, length in rest]
    if not fragments:
        raise DicomLoadError(path, "encapsulated pixel data has no fragments")
    return table, fragments


def _by_offsets(path: str, fragments, starts: list[int], first_item: int, what: str):
    """Group fragments into frames as pydicom does with a Basic Offset Table (``generate_fragmented_frames``).

    Offsets are from the first fragment's item header. A fragment joins the current frame while it starts
    before the next frame's offset, else it starts the next frame (one frame per fragment at most; the
    first offset is not looked at; the last frame takes every fragment left). Offsets that do not point
    at fragments or do not increase are not refused: pydicom decodes such files, and so must kvdicom.
    """
    frames, frame, index, final = [], [], 0, len(starts) - 1
    for value, length in fragments:
        if index == final or value - HEADER - first_item < starts[index + 1]:
            frame.append((value, length))
        else:
            frames.append(tuple(frame))
            index += 1
            frame = [(value, length)]
    frames.append(tuple(frame))
    return tuple(frames)


def _changed(path: str, exc: OSError, what: str) -> DicomLoadError:
    return DicomLoadError(path, f"cannot read the {what} after the header ({type(exc).__name__}: {exc}); "
                          "the file was changed, removed or made unreadable in between")


def locate(path: str, offset: int, file_size: int, number_of_frames: int,
           extended: tuple[bytes, bytes] | None = None, file_id: fileid.FileId | None = None,
           undefined: bool = True, fd: int | None = None) -> FrameTable:
    """The frame table of the encapsulated value at file ``offset`` (the Basic Offset Table item's tag).

    ``file_size`` bounds the items: the file's size, or the end of a (non-standard) defined-length value.
    With ``file_id`` (the header's open file), the file walked must be that file before and after.
    ``undefined``: the Pixel Data element has an undefined length (the standard's encapsulation).
    ``fd``: the header's open file, else ``path`` is opened here.
    """
    try:
        with fileid.opened(path, fd, file_id=file_id) as fd:
            fileid.check_same(path, fd, file_id, "before the fragment walk")
            size = min(file_size, os.fstat(fd).st_size)
            try:
                table, fragments = _items(path, fd, offset, size, undefined)
            except DicomLoadError:
                if not extended:
                    raise
                # pydicom reads an Extended Offset Table's frames at its offsets: item headers after the
                # Basic Offset Table are never read, so a damaged one does not stop it
                table, fragments = _items(path, fd, offset, size, undefined, table_only=True)
            fileid.check_same(path, fd, file_id, "after the fragment walk")
    except OSError as exc:
        raise _changed(path, exc, "encapsulated item headers") from exc
    first_item = fragments[0][0] - HEADER
    span = (fragments[0][0], fragments[-1][0] + fragments[-1][1])
    if extended:
        offsets_raw, lengths_raw = extended
        if len(offsets_raw) % 8 or len(offsets_raw) != len(lengths_raw):
            raise DicomLoadError(path, "Extended Offset Table and its lengths differ in size or are not 64-bit values")
        offsets = struct.unpack(f"<{len(offsets_raw) // 8}Q", offsets_raw)
        lengths = struct.unpack(f"<{len(lengths_raw) // 8}Q", lengths_raw)
        frames = []
        for index, (off, length) in enumerate(zip(offsets, lengths)):
            start = first_item + off + HEADER
            if start > span[1]:
                raise DicomLoadError(path, f"Extended Offset Table frame at {off} starts past the fragments")
            if length > sys.maxsize:  # pydicom's ``buffer.read(length)`` cannot take it (OverflowError)
                raise DicomLoadError(path, f"Extended Offset Table length {length} of frame {index} is past any "
                                     "readable size (pydicom fails on it too)")
            # a length running past the value is cut at its end, as pydicom's ``buffer.read(length)`` does
            frames.append(((start, min(length, span[1] - start)),))
        return FrameTable(span, tuple(frames))
    if table:
        return FrameTable(span, _by_offsets(path, fragments, table, first_item, "Basic Offset Table"))
    if len(fragments) == 1 or number_of_frames == 1:
        return FrameTable(span, (tuple(fragments),))
    if len(fragments) == number_of_frames:
        return FrameTable(span, tuple((f,) for f in fragments))
    if len(fragments) > number_of_frames:
        return FrameTable(span, (tuple(fragments),), split_on_eoi=True)
    raise DicomLoadError(path, f"encapsulated pixel data has {len(fragments)} fragments for {number_of_frames} "
                         "frames and no offset table, so frame boundaries are unknown (pydicom fails on it too)")


def _split_on_eoi(frames: tuple, data, base: int) -> list:
    """pydicom's rule without an offset table.

    A frame ends with the fragment holding EOI (FF D9) in its last 10 bytes."""
    out, current = [], []
    for off, length in frames[0]:
        current.append((off, length))
        tail = bytes(data[off - base + max(0, length - 10): off - base + length])
        if b"\xff\xd9" in tail:
            out.append(tuple(current))
            current = []
    if current:
        out.append(tuple(current))
    return out


def read_frames(path: str, table: FrameTable, start: int | None = None,
                file_id: fileid.FileId | None = None, fd: int | None = None,
                into: np.ndarray | None = None) -> tuple[np.ndarray, list]:
    """(the bytes from ``start`` to the last fragment's end, one buffer per frame): one read.

    ``start`` defaults to the first fragment; pass the value's offset to keep the
    Basic Offset Table (pydicom's decoders want the whole value). A frame of one
    fragment is a view into the read bytes, not a copy. With ``file_id``, the
    file read must be that file before and after the read. ``into``: a uint8
    buffer of exactly ``end - start`` bytes to read into (a slot of a series'
    pinned staging), else one is allocated.
    """
    start = table.span[0] if start is None else start
    end = table.span[1]
    if into is None:
        data = np.empty(end - start, dtype=np.uint8)
    elif into.dtype != np.uint8 or into.shape != (end - start,):
        raise ValueError(f"read_frames: 'into' must be {end - start} uint8 bytes, not {into.dtype} {into.shape}")
    else:
        data = into
    if fd is None:  # no header fd (a series' slice): in C where built (known_reads), the Python read where C stops
        known_reads.read_range(path, start, data, file_id, lambda: _read_value(path, data, start, file_id, None))
    else:
        _read_value(path, data, start, file_id, fd)
    return data, split_frames(table, data, start)


def _read_value(path: str, data: np.ndarray, start: int, file_id: fileid.FileId | None, fd: int | None) -> None:
    try:
        got = host_read.read_into(path, data, start, file_id=file_id, fd=fd)
    except OSError as exc:
        raise _changed(path, exc, "compressed pixel data") from exc
    if got != data.nbytes:
        raise DicomLoadError(path, f"read {got} of {data.nbytes} compressed bytes at offset {start}; "
                             "did the file change?")


def split_frames(table: FrameTable, data: np.ndarray, start: int) -> list:
    """One buffer per frame out of ``data``, the file's bytes from ``start`` to the last fragment's end (as
    :func:`read_frames` read them, or a worker into a series' shared staging): a frame of one fragment is a
    view, not a copy."""
    frames = _split_on_eoi(table.frames, data, start) if table.split_on_eoi else table.frames
    out = []
    for fragments in frames:
        parts = [data[off - start: off - start + length] for off, length in fragments]
        out.append(parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, np.uint8))
    return out

"""Hypothesis strategies for clinical-looking header blocks, encoded byte by byte.

pydicom pads odd values and never writes some of what scanners do, so the
extra elements are encoded here and spliced into a file the fixture writer
made (at the start of its dataset): private creator blocks with odd-length
values, sequences of defined and undefined length with items of both kinds,
nested, and series keys (Image Position / Orientation, Pixel Spacing, ...)
spelled the ways DS and IS values are spelled in the wild.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hypothesis import strategies as st

from fixtures import mutate

LONG_VRS = mutate.LONG_VRS
UNDEFINED = 0xFFFFFFFF

#: Standard sequences (SQ in pydicom's dictionary, so implicit VR finds them too).
SEQUENCE_TAGS = [0x00081140, 0x00081115, 0x00400275, 0x00082112, 0x00089215]
#: Odd (private) groups used for creator blocks.
PRIVATE_GROUPS = [0x0009, 0x0019, 0x0029, 0x0043]


@dataclass(frozen=True)
class Value:
    tag: int
    vr: str
    value: bytes


@dataclass(frozen=True)
class Item:
    defined: bool
    elements: tuple


@dataclass(frozen=True)
class Sequence:
    tag: int
    defined: bool
    items: tuple


def _header(tag: int, vr: str, length: int, implicit: bool) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<I", length)
    if vr in LONG_VRS:
        return head + vr.encode() + b"\0\0" + struct.pack("<I", length)
    return head + vr.encode() + struct.pack("<H", length)


def encode(elements, implicit: bool) -> bytes:
    """The elements in Explicit or Implicit VR Little Endian."""
    out = b""
    for element in elements:
        if isinstance(element, Value):
            out += _header(element.tag, element.vr, len(element.value), implicit) + element.value
            continue
        body = b""
        for item in element.items:
            content = encode(item.elements, implicit)
            if item.defined:
                body += struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content
            else:
                body += (struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED) + content
                         + struct.pack("<HHI", 0xFFFE, 0xE00D, 0))
        if element.defined:
            out += _header(element.tag, "SQ", len(body), implicit) + body
        else:
            out += _header(element.tag, "SQ", UNDEFINED, implicit) + body + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return out


def _text(alphabet: str, max_size: int):
    return st.text(alphabet, max_size=max_size).map(lambda s: s.encode("ascii"))


@st.composite
def private_block(draw):
    """A private creator and a few private elements, some of odd length."""
    group = draw(st.sampled_from(PRIVATE_GROUPS))
    creator = draw(st.sampled_from([b"ACME 1.0", b"SIEMENS CSA HEADER", b"GEMS_PARM_01"]))
    elements = [Value(group << 16 | 0x0010, "LO", creator + b" " * (len(creator) % 2))]
    for offset in sorted(draw(st.sets(st.integers(0, 0xFF), max_size=4))):
        vr = draw(st.sampled_from(["UN", "OB", "LO", "DS", "SH"]))
        value = draw(st.binary(max_size=40)) if vr in ("UN", "OB") else draw(_text("ABC 012.\\", 20))
        elements.append(Value(group << 16 | 0x1000 | offset, vr, value))  # odd lengths on purpose
    return elements


def sequences(depth: int = 0):
    """A sequence of defined or undefined length whose items (of either kind) may nest another."""
    inner = st.lists(st.one_of(private_block(), st.just([])), max_size=2).map(
        lambda ls: [e for block in ls for e in block])
    if depth < 2:
        inner = st.tuples(inner, st.lists(st.deferred(lambda: sequences(depth + 1)), max_size=1)).map(
            lambda t: t[0] + t[1])
    items = st.lists(st.builds(Item, st.booleans(), inner.map(tuple)), max_size=3)
    return st.builds(Sequence, st.sampled_from(SEQUENCE_TAGS), st.booleans(), items.map(tuple))


#: DS spellings: plain, padded, exponent, signs, and a few pydicom reads leniently (or not at all).
DS_SPELLINGS = [b"1", b"-1.5", b" 2.25", b"3e1", b"+4.0", b"0.5 ", b"1E-3", b".5", b"7.", b"-0",
                b"1_0", b"nan", b"inf", b"", b" ", b"abc", b"0x1"]
IS_SPELLINGS = [b"1", b" 2", b"+3", b"-4", b"0005", b"12 ", b"1.0", b"1.5", b"", b"x", b"1_2"]


def _ds(count: int, lenient: bool):
    part = st.sampled_from(DS_SPELLINGS if lenient else DS_SPELLINGS[:10])
    value = st.lists(part, min_size=count, max_size=count).map(b"\\".join)
    return value.map(lambda v: v + b" " * (len(v) % 2)) | value.map(lambda v: v + b"\0" * (len(v) % 2))


@st.composite
def series_keys(draw, lenient: bool = True):
    """Series keys as raw elements (each may be absent), with DS/IS spelled many ways."""
    chosen = []
    if draw(st.booleans()):
        chosen.append(Value(0x00180050, "DS", draw(_ds(1, lenient))))
    if draw(st.booleans()):
        chosen.append(Value(0x00200013, "IS", draw(st.sampled_from(IS_SPELLINGS if lenient else IS_SPELLINGS[:6]))
                            .ljust(2, b" ")))
    if draw(st.booleans()):
        chosen.append(Value(0x00200032, "DS", draw(_ds(3, lenient))))
    if draw(st.booleans()):
        chosen.append(Value(0x00200037, "DS", draw(_ds(6, lenient))))
    if draw(st.booleans()):
        chosen.append(Value(0x00280030, "DS", draw(_ds(2, lenient))))
    return chosen


@st.composite
def header_blocks(draw, lenient: bool = True):
    """Extra top-level elements: private blocks, sequences and series keys, in some order."""
    parts = draw(st.lists(st.one_of(private_block(), sequences().map(lambda s: [s])), max_size=4))
    elements = [e for part in parts for e in part] + draw(series_keys(lenient))
    return tuple(draw(st.permutations(elements)))


def splice(data: bytes, elements, *, implicit: bool, with_meta: bool) -> bytes:
    """``data`` with ``elements`` inserted where its dataset starts."""
    start = mutate.encoding_of(data).dataset_start if with_meta else 0
    return data[:start] + encode(elements, implicit) + data[start:]


#: What scanners leave after the pixel data: Data Set Trailing Padding, a private element.
TRAILING = [(), (Value(0xFFFCFFFC, "OB", bytes(6)),), (Value(0xFFFCFFFC, "OB", bytes(3)),),
            (Value(0x00090010, "LO", b"ACME"), Value(0x00091001, "UN", b"x"))]


def append(data: bytes, elements, *, implicit: bool) -> bytes:
    """``data`` with ``elements`` after its last element (the pixel data)."""
    return data + encode(elements, implicit)

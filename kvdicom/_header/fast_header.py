"""The header fast path: a ``struct`` walk to the pixel data, pydicom only for what it cannot prove.

A clinical slice carries 200–400 header elements and pydicom turns every one
of them into Python objects; kvdicom needs about twenty. :func:`scan` walks
the element headers of Explicit and Implicit VR Little Endian files (with or
without preamble and file meta, as ``pydicom.dcmread(force=...)`` reads them)
and of the encapsulated syntaxes kvdicom decodes (:data:`kvdicom._header.compressed.CODECS`,
Explicit VR LE with file meta),
skipping values it does not need (sequences of defined length in one jump,
undefined-length sequences item by item, private blocks, odd lengths), and
keeps the raw bytes of:

* (0002,0010) Transfer Syntax UID;
* the Image Pixel module as pydicom's ``as_pixel_options`` reads it, and
  Number of Frames;
* Rescale Slope / Intercept, and whether a Modality LUT Sequence is present;
* the pixel data element (tag, VR, offset, length);
* the series keys :mod:`kvdicom._series.loader` sorts by (:data:`SERIES_KEYS`);
* encapsulated syntaxes only: Extended Offset Table (7FE0,0001) and its
  lengths (7FE0,0002), which come before the pixel data.

The values are decoded exactly as pydicom decodes them with its default
configuration, and the layout is built by the same code as the pydicom path
(:func:`kvdicom._header.layout.build_layout`, with the cached
:func:`kvdicom._header.layout.pixel_rules`; for encapsulated data
:func:`kvdicom._header.compressed.build_compressed`, with the cached
:func:`kvdicom._header.compressed.compressed_rules`), so both give the same
:class:`~kvdicom._header.layout.PixelLayout` or :class:`~kvdicom._header.compressed.CompressedLayout`.
Anything the walk cannot prove matches
pydicom returns ``None`` and the caller falls back to pydicom: big endian,
deflated syntaxes, compressed ones kvdicom does not decode, a refusal of
an encapsulated layout (the pydicom path words it), a Modality LUT Sequence, duplicates of a
needed element, unusual VRs or value lengths for them, numbers pydicom would
parse leniently, an encoding switch pydicom would make, needed elements after
the pixel data (trailing padding is walked like the rest), lengths that run
past their item or the file, and any error (the pydicom path words the refusal).

Reads are bounded by the file size: the first :data:`CHUNK_BYTES` are read,
and the walk re-reads a further chunk only where it needs bytes past it.

Where kvdicom was built with a C compiler, the compiled walk (``kvdicom/_header/_walk.c``, :data:`compiled_walk`)
first walks the file meta and the element headers of that chunk (and of longer windows read after it, up to
:data:`COMPILED_WINDOW_MAX_BYTES`), exactly as :func:`_walk_top` and :func:`_walk_items` would, and hands back the
kept values and where it stopped: before the pixel data, or before anything the Python walk must decide (a
refused or unusual element); the Python walk carries on from there with the same checks (:func:`_fast_forward`).
Both walks give the same result on every header (``tests/test_compiled_walk.py``).

Measured on the 2-core CPU dev machine (shared, so noisy): 256 copies of
pydicom's ``CT_small.dcm`` header (262 elements with the nested ones, trailing
padding after the pixel data) on 512 x 512 int16 slices, page cache warm, best
of 5: ``pydicom.dcmread(stop_before_pixels=True)`` 611 ms, ``kvdicom.inspect``
through this walk 60 ms (about 1/10), the pydicom path it replaces 982 ms,
``open`` + read of 16 KiB 5 ms. cProfile put 70 % of the walk in the per-element
loop, hence the inlined element decoding in :func:`_walk_top`. Per file, same
machine, best of 20: fixtures' ``ct`` header 1.44 ms with pydicom against
0.19 ms here; a 200-frame ``enhanced_mr`` header (its Per-frame Functional
Groups walked item by item) 8.98 ms against 1.11 ms.

Encapsulated files, same machine (load ~3.5 on its 2 cores), best of 9 x 200
warm calls of ``kvdicom.inspect``, the pydicom path before this walk took them
against the walk: the 30-frame 240 x 320 YBR_FULL_422 JPEG baseline fixture
1.14 ms against 0.22 ms (``dcmread(stop_before_pixels=True)`` alone 0.41 ms);
a 512² int16 JPEG 2000 lossless slice with a ``ct`` header 3.66 ms against
0.35 ms (``dcmread(stop_before_pixels=True)`` 2.1 ms), the same as HTJ2K
3.74 ms against 0.32 ms. About a third of what is left is the fragment walk
of :func:`kvdicom._header.encapsulated.locate` (one 8-byte ``pread`` per item), which
the pydicom path pays too.
"""

from __future__ import annotations

import codecs
import functools
import os
import re
import struct
import sys
from dataclasses import dataclass

from pydicom.charset import python_encoding
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from kvdicom._header import compressed
from kvdicom._header.layout import (
    PIXEL_RULES_CACHE_SIZE,
    ModalityTransform,
    PixelLayout,
    PixelRules,
    build_layout_cached,
    pixel_rules,
)
from kvdicom._io.fileid import identify, open_regular
from kvdicom.errors import DicomLoadError

try:  # built where a C compiler was found (setup.py); kvdicom works without it
    from kvdicom._header import _walk
except ImportError:
    _walk = None

#: Bytes read first. A CT header is 6–10 KiB; open + read of 16 KiB measured
#: 2.1 ms for 256 files on the H200 machine, so a larger first read costs
#: little and a second read is rare.
CHUNK_BYTES = 16 << 10

#: Longest value of a needed element the walk keeps; longer ones go to pydicom.
MAX_VALUE_BYTES = 1024

#: Deepest sequence nesting walked; deeper headers go to pydicom.
MAX_DEPTH = 16

UNDEFINED = 0xFFFFFFFF

_EXPLICIT = struct.Struct("<I2sH")  # tag word (group | element << 16), VR, short length
_IMPLICIT = struct.Struct("<II")  # tag word, length
_U32 = struct.Struct("<I")


def _word(tag: int) -> int:
    """A tag as the little-endian 32-bit word of its encoded (group, element)."""
    return (tag >> 16) | ((tag & 0xFFFF) << 16)


ITEM = _word(0xFFFEE000)
ITEM_DELIMITER = _word(0xFFFEE00D)
SEQUENCE_DELIMITER = _word(0xFFFEE0DD)

#: VRs whose explicit length field is 4 bytes (pydicom's EXPLICIT_VR_LENGTH_32).
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
#: VRs with a 2-byte length that pydicom reads without switching encodings.
SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())

#: Image Pixel module: tag → (``as_pixel_options`` name, VR).
IMAGE_PIXEL = {
    0x00280002: ("samples_per_pixel", b"US"),
    0x00280004: ("photometric_interpretation", b"CS"),
    0x00280006: ("planar_configuration", b"US"),
    0x00280008: ("number_of_frames", b"IS"),
    0x00280010: ("rows", b"US"),
    0x00280011: ("columns", b"US"),
    0x00280100: ("bits_allocated", b"US"),
    0x00280101: ("bits_stored", b"US"),
    0x00280103: ("pixel_representation", b"US"),
}
RESCALE = {0x00281052: ("intercept", b"DS"), 0x00281053: ("slope", b"DS")}
#: Series keys: tag → (name, VR); decoded by :mod:`kvdicom._series.keys`.
SERIES_KEYS = {
    0x0020000E: ("series_uid", b"UI"),
    0x00200032: ("position", b"DS"),
    0x00200037: ("orientation", b"DS"),
    0x00200013: ("instance_number", b"IS"),
    0x00280030: ("pixel_spacing", b"DS"),
    0x00180050: ("slice_thickness", b"DS"),
    0x00080016: ("sop_class_uid", b"UI"),
}
#: Pixel data elements and the VRs accepted for them in Explicit VR.
PIXEL = {
    0x7FE00010: ("PixelData", (b"OB", b"OW")),
    0x7FE00008: ("FloatPixelData", (b"OF",)),
    0x7FE00009: ("DoubleFloatPixelData", (b"OD",)),
}
#: (0008,0005) Specific Character Set: pydicom's reader looks up every value it meets, at the top level and in
#: the items it reads as it goes, and fails where Python's ``codecs.lookup`` does (a NUL inside a value).
CHARSET = 0x00080005
#: Present → pydicom path (Modality LUT Sequence; the extended offset tables of native syntaxes).
REFUSED = (0x00283000,)
#: Extended Offset Table and its lengths: kept for encapsulated syntaxes, refused for native ones.
EXTENDED = {0x7FE00001: "offsets", 0x7FE00002: "lengths"}
#: Longest Extended Offset Table (or lengths) value kept: 8 bytes a frame, 65536 frames.
MAX_EXTENDED_BYTES = 8 << 16

#: What the top-level walk does with each tag word it meets.
_KEEP, _PIXEL, _STOP, _EXTENDED = 1, 2, 3, 4
_ACTIONS: dict[int, int] = {}
for _tag in (*IMAGE_PIXEL, *RESCALE, *SERIES_KEYS, CHARSET):
    _ACTIONS[_word(_tag)] = _KEEP
for _tag in PIXEL:
    _ACTIONS[_word(_tag)] = _PIXEL
for _tag in REFUSED:
    _ACTIONS[_word(_tag)] = _STOP
for _tag in EXTENDED:
    _ACTIONS[_word(_tag)] = _EXTENDED
_ACTIONS[ITEM_DELIMITER] = _STOP  # pydicom ends the dataset there
_IMAGE_PIXEL_WORDS = tuple(_word(tag) for tag in IMAGE_PIXEL)
_SERIES_KEY_WORDS = tuple((_word(tag), name) for tag, (name, _) in SERIES_KEYS.items())
_SLOPE, _INTERCEPT = _word(0x00281053), _word(0x00281052)
_CHARSET = _word(CHARSET)
_EXPECTED_VR = {_word(t): vr for t, (_, vr) in {**IMAGE_PIXEL, **RESCALE, **SERIES_KEYS}.items()} | {_CHARSET: b"CS"}
#: The spellings pydicom corrects without looking them up (``pydicom.charset._python_encoding_for_corrected_encoding``).
_CHARSET_CORRECTED = re.compile("^ISO[^_]IR")
_CHARSET_CORRECTED_2022 = re.compile("^(?=ISO.2022.IR.)(?!ISO 2022 IR )")

#: A number exactly as ``float()`` reads it and pydicom's DS accepts without leniency.
_DS_NUMBER = re.compile(rb" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *\Z")
#: Every value of a multi-valued DS such a number: one match for the whole value, not one a part (a position's
#: three numbers parsed in 1.26 -> 0.95 µs, 2-core CPU dev machine).
_DS_NUMBERS = re.compile(_DS_NUMBER.pattern.removesuffix(rb"\Z").join([rb"(?:", rb")(?:\\(?:", rb"))*\Z"]))
_IS_NUMBER = re.compile(rb" *[+-]?[0-9]{1,12} *\Z")
_TS_IMPLICIT = ImplicitVRLittleEndian.encode()
_TS_EXPLICIT = ExplicitVRLittleEndian.encode()
#: The encapsulated syntaxes kvdicom decodes, by their UID bytes.
_ENCAPSULATED = {str(uid).encode(): uid for uid in compressed.CODECS}


#: The interface of the compiled walk this code drives (``WALK_VERSION`` in ``kvdicom/_header/_walk.c``); a build
#: of another version (stale, left in the tree) is not used.
COMPILED_WALK_VERSION = 5


def _load_compiled_walk(module=_walk):
    """``module`` (``kvdicom._header._walk``) configured with this module's tables, or None where it is not built
    (no compiler where kvdicom was installed) or of another version: the Python walk then walks every element.

    It walks the element headers exactly as :func:`_walk_top` and :func:`_walk_items` do and stops wherever they
    would do anything but skip or keep a value; the Python walk carries on from there (:func:`_fast_forward`).
    Numbers: docs/loader.md.
    """
    if getattr(module, "VERSION", None) != COMPILED_WALK_VERSION or sys.byteorder != "little":
        return None  # a stale build; or a big-endian host, whose words the C walk would read byte-swapped
    words = struct.Struct("<I")
    kept = [w for w, action in _ACTIONS.items() if action == _KEEP]
    other = b"".join(words.pack(w) for w, action in _ACTIONS.items() if action != _KEEP)
    module.configure(b"".join(words.pack(w) for w in kept), b"".join(_EXPECTED_VR[w] for w in kept), other,
                     b"".join(sorted(SHORT_VRS)), b"".join(sorted(LONG_VRS)), MAX_VALUE_BYTES, MAX_DEPTH,
                     _dictionary_sq)
    return module


class _Unprovable(Exception):
    """The walk cannot show that pydicom reads this header the same way."""


@dataclass(frozen=True)
class FastHeader:
    """What :func:`scan` found: the layout, and the raw bytes of the series keys present."""

    layout: PixelLayout | compressed.CompressedLayout
    keys: dict[str, bytes]


class _Source:
    """A window of the file: ``buf`` holds the bytes from offset ``base``."""

    __slots__ = ("fd", "size", "buf", "base")

    def __init__(self, fd: int, size: int):
        self.fd, self.size = fd, size
        self.buf, self.base = b"", 0

    def fill(self, pos: int, need: int) -> None:
        """Make ``need`` bytes from ``pos`` available (a chunk, never past the end of the file)."""
        if pos < 0 or need < 0 or pos + need > self.size:
            raise _Unprovable("past the end of the file")
        data = os.pread(self.fd, min(max(need, CHUNK_BYTES), self.size - pos), pos)
        if len(data) < need:
            raise _Unprovable("file shrank while reading")
        self.buf, self.base = data, pos

    def bytes_at(self, pos: int, n: int) -> bytes:
        if pos < self.base or pos + n > self.base + len(self.buf):
            self.fill(pos, n)
        start = pos - self.base
        return self.buf[start : start + n]


def _looks_explicit(vr: bytes) -> bool:
    """pydicom's test in ``_is_implicit_vr``: both VR bytes upper-case ASCII letters."""
    return len(vr) == 2 and 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B


@functools.lru_cache(maxsize=4096)
def _dictionary_sq(tag: int) -> bool | None:
    """Whether pydicom's dictionary calls ``tag`` a sequence (None: not in the dictionary); cached, as the
    dictionary is fixed and a series asks the same tags of every file."""
    from pydicom.datadict import _dictionary_vr_fast  # what pydicom's reader calls

    try:
        return _dictionary_vr_fast(tag) == "SQ"
    except KeyError:
        return None


def _element(src: _Source, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag word, VR or None, value offset, length) of the element header at ``pos``."""
    if pos + 12 > src.base + len(src.buf) or pos < src.base:
        src.fill(pos, min(12, src.size - pos))
    at = pos - src.base
    if len(src.buf) - at < 8:
        raise _Unprovable("element header past the end of the file")
    if implicit:
        word, length = _IMPLICIT.unpack_from(src.buf, at)
        return word, None, pos + 8, length
    word, vr, length = _EXPLICIT.unpack_from(src.buf, at)
    if vr in LONG_VRS:
        if len(src.buf) - at < 12:
            raise _Unprovable("element header past the end of the file")
        return word, vr, pos + 12, _U32.unpack_from(src.buf, at + 8)[0]
    if vr in SHORT_VRS:
        return word, vr, pos + 8, length
    raise _Unprovable(f"VR {vr!r}")


def _undefined_is_sequence(src: _Source, word: int, vr: bytes | None, value_at: int) -> bool:
    """Whether pydicom parses an undefined-length element as a sequence (else: unprovable)."""
    if vr is not None:
        return vr == b"SQ"
    tag = ((word & 0xFFFF) << 16) | (word >> 16)
    is_sq = _dictionary_sq(tag)
    if is_sq is None:  # private or unknown: pydicom looks for an item tag next
        return _U32.unpack(src.bytes_at(value_at, 4))[0] == ITEM
    return is_sq


@functools.lru_cache(maxsize=64)
def _charset_fails(raw: bytes) -> bool:
    """Whether pydicom's reader raises on this (0008,0005) value: ``convert_encodings(convert_string(raw))``,
    whose ``codecs.lookup`` of a value it cannot name or correct raises ValueError where the value holds a NUL
    ("embedded null character", found by the file fuzz on clinical headers) and a LookupError (a warning)
    otherwise. Cached: a series repeats one value."""
    values = raw.decode("latin-1").rstrip(" \0").split("\\")
    if len(values) > 1 and not values[0]:
        values[0] = "ISO_IR 6"
    for value in values:
        if value in python_encoding or _CHARSET_CORRECTED.match(value) or _CHARSET_CORRECTED_2022.match(value):
            continue  # named, or corrected by pydicom (to a name, else the default), never looked up
        try:
            codecs.lookup(value)
        except LookupError:
            continue
        except Exception:  # noqa: BLE001  what pydicom's reader lets through
            return True
    return False


def _walk_items(src: _Source, pos: int, implicit: bool, depth: int) -> int:
    """Walk the items of an undefined-length sequence, and every sequence nested in them; return the offset
    after its delimiter.

    One loop with an explicit stack instead of a call per item and per nested sequence: on fixtures' ``ct``
    header (8 undefined-length sequences, 49 nested elements) the recursive walk took 41 % of the 98 µs walk
    (cProfile on the 2-core CPU dev machine), half of it in calls. ``depth``: that of the dataset holding the
    sequence (1: the top level); an item's dataset is one deeper, and deeper than :data:`MAX_DEPTH` goes to pydicom.
    """
    unpack_implicit, unpack_explicit, u32 = _IMPLICIT.unpack_from, _EXPLICIT.unpack_from, _U32.unpack_from
    long_vrs, short_vrs = LONG_VRS, SHORT_VRS
    holders = [(None, depth)]  # (end, depth) of the datasets holding the open sequences, innermost last
    in_items = True  # reading the item headers of the innermost open sequence, else the elements of an item
    end = None  # the item being walked ends here (None: at its delimiter)
    buf, base = src.buf, src.base
    limit = base + len(buf) - 12
    while True:
        if end is not None and not in_items and pos >= end:
            if pos != end:
                raise _Unprovable("element runs past its item")
            in_items = True
            continue
        if pos > limit or pos < base:  # near the window's end: read through the source, then move the window
            head = src.bytes_at(pos, 8)
            buf, base = src.buf, src.base
            limit = base + len(buf) - 12
            word, length = _IMPLICIT.unpack(head)
        else:
            word, length = unpack_implicit(buf, pos - base)
        if in_items:
            pos += 8
            if word == SEQUENCE_DELIMITER:
                end, item_depth = holders.pop()
                if not holders:
                    return pos
                in_items = False
                continue
            if word != ITEM:
                raise _Unprovable("sequence content is not an item")
            item_depth = holders[-1][1] + 1
            if item_depth > MAX_DEPTH:
                raise _Unprovable("sequences nested too deep")
            end = None if length == UNDEFINED else pos + length
            in_items = False
            continue
        if word == ITEM_DELIMITER:
            if end is not None:
                raise _Unprovable("item delimiter in an item of defined length")
            if length:  # pydicom reads it as an explicit VR element: "OV" / "OB"... there take 4 bytes more
                raise _Unprovable("item delimiter with a length")
            pos += 8
            in_items = True
            continue
        if implicit:
            value_at = pos + 8
            vr = None
        else:
            if pos > limit or pos < base:
                word, vr, value_at, length = _element(src, pos, False)
                buf, base = src.buf, src.base
                limit = base + len(buf) - 12
            else:
                word, vr, length = unpack_explicit(buf, pos - base)
                if vr in long_vrs:
                    length = u32(buf, pos - base + 8)[0]
                    value_at = pos + 12
                elif vr in short_vrs:
                    value_at = pos + 8
                else:  # also where an item switches to implicit VR, as pydicom would read it
                    raise _Unprovable(f"VR {vr!r}")
        if word == _CHARSET and length != UNDEFINED and _charset_fails(src.bytes_at(value_at, length)):
            raise _Unprovable("a Specific Character Set pydicom's reader fails on")
        if length == UNDEFINED:
            if not _undefined_is_sequence(src, word, vr, value_at):
                raise _Unprovable("undefined length outside a sequence")
            holders.append((end, item_depth))
            in_items = True
            pos = value_at
            buf, base = src.buf, src.base  # the sequence test may have moved the window
            limit = base + len(buf) - 12
        else:
            pos = value_at + length


def _file_meta(src: _Source) -> tuple[int, bytes | None]:
    """Walk the file meta (explicit VR LE, group 2) after the DICM prefix: (where the dataset starts, the
    Transfer Syntax UID, or None without one)."""
    pos, tsyntax = 132, None
    first = True
    while True:
        if pos + 8 > src.size:
            raise _Unprovable("file ends in the file meta")
        if src.bytes_at(pos, 2) != b"\x02\x00":
            return pos, tsyntax
        word, vr, value_at, length = _element(src, pos, False)
        if first and (word != _word(0x00020000) or vr != b"UL" or length != 4):
            raise _Unprovable("file meta does not start with its group length")
        first = False
        if length == UNDEFINED:
            raise _Unprovable("undefined length in the file meta")
        if word == _word(0x00020010):
            if tsyntax is not None or length > 64:
                raise _Unprovable("odd (0002,0010)")
            tsyntax = src.bytes_at(value_at, length).rstrip(b" \0")
        pos = value_at + length


def _start(src: _Source, force: bool) -> tuple[int, bool, bytes]:
    """Where the dataset starts, whether it is implicit VR, and the transfer syntax UID bytes."""
    src.fill(0, min(CHUNK_BYTES, src.size))
    buf = src.buf
    if len(buf) >= 132 and buf[128:132] == b"DICM":
        meta = compiled_walk.meta(buf, src.size) if compiled_walk is not None else None
        if meta is None:
            pos, tsyntax = _file_meta(src)
        else:  # the compiled walk of the same rules (8.3 -> 3 µs of a CT header, 2-core CPU dev machine)
            pos, tsyntax = meta[0], None if meta[1] is None else meta[1].rstrip(b" \0")
        if tsyntax == _TS_EXPLICIT or tsyntax in _ENCAPSULATED:  # encapsulated syntaxes are explicit VR LE
            implicit = False
        elif tsyntax == _TS_IMPLICIT:
            implicit = True
        else:
            raise _Unprovable("not Implicit or Explicit VR Little Endian, nor an encapsulated syntax kvdicom decodes")
    elif force:
        pos, tsyntax = 0, None
        if src.size < 8:
            raise _Unprovable("too short")
        group, vr = struct.unpack_from("<H2x2s", buf, 0)
        if group in (0x0000, 0x0002):
            raise _Unprovable("command set or file meta without preamble")
        if vr in LONG_VRS or vr in SHORT_VRS:
            if group >= 1024:
                raise _Unprovable("big endian")
            implicit, tsyntax = False, _TS_EXPLICIT
        else:
            implicit, tsyntax = True, _TS_IMPLICIT
    else:
        raise _Unprovable("no DICM prefix")  # pydicom refuses it; let it say so
    head = src.bytes_at(pos, min(6, src.size - pos))
    if len(head) < 6:
        raise _Unprovable("empty dataset")
    if head[0:2] == b"\0\0":
        raise _Unprovable("command set elements")
    if _looks_explicit(head[4:6]) == implicit:
        raise _Unprovable("dataset encoding differs from the transfer syntax")
    return pos, implicit, tsyntax


def _keep(src: _Source, kept: dict, word: int, vr: bytes | None, value_at: int, length: int) -> None:
    """Keep the value of a needed element (both walks), or :class:`_Unprovable` where pydicom must decide."""
    if word in kept:
        raise _Unprovable("duplicate element")
    if length == UNDEFINED or length > MAX_VALUE_BYTES:
        raise _Unprovable("needed element too long")
    if vr is not None and vr != _EXPECTED_VR[word]:
        raise _Unprovable("unusual VR")
    kept[word] = (vr, src.bytes_at(value_at, length))


#: Longest window the compiled walk is given: where it stops for bytes past its window, the window is read again
#: from there, twice as long, up to this; past it the Python walk carries on in :data:`CHUNK_BYTES` reads (a
#: header never makes kvdicom hold more of the file than this). The 200-frame enhanced MR fixture's 70 KB header:
#: ``inspect`` 0.455 ms with the Python walk, 0.392 ms with the compiled walk in the first chunk only, 0.037 ms
#: reading on (implicit VR: 0.267 / 0.224 / 0.036 ms; 2-core CPU dev machine, medians of 600).
COMPILED_WINDOW_MAX_BYTES = 4 << 20


def _fast_forward(src: _Source, pos: int, implicit: bool) -> tuple[int, dict]:
    """Walk as far as the compiled walk can (:data:`compiled_walk`): where the Python walk carries on (``pos``
    itself where there is no compiled walk), and what :func:`_keep` would have kept of the elements passed."""
    if compiled_walk is None:
        return pos, {}
    stop, kept, need = compiled_walk.walk(src.buf, src.base, pos, implicit)
    while need and src.base + len(src.buf) < src.size and 2 * len(src.buf) <= COMPILED_WINDOW_MAX_BYTES:
        src.fill(stop, min(src.size - stop, 2 * len(src.buf)))
        stop, found, need = compiled_walk.walk(src.buf, src.base, stop, implicit)
        if not kept.keys().isdisjoint(found):
            raise _Unprovable("duplicate element")
        kept.update(found)
    return stop, kept


def _walk_top(src: _Source, pos: int, implicit: bool, encapsulated: bool = False, kept: dict | None = None):
    """Walk the top-level dataset to the pixel data; return (kept values, pixel element).

    ``encapsulated``: the transfer syntax is one of :data:`kvdicom._header.compressed.CODECS`, so the pixel data
    must have undefined length, and the Extended Offset Table and its lengths (before it) are kept. ``kept``:
    the values kept before ``pos`` (by :func:`_fast_forward`), to which this walk adds.

    The hot loop of the fast path (one pass per element of a 200–400 element
    header), so the element header is decoded inline from the buffered chunk
    and :func:`_element` is called only at a chunk boundary. A short-VR element (2-byte length, never
    undefined) that is not needed is skipped before any other test: with the flat :func:`_walk_items`,
    ``_start`` + this walk of fixtures' ``ct`` header went from 99.4 to 78.3 µs (medians of 4000 calls,
    old and new interleaved, 2-core CPU dev machine; a bare loop of the 212 top-level ``unpack_from`` calls
    alone takes 22 µs there).
    """
    kept: dict[int, tuple[bytes | None, bytes]] = {} if kept is None else kept
    actions = _ACTIONS
    explicit_unpack, implicit_unpack, u32_unpack = _EXPLICIT.unpack_from, _IMPLICIT.unpack_from, _U32.unpack_from
    long_vrs, short_vrs = LONG_VRS, SHORT_VRS
    buf, base = src.buf, src.base
    limit = base + len(buf) - 12
    while True:
        if base <= pos <= limit:
            if implicit:
                word, length = implicit_unpack(buf, pos - base)
                vr, value_at = None, pos + 8
            else:
                word, vr, length = explicit_unpack(buf, pos - base)
                if vr in short_vrs:  # most elements: a 2-byte length, never undefined
                    if word not in actions:
                        pos += 8 + length
                        continue
                    value_at = pos + 8
                elif vr in long_vrs:
                    length = u32_unpack(buf, pos - base + 8)[0]
                    value_at = pos + 12
                else:
                    raise _Unprovable(f"VR {vr!r}")
        else:
            word, vr, value_at, length = _element(src, pos, implicit)
            buf, base = src.buf, src.base
            limit = base + len(buf) - 12
        action = actions.get(word)
        if action is not None:
            if action == _STOP:
                raise _Unprovable("element handled by the pydicom path only")
            if action == _PIXEL:
                if (length == UNDEFINED) != encapsulated:
                    raise _Unprovable("pixel data length does not fit the transfer syntax")
                return kept, (word, vr, value_at, length)
            if action == _EXTENDED:
                if not encapsulated:
                    raise _Unprovable("extended offset table with a native transfer syntax")
                if word in kept or vr not in (b"OV", b"OB") or not 0 < length <= MAX_EXTENDED_BYTES:
                    raise _Unprovable("unusual extended offset table element")
                kept[word] = (vr, src.bytes_at(value_at, length))
                pos = value_at + length
                buf, base = src.buf, src.base
                limit = base + len(buf) - 12
                continue
            _keep(src, kept, word, vr, value_at, length)
            pos = value_at + length
        elif length == UNDEFINED:
            if not _undefined_is_sequence(src, word, vr, value_at):
                raise _Unprovable("undefined length outside a sequence")
            pos = _walk_items(src, value_at, implicit, 1)
        else:
            pos = value_at + length
            continue
        buf, base = src.buf, src.base  # a value read or a sequence walk may have moved the window
        limit = base + len(buf) - 12


def _walk_tail(src: _Source, pos: int, implicit: bool) -> None:
    """Elements after the pixel data (trailing padding): pydicom reads them too, to the last 8 bytes."""
    while src.size - pos >= 8:
        word, vr, value_at, length = _element(src, pos, implicit)
        if word in _ACTIONS:
            raise _Unprovable("a needed element after the pixel data")
        if length == UNDEFINED:
            if not _undefined_is_sequence(src, word, vr, value_at):
                raise _Unprovable("undefined length outside a sequence")
            pos = _walk_items(src, value_at, implicit, 1)
        else:
            pos = value_at + length


def _us(raw: bytes) -> int:
    if len(raw) != 2:
        raise _Unprovable("US value that is not one number")
    return raw[0] | raw[1] << 8


def _cs(raw: bytes) -> str:
    value = raw.decode("latin-1").rstrip(" \0")
    if "\\" in value:
        raise _Unprovable("multi-valued CS")
    return value


def parse_is(raw: bytes) -> int:
    """An IS value as pydicom reads it (one integer), or :class:`_Unprovable`."""
    value = raw.rstrip(b" \0")
    if not _IS_NUMBER.match(value):
        raise _Unprovable("IS value pydicom might read leniently")
    return int(value)


def parse_ds(raw: bytes) -> float | tuple[float, ...]:
    """A DS value as pydicom reads it: one float, or a tuple for several; else :class:`_Unprovable`."""
    value = raw.strip(b" \t\n\r\x0b\x0c").rstrip(b" \0")
    if not _DS_NUMBERS.match(value):
        raise _Unprovable("DS value pydicom might read leniently")
    parts = value.split(b"\\")
    if len(parts) == 1:
        return float(parts[0])
    return tuple(map(float, parts))


def _options(kept: dict) -> dict:
    """``as_pixel_options(ds)`` from the raw Image Pixel values."""
    options = {}
    for word, (name, vr) in zip(_IMAGE_PIXEL_WORDS, IMAGE_PIXEL.values()):
        value = kept.get(word)
        if value is None:
            continue
        raw = value[1]
        if vr == b"US":
            options[name] = _us(raw)
        elif vr == b"CS":
            options[name] = _cs(raw)
        else:
            options[name] = parse_is(raw)
    if options.get("number_of_frames", 0) == 0:  # absent, or 0: pydicom assumes 1
        options["number_of_frames"] = 1
    return options


def _modality(kept: dict) -> ModalityTransform | None:
    """What ``apply_modality_lut`` does (the Modality LUT Sequence was refused in the walk)."""
    slope = kept.get(_SLOPE)
    intercept = kept.get(_INTERCEPT)
    if slope is None or intercept is None:
        return None
    return _rescale(slope[1], intercept[1])


@functools.lru_cache(maxsize=PIXEL_RULES_CACHE_SIZE)
def _rescale(slope: bytes, intercept: bytes) -> ModalityTransform:
    """The rescale of raw Rescale Slope / Intercept values, cached by their bytes (a series repeats them; the
    transform is frozen, so slices share it): 4.4 µs a file parsed, 2-core CPU dev machine."""
    return ModalityTransform("rescale", slope=parse_ds(slope), intercept=parse_ds(intercept))


def _native_rules(implicit: bool, keyword: str, vr: bytes | None, kept: dict) -> PixelRules:
    """:func:`kvdicom._header.layout.pixel_rules` of the raw Image Pixel values, cached by their bytes.

    ``_options`` + ``pixel_rules`` (whose cache is keyed by the parsed values) took 9.6 µs a file on
    fixtures' ``ct`` header, 2-core CPU dev machine; a lookup by the raw bytes skips both.
    """
    raw = tuple(None if (value := kept.get(word)) is None else value[1] for word in _IMAGE_PIXEL_WORDS)
    return _rules_of_raw(implicit, keyword, vr, raw)


@functools.lru_cache(maxsize=PIXEL_RULES_CACHE_SIZE)
def _rules_of_raw(implicit: bool, keyword: str, vr: bytes | None, raw: tuple) -> PixelRules:
    kept = {word: (None, value) for word, value in zip(_IMAGE_PIXEL_WORDS, raw) if value is not None}
    tsyntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return pixel_rules(tsyntax, keyword, vr.decode() if vr is not None else "", _options(kept))


def _extended(kept: dict) -> tuple[bytes, bytes] | None:
    """(Extended Offset Table, its lengths) as ``inspect_compressed`` takes them from the dataset."""
    offsets = kept.get(_word(0x7FE00001))
    if offsets is None:
        return None  # the lengths alone are ignored, as pydicom ignores them
    lengths = kept.get(_word(0x7FE00002))
    if lengths is None:
        raise _Unprovable("Extended Offset Table without its lengths")  # as_pixel_options fails on it
    return offsets[1], lengths[1]


def _same_file(path: str, file_id) -> bool:
    """Whether ``path`` still names the file whose header was walked."""
    try:
        return identify(path) == tuple(file_id)
    except OSError:
        return False


def _compressed_layout(src: _Source, path: str, tsyntax, kept: dict, pixel: tuple,
                       file_id) -> compressed.CompressedLayout:
    """The layout of encapsulated pixel data, by the builder the pydicom path uses, then the elements after it.

    pydicom ends an undefined-length Pixel Data value where the walk of its
    items meets the Sequence Delimitation Item (``_try_read_encapsulated_pixel_data``),
    which is where :func:`kvdicom._header.encapsulated.locate` stops too, and reads on
    from there: the same elements are walked here. A refusal (``DicomLoadError``)
    steps aside, so the pydicom path decides and words it, unless the file
    changed since the walk opened it: that refusal is raised as it is (the
    pydicom path would refuse at the same identity check, after a full parse).
    """
    word, vr, offset, length = pixel
    if word != _word(0x7FE00010) or vr not in (b"OB", b"OW"):
        raise _Unprovable("encapsulated data in an element other than an OB / OW Pixel Data")
    options = _options(kept)
    extended = _extended(kept)
    if extended is not None:
        options["extended_offsets"] = extended
    try:
        layout = compressed.build_compressed(path, tsyntax, options, extended, offset, length,
                                             _modality(kept), file_id, src.fd)
    except DicomLoadError as exc:
        if not _same_file(path, file_id):
            raise  # changed under the walk: the pydicom path's fragment walk checks the same identity and refuses
        raise _Unprovable("refused; the pydicom path words it") from exc
    end = layout.frame_table.span[1]
    if src.size - end < 8 or _U32.unpack(src.bytes_at(end, 4))[0] != SEQUENCE_DELIMITER:
        raise _Unprovable("encapsulated pixel data without its sequence delimiter")
    _walk_tail(src, end + 8, False)
    return layout


def _scan_open(fd: int, path: str, force: bool, file_id=None) -> FastHeader:
    file_id = tuple(file_id) if file_id is not None else identify(fd)
    src = _Source(fd, file_id[2])
    pos, implicit, tsyntax_bytes = _start(src, force)
    encapsulated = _ENCAPSULATED.get(tsyntax_bytes)
    pos, kept = _fast_forward(src, pos, implicit)
    kept, (word, vr, offset, length) = _walk_top(src, pos, implicit, encapsulated is not None, kept)
    charset = kept.get(_CHARSET)
    if charset is not None and _charset_fails(charset[1]):
        raise _Unprovable("a Specific Character Set pydicom's reader fails on")
    if encapsulated is not None:
        layout = _compressed_layout(src, path, encapsulated, kept, (word, vr, offset, length), file_id)
    else:
        _walk_tail(src, offset + length, implicit)
        keyword, vrs = PIXEL[((word & 0xFFFF) << 16) | (word >> 16)]
        if vr is not None and vr not in vrs:
            raise _Unprovable("unusual pixel data VR")
        tsyntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        rules = _native_rules(implicit, keyword, vr, kept)
        layout = build_layout_cached(path, rules, tsyntax, keyword, offset, length, src.size, _modality(kept),
                                     file_id)
    keys = {name: value[1] for word, name in _SERIES_KEY_WORDS if (value := kept.get(word)) is not None}
    return FastHeader(layout, keys)


def scan_fd(fd: int, path: str, force: bool = False, file_id=None) -> FastHeader | None:
    """:func:`scan` on an open descriptor (``file_id``: its identity, if already taken)."""
    try:
        return _scan_open(fd, path, force, file_id)
    except (_Unprovable, struct.error, UnicodeDecodeError):
        return None


def scan(path: str, force: bool = False) -> FastHeader | None:
    """The layout and series keys of ``path`` by the fast walk, or None where pydicom must decide.

    Raises :class:`kvdicom.DicomLoadError` only for refusals the pydicom path
    would make from the same values (the shared rules), for what is not a
    regular file and for a compressed file changed during its fragment walk,
    and the ``OSError`` of ``open()`` when the file cannot be opened.
    """
    fd = open_regular(path)
    try:
        return scan_fd(fd, path, force)
    finally:
        os.close(fd)


#: The compiled walk, or None (tests set it to None to run the Python walk alone).
compiled_walk = _load_compiled_walk()

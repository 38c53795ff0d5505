"""What a frame's own codestream says: dimensions, precision, sign, and whether the GPU may decode it.

Read from the main header only (a few hundred bytes), before any output is
allocated: a header whose Rows/Columns disagree with the codestream is refused
instead of trusted. JPEG and JPEG-LS headers are parsed by pydicom
(``_get_jpg_parameters``, what its decoders use); JPEG 2000 by the SIZ, CAP
and COM marker segments here.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from pydicom.pixels.utils import _get_jpg_parameters

SOC, SIZ, CAP, COM, SOT = 0xFF4F, 0xFF51, 0xFF50, 0xFF64, 0xFF90
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"

#: Encoders known to write HTJ2K code-blocks with the cleanup pass only (no
#: SigProp/MagRef refinement passes, which nvJPEG2000 decodes to garbage while
#: reporting success: CUDALibrarySamples issue 128). OpenJPH's encoder never
#: emits refinement passes, and names itself in a COM marker.
SINGLE_PASS_ENCODERS = (b"OpenJPH",)


@dataclass(frozen=True)
class FrameInfo:
    width: int
    height: int
    components: int
    precision: int
    signed: bool
    #: JPEG 2000: the stream uses HT code-blocks (Part 15)
    ht: bool = False
    #: HT streams: shown to use a single (cleanup) coding pass per code-block
    ht_single_pass: bool = False
    #: JPEG 2000: components are subsampled (XRsiz/YRsiz > 1)
    subsampled: bool = False
    #: JPEG: component ids spell "RGB" (pydicom then treats the frame as RGB)
    rgb_ids: bool = False


def j2k_info(frame: bytes) -> FrameInfo | None:
    """Main-header facts of a J2K codestream, or None if it is not one (or is a JP2 file)."""
    data = bytes(frame[:4096])
    if len(data) < 4 or struct.unpack(">H", data[:2])[0] != SOC:
        return None
    pos, info, ht, comments, ccap15 = 2, None, False, [], None
    while pos + 4 <= len(data):
        marker, length = struct.unpack(">2H", data[pos: pos + 4])
        body = data[pos + 4: pos + 2 + length]
        if marker == SOT or length < 2:
            break
        if marker == SIZ and len(body) >= 36:
            xsiz, ysiz, xo, yo = struct.unpack(">4I", body[2:18])
            csiz = struct.unpack(">H", body[34:36])[0]
            comps = [body[36 + 3 * i: 39 + 3 * i] for i in range(csiz)]
            if not comps or len(comps[-1]) < 3:  # no components, or the segment cut short
                return None
            ssiz = comps[0][0]
            info = {"width": xsiz - xo, "height": ysiz - yo, "components": csiz, "precision": (ssiz & 0x7F) + 1,
                    "signed": bool(ssiz & 0x80), "subsampled": any(c[1] != 1 or c[2] != 1 for c in comps)}
        elif marker == CAP and len(body) >= 4:
            pcap = struct.unpack(">I", body[:4])[0]
            ht = bool(pcap & (1 << (32 - 15)))  # Pcap bit for Part 15
            if ht and len(body) >= 6:
                ccap15 = struct.unpack(">H", body[4:6])[0]
        elif marker == COM:
            comments.append(body[2:])
        pos += 2 + length
    if info is None:
        return None
    single = False
    if ht and ccap15 is not None:
        ht_only = (ccap15 >> 14) == 0  # HTONLY: every code-block is HT
        single_set = not (ccap15 >> 13) & 1  # SINGLEHT: one HT set per code-block
        single = ht_only and single_set and any(c.startswith(SINGLE_PASS_ENCODERS) for c in comments)
    return FrameInfo(**info, ht=ht, ht_single_pass=single)


#: Bytes of a JPEG frame's start that usually hold its frame header (SOF): parsed, and cached, on their own.
JPEG_PREFIX_BYTES = 4096


def jpeg_info(frame: bytes) -> FrameInfo | None:
    """JPEG / JPEG-LS frame header facts via pydicom's parser, or None if it has none.

    Every fact kept comes from the frame header (SOF), so a parse of the frame's first
    :data:`JPEG_PREFIX_BYTES` that finds it gives the same facts as a parse of the whole frame; the
    frames of one file usually start with the same tables and SOF, so that parse is cached by those bytes
    (30 frames of 240 × 320 JPEG: 0.30 ms for the checks without the cache, one parse a frame, on the CPU
    dev machine). A frame whose SOF lies further in is parsed up to 64 KiB, uncached.
    """
    info = _jpeg_info_of(bytes(frame[:JPEG_PREFIX_BYTES]))
    if info is None and len(frame) > JPEG_PREFIX_BYTES:
        info = _jpeg_info_uncached(bytes(frame[:65536]))
    return info


def _jpeg_info_uncached(head: bytes) -> FrameInfo | None:
    try:
        params = _get_jpg_parameters(head)
    except Exception:  # noqa: BLE001 - a frame pydicom's parser cannot read has no header to check
        return None
    if "height" not in params:
        return None
    ids = params.get("component_ids")
    return FrameInfo(width=params["width"], height=params["height"], components=params["components"],
                     precision=params["precision"], signed=False,
                     rgb_ids=ids in ([82, 71, 66], [114, 103, 98]))


_jpeg_info_of = functools.lru_cache(maxsize=256)(_jpeg_info_uncached)


COD, COC, SOD = 0xFF52, 0xFF53, 0xFF93


def _transforms(data: memoryview, pos: int, end: int, csiz: int) -> tuple[list[int], int] | None:
    """The wavelet transforms COD / COC segments name from ``pos`` up to SOT or SOD; (transforms, where it stopped).

    ``data`` is the frame as a byte ``memoryview`` (slices index as ints, unpack without copies)."""
    found = []
    while pos + 4 <= end:
        marker, length = struct.unpack(">2H", data[pos: pos + 4])
        if marker in (SOT, SOD):
            return found, pos
        if length < 2 or pos + 2 + length > end:
            return None
        body = data[pos + 4: pos + 2 + length]
        if marker == COD:
            if len(body) < 10:
                return None
            found.append(body[9])  # Scod, SGcod (4), then SPcod: levels, cb w, cb h, cb style, transform
        elif marker == COC:
            skip = 2 if csiz >= 257 else 1  # Ccoc is 2 bytes with 257 components or more
            if len(body) < skip + 6:
                return None
            found.append(body[skip + 5])  # Ccoc, Scoc, then SPcoc: levels, cb w, cb h, cb style, transform
        pos += 2 + length
    return None


def j2k_reversible(frame, components: int | None = None) -> bool:
    """Whether every COD / COC segment of a J2K codestream, main header and every tile-part header, names
    the reversible 5-3 wavelet: the integer path, on which every correct decoder returns the same samples.

    False where any segment names the 9-7 wavelet (decoders round it differently) or the stream cannot be
    walked (a tile-part length running past the end, a missing COD): such a stream keeps pydicom's own plugin.
    ``components``: the SIZ's count where :func:`j2k_info` already read it (256 frames of 512² HTJ2K: 5.2 ms
    of checks with the main header parsed again, 1.3 ms without, CPU dev machine).
    """
    data = memoryview(frame).cast("B")  # no copy: 256 frames of 512² HTJ2K took 12.4 ms with bytes(frame)
    if components is None:  # not known from j2k_info already
        info = j2k_info(data)
        if info is None:
            return False
        components = info.components
    if len(data) < 2 or struct.unpack(">H", data[:2])[0] != SOC:
        return False
    main = _transforms(data, 2, len(data), components)
    if main is None or not main[0]:
        return False
    transforms, pos = main
    while pos + 12 <= len(data) and struct.unpack(">H", data[pos: pos + 2])[0] == SOT:
        psot = struct.unpack(">I", data[pos + 6: pos + 10])[0]
        end = len(data) if psot == 0 else pos + psot
        if end > len(data) or psot and psot < 14:
            return False
        header = _transforms(data, pos + 12, end, components)
        if header is None:
            return False
        transforms += header[0]
        if psot == 0:
            break
        pos = end
    return all(t == 1 for t in transforms)


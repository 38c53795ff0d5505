"""Compressed (encapsulated) pixel data: the layout from the header, and ``load`` on the host or the GPU.

``device="cpu"`` decodes with pydicom's own decoders (its CPU plugins, pinned
by :func:`reference_plugin`), from the bytes kvdicom read in one pass; it is
``pixel_array`` by construction. ``device="cuda"`` decodes the frames that
nvImageCodec can decode exactly in one batch on the GPU (:mod:`kvdicom._codecs.gpu_codec`);
the rest go through the same host decoders and are copied once.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pydicom
from pydicom.pixels.decoders.base import DecodeRunner
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID

from kvdicom import settings
from kvdicom._header import codestream, encapsulated
from kvdicom._header.layout import PIXEL_RULES_CACHE_SIZE, ImagePixel, ModalityTransform, ModuleRules, options_key
from kvdicom._header.layout import _shape as pixel_array_shape
from kvdicom.errors import DicomLoadError

#: Transfer syntax → codec name reported by ``inspect`` (what pydicom 3 can decode).
CODECS = {
    pydicom.uid.JPEGBaseline8Bit: "jpeg",
    pydicom.uid.JPEGExtended12Bit: "jpeg",
    pydicom.uid.JPEGLossless: "jpeg_lossless",
    pydicom.uid.JPEGLosslessSV1: "jpeg_lossless",
    pydicom.uid.JPEGLSLossless: "jpegls",
    pydicom.uid.JPEGLSNearLossless: "jpegls",
    pydicom.uid.JPEG2000Lossless: "jpeg2000",
    pydicom.uid.JPEG2000: "jpeg2000",
    pydicom.uid.HTJ2KLossless: "htj2k",
    pydicom.uid.HTJ2KLosslessRPCL: "htj2k",
    pydicom.uid.HTJ2K: "htj2k",
    pydicom.uid.RLELossless: "rle",
}

#: pydicom decoding plugins in the order the reference uses them: pylibjpeg
#: (libjpeg / openjpeg / rle), then pydicom's own RLE, pyjpegls, GDCM, Pillow.
#: nvImageCodec's plugin is never the reference.
REFERENCE_PLUGINS = ("pylibjpeg", "pydicom", "pyjpegls", "gdcm", "pillow")

#: RLE cannot expand a segment more than 128 bytes per 2 bytes read: a bound on
#: what a frame can decode to, checked before allocating for it.
RLE_MAX_EXPANSION = 64


@dataclass(frozen=True)
class CompressedLayout(ImagePixel):
    """An encapsulated file's pixels: where the frames are and what array they make."""

    compressed: ClassVar[bool] = True

    codec: str  #: "jpeg", "jpeg_lossless", "jpegls", "jpeg2000", "htj2k" or "rle"
    frame_table: encapsulated.FrameTable
    #: pydicom's options for its decoders (as_pixel_options plus the Extended Offset Table)
    options: dict = field(default_factory=dict, compare=False, repr=False)
    modality: object = None  #: kvdicom._header.layout.ModalityTransform
    pixel_keyword: str = "PixelData"
    #: :func:`kvdicom._io.fileid.identify` of the file the header was read from (as PixelLayout.file_id):
    #: the fragment walk and the pixel read refuse any other file
    file_id: tuple[int, ...] | None = None

    @property
    def nbytes(self) -> int:
        """Compressed bytes read (the span of the encapsulated fragments)."""
        return self.frame_table.nbytes



def reference_plugin(tsyntax: UID) -> str:
    """The pydicom decoding plugin used for ``tsyntax`` (the first available of REFERENCE_PLUGINS)."""
    decoder = pydicom.pixels.get_decoder(tsyntax)
    for name in REFERENCE_PLUGINS:
        if name in decoder.available_plugins:
            return name
    raise DicomLoadError("", f"no pydicom decoding plugin for {tsyntax.name} is installed "
                         "(install pylibjpeg with pylibjpeg-libjpeg / -openjpeg / -rle)")


@dataclass(frozen=True)
class CompressedRules(ModuleRules):
    """What pydicom's ``DecodeRunner`` derives from one Image Pixel module of an encapsulated syntax, once.

    The same for every file with the same module values and transfer syntax,
    so :func:`compressed_rules` caches it (as :func:`kvdicom._header.layout.pixel_rules`
    does for native data): a series of compressed slices validates its module
    once. ``number_of_frames`` is the runner's value, as it is.
    """


def _derive_rules(tsyntax: UID, options: dict) -> CompressedRules:
    """The runner's checks and values (the Extended Offset Table does not change them)."""
    try:
        runner = DecodeRunner(tsyntax)
        runner.set_options(**{k: v for k, v in options.items() if k != "extended_offsets"})
        runner._validate_options()
    except Exception as exc:
        return CompressedRules(error=f"invalid Image Pixel module: {exc}")
    if runner.bits_allocated not in (8, 16, 32) and not (runner.bits_allocated == 1 and CODECS.get(tsyntax) in
                                                          ("jpeg2000", "htj2k")):
        return CompressedRules(error=f"(0028,0100) Bits Allocated {runner.bits_allocated} with {tsyntax.name}; "
                               "kvdicom decodes compressed samples of 8, 16 or 32 bits allocated (and 1 in "
                               "JPEG 2000: segmentations, one byte a sample as pydicom gives them)")
    try:
        dtype = runner.pixel_dtype.newbyteorder("=")
    except Exception as exc:
        return CompressedRules(error=f"invalid Image Pixel module: {exc}")
    samples = runner.samples_per_pixel
    return CompressedRules(
        number_of_frames=runner.number_of_frames, rows=runner.rows, columns=runner.columns,
        samples_per_pixel=samples, planar_configuration=runner.planar_configuration if samples > 1 else 0,
        bits_allocated=runner.bits_allocated, bits_stored=runner.bits_stored,
        pixel_representation=runner.pixel_representation,
        photometric_interpretation=str(runner.photometric_interpretation), dtype=dtype,
    )


@functools.lru_cache(maxsize=PIXEL_RULES_CACHE_SIZE)
def _cached_rules(tsyntax: str, key: tuple) -> CompressedRules:
    return _derive_rules(UID(tsyntax), {name: value for name, (_, value) in key})


def compressed_rules(tsyntax: UID, options: dict) -> CompressedRules:
    """The rules for an Image Pixel module (``as_pixel_options`` form), cached by its values.

    On the 2-core CPU dev machine (shared, noisy), best of 7 x 2000: deriving
    them for a 512² int16 JPEG 2000 module 33 µs, the cached lookup 8 µs, of
    a whole fast ``inspect`` of about 350 µs.
    """
    key = options_key(options, leave_out=("extended_offsets",))
    if key is None:
        return _derive_rules(tsyntax, options)
    return _cached_rules(str(tsyntax), key)


def build_compressed(path: str, tsyntax: UID, options: dict, extended: tuple[bytes, bytes] | None, offset: int,
                     value_length: int, modality, file_id: tuple[int, ...] | None,
                     fd: int | None = None) -> CompressedLayout:
    """The layout of an encapsulated value from the header's values alone, with no pydicom Dataset.

    Shared by the pydicom path (:func:`inspect_compressed`) and the fast walk
    (:mod:`kvdicom._header.fast_header`), so both give the same layout and refusals.
    ``options``: ``as_pixel_options`` (with ``extended_offsets`` when there is an
    Extended Offset Table); ``extended``: (offsets, lengths) as bytes; ``offset``:
    the value's file offset (its Basic Offset Table item); ``modality``: the
    :class:`~kvdicom._header.layout.ModalityTransform` (None: none); ``file_id``: the
    identity of the open file the header came from, whose size bounds the fragments; ``fd``: that open file.
    """
    if tsyntax not in CODECS:
        raise DicomLoadError(path, f"transfer syntax {tsyntax.name} ({tsyntax}) is compressed with a codec kvdicom "
                             f"does not decode; supported: {', '.join(sorted({u.name for u in CODECS}))}")
    rules = compressed_rules(tsyntax, options)
    if rules.error is not None:
        raise DicomLoadError(path, rules.error)
    if rules.number_of_frames != int(rules.number_of_frames):
        # pydicom's decoders size the output by it (``_as_array_encapsulated``) and fail: a TypeError
        raise DicomLoadError(path, f"(0028,0008) Number of Frames {rules.number_of_frames} is not a whole number, "
                                   "which pydicom's decoding of encapsulated pixel data fails on")
    file_size = file_id[2] if file_id is not None else os.stat(path).st_size
    frames_declared = int(rules.number_of_frames)
    # a defined length (which encapsulated data should not have) bounds the items, as pydicom reads them
    end = file_size if value_length == encapsulated.UNDEFINED_LENGTH else min(file_size, offset + value_length)
    table = encapsulated.locate(path, offset, end, frames_declared, extended, file_id=file_id,
                                  undefined=value_length == encapsulated.UNDEFINED_LENGTH, fd=fd)
    found = len(table.frames) if not table.split_on_eoi else frames_declared
    if found < frames_declared:
        raise DicomLoadError(path, f"encapsulated pixel data holds {found} frame(s), fewer than the "
                             f"(0028,0008) Number of Frames {frames_declared}")
    return CompressedLayout(
        path=path, transfer_syntax=tsyntax, codec=CODECS[tsyntax], offset=offset, file_size=file_size,
        frame_table=table, dtype=rules.dtype, shape=pixel_array_shape(rules, found),
        number_of_frames=found, rows=rules.rows, columns=rules.columns, samples_per_pixel=rules.samples_per_pixel,
        planar_configuration=rules.planar_configuration, bits_allocated=rules.bits_allocated,
        bits_stored=rules.bits_stored, pixel_representation=rules.pixel_representation,
        photometric_interpretation=rules.photometric_interpretation, options=options,
        modality=modality if modality is not None else ModalityTransform(), file_id=file_id,
    )


def inspect_compressed(path: str, ds: pydicom.Dataset, tsyntax: UID, modality_of,
                       file_id: tuple[int, ...] | None = None, fd: int | None = None) -> CompressedLayout:
    """The layout of an encapsulated file whose header pydicom parsed (see :func:`kvdicom.inspect`).

    Takes the values :func:`build_compressed` needs from the Dataset.
    ``file_id``: the identity of the open file the header came from (``BoundedReader.file_id``); its size
    bounds the fragments, and the fragment walk must find the same file.
    """
    if tsyntax not in CODECS:
        raise DicomLoadError(path, f"transfer syntax {tsyntax.name} ({tsyntax}) is compressed with a codec kvdicom "
                             f"does not decode; supported: {', '.join(sorted({u.name for u in CODECS}))}")
    if 0x7FE00010 not in ds._dict:
        raise DicomLoadError(path, "no (7FE0,0010) Pixel Data element")
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    offset = getattr(raw, "value_tell", None)
    if offset is None:
        raise DicomLoadError(path, "Pixel Data was not read from the file, so its offset is unknown")
    try:
        options = as_pixel_options(ds)
    except Exception as exc:
        raise DicomLoadError(path, f"invalid Image Pixel module: {exc}") from exc
    rules = compressed_rules(tsyntax, options)
    if rules.error is not None:
        raise DicomLoadError(path, rules.error)
    extended = None
    try:
        if pixel_extended := options.get("extended_offsets"):
            # DecodeRunner's own check, left out of the cached rules: it fails on an empty (None) table
            len(pixel_extended[0]) != len(pixel_extended[1])  # noqa: B015
        if "ExtendedOffsetTable" in ds:
            extended = (bytes(ds.ExtendedOffsetTable), bytes(ds.get("ExtendedOffsetTableLengths", b"")))
    except Exception as exc:
        raise DicomLoadError(path, f"invalid Image Pixel module: {exc}") from exc
    if extended is not None:
        options["extended_offsets"] = extended
    return build_compressed(path, tsyntax, options, extended, offset, raw.length,
                            modality_of(ds, tsyntax, rules.dtype), file_id, fd)


def value_nbytes(layout: CompressedLayout) -> int:
    """Bytes :func:`read_frames` reads: the encapsulated value from its offset to the last fragment's end."""
    return layout.frame_table.span[1] - layout.offset


def read_frames(layout: CompressedLayout, fd: int | None = None,
                into: np.ndarray | None = None) -> tuple[np.ndarray, list]:
    """One read of every frame's bytes: (the encapsulated value as read, one buffer per frame); ``fd``: the
    header's open file, else the path is opened again; ``into``: :func:`value_nbytes` uint8 bytes to read into."""
    return encapsulated.read_frames(layout.path, layout.frame_table, start=layout.offset, file_id=layout.file_id,
                                    fd=fd, into=into)


def frames_of(layout: CompressedLayout, value: np.ndarray) -> list:
    """One buffer per frame out of ``value``, :func:`value_nbytes` bytes read already (a series' shared staging)."""
    return encapsulated.split_frames(layout.frame_table, value, layout.offset)


def expansion_problem(codec: str, itemsize: int, decoded: int, compressed: int) -> str | None:
    """Why ``decoded`` bytes cannot come from ``compressed`` bytes of ``codec``, or None (a decompression bomb check).

    Two rules, both before anything is allocated: lossless JPEG can never hold more than
    :data:`settings.JPEG_LOSSLESS_MAX_SAMPLES_PER_BYTE` samples per byte (at any size); beyond
    :data:`settings.RATIO_CHECK_MIN_DECODED_BYTES` decoded, no codec may exceed the caller's
    ``max_compression_ratio`` (:func:`kvdicom.configure`).
    """
    compressed = max(compressed, 1)
    if codec == "jpeg_lossless" and decoded > settings.JPEG_LOSSLESS_MAX_SAMPLES_PER_BYTE * itemsize * compressed:
        return (f"the header promises {decoded} decoded bytes from {compressed} bytes of lossless JPEG, which codes "
                f"each sample in one bit at least (at most {settings.JPEG_LOSSLESS_MAX_SAMPLES_PER_BYTE * itemsize}:1 "
                f"here); the header or the codestream is wrong")
    limit = settings.current().max_compression_ratio
    if limit is not None and decoded >= settings.RATIO_CHECK_MIN_DECODED_BYTES and decoded > limit * compressed:
        return (f"the header promises {decoded} decoded bytes from {compressed} compressed bytes of {codec}, a "
                f"compression ratio of {decoded / compressed:.0f}:1 beyond the limit of {limit:g}:1 (a "
                f"decompression bomb?); if the data truly compresses this much, raise the limit with "
                f"kvdicom.configure(max_compression_ratio=...) or KVDICOM_MAX_RATIO")
    return None


def check_expansion(layout: CompressedLayout) -> None:
    """Refuse ``layout`` with a :class:`DicomLoadError` naming it where :func:`expansion_problem` finds one."""
    if why := expansion_problem(layout.codec, layout.dtype.itemsize, layout.decoded_nbytes, layout.nbytes):
        raise DicomLoadError(layout.path, why)


def check_frames(layout: CompressedLayout, frames: list) -> list:
    """Each frame's codestream facts, refusing frames that disagree with the header before any allocation.

    JPEG, JPEG-LS and JPEG 2000 frames must have the header's rows, columns
    and samples; RLE frames must be large enough to hold what the header
    promises at RLE's maximum expansion. Returns the per-frame
    :class:`kvdicom._header.codestream.FrameInfo` (None where a frame has no header to parse).
    """
    if layout.codec == "rle":
        frame_bytes = layout.rows * layout.columns * layout.samples_per_pixel * layout.dtype.itemsize
        for i, frame in enumerate(frames):
            if frame_bytes > RLE_MAX_EXPANSION * len(frame) + 64:
                raise DicomLoadError(layout.path, f"RLE frame {i} has {len(frame)} bytes, too few for the "
                                     f"{frame_bytes} bytes the header promises; the header is wrong")
        return [None] * len(frames)
    parse = codestream.j2k_info if layout.codec in ("jpeg2000", "htj2k") else codestream.jpeg_info
    infos = [parse(f) for f in frames]
    for index, info in enumerate(infos):
        if info is None:
            continue
        if (info.height, info.width) != (layout.rows, layout.columns) or info.components != layout.samples_per_pixel:
            raise DicomLoadError(
                layout.path,
                f"frame {index} codestream is {info.height}x{info.width} with {info.components} component(s), but "
                f"the header says {layout.rows}x{layout.columns} with {layout.samples_per_pixel} sample(s) per pixel",
            )
    if any(i is None for i in infos):
        # pydicom allocates the header's size before its decoder sees the stream: bound it by the bytes read
        decoded = layout.decoded_nbytes
        if decoded > RLE_MAX_EXPANSION * layout.nbytes + (1 << 20):
            raise DicomLoadError(layout.path, f"a {layout.codec} frame has no readable header and the header "
                                 f"promises {decoded} decoded bytes from {layout.nbytes} compressed bytes")
    return infos

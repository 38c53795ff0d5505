"""Where the pixels are in a file and what array they make, from the header alone.

The layout is worked out by pydicom's own pixel machinery (``as_pixel_options``,
``DecodeRunner``) so that kvdicom and ``Dataset.pixel_array`` agree on frame
lengths, dtypes, excess frames and padding; kvdicom only adds the byte offset
and refuses what it cannot read straight from the file.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pydicom
import pydicom.values
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import DecodeRunner
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from kvdicom._io.bounded_file import BoundedReader
from kvdicom.errors import DicomLoadError, NoPixelDataError

#: Elements larger than this are not read while parsing the header. Pixel data
#: is always larger in practice; what matters is that it is never loaded.
HEADER_DEFER_BYTES = 1024

#: (tag, keyword) of the elements that can hold native pixel data.
PIXEL_ELEMENTS = (
    (0x7FE00010, "PixelData"),
    (0x7FE00008, "FloatPixelData"),
    (0x7FE00009, "DoubleFloatPixelData"),
)

UNDEFINED_LENGTH = 0xFFFFFFFF

#: Bits Allocated values with a NumPy dtype (pydicom fails on 24, 40, 48, 56).
SUPPORTED_BITS_ALLOCATED = (1, 8, 16, 32, 64)


@dataclass(frozen=True)
class ModalityLUT:
    """The first item of (0028,3000) Modality LUT Sequence, as pydicom reads it."""

    first_map: int  #: first value mapped (LUT Descriptor[1])
    nr_entries: int  #: LUT Descriptor[0], 0 meaning 65536
    dtype: str  #: ``uint<LUT Descriptor[2]>``
    data: tuple[int, ...]  #: LUT Data


@dataclass(frozen=True)
class ModalityTransform:
    """What ``rescale=True`` does: ``kind`` is "none", "rescale" or "lut" (see :mod:`kvdicom._pixels.modality`)."""

    kind: str = "none"
    slope: float | tuple[float, ...] | None = None
    intercept: float | tuple[float, ...] | None = None
    lut: ModalityLUT | None = None
    #: why pydicom's ``apply_modality_lut`` would fail or could not be matched; refused on use
    problem: str | None = None


@dataclass(frozen=True)
class ImagePixel:
    """What both layouts share: the file, and the Image Pixel module as the returned array sees it."""

    compressed: ClassVar[bool] = False  #: encapsulated pixel data (:class:`kvdicom.CompressedLayout`)

    path: str
    transfer_syntax: UID
    offset: int  #: file offset of the pixel data value (encapsulated: its Basic Offset Table item)
    file_size: int
    dtype: np.dtype  #: native-endian dtype of the returned array
    shape: tuple[int, ...]  #: shape of the returned array
    number_of_frames: int
    rows: int
    columns: int
    samples_per_pixel: int
    planar_configuration: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """One frame's array shape: (rows, columns), samples last for colour."""
        return (self.rows, self.columns) + ((self.samples_per_pixel,) if self.samples_per_pixel > 1 else ())

    @property
    def decoded_nbytes(self) -> int:
        """Bytes of the returned array."""
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class PixelLayout(ImagePixel):
    """Everything needed to turn bytes at ``offset`` into pydicom's ``pixel_array``."""

    pixel_keyword: str
    nbytes: int  #: bytes to read from ``offset``
    value_length: int  #: length the element header declares
    little_endian: bool
    swap_8bit_words: bool  #: 8-bit data encoded as OW in big endian (bytes swapped pairwise)
    #: the modality LUT / rescale that ``load(..., rescale=True)`` applies
    modality: ModalityTransform = field(default_factory=ModalityTransform)
    #: :func:`kvdicom._io.fileid.identify` of the file the header was read from; pixel
    #: reads refuse a file that is not this one any more (``None``: not checked)
    file_id: tuple[int, ...] | None = None

    @property
    def pixel_count(self) -> int:
        """Samples in the output before YBR_FULL_422 expansion and reshape."""
        return self.number_of_frames * self.rows * self.columns * self.samples_per_pixel

    @property
    def stored_nbytes(self) -> int:
        """Bytes of the samples as stored, before decoding: YBR_FULL_422 holds two of every three."""
        nbytes = self.pixel_count * self.dtype.itemsize
        return nbytes // 3 * 2 if self.photometric_interpretation == "YBR_FULL_422" else nbytes

    @property
    def unused_high_bits(self) -> int:
        """Bits above Bits Stored that pydicom shifts out (0 for float data)."""
        if self.pixel_keyword != "PixelData" or self.bits_allocated == 1:
            return 0
        return self.bits_allocated - self.bits_stored


def _fail(path: str, reason: str) -> DicomLoadError:
    return DicomLoadError(path, reason)


def _read_header(path: str, fp: BoundedReader, force: bool) -> pydicom.Dataset:
    """Parse the header from the open ``fp``, large values deferred, reads bounded by the file size."""
    try:
        ds = pydicom.dcmread(fp, defer_size=HEADER_DEFER_BYTES, force=force)
    except Exception as exc:  # pydicom raises many types for a corrupt header
        raise _fail(path, f"cannot parse the DICOM header ({type(exc).__name__}: {exc})") from exc
    # pydicom reads a deferred value (a lying length on a small element defers it
    # too) from ``ds.buffer`` while it is open, else by re-opening ``ds.filename``:
    # keep those reads on the same open, bounded file, never a re-opened path.
    ds.buffer = fp
    ds.filename = path
    ds.fileobj_type = _bounded_open
    return ds


def _bounded_open(path, mode: str = "rb") -> BoundedReader:
    return BoundedReader(path)


def _transfer_syntax(path: str, ds: pydicom.Dataset, allow_compressed: bool = False) -> UID:
    """The transfer syntax pydicom itself would decode the pixel data with."""
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if tsyntax is None:
        # No file meta (read with force=True): pydicom encodes the dataset as
        # it was read, so do the same.
        implicit, little = ds.original_encoding
        if implicit is None:
            raise _fail(path, "no (0002,0010) Transfer Syntax UID and the encoding is unknown")
        if implicit:
            tsyntax = pydicom.uid.ImplicitVRLittleEndian
        else:
            tsyntax = pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
    tsyntax = UID(str(tsyntax))
    if tsyntax == DeflatedExplicitVRLittleEndian:
        raise _fail(
            path,
            f"transfer syntax {tsyntax.name} ({tsyntax}) is zlib-compressed as a whole, "
            "so its pixel data has no offset in the file; kvdicom reads uncompressed "
            "Implicit VR LE, Explicit VR LE and Explicit VR BE only",
        )
    if allow_compressed and tsyntax.is_transfer_syntax and tsyntax.is_encapsulated:
        return tsyntax  # kvdicom._header.compressed takes it from here
    if not tsyntax.is_transfer_syntax or tsyntax.is_compressed:
        raise _fail(
            path,
            f"transfer syntax {tsyntax.name} ({tsyntax}) is compressed or unknown; kvdicom "
            "reads uncompressed Implicit VR LE, Explicit VR LE and Explicit VR BE only",
        )
    return tsyntax


def _image_storage_class(ds: pydicom.Dataset) -> str | None:
    """The name of the file's SOP Class where it is an image storage class (so it must hold pixels), else None."""
    meta = getattr(ds, "file_meta", None)
    for source, keyword in ((ds, "SOPClassUID"), (meta, "MediaStorageSOPClassUID")):
        try:
            name = UID(str(source.get(keyword) or "")).name if source is not None else ""
        except Exception:  # noqa: BLE001  a malformed UID names no class
            name = ""
        if name.endswith("Image Storage") or "Image Storage -" in name:
            return name
    return None


def _pixel_element(path: str, ds: pydicom.Dataset):
    """The one native pixel data element, still undecoded."""
    found = [(tag, kw) for tag, kw in PIXEL_ELEMENTS if tag in ds._dict]
    if not found:
        error = NoPixelDataError(path, "no pixel data element (7FE0,0010), (7FE0,0008) or (7FE0,0009)")
        error.has_rows = 0x00280010 in ds._dict  # an image header without its pixels: truncated?
        error.image_class = _image_storage_class(ds)
        raise error
    if len(found) > 1:
        names = ", ".join(kw for _, kw in found)
        raise _fail(path, f"more than one pixel data element ({names})")
    tag, keyword = found[0]
    raw = ds.get_item(tag, keep_deferred=True)
    if raw.VR is not None and raw.VR not in pydicom.values.converters:
        # pydicom reads the header, then refuses the value (``pydicom.values.convert_value``)
        raise _fail(path, f"{keyword} has Value Representation {raw.VR!r}, which pydicom does not know "
                          "(its pixel_array fails on it too)")
    value_tell = getattr(raw, "value_tell", None)
    if value_tell is None:
        raise _fail(path, f"{keyword} was not read from the file, so its offset is unknown")
    if raw.length == UNDEFINED_LENGTH:
        raise _fail(path, f"{keyword} has undefined length (encapsulated), which native transfer syntaxes forbid")
    return keyword, raw, value_tell


def _runner(tsyntax: UID, keyword: str, vr: str, options: dict) -> DecodeRunner:
    """pydicom's decode runner, validated, so that its checks are ours."""
    runner = DecodeRunner(tsyntax)
    runner.set_options(**options, pixel_keyword=keyword, pixel_vr=vr)
    runner._validate_options()
    return runner


def _pixel_options(path: str, ds: pydicom.Dataset) -> dict:
    """The Image Pixel module as pydicom's ``as_pixel_options`` reads it."""
    try:
        return as_pixel_options(ds)
    except Exception as exc:
        raise _fail(path, f"invalid Image Pixel module: {exc}") from exc


@dataclass(frozen=True)
class ModuleRules:
    """The values pydicom's ``DecodeRunner`` derives from one Image Pixel module, native or encapsulated.

    Attribute names follow the runner's, so :func:`_frames_present` and
    :func:`_shape` take a rules object or a runner. ``error`` is why the module
    is refused (raised before any size check).
    """

    error: str | None = None
    number_of_frames: int | float = 1
    rows: int = 0
    columns: int = 0
    samples_per_pixel: int = 1
    planar_configuration: int = 0
    bits_allocated: int = 0
    bits_stored: int = 0
    pixel_representation: int = 0
    photometric_interpretation: str = ""
    dtype: np.dtype | None = None


def options_key(options: dict, leave_out: tuple[str, ...] = ()) -> tuple | None:
    """An Image Pixel module (``as_pixel_options`` form) as a rules-cache key, or None where a value
    is multi-valued or odd (the rules are then derived every time)."""
    try:
        return tuple(sorted((name, _plain(value)) for name, value in options.items() if name not in leave_out))
    except TypeError:
        return None


@dataclass(frozen=True)
class PixelRules(ModuleRules):
    """What pydicom's ``DecodeRunner`` derives from one native Image Pixel module, once.

    The same for every file with the same module values, transfer syntax and
    pixel element, so :func:`pixel_rules` caches it: a 256-slice series runs
    the runner once, not 256 times. ``color_error`` is why kvdicom cannot match
    pydicom's colour conversion (raised after the size checks).
    """

    frame_bytes: int | float = 0
    swap_8bit_words: bool = False
    little_endian: bool = True
    color_error: str | None = None

    def frame_length(self, unit: str = "bytes") -> int | float:
        return self.frame_bytes


#: Distinct Image Pixel modules remembered. A series has one; a mixed folder a few.
PIXEL_RULES_CACHE_SIZE = 256


def _plain(value):
    """``value`` as a hashable cache key part that keeps int, float and str apart (IS 2 vs ISfloat 2.0)."""
    if value is None or isinstance(value, bool):
        return (type(value).__name__, value)
    if isinstance(value, int):
        return ("int", int(value))
    if isinstance(value, float):
        return ("float", float(value))
    if isinstance(value, str):
        return ("str", str(value))
    raise TypeError("not a plain value")


def _derive_rules(tsyntax: UID, keyword: str, vr: str, options: dict) -> PixelRules:
    try:
        runner = _runner(tsyntax, keyword, vr, options)
    except Exception as exc:
        return PixelRules(error=f"invalid Image Pixel module: {exc}")
    try:
        _check_bits_allocated("", runner, keyword)
    except DicomLoadError as exc:
        return PixelRules(error=exc.reason)
    frames = runner.number_of_frames
    try:
        dtype = runner.pixel_dtype.newbyteorder("=")
    except Exception as exc:
        return PixelRules(error=f"invalid Image Pixel module: {exc}")
    color_error = None
    ybr = runner.photometric_interpretation in ("YBR_FULL", "YBR_FULL_422")  # pydicom converts these to RGB
    samples = int(runner.samples_per_pixel)
    last_axis = samples if samples > 1 else int(runner.columns)  # the axis pydicom converts as (Y, Cb, Cr)
    if ybr and dtype != np.uint8:
        color_error = (
            f"{runner.photometric_interpretation} with {dtype} samples: pydicom converts YBR to RGB "
            "for unsigned 8-bit samples only, so there is no reference array to match"
        )
    elif runner.photometric_interpretation == "YBR_FULL_422" and runner.bits_allocated == 1:
        color_error = (
            "YBR_FULL_422 with Bits Allocated 1: pydicom sizes the data at two thirds of the samples but unpacks "
            "bits without expanding them, so its reshape fails; there is no reference array to match"
        )
    elif ybr and last_axis != 3:
        color_error = (
            f"{runner.photometric_interpretation} with {samples} sample(s) per pixel: pydicom converts YBR to RGB "
            f"along the array's last axis, which holds {last_axis} values here, not 3, and fails, so there is no "
            "reference array to match"
        )
    return PixelRules(
        frame_bytes=runner.frame_length(unit="bytes"),
        number_of_frames=int(frames) if isinstance(frames, int) and not isinstance(frames, bool) else frames,
        rows=int(runner.rows),
        columns=int(runner.columns),
        samples_per_pixel=samples,
        planar_configuration=int(runner.planar_configuration) if runner.samples_per_pixel > 1 else 0,
        bits_allocated=int(runner.bits_allocated),
        bits_stored=int(runner.bits_stored) if keyword == "PixelData" else int(runner.bits_allocated),
        pixel_representation=int(runner.pixel_representation) if keyword == "PixelData" else 0,
        photometric_interpretation=str(runner.photometric_interpretation),
        dtype=dtype,
        swap_8bit_words=bool(runner._test_for("be_swap_ow")),
        little_endian=tsyntax.is_little_endian,
        color_error=color_error,
    )


@functools.lru_cache(maxsize=PIXEL_RULES_CACHE_SIZE)
def _cached_rules(tsyntax: str, keyword: str, vr: str, key: tuple) -> PixelRules:
    options = {name: value for name, (_, value) in key}
    return _derive_rules(UID(tsyntax), keyword, vr, options)


def pixel_rules(tsyntax: UID, keyword: str, vr: str, options: dict) -> PixelRules:
    """The rules for an Image Pixel module (``as_pixel_options`` form), cached by its values."""
    key = options_key(options)
    if key is None:
        return _derive_rules(tsyntax, keyword, vr, options)
    return _cached_rules(str(tsyntax), keyword, vr, key)


def _check_bits_allocated(path: str, runner: DecodeRunner, keyword: str) -> None:
    """Bits Allocated values pydicom validates but cannot return an array for."""
    bits = runner.bits_allocated
    float_bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword)
    if float_bits is not None and bits != float_bits:
        raise _fail(
            path,
            f"(0028,0100) Bits Allocated {bits} with {keyword}, which holds {float_bits}-bit floats; "
            f"kvdicom (like pydicom) reads {keyword} with Bits Allocated {float_bits} only",
        )
    if bits not in SUPPORTED_BITS_ALLOCATED:
        raise _fail(
            path,
            f"(0028,0100) Bits Allocated {bits} has no NumPy dtype (pydicom fails on it too); "
            f"kvdicom supports {', '.join(map(str, SUPPORTED_BITS_ALLOCATED))}",
        )


def _frames_present(path: str, runner: DecodeRunner, available: int) -> int:
    """Frames pydicom would return, given the bytes that really follow the header.

    Mirrors ``DecodeRunner._validate_buffer``: short data is an error, trailing
    padding is ignored, and whole excess frames are returned (pydicom's
    ``allow_excess_frames`` default).
    """
    frame_length = runner.frame_length(unit="bytes")
    frames = runner.number_of_frames
    expected = math.ceil(frame_length * frames)
    padded = expected + expected % 2
    if available < padded and available != expected:
        raise _fail(
            path,
            f"pixel data is shorter than the header promises: {available} bytes present, "
            f"{padded} expected for {frames} frame(s) of {runner.rows}x{runner.columns}x"
            f"{runner.samples_per_pixel} at {runner.bits_allocated} bits allocated",
        )
    if available > padded and runner.photometric_interpretation == "YBR_FULL_422":
        ybr_length = expected // 2 * 3
        if available >= ybr_length + ybr_length % 2:
            raise _fail(
                path,
                "pixel data is a third larger than YBR_FULL_422 allows; the "
                "(0028,0004) Photometric Interpretation is probably wrong",
            )
    elif available > padded:
        whole_frames = available // frame_length
        if whole_frames > frames:
            if not isinstance(frame_length, int):
                # pydicom then sets a float frame count and fails slicing with it
                raise _fail(
                    path,
                    f"pixel data holds {int(whole_frames)} whole frames of {frame_length} bytes, more than the "
                    f"(0028,0008) Number of Frames {frames}; excess frames are supported only when a frame "
                    "is a whole number of bytes (pydicom fails on bit-packed frames that are not)",
                )
            return int(whole_frames)
    return frames


def _number(tag: str, value) -> float | tuple[float, ...]:
    """A DS value as pydicom's arithmetic sees it: one float, or a tuple for a multi-valued element."""
    if isinstance(value, (list, tuple, MultiValue)):
        return tuple(_number(tag, v) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{tag} value {value!r} is not a number")
    return float(value)


def _modality_lut(ds: pydicom.Dataset, item: pydicom.Dataset, tsyntax: UID, dtype: np.dtype) -> ModalityLUT:
    """The Modality LUT Sequence item as pydicom's ``apply_modality_lut`` reads it."""
    desc = item.LUTDescriptor
    nr_entries, first_map, depth = int(desc[0]) or 2**16, int(desc[1]), int(desc[2])
    lut_dtype = np.dtype(f"uint{depth}")
    if item["LUTData"].VR == "OW":
        little = tsyntax.is_little_endian
        data = struct.unpack(f"{'><'[little]}{nr_entries}H", item.LUTData)
    else:
        data = item.LUTData
    table = np.asarray(data, dtype=lut_dtype)
    if table.ndim != 1:
        raise ValueError(f"(0028,3006) LUT Data {data!r} is not a list of values")
    # pydicom's own steps on one pixel of the output dtype: the errors that do
    # not depend on pixel values (a float array, a first value the dtype cannot
    # hold) show up here; running past a short table is checked on load.
    probe = np.zeros(1, dtype=dtype)
    clipped = np.zeros(probe.shape, dtype=probe.dtype)
    mapped = probe >= first_map
    clipped[mapped] = probe[mapped] - first_map
    np.clip(clipped, 0, nr_entries - 1, out=clipped)
    if table.size:
        table[clipped]
    return ModalityLUT(first_map, nr_entries, str(lut_dtype), tuple(int(v) for v in table))


def _modality(ds: pydicom.Dataset, tsyntax: UID, dtype: np.dtype) -> ModalityTransform:
    """What ``pydicom.pixels.apply_modality_lut(arr, ds)`` would do, or why it would fail."""
    stage = "(0028,3000) Modality LUT Sequence"
    try:
        sequence = ds.get("ModalityLUTSequence")
        if sequence:
            return ModalityTransform("lut", lut=_modality_lut(ds, sequence[0], tsyntax, dtype))
        stage = "(0028,1053) Rescale Slope / (0028,1052) Rescale Intercept"
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            return ModalityTransform(
                "rescale",
                slope=_number("(0028,1053) Rescale Slope", ds.RescaleSlope),
                intercept=_number("(0028,1052) Rescale Intercept", ds.RescaleIntercept),
            )
    except Exception as exc:
        return ModalityTransform(
            problem=f"cannot apply the modality LUT: {stage} is unusable ({type(exc).__name__}: {exc}); "
            "kvdicom applies numeric Rescale Slope and Intercept, or a Modality LUT Sequence with "
            "integer pixel data and a 3-value LUT Descriptor, as pydicom does"
        )
    return ModalityTransform()


def _shape(runner: DecodeRunner, frames: int) -> tuple[int, ...]:
    """The shape ``pixel_array`` returns (``DecodeRunner.reshape``'s rules)."""
    planes = (runner.rows, runner.columns)
    if runner.samples_per_pixel > 1:
        planes += (runner.samples_per_pixel,)
    return ((frames,) if frames > 1 else ()) + planes


def build_layout(
    path: str,
    rules: PixelRules,
    tsyntax: UID,
    keyword: str,
    offset: int,
    value_length: int,
    file_size: int,
    modality: ModalityTransform | None,
    file_id: tuple[int, ...] | None,
) -> PixelLayout:
    """The per-file part of a layout: the sizes checked against this file's bytes.

    Shared by the pydicom path and :mod:`kvdicom._header.fast_header`, so both give the
    same :class:`PixelLayout` (and the same refusals) for the same values.
    ``modality`` None means: no modality transform (kind "none").
    """
    if rules.error is not None:
        raise _fail(path, rules.error)
    available = max(0, min(value_length, file_size - offset))
    frames = _frames_present(path, rules, available)
    if not isinstance(frames, int) or isinstance(frames, bool):
        # pydicom reads "1.5" as a float and sizes the buffer with it; unless
        # excess whole frames replace it, it then fails to reshape
        raise _fail(
            path,
            f"(0028,0008) Number of Frames {frames!r} is not a whole number; "
            "kvdicom (like pydicom) needs an integer of at least 1",
        )
    nbytes = math.ceil(rules.frame_bytes * frames)
    if rules.swap_8bit_words:
        nbytes += nbytes % 2  # pairs are swapped, so the pad byte is read too
    if offset + nbytes > file_size:
        raise _fail(path, f"pixel data runs past the end of the file ({offset + nbytes} > {file_size} bytes)")
    layout = PixelLayout(
        path=path,
        transfer_syntax=tsyntax,
        pixel_keyword=keyword,
        offset=offset,
        nbytes=nbytes,
        value_length=value_length,
        file_size=file_size,
        dtype=rules.dtype,
        shape=_shape(rules, frames),
        number_of_frames=frames,
        rows=rules.rows,
        columns=rules.columns,
        samples_per_pixel=rules.samples_per_pixel,
        planar_configuration=rules.planar_configuration,
        bits_allocated=rules.bits_allocated,
        bits_stored=rules.bits_stored,
        pixel_representation=rules.pixel_representation,
        photometric_interpretation=rules.photometric_interpretation,
        little_endian=rules.little_endian,
        swap_8bit_words=rules.swap_8bit_words,
        modality=modality if modality is not None else ModalityTransform(),
        file_id=file_id,
    )
    if layout.photometric_interpretation == "YBR_FULL_422" and layout.bits_allocated > 1:
        stored = layout.stored_nbytes // layout.dtype.itemsize
        if stored % 4:
            # pydicom expands Y1 Y2 Cb Cr groups of the whole buffer: a partial group fails (ValueError)
            raise _fail(path, f"YBR_FULL_422 pixel data of {stored} samples is not whole groups of 4 (Y Y Cb Cr); "
                              "pydicom cannot expand it either")
    if rules.swap_8bit_words and nbytes > value_length:
        # pydicom swaps the pairs of the value it read: an odd value has no last pair (ValueError), where a read
        # of ``nbytes`` from the file would take the byte after the value as the pad
        raise _fail(path, f"8-bit pixel data encoded as OW in big endian is swapped in byte pairs, but its value "
                          f"holds an odd {value_length} bytes (unpadded); pydicom cannot read it either")
    if rules.color_error is not None:
        raise _fail(path, rules.color_error)
    return layout


#: Layouts remembered by their per-file values (everything but the path and the identity); a series repeats one.
LAYOUT_CACHE_SIZE = 256


@functools.lru_cache(maxsize=LAYOUT_CACHE_SIZE)
def _layout_or_reason(rules: PixelRules, tsyntax: UID, keyword: str, offset: int, value_length: int,
                      file_size: int, modality: ModalityTransform | None) -> PixelLayout | str:
    """:func:`build_layout` of these values with no path, or why it refuses them: its checks read nothing else."""
    try:
        return build_layout("", rules, tsyntax, keyword, offset, value_length, file_size, modality, None)
    except DicomLoadError as exc:
        return exc.reason


def build_layout_cached(path: str, rules: PixelRules, tsyntax: UID, keyword: str, offset: int, value_length: int,
                        file_size: int, modality: ModalityTransform | None,
                        file_id: tuple[int, ...] | None) -> PixelLayout:
    """:func:`build_layout`, its checks run once per distinct set of values (every file still gives its own
    offset, lengths and size, read from its own header): the fast walk's per-file call, where building and
    checking the frozen layout took 4.7 µs of a CT header's 25 µs (2-core CPU dev machine). ``modality``
    must be hashable (the fast walk's rescale is; a LUT is not)."""
    layout = _layout_or_reason(rules, tsyntax, keyword, offset, value_length, file_size, modality)
    if isinstance(layout, str):
        raise _fail(path, layout)
    own = object.__new__(PixelLayout)  # the frozen template's fields, this file's path and identity
    own.__dict__.update(layout.__dict__, path=path, file_id=file_id)
    return own

"""Compressed frames decoded on the GPU by nvImageCodec, in one batch, then corrected as pydicom corrects them.

Route (:func:`plan`): JPEG baseline / lossless and JPEG 2000 frames go to
nvImageCodec (nvJPEG, nvJPEG2000); HTJ2K only where the codestream shows one
coding pass per code-block (:mod:`kvdicom._header.codestream`); RLE, JPEG-LS and
anything nvImageCodec cannot decode exactly decode on the host with pydicom's
plugins and are copied once. Every frame's codestream dimensions must agree
with the header before the output is allocated.

Corrections: :func:`kvdicom._pixels.corrections.finish`, shared with the host's
imagecodecs route (:mod:`kvdicom._codecs.host_codecs`). A frame nvImageCodec returns as ``None``, in an
unexpected shape, or as all zeros, is decoded again on the host (blank frames
are legitimate; a silent all-zero failure is a known nvJPEG bug before 13.0.2).
Lossless JPEG (SOF3) stays on the host: nvJPEG 13.2.3 decoded a 12-bit stream to
wrong, non-zero values on the device, which no check after the fact can catch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pydicom

from kvdicom import settings
from kvdicom._header.compressed import CompressedLayout
from kvdicom._pixels.corrections import finish
from kvdicom._pixels.decode import array_module

#: Colour JPEG 2000 kinds (photometric interpretation, codestream precision) that decode on the GPU: those a
#: device run of ``bench/test_compressed.py::test_gpu_colour_j2k_*`` (colour forced onto the GPU) and of the
#: GPU property tests found equal to pydicom (H200, nvImageCodec 0.9.0.20, at 51ec901: 8-bit RGB and
#: YBR_RCT lossless, exact). Other colour J2K (YBR_ICT, more than 8 bits) decodes on the host.
GPU_COLOUR_J2K_VERIFIED = frozenset({("RGB", 8), ("YBR_RCT", 8)})
#: Every colour JPEG 2000 kind on the GPU, verified or not: what the device tests set to check the others.
GPU_COLOUR_J2K = False


#: (bytes per sample, samples) of frames nvImageCodec decodes straight into their slots of the output
#: (``Decoder.decode(images=as_images(...))``) instead of into its own images, then copied. Measured on an
#: H100 (nvImageCodec 0.9.0.20, a one-off profile_targets profiler (since removed), medians of 30): 30 frames of
#: 240 × 320 RGB JPEG, decode into our slots 1.04 ms against decode 1.37 ms + copies 0.20 ms; the decoder
#: wrote into the slots given (same device pointers). 16-bit grey (H200, 0.9.0.20, medians of 12, one process,
#: 256 HTJ2K 512² int16 codestreams of the full profile's series): ``_decode_batch`` 27.97 ms with the copies,
#: 23.80 ms into the slots, the same bytes; nvImageCodec's own batch without slots or copies 23.26 ms. Other
#: kinds keep the copy until measured.
DECODE_IN_PLACE = frozenset({(1, 3), (2, 1)})


@dataclass(frozen=True)
class Plan:
    """How one file's frames are decoded."""

    route: str  #: "gpu" or "host"
    reason: str = ""  #: why the host decodes it
    color: str = "unchanged"  #: nvImageCodec ColorSpec: "unchanged" or "srgb"
    raw_itemsize: int = 0  #: bytes per sample the decoder returns (from the codestream precision)
    precision: int = 0  #: codestream precision (of the last frame, as pydicom uses it)
    signed: bool = False  #: codestream signedness (JPEG 2000)


def _host(reason: str) -> Plan:
    return Plan("host", reason)


def _raw_itemsize(precision: int) -> int:
    """Bytes per sample nvImageCodec returns for a codestream of ``precision`` bits."""
    return 1 if precision <= 8 else 2


def plan(layout: CompressedLayout, infos: list) -> Plan:
    """Where the frames decode, from the header and each frame's codestream facts (:func:`compressed.check_frames`)."""
    codec = layout.codec
    if layout.decoded_nbytes < settings.GPU_MIN_DECODED_BYTES and codec not in ("rle", "jpegls"):
        return _host(f"{layout.decoded_nbytes} decoded bytes: below {settings.GPU_MIN_DECODED_BYTES} the host is "
                     "faster")
    if layout.samples_per_pixel == 1 and layout.photometric_interpretation in ("YBR_FULL", "YBR_FULL_422"):
        # pydicom converts the decoded frame to RGB along its last axis (the columns), or fails where it is not 3
        return _host(f"one sample as {layout.photometric_interpretation}: pydicom's colour handling decides")
    if codec in ("jpeg2000", "htj2k"):
        if any(i is None for i in infos):
            return _host("a frame is not a bare JPEG 2000 codestream (JP2 wrapper or unreadable header)")
        if any(i.subsampled for i in infos):
            return _host("subsampled JPEG 2000 components")
        if len({(i.precision, i.signed) for i in infos}) > 1:
            return _host("frames differ in precision or sign")
        if any(i.ht and not i.ht_single_pass for i in infos):
            return _host("HTJ2K stream not shown to use a single coding pass per code-block")
        if layout.bits_allocated == 1:
            return _host("Bits Allocated 1 (a segmentation) in JPEG 2000 is not verified on the GPU")
        last = infos[-1]
        if last.precision > 16:
            return _host(f"JPEG 2000 precision {last.precision} > 16")
        color = "unchanged"
        if layout.samples_per_pixel > 1:
            kind = (layout.photometric_interpretation, last.precision)
            if kind not in GPU_COLOUR_J2K_VERIFIED and not GPU_COLOUR_J2K:
                return _host(f"colour JPEG 2000 as {kind[0]} with {kind[1]}-bit samples is not yet verified on "
                             "the GPU (GPU_COLOUR_J2K_VERIFIED)")
            if layout.planar_configuration or layout.photometric_interpretation not in ("RGB", "YBR_ICT", "YBR_RCT"):
                return _host(f"colour JPEG 2000 as {layout.photometric_interpretation}, "
                             f"planar {layout.planar_configuration}")
            # the decoder undoes the codestream's colour transform, as openjpeg does for pydicom (which then says RGB)
            color = "srgb" if layout.photometric_interpretation != "RGB" else "unchanged"
        return Plan("gpu", color=color, raw_itemsize=_raw_itemsize(last.precision), precision=last.precision,
                    signed=last.signed)
    if codec == "jpeg_lossless":
        # Measured on an H200 (nvImageCodec 0.9.0.20, nvJPEG 13.2.3): a 12-bit SV1 stream from libjpeg-turbo
        # decoded to wrong values (max difference 4091) while reporting success. Never wrong data: host.
        return _host("lossless JPEG (SOF3) decoded wrong by nvJPEG 13.2.3 on the device; decoded on the host")
    if codec == "jpeg" and layout.transfer_syntax != pydicom.uid.JPEGExtended12Bit:
        if any(i is None for i in infos):
            return _host("a frame has no JPEG frame header")
        precision = infos[-1].precision
        if len({i.precision for i in infos}) > 1:
            return _host("frames differ in precision")
        raw_itemsize = _raw_itemsize(precision)
        if raw_itemsize * 8 != layout.bits_allocated:
            # pydicom puts the decoder's samples into a buffer sized by Bits Allocated and fails where their widths
            # differ (found by a scan of rewritten headers: 8-bit JPEG under Bits Allocated 16)
            return _host(f"{precision}-bit JPEG samples under Bits Allocated {layout.bits_allocated}: pydicom's "
                         "decoder decides")
        color = "unchanged"
        if layout.samples_per_pixel > 1:
            baseline_ybr = (layout.transfer_syntax == pydicom.uid.JPEGBaseline8Bit
                            and layout.photometric_interpretation in ("YBR_FULL", "YBR_FULL_422"))
            if (not baseline_ybr or any(i.rgb_ids for i in infos) or layout.planar_configuration
                    or layout.bits_stored != 8 or layout.pixel_representation):
                # nvJPEG converts to RGB while decoding; pydicom shifts out unused bits first, then converts, and
                # fails to convert signed samples
                return _host(f"colour JPEG as {layout.photometric_interpretation}: colour handling as pydicom's "
                             "only for baseline YBR of unsigned 8-bit samples")
            color = "srgb"  # libjpeg, and so pydicom, return RGB for baseline YBR
        return Plan("gpu", color=color, raw_itemsize=raw_itemsize, precision=precision)
    return _host(f"{codec} has no GPU decoder in nvImageCodec")


@functools.lru_cache(maxsize=1)
def nvimgcodec_problem() -> str | None:
    """Why nvImageCodec cannot be used here (then every frame decodes on the host), or None."""
    try:
        from nvidia import nvimgcodec  # noqa: F401
    except ImportError as exc:
        return f"nvImageCodec is not installed ({exc}); pip install nvidia-nvimgcodec-cu13 (requirements-gpu.txt)"
    return None


@functools.lru_cache(maxsize=1)
def _decoder():
    from nvidia import nvimgcodec

    return nvimgcodec.Decoder()


class _Slot:
    """One frame's slot of the output as nvImageCodec's ``as_images`` takes it: a bare CUDA array interface.

    Cheaper than a CuPy slice per frame. Measured on an H200 (nvImageCodec 0.9.0.20, medians of 300), 30
    frames of 240 × 320 RGB: 30 CuPy slices 0.093 ms + ``as_images`` of them 0.237 ms, against 30 slots
    0.022 ms + ``as_images`` of them 0.168 ms. The output array, which owns the memory, outlives the decode.
    """

    __slots__ = ("__cuda_array_interface__",)

    def __init__(self, ptr: int, shape: tuple, typestr: str):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False), "strides": None,
                                         "version": 3}


def _slots(raw) -> list:
    """One :class:`_Slot` per frame of the C-contiguous ``raw`` (frames, rows, cols, samples)."""
    shape, typestr, step = tuple(raw.shape[1:]), raw.dtype.str, raw[0].nbytes if len(raw) else 0
    return [_Slot(raw.data.ptr + i * step, shape, typestr) for i in range(len(raw))]


def blank_frames(per_frame) -> list[int]:
    """Indices of the all-zero rows of ``per_frame`` (frames, samples), NumPy or CuPy: one reduction, one small copy.

    The rows are read as 8-byte words where their size allows: on an H200, 30 frames of 240 × 320 RGB took
    0.093 ms as bytes (``any(axis=1)`` and ``.get()``), 0.039 ms as words. ``cupy.flatnonzero`` would add a
    scan and a sync of its own.
    """
    xp = array_module(per_frame)
    rows = per_frame.reshape(len(per_frame), -1).view(np.uint8)
    if rows.shape[1] % 8 == 0 and rows.shape[1]:
        rows = rows.view(np.uint64)
    nonzero = rows.any(axis=1)
    return np.flatnonzero(~(nonzero.get() if xp is not np else nonzero)).tolist()


def _copy_images(images, raw, how: Plan, stream) -> list:
    """Copy each decoded image into its slot of ``raw``; return the indices that need the host instead.

    An image already in its slot (decoded there: :data:`DECODE_IN_PLACE`) stays. Any other contiguous
    image of the expected shape is copied with one ``cudaMemcpyAsync`` on the decode stream (the earlier
    ``cupy.asarray`` + slice assignment per frame added 1.6 ms to a 1.3 ms batch decode of 30 frames of
    240 × 320 RGB, H200, 0.9.0.20; a one-off profile_targets profiler (since removed) times both steps). Anything else
    (``None``, another shape or depth, strided) goes to the host decoder.
    """
    import cupy

    shape = tuple(raw.shape[1:])
    contiguous = (None, tuple(raw.strides[1:]))
    frame_bytes = raw[0].nbytes if len(raw) else 0
    redo = []
    for i, image in enumerate(images):
        cai = None if image is None else image.__cuda_array_interface__
        if (cai is None or tuple(cai["shape"]) != shape or int(cai["typestr"][2:]) != how.raw_itemsize
                or (cai.get("strides") and tuple(cai["strides"])) not in contiguous):
            redo.append(i)
            continue
        slot = raw.data.ptr + i * frame_bytes
        if cai["data"][0] != slot:
            cupy.cuda.runtime.memcpyAsync(slot, cai["data"][0], frame_bytes, cupy.cuda.runtime.memcpyDeviceToDevice,
                                          stream.ptr)
    return redo


def _drain(stream) -> None:
    """Wait for the work already queued on ``stream``, before the decoder writes into the output.

    nvJPEG's hardware (NVJPG) batched decode writes without waiting for that work (reproduced on H100s:
    torchcodec PR 1634, torchvision PR 9606). The memory pool may hand the output a block that such work
    still reads or writes, and the decode writes straight into the output (:data:`DECODE_IN_PLACE`).
    A few microseconds when the stream is idle. What it prevents (a fill queued behind a long kernel on the
    block the output takes; ``tests/stream_race.py``): on the device's H100, 20 of 20 batches wrong without it,
    none with it; on an H200, 5 of 5 and none.
    """
    stream.synchronize()


def _decode_batch(frames: list, layout: CompressedLayout, how: Plan):
    """(raw (frames, rows, cols, samples) CuPy array, indices of frames to decode on the host).

    Returns after the copies have run on the device: the decoder's images are freed on return.
    """
    import cupy
    from nvidia import nvimgcodec

    color = nvimgcodec.ColorSpec.SRGB if how.color == "srgb" else nvimgcodec.ColorSpec.UNCHANGED
    params = nvimgcodec.DecodeParams(allow_any_depth=True, color_spec=color)
    streams = [nvimgcodec.CodeStream(np.ascontiguousarray(f)) for f in frames]
    stream = cupy.cuda.get_current_stream()
    shape = (layout.rows, layout.columns, layout.samples_per_pixel)
    raw = cupy.empty((len(frames),) + shape, dtype=np.dtype(f"u{how.raw_itemsize}"))
    _drain(stream)
    images = None
    if (how.raw_itemsize, layout.samples_per_pixel) in DECODE_IN_PLACE:
        try:
            images = _decoder().decode(streams, params=params, cuda_stream=stream.ptr,
                                       images=nvimgcodec.as_images(_slots(raw)))
        except (TypeError, ValueError, RuntimeError):  # an nvImageCodec that cannot: its own images, copied
            images = None
    if images is None:
        images = _decoder().decode(streams, params=params, cuda_stream=stream.ptr)
    redo = _copy_images(images, raw, how, stream)
    stream.synchronize()
    return raw, redo


def decode(layout: CompressedLayout, how: Plan, frames: list, host_frame):
    """The nvImageCodec back end: ``frames`` in one batch, corrected as pydicom corrects them; a frame the
    decoder returns as nothing or all zeros is decoded again by ``host_frame(index)`` on the host."""
    import cupy

    raw, redo = _decode_batch(frames, layout, how)
    out = finish(raw, layout, how)
    per_frame = out.reshape((len(frames), -1))
    for i in sorted(set(redo) | set(blank_frames(per_frame))):
        per_frame[i] = cupy.asarray(host_frame(i).reshape(-1))
    return out

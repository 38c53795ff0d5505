"""RLE Lossless decoded frame by frame straight into the output (host) or a pinned staging buffer (GPU).

pydicom's ``pixel_array`` for RLE calls pylibjpeg-rle's ``decode_frame`` once
per frame, then copies, reshapes and bit-corrects; kvdicom's first host path
did the same through ``Decoder.as_array`` after copying the whole value into
``bytes``, and was slower than pydicom (0.8x on the H200 for the GPU load).

Here each frame is decoded into its place in the output:

* with imagecodecs (a suite requirement; optional for kvdicom), each segment
  by its PackBits decoder (C, GIL released) into a scratch row, then written
  to its byte of each sample; accepted only when the RLE header is exactly
  what the layout needs (pylibjpeg-rle's header rules) and every segment
  decodes without error to one byte per pixel, the case in which
  pylibjpeg-rle decodes the same runs to the same bytes. Anything else is
  decoded again by pylibjpeg-rle, which then succeeds or fails exactly as
  pydicom does;
* without imagecodecs, by pylibjpeg-rle itself (pydicom's reference plugin).

Then colour planes are interleaved (RLE frames are planar) and unused bits
shifted out as pydicom's ``_correct_unused_bits`` does. Frames decode
concurrently on kvdicom's pool (``host_read.pool()``) only with imagecodecs,
since pylibjpeg-rle's ``decode_frame`` holds the GIL (2.2.0: no
``allow_threads``; 16 frames took 18.4 ms on one thread, 16.3-17.7 ms on two),
and only where :data:`settings.RLE_CONCURRENT_MIN_BYTES` and :data:`settings.RLE_CONCURRENT_MIN_CPUS`
say it pays. For ``device="cuda"`` frames are decoded into one pinned host
buffer and copied to the device in chunks of :data:`settings.RLE_COPY_CHUNK_BYTES` as
they are ready, so the copy overlaps the decoding of the next frames.

Measured on the 2-core CPU machine (shared with other work; pydicom 3.0.2,
pylibjpeg-rle 2.2.0, imagecodecs 2026.3.6; a one-off measure_rle profiler (since removed), median of
41 warm rounds, ms), ``compressed_specs('full')``'s RLE cases, CPU load:

======================= ======= ========== ============ ============= =============
case                    pydicom kvdicom    imagecodecs  imagecodecs   pylibjpeg-rle
                                (default)  one thread   on the pool   only
======================= ======= ========== ============ ============= =============
f16_512x512_i16_rle     14.68   10.30      10.58        12.05         13.76
f2_128x128_i16_rle      1.68    1.67       1.57         2.31          1.69
======================= ======= ========== ============ ============= =============

(the old path, ``Decoder.as_array`` on the whole value: 18.7 ms and 1.20 ms
against pydicom's 15.3 and 1.09 in the same session). Run the script on the
device for the GPU load and the pool on many cores.

YBR_FULL / YBR_FULL_422 (which pydicom converts to RGB) and files without
pylibjpeg-rle keep pydicom's own path (:func:`kvdicom._codecs.route.host_decode`).
"""

from __future__ import annotations

import concurrent.futures as concurrent_futures
import importlib.util
import itertools
import os

import numpy as np

from kvdicom import settings
from kvdicom._io import host_read
from kvdicom._io import tuning as io_tuning
from kvdicom.errors import DicomLoadError

#: imagecodecs (a suite requirement, optional for kvdicom) decodes PackBits with the GIL released.
_HAVE_IMAGECODECS = importlib.util.find_spec("imagecodecs") is not None


def problem(layout) -> str | None:
    """Why ``layout`` must keep pydicom's host path, or None when :func:`decode_into` decodes it exactly."""
    if layout.codec != "rle":
        return f"{layout.codec} is not RLE"
    try:
        import rle.rle  # noqa: F401
    except ImportError as exc:
        return f"pylibjpeg-rle is not installed ({exc})"
    if layout.photometric_interpretation in ("YBR_FULL", "YBR_FULL_422"):
        return f"{layout.photometric_interpretation}: pydicom converts it to RGB"
    if layout.bits_allocated not in (8, 16, 32) or layout.samples_per_pixel not in (1, 3):
        return f"{layout.bits_allocated} bits allocated, {layout.samples_per_pixel} samples"
    if layout.frame_table.split_on_eoi:
        return "frames split on JPEG markers"
    return None


def decoder(layout) -> str:
    """Which decoder :func:`decode_into` runs for ``layout`` (benchmark records); "" where pydicom's path runs."""
    if problem(layout) is not None:
        return ""
    if not _HAVE_IMAGECODECS:
        return "kvdicom._codecs.rle:pylibjpeg-rle (frame by frame)"
    if _concurrent(layout, layout.number_of_frames):
        return f"kvdicom._codecs.rle:imagecodecs-packbits ({io_tuning.host_threads()} threads)"
    return "kvdicom._codecs.rle:imagecodecs-packbits (one thread)"


def frame_nbytes(layout) -> int:
    return layout.rows * layout.columns * layout.samples_per_pixel * layout.dtype.itemsize


def _rle_decode(layout, index: int, frame, dst: np.ndarray) -> None:
    """pylibjpeg-rle's ``decode_frame`` (pydicom's reference decoder) into ``dst``; its errors are pydicom's."""
    from rle.rle import decode_frame

    pixels = layout.rows * layout.columns
    try:
        decoded = decode_frame(bytes(frame), pixels, layout.bits_allocated, "<")
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # ValueError; pyo3 panics are BaseExceptions
        raise DicomLoadError(layout.path, f"pydicom cannot decode the rle data: RLE frame {index}: "
                             f"{type(exc).__name__}: {exc}") from exc
    if len(decoded) != dst.nbytes:
        raise DicomLoadError(layout.path, f"RLE frame {index} decodes to {len(decoded)} bytes, but the header "
                             f"promises {dst.nbytes} ({layout.samples_per_pixel} sample(s) of "
                             f"{layout.rows}x{layout.columns} at {layout.bits_allocated} bits)")
    src = np.frombuffer(decoded, dtype=layout.dtype.newbyteorder("<"))
    out = dst.view(layout.dtype)
    if layout.samples_per_pixel == 1:
        out[...] = src
    else:  # planar (sample, pixel) -> (pixel, sample)
        out.reshape(pixels, layout.samples_per_pixel)[...] = src.reshape(layout.samples_per_pixel, pixels).T


def _segments(layout, frame) -> list[tuple[int, int]] | None:
    """The (start, end) of each segment, or None unless the RLE header is exactly what the layout needs.

    Mirrors pylibjpeg-rle's header rules (15 offsets after the count, zeros skipped, the first 64,
    strictly increasing up to the frame's end); anything else decodes with pylibjpeg-rle, which then
    fails (or not) exactly as pydicom does.
    """
    if len(frame) < 64:
        return None
    offsets = [int(o) for o in np.frombuffer(frame[:64], dtype="<u4")[1:] if o] + [len(frame)]
    if offsets[0] != 64 or any(b <= a for a, b in itertools.pairwise(offsets)):
        return None
    if len(offsets) - 1 != layout.samples_per_pixel * layout.dtype.itemsize:
        return None
    return list(itertools.pairwise(offsets))


def _imagecodecs_decode(layout, frame, dst: np.ndarray) -> bool:
    """Decode ``frame`` into ``dst`` segment by segment with imagecodecs' PackBits (GIL released); False if not exact.

    Accepted only when every segment decodes without error to exactly one byte per pixel, the case in
    which pylibjpeg-rle decodes the same runs to the same bytes; otherwise the caller falls back to it.
    """
    segments = _segments(layout, frame)
    if segments is None:
        return False
    try:
        from imagecodecs import packbits_decode
    except ImportError:  # installed but unusable (a broken wheel): pylibjpeg-rle decodes
        return False

    pixels = layout.rows * layout.columns
    itemsize, samples = layout.dtype.itemsize, layout.samples_per_pixel
    planes = dst.reshape(pixels, samples, itemsize)
    scratch = None if itemsize == 1 and samples == 1 else np.empty(pixels, dtype=np.uint8)
    for number, (start, end) in enumerate(segments):
        target = dst if scratch is None else scratch
        try:
            got = packbits_decode(frame[start:end], out=target)
        except Exception:  # noqa: BLE001  ImcdError (corrupt, too long) or any other: pylibjpeg-rle decides
            return False
        if len(got) != pixels:
            return False
        if scratch is not None:  # segment 0 holds the most significant byte of sample 0
            sample, byte = divmod(number, itemsize)
            planes[:, sample, itemsize - 1 - byte] = scratch
    return True


def decode_frame_into(layout, index: int, frame, dst: np.ndarray) -> None:
    """Decode RLE ``frame`` (number ``index``) into ``dst``: a C-contiguous uint8 array of one frame's bytes.

    ``dst`` then holds the frame as ``pixel_array`` has it (colour by pixel, native byte order,
    unused bits shifted out).
    """
    if not (_HAVE_IMAGECODECS and _imagecodecs_decode(layout, frame, dst)):
        _rle_decode(layout, index, frame, dst)
    shift = layout.bits_allocated - layout.bits_stored
    if shift > 0:  # pydicom's _correct_unused_bits: sign-extends signed, masks unsigned
        out = dst.view(layout.dtype)
        np.left_shift(out, shift, out=out)
        np.right_shift(out, shift, out=out)


def _concurrent(layout, frames: int) -> bool:
    """Whether ``frames`` frames of ``layout`` decode on kvdicom's pool (settings.RLE_CONCURRENT_MIN_*)."""
    return (_HAVE_IMAGECODECS and frames > 1 and frame_nbytes(layout) * frames >= settings.RLE_CONCURRENT_MIN_BYTES
            and (os.cpu_count() or 1) >= settings.RLE_CONCURRENT_MIN_CPUS)


def _decode_all(layout, frames: list, target, on_done=None) -> None:
    """Decode every frame into ``target(i)`` (its uint8 view), on kvdicom's pool where the GIL is released.

    ``on_done(i)`` runs in this thread, in frame order, once frames 0…i are decoded.
    """
    if not _concurrent(layout, len(frames)) or host_read.in_pool():
        for i, frame in enumerate(frames):
            decode_frame_into(layout, i, frame, target(i))
            if on_done:
                on_done(i)
        return
    pool = host_read.pool()
    futures = [pool.submit(decode_frame_into, layout, i, frame, target(i)) for i, frame in enumerate(frames)]
    try:
        for i, future in enumerate(futures):
            future.result()  # the first failing frame's error, as the serial loop raises it
            if on_done:
                on_done(i)
    finally:
        for future in futures:
            future.cancel()
        concurrent_futures.wait(futures)  # no task may still write into the output after an error


def decode_into(layout, frames: list, out: np.ndarray) -> np.ndarray:
    """Decode every frame into ``out`` (a NumPy array of ``layout.shape`` and ``layout.dtype``); return it."""
    flat = out.reshape(-1).view(np.uint8)
    step = frame_nbytes(layout)
    _decode_all(layout, frames, lambda i: flat[i * step:(i + 1) * step])
    return out


def load_host(layout, frames: list) -> np.ndarray:
    """``pixel_array`` of an RLE file whose frames were read: a new NumPy array."""
    return decode_into(layout, frames, np.empty(layout.shape, dtype=layout.dtype))


def load_device(layout, frames: list):
    """A CuPy array of the decoded frames: decoded into pinned memory, copied in chunks while decoding goes on."""
    import cupy
    import cupyx

    out = cupy.empty(layout.shape, dtype=layout.dtype)
    dst = out.reshape(-1).view(cupy.uint8)
    staging = cupyx.empty_pinned(dst.nbytes, dtype=np.uint8)
    stream = cupy.cuda.get_current_stream()
    step = frame_nbytes(layout)
    copied = [0]

    def copy_ready(i: int) -> None:
        end = (i + 1) * step
        if end - copied[0] >= settings.RLE_COPY_CHUNK_BYTES or i == len(frames) - 1:
            dst[copied[0]:end].set(staging[copied[0]:end], stream=stream)  # async: pinned source
            copied[0] = end

    try:
        _decode_all(layout, frames, lambda i: staging[i * step:(i + 1) * step], copy_ready)
    finally:
        stream.synchronize()  # the pinned buffer goes back to CuPy's pool only after its copies ran
    return out

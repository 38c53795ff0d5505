"""Lossless JPEG 2000 and JPEG-LS frames decoded on the host by imagecodecs, GIL released, frame-parallel.

pydicom's plugins (pylibjpeg's openjpeg, pyjpegls) hold the GIL while they
decode, so kvdicom could only run them one frame at a time or on its process
pool (:mod:`kvdicom._codecs.host_parallel`); on small files, where the pool does not
pay, it led pydicom only by the ``dcmread`` it skips: 0.78-1.5x on the H200
(issue 10). imagecodecs (BSD; a suite requirement already, optional for
kvdicom as for RLE's PackBits) wraps the same libraries, openjpeg and CharLS,
with the GIL released, and lets openjpeg use threads within a frame.

Exactness. Only streams whose samples every correct decoder returns alike
take this route: JPEG 2000 and HTJ2K whose every COD / COC segment names the
reversible 5-3 wavelet (:func:`kvdicom._header.codestream.j2k_reversible`), and
JPEG-LS Lossless (.80): integer decoding, defined bit for bit by the
standards. The samples then get pydicom's own corrections
(:func:`kvdicom._pixels.corrections.finish`, the GPU route's). Colour only for the
8-bit JPEG 2000 kinds checked against pydicom (RGB, YBR_RCT; openjpeg undoes
the colour transform in both); monochrome only as MONOCHROME1/2. Everything
else keeps pydicom's path, and so does a file imagecodecs refuses: pydicom
then decodes it or raises its own error, naming the file.

Damaged streams must come out as pydicom's do too (``tests/test_compressed.py``'s
fuzzer). Measured on the first frames of the 9 small lossless JPEG 2000 /
HTJ2K / JPEG-LS fixtures, 1,300 truncated, byte-flipped or cut mutants:
imagecodecs' openjpeg and pylibjpeg's failed together (833) or returned
equal samples (365), and 2 failed in imagecodecs only (then pydicom decodes
them); never did imagecodecs return where pylibjpeg failed; CharLS failed in
both (100). Left out, for that reason: OpenJPH (``htj2k_decode``, 2.4x
openjpeg on HTJ2K) returned an array from a stream openjpeg refused, its
error only printed ("Exception ignored in _copy_from_codestream"); and
lossless JPEG through libjpeg-turbo (``jpeg8_decode``, 5x pydicom's
libjpeg): on 18 streams with 150 mutants each it returned other samples
than libjpeg from 360 of 360 truncated ones, and returned where libjpeg
failed on 212 of 1,980 (imagecodecs' ``ljpeg_decode`` crashed the process).

Measured on the 2-core CPU dev machine (imagecodecs 2026.3.6, pylibjpeg-
openjpeg 2.6.0, pyjpegls 1.5.1), one frame, medians of 20-200 warm calls:
JPEG 2000 512² int16: pylibjpeg 40 ms, imagecodecs one thread 44 ms, two
threads 21 ms; JPEG-LS 256², 8-16 bits: pyjpegls 2.5-3.6 ms, imagecodecs
2.2-3.2 ms; all equal. ``kvdicom.load(..., "cpu")`` against pydicom's
``pixel_array`` on the fixtures: 2 x 128² JPEG-LS 1.25 vs 5.7 ms; 16 x 512²
JPEG-LS 100 vs 398 ms; 2 x 64² 8-bit J2K 1.8 vs 2.5 ms; 32 x 512² J2K 656 vs
1186 ms.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import numpy as np
import pydicom

from kvdicom import settings
from kvdicom._header import codestream
from kvdicom._io import host_read
from kvdicom._io import tuning as io_tuning
from kvdicom._pixels.corrections import finish

#: imagecodecs is optional for kvdicom: without it, pydicom's plugins decode as before.
_HAVE_IMAGECODECS = importlib.util.find_spec("imagecodecs") is not None


#: The colour JPEG 2000 kinds (photometric interpretation, precision) checked equal to pydicom on this route.
COLOUR_J2K = frozenset({("RGB", 8), ("YBR_RCT", 8)})


@dataclass(frozen=True)
class Plan:
    """What a file's codestreams hold, for the decoder and for :func:`kvdicom._pixels.corrections.finish`."""

    decoder: str  #: imagecodecs function: "jpeg2k_decode" or "jpegls_decode"
    raw_itemsize: int  #: bytes per sample the decoder returns
    precision: int  #: codestream precision (of the last frame, as pydicom takes it)
    signed: bool = False  #: codestream signedness (JPEG 2000)

    @property
    def raw_dtype(self) -> np.dtype:
        return np.dtype(f"{'i' if self.signed else 'u'}{self.raw_itemsize}")


LIBRARIES = {"jpeg2k_decode": "openjpeg", "jpegls_decode": "CharLS"}
#: imagecodecs' codec objects whose ``available`` says the library is in this install (a slimmed wheel may
#: leave codecs out: ``tools/slim_wheel.py``).
_CODECS = {"jpeg2k_decode": "JPEG2K", "jpegls_decode": "JPEGLS"}


@functools.lru_cache(maxsize=None)
def _unavailable(decoder: str) -> str | None:
    """Why imagecodecs cannot run ``decoder`` here, or None."""
    try:
        import imagecodecs

        if getattr(imagecodecs, _CODECS[decoder]).available:
            return None
    except Exception as exc:  # noqa: BLE001  a broken install: pydicom's plugins decode
        return f"imagecodecs cannot be used ({type(exc).__name__}: {exc})"
    return f"this imagecodecs has no {LIBRARIES[decoder]} ({_CODECS[decoder]})"


def plan(layout, frames: list, infos: list) -> Plan | str:
    """The :class:`Plan` for ``layout``'s frames, or why they keep pydicom's path."""
    how = _plan(layout, frames, infos)
    if isinstance(how, str):
        return how
    return _unavailable(how.decoder) or how


def _plan(layout, frames: list, infos: list) -> Plan | str:
    if not _HAVE_IMAGECODECS:
        return "imagecodecs is not installed"
    if len(frames) != layout.number_of_frames or layout.frame_table.split_on_eoi:
        return "frames found only while decoding"
    if not frames or any(i is None for i in infos):
        return "a frame has no readable codestream header"
    if len({(i.precision, i.signed) for i in infos}) > 1:
        return "frames differ in precision or sign"
    last = infos[-1]
    itemsize = 1 if last.precision <= 8 else 2
    if last.precision > 16 or itemsize != layout.dtype.itemsize:
        return f"{last.precision}-bit samples in {layout.bits_allocated} bits allocated"
    if layout.samples_per_pixel == 1 and layout.photometric_interpretation not in ("MONOCHROME1", "MONOCHROME2"):
        return f"one sample as {layout.photometric_interpretation}: pydicom's colour handling decides"
    if layout.samples_per_pixel > 1:
        kind = (layout.photometric_interpretation, last.precision)
        if layout.codec not in ("jpeg2000", "htj2k") or kind not in COLOUR_J2K or layout.planar_configuration:
            return f"colour {layout.codec} as {kind[0]} ({kind[1]}-bit, planar {layout.planar_configuration})"
    if layout.codec in ("jpeg2000", "htj2k"):
        if any(i.subsampled for i in infos):
            return "subsampled JPEG 2000 components"
        if not all(codestream.j2k_reversible(f, i.components) for f, i in zip(frames, infos)):
            return "irreversible (9-7) JPEG 2000 wavelet: decoders round it differently"
        return Plan("jpeg2k_decode", itemsize, last.precision, last.signed)
    if layout.codec == "jpeg_lossless":
        return ("lossless JPEG: libjpeg-turbo and pydicom's libjpeg return different samples from damaged "
                "streams (and neither always fails), so pydicom's plugin decodes it")
    if layout.codec == "jpegls" and layout.transfer_syntax == pydicom.uid.JPEGLSLossless:
        return Plan("jpegls_decode", itemsize, last.precision)
    return f"{layout.codec} ({layout.transfer_syntax.name}) is not decoded exactly alike by every decoder"


def _concurrent(frames: int) -> bool:
    """Whether ``frames`` frames decode side by side on the read pool (never from one of its threads: a series
    slice's task decodes its frames itself)."""
    return frames > 1 and (os.cpu_count() or 1) >= settings.IMAGECODECS_CONCURRENT_MIN_CPUS and not host_read.in_pool()


def _frame_threads(layout, how: Plan, frames: int) -> int:
    """openjpeg's own threads per frame: the host threads left over once each frame has one (one on the pool,
    whose other threads decode other slices)."""
    small = layout.rows * layout.columns < settings.IMAGECODECS_INTRA_FRAME_MIN_PIXELS
    if how.decoder != "jpeg2k_decode" or small or host_read.in_pool():
        return 1
    return max(1, io_tuning.host_threads() // (frames if _concurrent(frames) else 1))


def decoder(layout, how: Plan) -> str:
    """What decodes ``layout`` on this route (benchmark records)."""
    frames = layout.number_of_frames
    where = "one thread"
    if _concurrent(frames):
        where = f"frames on {io_tuning.host_threads()} threads"
    if (threads := _frame_threads(layout, how, frames)) > 1:
        where += f", {threads} openjpeg threads a frame"
    return f"kvdicom._codecs.host_codecs:imagecodecs-{LIBRARIES[how.decoder]} ({where})"


def _decode_frame(how: Plan, frame, dst: np.ndarray, threads: int) -> None:
    import imagecodecs

    decode = getattr(imagecodecs, how.decoder)
    kwargs = {"numthreads": threads} if how.decoder == "jpeg2k_decode" else {}
    got = decode(frame, out=dst, **kwargs)
    if got is not dst and not (got.shape == dst.shape and np.shares_memory(got, dst)):
        raise ValueError(f"imagecodecs returned {got.dtype} {got.shape}, not into the {dst.dtype} {dst.shape} frame")


def decode_into(layout, frames: list, how: Plan, out: np.ndarray) -> bool:
    """Decode every frame into ``out`` (C-contiguous, ``layout.shape`` and ``layout.dtype``); False if imagecodecs
    refused any frame (``out`` is then partly written and the caller decodes with pydicom)."""
    if not out.flags.c_contiguous:
        return False
    shape = (len(frames), layout.rows, layout.columns) + ((layout.samples_per_pixel,)
                                                         if layout.samples_per_pixel > 1 else ())
    raw = out.reshape(-1).view(how.raw_dtype).reshape(shape)
    threads = _frame_threads(layout, how, len(frames))
    try:
        if _concurrent(len(frames)):  # no task still writes into ``out`` once wait_all returns
            host_read.wait_all([host_read.pool().submit(_decode_frame, how, f, raw[i], threads)
                                for i, f in enumerate(frames)])
        else:
            for i, frame in enumerate(frames):
                _decode_frame(how, frame, raw[i], threads)
    except MemoryError:  # pydicom's path would only run out too, after decoding as long again
        raise
    except Exception:  # noqa: BLE001  ImcdError, a bad shape: pydicom's path decodes it or raises its own error
        return False
    corrected = finish(raw.reshape(shape + ((1,) if layout.samples_per_pixel == 1 else ())), layout, how)
    if not np.shares_memory(corrected, out):  # finish corrects in place when the container is the header's width
        out[...] = corrected.reshape(out.shape)
    return True


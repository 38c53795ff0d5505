"""The one decoder route: which back end decodes a compressed layout, decided once, named, and run.

:func:`choose` asks the back ends in order, fastest first, and takes the first that accepts the layout and
its frames' codestream facts:

==============  ======================================  =========================================
back end        accepts                                 module
==============  ======================================  =========================================
``nvimgcodec``  ``device="cuda"``: what nvImageCodec     :mod:`kvdicom._codecs.gpu_codec`
                decodes exactly (JPEG, JPEG 2000, HTJ2K)
``rle``         RLE that pydicom does not convert        :mod:`kvdicom._codecs.rle`
``imagecodecs`` lossless JPEG 2000 / HTJ2K, JPEG-LS      :mod:`kvdicom._codecs.host_codecs`
                lossless (GIL released)
``pydicom``     everything else: the reference plugin,   :mod:`kvdicom._codecs.host_parallel`
                frame-parallel on worker processes
                where that pays
==============  ======================================  =========================================

Each back end says why it declines (a string); the reasons travel with the :class:`Choice`, and
:func:`name` turns it into the decoder name the benchmarks record. ``kvdicom.load`` (:func:`load`),
``kvdicom.load_series`` (:mod:`kvdicom._series.decode`) and the benchmarks all go through here: adding a
back end is one module and one step in :func:`choose`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
from dataclasses import dataclass

import numpy as np
import pydicom

from kvdicom._codecs import gpu_codec, host_codecs, host_parallel, rle
from kvdicom._header.compressed import CompressedLayout, check_expansion, check_frames, read_frames, reference_plugin
from kvdicom._io import device as devices
from kvdicom.errors import DicomLoadError


@dataclass(frozen=True)
class Choice:
    """The back end that decodes a layout's frames, its plan, and why faster back ends declined."""

    backend: str  #: "nvimgcodec", "rle", "imagecodecs" or "pydicom"
    plan: object = None  #: gpu_codec.Plan, host_codecs.Plan, or the pydicom plugin's name
    declined: tuple[str, ...] = ()  #: why each faster back end declined, in order

    @property
    def on_gpu(self) -> bool:
        return self.backend == "nvimgcodec"


def as_batch(layout: CompressedLayout, frames: int) -> CompressedLayout:
    """``layout`` as if it held ``frames`` frames: what a batch's size rule and corrections see."""
    return dataclasses.replace(layout, shape=(frames,) + layout.frame_shape, number_of_frames=frames)


def choose(layout: CompressedLayout, frames: list, infos: list, device: str = "cpu",
           batch_frames: int | None = None) -> Choice:
    """The back end for ``layout``'s ``frames`` (as read) and their codestream facts ``infos`` on ``device``.

    ``batch_frames``: the frames of the GPU batch this layout joins (a series' slices decode in one batch,
    so the batch, not the file, meets nvImageCodec's size rule).
    """
    declined = []
    complete = len(frames) == layout.number_of_frames
    if devices.named(device).on_gpu:
        batch = as_batch(layout, batch_frames) if batch_frames else layout
        how = gpu_codec.plan(batch, infos)
        why = gpu_codec.nvimgcodec_problem() if how.route == "gpu" else how.reason
        if why is None and not complete:
            why = "frames found only while decoding"
        if why is None:
            return Choice("nvimgcodec", how)
        declined.append(why)
    why = rle.problem(layout) or (None if complete else "frames found only while decoding")
    if why is None:
        return Choice("rle", None, tuple(declined))
    declined.append(why)
    how = host_codecs.plan(layout, frames, infos)
    if not isinstance(how, str):
        return Choice("imagecodecs", how, tuple(declined))
    declined.append(how)
    return Choice("pydicom", _plugin(layout), tuple(declined))


#: Fields of a compressed layout that hold one file's own facts (where it is, its fragments, its LUT), which no
#: GPU choice reads (``tests/test_route.py`` checks it); a series' slices alike in every other field, with equal
#: codestream facts, get the same GPU choice.
PER_FILE_FIELDS = frozenset({"path", "offset", "file_size", "frame_table", "options", "modality", "file_id"})
_alike = operator.attrgetter(*[f.name for f in dataclasses.fields(CompressedLayout) if f.name not in PER_FILE_FIELDS])


class Choices:
    """:func:`choose` for the slices of one series: a GPU choice made once for the slices alike.

    ``choose`` was 5.4 ms of a 256-slice HTJ2K GPU load on the H200 (21 µs a slice, most of it
    :func:`as_batch`'s ``dataclasses.replace``). Host choices are made per slice: the imagecodecs plan reads
    each frame's own bytes (:func:`kvdicom._header.codestream.j2k_reversible`). One object per load: settings
    a test or a caller changes between loads are seen by the next one.
    """

    def __init__(self) -> None:
        self._gpu: dict[tuple, Choice] = {}

    def choose(self, layout: CompressedLayout, frames: list, infos: list, device: str,
               batch_frames: int | None = None) -> Choice:
        key = (_alike(layout), tuple(infos), len(frames), device, batch_frames)
        got = self._gpu.get(key)
        if got is None:
            got = choose(layout, frames, infos, device, batch_frames)
            if got.on_gpu:
                self._gpu[key] = got
        return got


def _plugin(layout: CompressedLayout) -> str:
    try:
        return reference_plugin(layout.transfer_syntax)
    except DicomLoadError as exc:
        raise DicomLoadError(layout.path, exc.reason) from exc


def name(layout: CompressedLayout, choice: Choice) -> str:
    """The decoder that runs for ``choice`` (benchmark records and ``SeriesInfo.decoders``)."""
    if choice.backend == "nvimgcodec":
        return f"nvimgcodec ({layout.codec})"
    if choice.backend == "rle":
        return rle.decoder(layout)
    if choice.backend == "imagecodecs":
        return host_codecs.decoder(layout, choice.plan)
    return f"pydicom:{host_parallel.decoder(layout, choice.plan)}"


def describe(layout: CompressedLayout, device: str) -> str:
    """``device``'s decoder for ``layout`` and, where it is not the fastest, why (reads the frames)."""
    _, frames = read_frames(layout)
    choice = choose(layout, frames, check_frames(layout, frames), device)
    where = "gpu" if choice.on_gpu else "host"
    text = f"{where}:{name(layout, choice)}"
    if devices.named(device).on_gpu and not choice.on_gpu:
        text += f" ({choice.declined[0]})"
    return text


@contextlib.contextmanager
def out_of_memory_named(layout: CompressedLayout):
    """A host decoder's ``MemoryError`` (imagecodecs', NumPy's) as the :class:`DicomLoadError` pydicom's route
    raises, naming the file and what it asked for."""
    try:
        yield
    except MemoryError as exc:
        raise DicomLoadError(layout.path, f"out of memory decoding {layout.codec} data to {layout.decoded_nbytes} "
                             f"bytes ({type(exc).__name__}: {exc})") from exc


def host_into(layout: CompressedLayout, choice: Choice, value: np.ndarray, frames: list, out: np.ndarray) -> None:
    """Decode on the host into ``out`` (NumPy, ``layout.shape``), by ``choice`` (a host back end)."""
    with out_of_memory_named(layout):
        _host_into(layout, choice, value, frames, out)


def _host_into(layout: CompressedLayout, choice: Choice, value: np.ndarray, frames: list, out: np.ndarray) -> None:
    if choice.backend == "rle":
        rle.decode_into(layout, frames, out)  # straight into the output
        return
    if choice.backend == "imagecodecs" and tuple(out.shape) == layout.shape and host_codecs.decode_into(
            layout, frames, choice.plan, out):
        return
    arr = host_decode(layout, value)  # pydicom's plugin; also where imagecodecs refused a frame
    if arr.shape != tuple(out.shape):
        raise DicomLoadError(layout.path, f"decoded shape {arr.shape} differs from the header's {tuple(out.shape)}")
    out[...] = arr


def load_host(layout: CompressedLayout, choice: Choice, value: np.ndarray, frames: list) -> np.ndarray:
    """``pixel_array`` on the host by ``choice``."""
    if choice.backend == "pydicom":
        arr = host_decode(layout, value)
        if arr.shape != layout.shape and not layout.frame_table.split_on_eoi:  # EOI-split: frames known only now
            raise DicomLoadError(layout.path, f"decoded shape {arr.shape} differs from the header's {layout.shape}")
        return arr
    with out_of_memory_named(layout):
        out = np.empty(layout.shape, dtype=layout.dtype)
    host_into(layout, choice, value, frames, out)
    return out


def load(layout: CompressedLayout, device: str, fd: int | None = None):
    """``kvdicom.load`` of a compressed file: one read (through ``fd``, the header's open file), the frames
    checked (a codestream disagreeing with the header, then a decompression bomb, refused before any output is
    allocated), one choice, one decode."""
    value, frames = read_frames(layout, fd)
    infos = check_frames(layout, frames)
    check_expansion(layout)
    choice = choose(layout, frames, infos, device)
    if choice.on_gpu:
        return gpu_codec.decode(layout, choice.plan, frames, lambda i: host_decode(layout, value, index=i))
    if devices.named(device).on_gpu:
        import cupy

        if choice.backend == "rle":
            with out_of_memory_named(layout):  # its pinned staging is host memory
                return rle.load_device(layout, frames)  # decoded into pinned memory, copies overlapping the decode
        return cupy.asarray(load_host(layout, choice, value, frames))
    return load_host(layout, choice, value, frames)


def host_decode(layout: CompressedLayout, value: np.ndarray, index: int | None = None) -> np.ndarray:
    """pydicom's decode of the value (one frame with ``index``), with the reference plugin: ``pixel_array``.

    The whole value of a multi-frame file whose plugin holds the GIL decodes frame-parallel in kvdicom's
    process pool where that pays (:mod:`kvdicom._codecs.host_parallel`), else here.
    """
    plugin = _plugin(layout)
    if index is None and host_parallel.problem(layout, plugin) is None:
        arr = host_parallel.decode(layout, value, plugin)
        if arr is not None:
            return arr
    return _host_decode_here(layout, value, plugin, index)


def _host_decode_here(layout: CompressedLayout, value: np.ndarray, plugin: str, index: int | None) -> np.ndarray:
    decoder = pydicom.pixels.get_decoder(layout.transfer_syntax)
    opts = dict(layout.options)
    opts["number_of_frames"] = layout.number_of_frames
    try:
        arr, _ = decoder.as_array(value.tobytes(), index=index, decoding_plugin=plugin, **opts)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # pylibjpeg-rle's Rust panics are BaseExceptions (pyo3 PanicException)
        raise DicomLoadError(layout.path, f"pydicom cannot decode the {layout.codec} data "
                             f"({type(exc).__name__}: {exc})") from exc
    return arr

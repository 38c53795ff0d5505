"""The decoder route: which back end decodes a compressed layout on the host, and the decode itself.

Back ends, fastest first: RLE frame by frame (:mod:`kvdicom._codecs.rle`), imagecodecs' exact GIL-free
route (:mod:`kvdicom._codecs.host_codecs`), pydicom's reference plugin on worker processes
(:mod:`kvdicom._codecs.host_parallel`), pydicom's plugin in-process. The GPU route
(:mod:`kvdicom._codecs.gpu_codec`) falls back to this one for what nvImageCodec cannot decode exactly.
"""

from __future__ import annotations

import numpy as np
import pydicom

from kvdicom._codecs import host_codecs, host_parallel, rle
from kvdicom._header.compressed import CompressedLayout, check_frames, read_frames, reference_plugin
from kvdicom.errors import DicomLoadError


def host_decode(layout: CompressedLayout, value: np.ndarray, index: int | None = None) -> np.ndarray:
    """pydicom's decode of the value (one frame with ``index``), with the reference plugin: ``pixel_array``.

    The whole value of a multi-frame file whose plugin holds the GIL decodes frame-parallel in kvdicom's
    process pool where that pays (:mod:`kvdicom._codecs.host_parallel`), else here.
    """
    try:
        plugin = reference_plugin(layout.transfer_syntax)
    except DicomLoadError as exc:
        raise DicomLoadError(layout.path, exc.reason) from exc
    if index is None and host_parallel.problem(layout, plugin) is None:
        arr = host_parallel.decode(layout, value, plugin)
        if arr is not None:
            return arr
    return _host_decode_here(layout, value, plugin, index)


def host_decoder(layout: CompressedLayout, frames: list | None = None, infos: list | None = None) -> str:
    """What decodes ``layout``'s whole value on the host (benchmark records): imagecodecs' route where it
    applies (:mod:`kvdicom._codecs.host_codecs`; the frames are read to tell, unless given), else the pydicom plugin."""
    if frames is None:
        _, frames = read_frames(layout)
        infos = check_frames(layout, frames)
    return host_route(layout, host_codecs.plan(layout, frames, infos))


def host_route(layout: CompressedLayout, how) -> str:
    """:func:`host_decoder` from ``how``, :func:`kvdicom._codecs.host_codecs.plan`'s answer (a plan, or why not),
    for callers that already hold it."""
    if not isinstance(how, str):
        return host_codecs.decoder(layout, how)
    return f"pydicom:{host_parallel.decoder(layout, reference_plugin(layout.transfer_syntax))}"


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


def load_cpu(layout: CompressedLayout) -> np.ndarray:
    """``device="cpu"``: one read, then imagecodecs' exact route (:mod:`kvdicom._codecs.host_codecs`) or
    pydicom's decoders."""
    value, frames = read_frames(layout)
    infos = check_frames(layout, frames)
    if rle.problem(layout) is None and len(frames) == layout.number_of_frames:
        return rle.load_host(layout, frames)  # the same decoder, frame by frame into the output
    arr = host_codecs.load(layout, frames, infos)
    if arr is not None:
        return arr
    arr = host_decode(layout, value)
    if arr.shape != layout.shape and not layout.frame_table.split_on_eoi:  # EOI-split: frames known only now
        raise DicomLoadError(layout.path, f"decoded shape {arr.shape} differs from the header's {layout.shape}")
    return arr

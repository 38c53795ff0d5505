"""Loaders of compressed DICOM that kvdicom is measured against, each pinned to one decoder."""

from __future__ import annotations

import functools

import pydicom
import pytest

from fixtures.encode import EncoderUnavailable
from kvdicom._header.compressed import reference_plugin

#: nvImageCodec's pydicom plugin label (nvidia/nvimgcodec/tools/dicom/pydicom_plugin.py)
NVIMGCODEC_PLUGIN = "0.8.0+nvimgcodec"
#: Syntaxes the nvImageCodec plugin peer is not run on inside the session. Lossless JPEG (SOF3): on the
#: H200 (nvImageCodec 0.9.0.20, nvJPEG 13.2.3) the plugin returned wrong values for the 2 × 128² 12-bit
#: file in every run (matches_pydicom False), and in one session (2026-11-27) its decode hit an illegal
#: instruction (CUDA error 715) that broke the CUDA context for every GPU benchmark after it and aborted
#: the process at exit. kvdicom decodes SOF3 on the host for the same reason (``gpu_codec.plan``).
NVIMGCODEC_PLUGIN_UNSAFE = {
    pydicom.uid.JPEGLossless: "nvJPEG's lossless decoder",
    pydicom.uid.JPEGLosslessSV1: "nvJPEG's lossless decoder",
}


def ensure_or_skip(ensure, spec, what: str, modules: tuple[str, ...]):
    """``ensure(spec)`` (a corpus file or series folder); skipped with the reason when one of ``modules``
    (pylibjpeg and its plugins, the reference decoders) or the spec's encoder is missing."""
    for module in modules:
        pytest.importorskip(module, reason=f"{what} need {module} (pylibjpeg plugins, requirements.txt)")
    try:
        return ensure(spec)
    except EncoderUnavailable as exc:
        pytest.skip(str(exc))


def pydicom_pinned(path, plugin: str | None = None):
    """``pixel_array`` with one decoding plugin (default: the reference, pylibjpeg / pydicom RLE / pyjpegls)."""
    ds = pydicom.dcmread(path)
    ds.pixel_array_options(decoding_plugin=plugin or reference_plugin(ds.file_meta.TransferSyntaxUID))
    return ds.pixel_array


def plugin_available(path, plugin: str) -> str | None:
    """Why ``plugin`` cannot decode ``path``'s syntax, or None."""
    tsyntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if plugin == NVIMGCODEC_PLUGIN and tsyntax in NVIMGCODEC_PLUGIN_UNSAFE:
        return (f"nvImageCodec's plugin is not run on {tsyntax.name}: {NVIMGCODEC_PLUGIN_UNSAFE[tsyntax]} returned "
                "wrong values and once crashed the CUDA context (error 715), failing every GPU benchmark after it")
    decoder = pydicom.pixels.get_decoder(tsyntax)
    if plugin not in decoder.available_plugins:
        return f"pydicom has no '{plugin}' plugin for {tsyntax.name} here (available: {decoder.available_plugins})"
    return None


@functools.lru_cache(maxsize=1)
def register_nvimgcodec() -> str | None:
    """Register nvImageCodec's pydicom plugin once; return why it cannot be, or None."""
    try:
        from nvidia.nvimgcodec.tools.dicom import pydicom_plugin
    except ImportError as exc:
        return f"nvImageCodec is not installed ({exc})"
    if not pydicom_plugin.register():
        return "nvImageCodec's pydicom plugin did not register"
    return None


def pydicom_nvimgcodec_to_cupy(path):
    """pydicom with nvImageCodec's plugin (GPU decode, host bytes back), then ``cupy.asarray``."""
    import cupy

    return cupy.asarray(pydicom_pinned(path, NVIMGCODEC_PLUGIN))


# --- series of compressed slices (bench/test_compressed_series.py) ------------------------------


def pydicom_series_pinned(folder, plugin: str | None = None):
    """The pydicom series loop (read, sort by position on the normal, ``np.stack``) with one decoding plugin.

    As ``bench.peers.pydicom_series``, but each slice's ``pixel_array`` pinned to ``plugin`` (default: the
    reference), so a plugin registered first (nvImageCodec's ``register()``) cannot change what runs.
    """
    import numpy as np

    from bench.peers import series_files, slice_sort_key

    slices = []
    for path in series_files(folder):
        ds = pydicom.dcmread(path)
        ds.pixel_array_options(decoding_plugin=plugin or reference_plugin(ds.file_meta.TransferSyntaxUID))
        key = slice_sort_key(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"),
                             ds.get("InstanceNumber"))
        slices.append((key, ds.pixel_array))
    slices.sort(key=lambda s: s[0])
    return np.stack([arr for _, arr in slices])


def pydicom_series_to_cupy(folder, plugin: str | None = None):
    """:func:`pydicom_series_pinned`, then one ``cupy.asarray`` copy of the volume."""
    import cupy

    return cupy.asarray(pydicom_series_pinned(folder, plugin))

"""Loaders of compressed DICOM that kvdicom is measured against, each pinned to one decoder."""

from __future__ import annotations

import functools
import subprocess
import sys

import pydicom

from kvdicom.compressed import reference_plugin

#: nvImageCodec's pydicom plugin label (nvidia/nvimgcodec/tools/dicom/pydicom_plugin.py)
NVIMGCODEC_PLUGIN = "0.8.0+nvimgcodec"


def pydicom_pinned(path, plugin: str | None = None):
    """``pixel_array`` with one decoding plugin (default: the reference, pylibjpeg / pydicom RLE / pyjpegls)."""
    ds = pydicom.dcmread(path)
    ds.pixel_array_options(decoding_plugin=plugin or reference_plugin(ds.file_meta.TransferSyntaxUID))
    return ds.pixel_array


def plugin_available(path, plugin: str) -> str | None:
    """Why ``plugin`` cannot decode ``path``'s syntax, or None."""
    tsyntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
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


_PROBE = """
import sys, dicomsdl
ds = dicomsdl.open(sys.argv[1])
ds.pixelData()
"""


@functools.cache
def dicomsdl_problem(path: str) -> str | None:
    """Why dicomsdl cannot load ``path``, found in a child process (it aborts the process on some files)."""
    try:
        import dicomsdl  # noqa: F401
    except ImportError as exc:
        return f"dicomsdl is not installed ({exc})"
    run = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True, text=True, timeout=120, check=False)
    if run.returncode:
        return f"dicomsdl fails on this file (exit {run.returncode}: {run.stderr.strip()[-200:]})"
    return None


def dicomsdl_to_cupy(path, frames: int):
    """dicomsdl's decode on the host (one frame per call), then ``cupy.asarray``."""
    import cupy
    import dicomsdl
    import numpy as np

    ds = dicomsdl.open(str(path))
    if frames == 1:
        return cupy.asarray(ds.pixelData())
    return cupy.asarray(np.stack([ds.pixelData(i) for i in range(frames)]))

"""What "correct" means: pydicom's ``pixel_array``, compared by value, shape and native dtype."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian


def pydicom_pixels(path, *, force: bool = False, rescale: bool = False) -> np.ndarray:
    """``pydicom.dcmread(path).pixel_array``, with pydicom's warnings silenced.

    With ``rescale=True``: ``pydicom.pixels.apply_modality_lut(pixel_array, ds)``.

    A file without file meta (readable only with ``force=True``) has no
    Transfer Syntax UID, so ``pixel_array`` refuses it; kvdicom decodes it with
    the encoding pydicom detected while parsing, and so does this reference.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=force)
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
            implicit, little = ds.original_encoding
            ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
            )
        if rescale:
            return apply_modality_lut(ds.pixel_array, ds)
        return ds.pixel_array


def to_host(arr) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    return arr.get() if hasattr(arr, "get") and not isinstance(arr, np.ndarray) else np.asarray(arr)


def mismatch(got, ref: np.ndarray) -> str | None:
    """Why ``got`` differs from pydicom's ``ref``, or ``None`` if it is the same array."""
    host = to_host(got)
    if host.shape != ref.shape:
        return f"shape {host.shape} != pydicom's {ref.shape}"
    if not host.dtype.isnative:
        return f"dtype {host.dtype} is not native-endian"
    if host.dtype != ref.dtype.newbyteorder("="):
        return f"dtype {host.dtype} != pydicom's {ref.dtype}"
    if not np.array_equal(host, ref, equal_nan=host.dtype.kind == "f"):
        bad = np.flatnonzero(host.ravel() != ref.ravel())
        first = bad[0] if bad.size else 0
        return (f"{bad.size} of {ref.size} values differ; first at flat index {first}: "
                f"{host.ravel()[first]!r} != {ref.ravel()[first]!r}")
    if host.dtype.kind == "f" and not np.array_equal(np.signbit(host), np.signbit(ref)):
        return "signs of zeros differ"
    return None


def check_load(path, device: str, *, force: bool = False, rescale: bool = False) -> str | None:
    """The oracle: kvdicom must return pydicom's array, or raise DicomLoadError where pydicom fails.

    Returns why the two disagree, or ``None`` when they agree. Any exception
    from kvdicom other than :class:`kvdicom.DicomLoadError` propagates.
    """
    import kvdicom

    try:
        ref = pydicom_pixels(path, force=force, rescale=rescale)
    except Exception as exc:
        ref_error = exc
    else:
        ref_error = None
    try:
        got = kvdicom.load(path, device, force=force, rescale=rescale)
    except kvdicom.DicomLoadError as exc:
        if ref_error is not None:
            return None
        return f"kvdicom refused a file pydicom decodes: {exc}"
    if ref_error is not None:
        return f"pydicom fails ({type(ref_error).__name__}: {ref_error}) but kvdicom returned an array"
    expected_module = "cupy" if device == "cuda" else "numpy"
    if type(got).__module__.split(".")[0] != expected_module:
        return f"device={device!r} returned a {type(got).__module__}.{type(got).__name__}, not a {expected_module} array"
    return mismatch(got, ref)

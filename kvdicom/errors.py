"""The one exception kvdicom raises for files it cannot load exactly as pydicom would."""

from __future__ import annotations

import os


class DicomLoadError(ValueError):
    """A file kvdicom refuses to load, with the file and the reason.

    Raised before any pixel buffer is allocated, so a refused file never costs
    host or GPU memory. ``path`` and ``reason`` are kept for callers that want
    to log or count failures without parsing the message.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NoPixelDataError(DicomLoadError):
    """A DICOM object without a pixel data element (a DICOMDIR, a structured report, ...).

    A subclass so that ``load_series`` can skip such files and list them
    instead of refusing the whole series. ``has_rows`` tells an image header
    that lost its pixel data (truncated) from an object that never had any.
    """

    has_rows = False
    image_class: str | None = None  #: the file's SOP Class where it is an image storage class (so truncated)


class GpuUnavailableError(ImportError):
    """``device="cuda"`` without the GPU stack (CuPy, KvikIO); raised before any file is opened.

    An ``ImportError`` so that code which already falls back on a missing CuPy
    keeps working; the message names what is missing and how to install it.
    """

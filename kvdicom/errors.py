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


class GpuUnavailableError(ImportError):
    """``device="cuda"`` without the GPU stack (CuPy, KvikIO); raised before any file is opened.

    An ``ImportError`` so that code which already falls back on a missing CuPy
    keeps working; the message names what is missing and how to install it.
    """

"""kvdicom: uncompressed DICOM pixel data from disk into GPU (CuPy) or host (NumPy) memory.

The header is parsed by pydicom; the pixel bytes are read straight from their
offset in the file by KvikIO (GPU) or ``preadv`` (CPU), then decoded by one
code path for both. The result equals ``pydicom``'s ``pixel_array``.
"""

from kvdicom._header.compressed import CompressedLayout
from kvdicom._header.inspect import inspect
from kvdicom._header.layout import PixelLayout
from kvdicom._loader import load
from kvdicom._series.loader import SeriesInfo, load_series
from kvdicom.errors import DicomLoadError, GpuUnavailableError
from kvdicom.settings import Settings, configure

__all__ = [
    "CompressedLayout", "DicomLoadError", "GpuUnavailableError", "PixelLayout", "SeriesInfo", "Settings",
    "configure", "inspect", "load", "load_series",
]
__version__ = "0.1.0"

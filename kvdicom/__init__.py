"""kvdicom: uncompressed DICOM pixel data from disk into GPU (CuPy) or host (NumPy) memory.

The header is parsed by pydicom; the pixel bytes are read straight from their
offset in the file by KvikIO (GPU) or ``preadv`` (CPU), then decoded by one
code path for both. The result equals ``pydicom``'s ``pixel_array``.
"""

from kvdicom._header.compressed import CompressedLayout
from kvdicom._header.layout import PixelLayout, inspect
from kvdicom._io.tuning import configure
from kvdicom._loader import load
from kvdicom._series.loader import SeriesInfo, load_series
from kvdicom.errors import DicomLoadError, GpuUnavailableError

__all__ = [
    "CompressedLayout", "DicomLoadError", "GpuUnavailableError", "PixelLayout", "SeriesInfo",
    "configure", "inspect", "load", "load_series",
]
__version__ = "0.1.0"

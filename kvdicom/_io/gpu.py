"""Is the GPU stack importable? Asked before any file work when ``device="cuda"``.

Without this check a missing CuPy surfaced as ``ModuleNotFoundError`` after
the header had been parsed, or not at all for small staged reads that never
touch KvikIO; now it is one :class:`~kvdicom.errors.GpuUnavailableError` up
front, naming what is missing and how to install it.
"""

from __future__ import annotations

import importlib

from kvdicom.errors import GpuUnavailableError

#: The modules ``device="cuda"`` needs, with the wheels that provide them (CUDA 13).
GPU_MODULES = (("cupy", "cupy-cuda13x"), ("kvikio", "kvikio-cu13"))
INSTALL_HINT = "pip install 'dicom-gpu-bench[gpu]' (or: pip install cupy-cuda13x kvikio-cu13)"

_ready = False


def require_gpu_stack() -> None:
    """Raise :class:`GpuUnavailableError` unless CuPy and KvikIO import; cached once they do."""
    global _ready
    if _ready:
        return
    missing = []
    for module, wheel in GPU_MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or a CUDA library failing to load
            missing.append(f"{module} ({wheel}: {type(exc).__name__}: {exc})")
    if missing:
        raise GpuUnavailableError(
            f"device='cuda' needs CuPy and KvikIO; missing: {'; '.join(missing)}. "
            f"Install them with {INSTALL_HINT}, or load with device='cpu'."
        )
    _ready = True

"""Where a load puts its array: one object per device instead of ``device == "cuda"`` tests at each step."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from kvdicom._io import device_read, host_memory, host_read
from kvdicom._io.gpu import require_gpu_stack

DEVICES = ("cuda", "cpu")


@dataclass(frozen=True)
class Device:
    """``"cuda"`` (CuPy arrays, KvikIO reads) or ``"cpu"`` (NumPy arrays, ``preadv`` reads)."""

    name: str

    @property
    def on_gpu(self) -> bool:
        return self.name == "cuda"

    @property
    def library(self) -> str:
        """The array library of this device's arrays, as ``type(array).__module__`` starts."""
        return "cupy" if self.on_gpu else "numpy"

    @property
    def xp(self):
        """The array module: ``cupy`` or ``numpy``."""
        if self.on_gpu:
            import cupy

            return cupy
        return np

    def empty(self, shape, dtype):
        if self.on_gpu:
            return self.xp.empty(shape, dtype=dtype)  # CuPy's memory pool keeps freed device memory
        return host_memory.empty(shape, dtype)

    def read_into(self, path: str, buffer, offset: int, *, file_id=None, fd: int | None = None, then=None) -> int:
        """Read ``buffer.nbytes`` bytes of ``path`` at ``offset`` into ``buffer`` (an array of this device)."""
        if self.on_gpu:
            return device_read.read_into(path, buffer, offset, file_id=file_id, fd=fd)
        return host_read.read_into(path, buffer, offset, file_id=file_id, then=then, fd=fd)


@functools.lru_cache(maxsize=None)
def named(name) -> Device:
    """The device called ``name`` (``ValueError`` for another name); inside a load, once :func:`get` passed."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {name!r}")
    return Device(name)


def get(name) -> Device:
    """The device a caller asked for: ``ValueError`` for another name, and for ``"cuda"``
    :class:`~kvdicom.errors.GpuUnavailableError` without CuPy and KvikIO, both before any file work."""
    device = named(name)
    if device.on_gpu:
        require_gpu_stack()
    return device

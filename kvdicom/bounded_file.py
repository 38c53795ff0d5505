"""A read-only file object whose reads never ask for more than the file holds.

pydicom reads an element's value with ``fp.read(length)``, and CPython's
buffered ``read(n)`` allocates ``n`` bytes before it reads. A header that
declares a 4 GiB value in a 1 KiB file would make that allocation; clamping
``n`` to the bytes left keeps header parsing bounded by the file's size.
"""

from __future__ import annotations

import io
import os


class BoundedReader(io.BufferedReader):
    """``io.BufferedReader`` that clamps every ``read(n)`` to the bytes left."""

    def __init__(self, path: str | os.PathLike):
        raw = io.FileIO(path, "rb")
        super().__init__(raw)
        self.size = os.fstat(raw.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = max(0, min(size, self.size - self.tell()))
        return super().read(size)

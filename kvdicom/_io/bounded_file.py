"""A read-only file object whose reads never ask for more than the file holds.

pydicom reads an element's value with ``fp.read(length)``, and CPython's
buffered ``read(n)`` allocates ``n`` bytes before it reads. A header that
declares a 4 GiB value in a 1 KiB file would make that allocation; clamping
``n`` to the bytes left keeps header parsing bounded by the file's size.

The file is opened with :func:`kvdicom._io.fileid.open_regular` (a FIFO or a
directory is refused, never waited on), and its size and identity come from
the one ``fstat`` of the descriptor the header is read through.
"""

from __future__ import annotations

import io
import os

from kvdicom._io.fileid import FileId, open_identified


class BoundedReader(io.BufferedReader):
    """``io.BufferedReader`` that clamps every ``read(n)`` to the bytes left.

    ``file_id`` is :func:`kvdicom._io.fileid.identify` of the open file, ``size``
    its size then.
    """

    def __init__(self, path: str | os.PathLike, *, fd: int | None = None, file_id: FileId | None = None):
        """Open ``path``; or, with ``fd`` and its ``file_id`` (:func:`kvdicom._io.fileid.open_identified`),
        take over that open descriptor (closed with this reader, also where this raises)."""
        if fd is None:
            fd, file_id = open_identified(path)
        try:
            self.file_id = tuple(file_id)
            raw = io.FileIO(fd, "rb", closefd=True)
        except BaseException:
            os.close(fd)
            raise
        super().__init__(raw)
        self.size = self.file_id[2]
        self._path = os.fspath(path)

    @property
    def name(self) -> str:
        """The path, as an ``open()``-ed file names itself: pydicom's warnings add it to a string (the
        descriptor number there made a truncated header's refusal read "TypeError: can only concatenate str")."""
        return self._path

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = max(0, min(size, self.size - self.tell()))
        return super().read(size)

"""Which file a header was read from, so that pixel reads can prove they read the same one."""

from __future__ import annotations

import os


def identify(fd_or_path) -> tuple[int, int, int, int]:
    """``(st_dev, st_ino, st_size, st_mtime_ns)`` of an open descriptor or a path."""
    st = os.fstat(fd_or_path) if isinstance(fd_or_path, int) else os.stat(fd_or_path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

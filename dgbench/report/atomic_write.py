"""Write output files so that a crash never leaves a half-written one behind.

Each file is written to a temporary name in the output folder itself (same
file system, so ``os.replace`` is atomic) and only then renamed into place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``directory/name``; ``name`` must be a plain file name."""
    if not name or name in (".", "..") or Path(name).name != name or os.sep in name or "/" in name:
        raise ValueError(f"refusing to write outside the output folder: {name!r}")
    target = directory / name
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, target)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise
    return target

"""Read a byte range of a file into a CuPy buffer with KvikIO: the GPU half of kvdicom's I/O."""

from __future__ import annotations

from kvdicom import host_read
from kvdicom.io_tuning import plan_read


def _read_staged(path: str, buffer, offset: int) -> int:
    """Small reads: one ``preadv`` into pinned host memory (CuPy's pinned pool), one copy."""
    import cupyx
    import numpy as np

    staging = cupyx.empty_pinned(buffer.nbytes, dtype=np.uint8)
    got = host_read.read_into(path, staging, offset)
    buffer.set(staging)
    return got


def read_into(path: str, buffer, offset: int) -> int:
    """Read ``buffer.nbytes`` bytes of ``path`` at ``offset`` into device ``buffer``; return bytes read.

    With GDS the bytes go straight from storage to the GPU; in compat mode
    KvikIO reads them through pinned bounce buffers on its thread pool, except
    small reads, which are staged once (see ``kvdicom.io_tuning``).
    """
    plan = plan_read(buffer.nbytes)
    if not plan.via_kvikio:
        return _read_staged(path, buffer, offset)

    import kvikio

    with kvikio.CuFile(path, "r") as f:
        return f.pread(buffer, buffer.nbytes, offset, task_size=plan.task_size).get()

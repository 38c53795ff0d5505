"""Read a byte range of a file into a CuPy buffer with KvikIO: the GPU half of kvdicom's I/O."""

from __future__ import annotations

from kvdicom.io_tuning import plan_read


def read_into(path: str, buffer, offset: int) -> int:
    """Read ``buffer.nbytes`` bytes of ``path`` at ``offset`` into device ``buffer``; return bytes read.

    With GDS the bytes go straight from storage to the GPU; in compat mode
    KvikIO reads them through pinned bounce buffers on its thread pool.
    """
    import kvikio

    plan = plan_read(buffer.nbytes)
    with kvikio.CuFile(path, "r") as f:
        return f.pread(buffer, buffer.nbytes, offset, task_size=plan.task_size).get()

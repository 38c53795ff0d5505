"""Work still queued on the CUDA stream over the memory a GPU decode's or read's output is handed: the race
``kvdicom._codecs.gpu_codec._drain`` and ``kvdicom._io.device_read._drain_current_stream`` guard against. One
scenario for ``tests/test_compressed.py`` and ``tests/test_device.py``."""

from __future__ import annotations

import numpy as np

#: A kernel that keeps one GPU thread busy for ``cycles`` clock cycles: work queued on the stream.
SPIN = r"""
extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) {}
}
"""


def queued_fill_rounds(cupy, decode, expected: np.ndarray, count: int) -> list[tuple[bool, bool, list]]:
    """``count`` rounds of: a fill of a block of ``expected.nbytes`` queued behind a kernel of about 20 ms, the
    block freed (the pool may hand it to the output), then ``decode()`` -> (raw, frames redone on the host).

    Returns, per round, (the output took the freed block, the output equals ``expected``, the frames redone).
    Without a drain before the decode, the fill lands on the decoded frames afterwards.
    """
    spin = cupy.RawKernel(SPIN, "spin")
    results = []
    for _ in range(count):
        block = cupy.empty(expected.nbytes, dtype=np.uint8)
        spin((1,), (1,), (np.int64(40_000_000),))  # about 20 ms at 2 GHz
        block.fill(7)
        freed = block.data.ptr
        del block
        raw, redo = decode()
        results.append((raw.data.ptr == freed, np.array_equal(raw.get(), expected), redo))
    return results

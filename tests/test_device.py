"""kvdicom._io.device: one object per device; the public entry points validate it before any file work."""

from __future__ import annotations

import numpy as np
import pytest

import kvdicom
from kvdicom._io import device as devices


def test_a_device_names_its_array_library_and_reads_into_its_arrays(tmp_path):
    cpu = devices.named("cpu")
    assert (cpu.on_gpu, cpu.library, cpu.xp) == (False, "numpy", np)
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)))
    buffer = cpu.empty(16, np.uint8)
    assert cpu.read_into(str(path), buffer, 100) == 16
    assert buffer.tolist() == list(range(100, 116))
    assert devices.named("cuda").library == "cupy" and devices.named("cuda").on_gpu


@pytest.mark.parametrize("bad", ["gpu", "CUDA", None, 0], ids=["unknown", "upper-case", "none", "zero"])
def test_another_name_is_a_value_error_before_any_file_work(bad, tmp_path):
    missing = tmp_path / "nothing-here.dcm"
    with pytest.raises(ValueError, match="device must be one of"):
        kvdicom.load(missing, bad)
    with pytest.raises(ValueError, match="device must be one of"):
        kvdicom.load_series(tmp_path, bad)


def test_cuda_without_the_gpu_stack_is_refused_up_front(tmp_path, monkeypatch):
    from kvdicom._io import gpu

    monkeypatch.setattr(gpu, "_ready", False)
    monkeypatch.setattr(gpu, "GPU_MODULES", (("kvdicom_no_such_module", "no-such-wheel"),))
    with pytest.raises(kvdicom.GpuUnavailableError, match="no-such-wheel"):
        devices.get("cuda")
    with pytest.raises(kvdicom.GpuUnavailableError):
        kvdicom.load_series(tmp_path / "nothing", "cuda")


@pytest.mark.gpu
def test_small_gpu_reads_queued_on_a_busy_stream_each_get_their_own_bytes(cuda, tmp_path):
    """Small reads go through pinned staging bytes: each read's copy must have run before the next read's
    bytes land there, on whatever stream is current (here a non-blocking one still busy with a long kernel).

    Before, the copy stayed queued behind the kernel, the staging went back to CuPy's pinned pool, the
    next read was handed the same block, and the first array got the second file's bytes.
    """
    from kvdicom._io import device_read
    from tests.stream_race import SPIN

    rng = np.random.default_rng(7)
    sizes = [512 << 10, 512 << 10, 3 << 20, 1000]  # the same size twice, then a larger read and a smaller one
    blobs = [rng.integers(0, 256, size + 64, dtype=np.uint8) for size in sizes]
    paths = []
    for k, blob in enumerate(blobs):
        paths.append(tmp_path / f"blob{k}")
        paths[-1].write_bytes(blob.tobytes())
    spin = cuda.RawKernel(SPIN, "spin")
    stream = cuda.cuda.Stream(non_blocking=True)
    with stream:
        buffers = []
        for path, size in zip(paths, sizes):
            spin((1,), (1,), (np.int64(40_000_000),))  # about 20 ms at 2 GHz
            buffers.append(cuda.empty(size, dtype=np.uint8))
            assert device_read.read_into(str(path), buffers[-1], 64) == size
    stream.synchronize()
    for buffer, blob, size in zip(buffers, blobs, sizes):
        np.testing.assert_array_equal(buffer.get(), blob[64:64 + size])


@pytest.mark.gpu
def test_a_kvikio_read_waits_for_work_queued_on_a_non_blocking_stream_over_its_buffer(cuda, tmp_path):
    """A large GPU read goes through KvikIO, whose copies do not wait for a non-blocking stream. Here a fill
    of a block is queued on such a stream behind a 20 ms kernel, the block is freed, and the read's buffer
    takes it: without a wait before the read, the fill lands on the bytes read afterwards."""
    from kvdicom import settings
    from kvdicom._io import device_read
    from tests.stream_race import queued_fill_rounds

    size = 2 * settings.KVIKIO_SMALL_READ_BYTES
    blob = np.random.default_rng(11).integers(0, 256, size, dtype=np.uint8)
    path = tmp_path / "large"
    path.write_bytes(blob.tobytes())
    stream = cuda.cuda.Stream(non_blocking=True)

    def read():
        buffer = cuda.empty(size, dtype=np.uint8)
        assert device_read.read_into(str(path), buffer, 0) == size
        stream.synchronize()  # whatever is still queued over the buffer has landed before it is compared
        return buffer, []

    with stream:
        rounds = queued_fill_rounds(cuda, read, blob, 3)
    assert all(equal for _, equal, _ in rounds), rounds
    if not any(reused for reused, _, _ in rounds):
        pytest.skip("the memory pool never handed the freed block to the read's buffer, so nothing was checked")

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

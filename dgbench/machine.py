"""What machine the suite runs on: GPU probe, library versions, and the results folder name.

Kept apart from the benchmarks so that a machine without CuPy or a GPU can
still import it, and so that one probe answers both "may GPU tests run?" and
"what goes in the JSON's machine_info?".
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import metadata

from kvdicom._io.tuning import configured_threads


@dataclass(frozen=True)
class GpuStatus:
    """Whether GPU loads can run here, and if not, the one-line reason."""

    available: bool
    reason: str = ""
    name: str | None = None
    driver: str | None = None
    cuda_runtime: str | None = None
    memory_bytes: int | None = None
    kvikio: dict = field(default_factory=dict)
    #: visible CUDA devices (``CUDA_VISIBLE_DEVICES`` counts): in the slug and machine_info only when more than one
    count: int = 1


def _cuda_version(code: int) -> str:
    return f"{code // 1000}.{code % 1000 // 10}"


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver (e.g. 580.159.04), which CUDA's API does not report."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def kvikio_settings() -> dict:
    """KvikIO's version, mode and the settings in force (empty without KvikIO)."""
    try:
        import kvikio
        import kvikio.defaults
    except Exception:
        return {}
    compat = bool(kvikio.defaults.is_compat_mode_preferred())
    return {
        "kvikio_version": kvikio.__version__,
        "kvikio_compat_mode": compat,
        "gds_available": not compat,
        "kvikio_threads": configured_kvikio_threads(),
        "kvikio_task_size": int(kvikio.defaults.get("task_size")),
        "kvikio_bounce_buffer_size": int(kvikio.defaults.get("bounce_buffer_size")),
    }


def configured_kvikio_threads() -> int:
    """The pool size kvdicom configures (or KVIKIO_NTHREADS), not the pool's size now.

    The pool is resized on first use, so reading it gives 1 before the warm-up
    and 16 after: a volatile value that made every comparison warn that the
    machine changed. Nothing here touches KvikIO's pool.
    """
    try:
        from kvdicom._io.tuning import configured_threads  # issue 9: the setting in force
    except ImportError:
        configured_threads = None
    if configured_threads is not None:
        value = configured_threads()
        if value is not None:
            return int(value)
    from kvdicom._io.tuning import machine_threads

    env = os.environ.get("KVIKIO_NTHREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else machine_threads()


def probe_gpu() -> GpuStatus:
    """Check for CuPy, a working CUDA device and KvikIO, in that order."""
    try:
        import cupy
    except Exception as exc:
        return GpuStatus(False, f"CuPy is not installed ({type(exc).__name__}: {exc})")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return GpuStatus(False, "no CUDA device is visible")
        cupy.arange(4).sum().item()  # a kernel launch proves the device works
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        runtime = _cuda_version(cupy.cuda.runtime.runtimeGetVersion())
        memory = int(props["totalGlobalMem"])
    except Exception as exc:
        return GpuStatus(False, f"no usable CUDA device ({type(exc).__name__}: {exc})")
    settings = kvikio_settings()
    if not settings:
        return GpuStatus(False, "KvikIO is not installed", name=name, cuda_runtime=runtime)
    driver = nvidia_driver_version() or _cuda_version(cupy.cuda.runtime.driverGetVersion())
    return GpuStatus(True, "", name, driver, runtime, memory, settings, count=int(count))


def cpu_brand() -> str:
    """The processor's model name, for CPU-only machine names."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def machine_slug(gpu: GpuStatus) -> str:
    """Results folder name: tells GPUs, GPU counts, drivers and KvikIO modes apart.

    A host with several visible GPUs of one model is ``<gpu>-x<count>_…`` (``nvidia-h200-x8_drv…``); a
    one-GPU machine keeps the name it always had (``nvidia-h200_drv…``), so its history stays one folder.
    """
    if not gpu.available:
        return f"cpu-{slugify(cpu_brand())}"
    mode = "compat" if gpu.kvikio.get("kvikio_compat_mode") else "gds"
    count = f"-x{gpu.count}" if gpu.count > 1 else ""
    return f"{slugify(gpu.name)}{count}_drv{gpu.driver}_cuda{gpu.cuda_runtime}_kvikio-{mode}"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def filesystem_of(path: str | os.PathLike) -> str:
    """File system type holding ``path`` (ext4, xfs, tmpfs, …), from /proc/mounts."""
    target = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (target == parts[1] or target.startswith(parts[1].rstrip("/") + "/")):
                    if len(parts[1]) > len(best):
                        best, fstype = parts[1], parts[2]
    except OSError:
        pass
    return fstype


def stable_location(path: str | os.PathLike, root: str | os.PathLike | None) -> str | None:
    """``path`` relative to the repository ``root`` when inside it, else ``None``: never an absolute path,
    which differs between checkouts of the same machine and would make every comparison warn."""
    if root is None:
        return None
    real, base = os.path.realpath(path), os.path.realpath(root)
    if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
        return os.path.relpath(real, base)
    return None


def header_walk() -> str:
    """Which header walk kvdicom uses here: ``compiled`` (built where ./dgb or pip found a C compiler) or ``python``;
    recorded because it moves every per-file time (docs/loader.md)."""
    from kvdicom._header import fast_header

    return "python" if fast_header.compiled_walk is None else "compiled"


def slice_reads() -> str:
    """Which series slice reads kvdicom uses here: ``compiled`` (kvdicom/_io/_known_reads.c, built as the walk is)
    or ``python``; recorded because it moves every series time (docs/loader.md)."""
    from kvdicom._io import known_reads

    return "python" if known_reads.compiled is None else "compiled"


def machine_info(gpu: GpuStatus, corpus_dir: str, profile: str, root: str | os.PathLike | None = None) -> dict:
    """Fields for pytest-benchmark's machine_info; nothing that changes between runs of one machine.

    ``corpus_dir`` is recorded relative to ``root`` (the repository), or left out when outside it;
    ``corpus_filesystem`` says what kind of disk it is either way.
    """
    import numpy
    import pydicom

    info = {
        "machine_slug": machine_slug(gpu),
        "gpu_name": gpu.name,
        "gpu_driver": gpu.driver,
        "cuda_runtime": gpu.cuda_runtime,
        "gpu_memory_bytes": gpu.memory_bytes,
        "gpu_unavailable_reason": gpu.reason or None,
        "cupy_version": _version("cupy-cuda13x") or _version("cupy-cuda12x") or _version("cupy"),
        "pydicom_version": pydicom.__version__,
        "numpy_version": numpy.__version__,
        "corpus_dir": stable_location(corpus_dir, root),
        "corpus_filesystem": filesystem_of(corpus_dir),
        "profile": profile,
        "cpu_count": len(os.sched_getaffinity(0)),
    }
    if gpu.count > 1:  # one-GPU machines record no gpu_count: their machine_info stays as it was
        info["gpu_count"] = gpu.count
    info["kvdicom_threads"] = configured_threads()  # kvdicom.configure: KvikIO pool size it sets, None: untouched
    info["kvdicom_header_walk"] = header_walk()
    info["kvdicom_slice_reads"] = slice_reads()
    info.update(kvikio_settings())
    return info

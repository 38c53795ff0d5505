"""Functions run in other processes by tests/test_workers.py (importable: spawn and forkserver need that)."""

from __future__ import annotations

import numpy as np


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def sleep_then_pid(seconds: float) -> int:
    """A task for kvdicom's worker processes: which process ran it, after ``seconds``."""
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


def wait_for(path: str, then_sleep: float = 0.0, timeout: float = 60.0) -> bool:
    """A task for kvdicom's worker processes: wait until ``path`` exists (another task made it), then sleep
    ``then_sleep``. A handshake, so a test does not hang on which worker the loaded machine runs first."""
    import os
    import time

    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never made")
        time.sleep(0.002)
    time.sleep(then_sleep)
    return True


def touch_then_divide(path: str, divisor: int) -> float:
    """A task that makes ``path`` (for :func:`wait_for`), then divides by ``divisor`` (0: it fails)."""
    open(path, "w").close()
    return 1 / divisor


def touch_then_pid(path: str, seconds: float) -> int:
    """:func:`sleep_then_pid`, after making ``path``."""
    open(path, "a").close()
    return sleep_then_pid(seconds)


def force_workers() -> None:
    """Make load_series parse headers on kvdicom's worker processes whatever the machine and series size."""
    from kvdicom._series import headers

    headers.POOL_MIN_FILES = 1
    headers.POOL_MIN_PROCESSES = 1


def load_in_child(folder: str, results) -> None:
    """A daemonic process's (a DataLoader's or Dask's worker) load_series, workers forced; its answer queued."""
    try:
        import kvdicom
        from kvdicom._io import process_pool

        force_workers()
        volume, _ = kvdicom.load_series(folder, "cpu")
        results.put(("ok", volume.tobytes(), str(volume.dtype), volume.shape,
                     process_pool._pool is not None and not process_pool.broken()))
    except BaseException as exc:  # noqa: BLE001  the test reports it
        results.put(("error", f"{type(exc).__name__}: {exc}", None, None, None))


def volume_of(answer) -> np.ndarray:
    _, data, dtype, shape, _ = answer
    return np.frombuffer(data, dtype=dtype).reshape(shape)

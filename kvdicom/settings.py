"""What a caller may set about how kvdicom works, in one object: :func:`configure` and :func:`current`.

``kvdicom.configure(threads=8)`` sets values for the process; ``with kvdicom.configure(processes=0): ...``
sets them for the block and restores the previous ones after it, as ``kvikio.defaults.set`` does. The
values are process-wide (not per thread): a Dask or DataLoader worker sets its own.

Environment variables give the starting values; ``configure`` overrides them:

======================  =======================================================================
``KVDICOM_THREADS``     ``threads``: ``auto``, ``none`` or a count
``KVDICOM_PROCESSES``   ``processes``: ``auto`` or a count (``0``: never start a worker process)
``KVIKIO_NTHREADS``     KvikIO's own; with ``threads="auto"`` kvdicom then leaves KvikIO's pool alone
======================  =======================================================================
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import threading
from dataclasses import dataclass

#: Threads and worker processes at most, whatever the machine: one per core up to this (16-core H100/H200
#: machines; KvikIO 256 MiB reads measured 40 GB/s at 4-8 threads, see docs/io.md).
MAX_THREADS = 16
MAX_PROCESSES = 16


@dataclass(frozen=True)
class Settings:
    """kvdicom's settings in force.

    ``threads``: kvdicom's host read pool and KvikIO's process-wide pool. ``"auto"`` sizes both from the
    cores this process may use (at most :data:`MAX_THREADS`) and leaves KvikIO alone where
    ``KVIKIO_NTHREADS`` is set; an integer sets both; ``None`` never changes KvikIO's pool.

    ``processes``: worker processes for work that holds the GIL (parsing the headers of long series,
    frame-parallel decoding with pydicom's plugins). ``"auto"``: one per core this process may use, at
    most :data:`MAX_PROCESSES`; an integer caps it; ``0`` does all work in the calling process.
    """

    threads: str | int | None = "auto"
    processes: str | int = "auto"


def _threads(value) -> str | int | None:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    raise ValueError(f"threads must be 'auto', a positive int or None, not {value!r}")


def _processes(value) -> str | int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if isinstance(value, str) and value == "auto":
        return value
    raise ValueError(f"processes must be 'auto' or an int >= 0, not {value!r}")


def _from_environment() -> Settings:
    """The starting values, from ``KVDICOM_THREADS`` / ``KVDICOM_PROCESSES`` (a bad value is an error naming it)."""
    found = {}
    variables = (("KVDICOM_THREADS", "threads", _threads), ("KVDICOM_PROCESSES", "processes", _processes))
    for name, field, parse in variables:
        raw = os.environ.get(name, "").strip().lower()
        if raw:
            value = None if raw == "none" else raw if raw == "auto" else int(raw) if raw.isdigit() else raw
            try:
                found[field] = parse(value)
            except ValueError as exc:
                raise ValueError(f"{name}={os.environ[name]!r}: {exc}") from None
    return Settings(**found)


_current = _from_environment()
_lock = threading.Lock()
_UNSET = object()


def current() -> Settings:
    """The settings in force now."""
    return _current


def cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or a Dask worker's share)."""
    return len(os.sched_getaffinity(0))


class configure:
    """Set kvdicom's settings (see :class:`Settings`); as a context manager, only until the block ends.

    ``kvdicom.configure(threads=8)`` applies for the process. ``with kvdicom.configure(processes=0):``
    applies inside the block and restores the settings that were in force before it. Arguments left
    out keep their current value. A bad value raises ``ValueError`` and changes nothing.
    """

    def __init__(self, threads=_UNSET, *, processes=_UNSET) -> None:
        global _current
        changes = {}
        if threads is not _UNSET:
            changes["threads"] = _threads(threads)
        if processes is not _UNSET:
            changes["processes"] = _processes(processes)
        with _lock:
            self._previous = _current
            _current = dataclasses.replace(_current, **changes)
            self.settings = _current

    def __enter__(self) -> Settings:
        return self.settings

    def __exit__(self, *exc) -> None:
        global _current
        with _lock:
            _current = self._previous

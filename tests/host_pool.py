"""Tests that need kvdicom's process pool to decode, whatever this machine's size and the files' sizes."""

from __future__ import annotations

from kvdicom._codecs import host_codecs, host_parallel
from kvdicom._io import process_pool


def pool_everything(monkeypatch, spied: str) -> list:
    """Thresholds off, the pool unbroken and imagecodecs' route off (restored after the test);
    ``host_parallel.<spied>`` recorded.

    Returns the list of what each call of ``spied`` returned (None: it left the decode in-process).
    """
    monkeypatch.setattr(host_parallel, "POOL_MIN_FRAMES", 2)
    monkeypatch.setattr(host_parallel, "POOL_MIN_DECODED_BYTES", 0)
    monkeypatch.setattr(host_parallel, "POOL_MIN_PROCESSES", 1)
    monkeypatch.setattr(host_codecs, "_HAVE_IMAGECODECS", False)  # that route would take lossless J2K / JPEG-LS
    monkeypatch.setattr(process_pool, "_broken", False)  # restored after the tests that break it
    returned = []
    real = getattr(host_parallel, spied)

    def spy(*args):
        returned.append(real(*args))
        return returned[-1]

    monkeypatch.setattr(host_parallel, spied, spy)
    return returned

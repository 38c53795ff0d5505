"""One opened source per load: kvdicom.load opens the file once (the header's descriptor) and reads every byte
through it, checked against the header's identity before and after each read."""

from __future__ import annotations

import os

import numpy as np
import pytest

import kvdicom
from fixtures.oracle import pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.writer import write_dicom

S16 = dict(bits_allocated=16, bits_stored=16, signed=True)
CASES = [
    DicomSpec(frames=3, rows=32, cols=32, **S16),
    DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="rle", **S16),
    DicomSpec(frames=2, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", **S16),
]


def _opens_of(path, monkeypatch) -> list:
    opened = []
    real = os.open

    def counting(p, *args, **kwargs):
        if os.fspath(p) == os.fspath(path):
            opened.append(p)
        return real(p, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting)
    return opened


@pytest.mark.parametrize("case", CASES, ids=lambda s: s.case_id)
def test_a_cpu_load_opens_the_file_once(tmp_path, monkeypatch, case):
    if case.transfer_syntax != "explicit_le":
        pytest.importorskip("openjpeg", reason="compressed cases need pylibjpeg-openjpeg (requirements.txt)")
        pytest.importorskip("rle", reason="compressed cases need pylibjpeg-rle (requirements.txt)")
    path = tmp_path / "f.dcm"
    write_dicom(case, path)
    expected = pydicom_pixels(path)
    opened = _opens_of(path, monkeypatch)
    got = kvdicom.load(path, "cpu")
    np.testing.assert_array_equal(got, expected)
    assert len(opened) == 1, f"{len(opened)} opens of the file for one load"
    out = np.empty_like(expected)
    opened.clear()
    kvdicom.load(path, "cpu", out=out)
    assert len(opened) == 1
    np.testing.assert_array_equal(out, expected)


def test_a_file_swapped_after_the_header_is_still_refused(tmp_path, monkeypatch):
    # the one descriptor is checked against the header's identity: a file changed meanwhile is refused
    path = tmp_path / "f.dcm"
    write_dicom(CASES[0], path)
    from kvdicom._io import host_read

    real = host_read.read_chunks

    def grow_then_read(fd, view, offset, *args, **kwargs):
        with open(path, "ab") as f:
            f.write(b"\0" * 16)
        return real(fd, view, offset, *args, **kwargs)

    monkeypatch.setattr(host_read, "read_chunks", grow_then_read)
    with pytest.raises(kvdicom.DicomLoadError, match="file changed between header and pixel read"):
        kvdicom.load(path, "cpu")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd")
def test_no_descriptor_is_left_open_on_any_header_path(tmp_path):
    # the header's descriptor is wrapped for pydicom only where the fast walk steps aside: every path closes it
    from kvdicom._series import headers

    fast = tmp_path / "fast.dcm"
    write_dicom(DicomSpec(frames=1, rows=8, cols=8, **S16), fast)
    slow = tmp_path / "big_endian.dcm"  # the fast walk steps aside: pydicom's path
    write_dicom(DicomSpec(frames=1, rows=8, cols=8, transfer_syntax="explicit_be", **S16), slow)
    other = tmp_path / "notes.txt"
    other.write_bytes(b"not DICOM" * 40)
    short = tmp_path / "short.dcm"
    short.write_bytes(fast.read_bytes()[:-10])
    kvdicom.load(fast, "cpu"), kvdicom.load(slow, "cpu")  # warm imports and caches
    before = _open_fds()
    for _ in range(3):
        kvdicom.load(fast, "cpu")
        kvdicom.load(slow, "cpu")
        kvdicom.inspect(fast)
        for bad in (other, short):
            with pytest.raises(kvdicom.DicomLoadError):
                kvdicom.load(bad, "cpu")
        for path in (fast, slow, other, short):
            headers.read_header(str(path))
    assert _open_fds() == before

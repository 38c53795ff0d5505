"""kvdicom under faults: non-regular files, files changed between header and pixel read, exception types."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import pytest

import kvdicom
import kvdicom._loader
from fixtures.oracle import mismatch, pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.time_limit import time_limit
from fixtures.writer import write_dicom
from kvdicom._codecs import route
from kvdicom._io import fileid, host_read

SPEC = DicomSpec(frames=2, rows=16, cols=16)
#: Same size and layout as SPEC, other pixel values: only the file's identity tells them apart.
TWIN = DicomSpec(frames=2, rows=16, cols=16, seed=5)


def no_hang(seconds: float = 5):
    """Fail instead of hanging (SIGALRM interrupts a blocking open())."""
    return time_limit(seconds)


@pytest.fixture
def dcm(tmp_path):
    path = tmp_path / "a.dcm"
    write_dicom(SPEC, path)
    return path


def _twin(tmp_path):
    other = tmp_path / "twin.dcm"
    write_dicom(TWIN, other)
    return other


# --- 1. non-regular files ------------------------------------------------------------------


@pytest.mark.parametrize("call", ["inspect", "load"])
def test_fifo_is_refused_at_once(tmp_path, call):
    path = tmp_path / "f.dcm"
    os.mkfifo(path)
    with no_hang(), pytest.raises(kvdicom.DicomLoadError, match="FIFO") as info:
        kvdicom.inspect(path) if call == "inspect" else kvdicom.load(path, "cpu")
    assert info.value.path == str(path) and "not a regular file" in info.value.reason


@pytest.mark.parametrize("call", ["inspect", "load"])
def test_directory_is_refused(tmp_path, call):
    with pytest.raises(kvdicom.DicomLoadError, match="not a regular file: it is a directory"):
        kvdicom.inspect(tmp_path) if call == "inspect" else kvdicom.load(tmp_path, "cpu")


def test_character_device_is_refused_without_opening_it(monkeypatch):
    # Opening some devices has effects (a tape rewinds, a watchdog starts): stat first.
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a: opened.append(os.fspath(p)) or real_open(p, *a))
    with no_hang(), pytest.raises(kvdicom.DicomLoadError, match="character device"):
        kvdicom.load("/dev/zero", "cpu")
    assert "/dev/zero" not in opened


def test_open_regular_refuses_a_fifo_that_appears_after_the_stat(tmp_path, monkeypatch):
    # The path is a regular file when stat'ed and a FIFO when opened: the
    # non-blocking open returns and fstat refuses it.
    path = tmp_path / "race.dcm"
    path.write_bytes(b"x")
    real_open = os.open

    def swap_then_open(p, flags, *args):
        if os.fspath(p) == str(path):
            os.unlink(path)
            os.mkfifo(path)
        return real_open(p, flags, *args)

    monkeypatch.setattr(os, "open", swap_then_open)
    with no_hang(), pytest.raises(kvdicom.DicomLoadError, match="FIFO"):
        fileid.open_regular(path)


def test_open_known_refuses_a_path_that_became_a_fifo_without_opening_it(tmp_path, monkeypatch):
    # The series' per-slice read: the path's stat must still be the header's file before anything is opened.
    path = tmp_path / "slice.dcm"
    path.write_bytes(b"x" * 16)
    known = fileid.identify(path)
    os.unlink(path)
    os.mkfifo(path)
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a: opened.append(os.fspath(p)) or real_open(p, *a))
    with no_hang(), pytest.raises(kvdicom.DicomLoadError, match="FIFO"):
        fileid.open_known(str(path), known)
    assert str(path) not in opened


def test_open_known_refuses_a_file_swapped_in_between_the_stat_and_the_open(tmp_path, monkeypatch):
    path, other = tmp_path / "slice.dcm", tmp_path / "other.dcm"
    path.write_bytes(b"x" * 16)
    other.write_bytes(b"y" * 16)
    known = fileid.identify(path)
    real_open = os.open

    def swap_then_open(p, flags, *args):
        os.replace(other, path)
        return real_open(p, flags, *args)

    monkeypatch.setattr(os, "open", swap_then_open)
    with pytest.raises(kvdicom.DicomLoadError, match="inode.* differ before the pixel read"):
        fileid.open_known(str(path), known)


def test_read_known_refuses_a_file_truncated_during_the_read(tmp_path, monkeypatch):
    path = tmp_path / "slice.dcm"
    path.write_bytes(bytes(range(64)))
    known = fileid.identify(path)
    _truncate_after_each_read(path, monkeypatch)
    buffer = np.zeros(16, np.uint8)
    with pytest.raises(kvdicom.DicomLoadError, match="size.* differ after the pixel read"):
        host_read.read_known(str(path), buffer, 8, known)


def test_read_known_reads_the_range_of_an_unchanged_file(tmp_path):
    path = tmp_path / "slice.dcm"
    path.write_bytes(bytes(range(64)))
    buffer = np.zeros(16, np.uint8)
    assert host_read.read_known(str(path), buffer, 8, fileid.identify(path)) == 16
    assert buffer.tolist() == list(range(8, 24))


# --- 2. the pixels come from the file the header came from --------------------------------


# Each fault takes ``twin``: a function writing a file of the same size and layout, other pixels.


def _swap(path, tmp_path, twin=_twin):
    os.replace(twin(tmp_path), path)


def _truncate(path, tmp_path, twin=_twin):
    os.truncate(path, path.stat().st_size - 10)


def _append(path, tmp_path, twin=_twin):
    with open(path, "ab") as f:
        f.write(b"\0\0")


def _delete(path, tmp_path, twin=_twin):
    os.unlink(path)


def _delete_and_recreate(path, tmp_path, twin=_twin):
    os.unlink(path)
    os.replace(twin(tmp_path), path)


def _directory(path, tmp_path, twin=_twin):
    os.unlink(path)
    os.mkdir(path)


def _fifo(path, tmp_path, twin=_twin):
    os.unlink(path)
    os.mkfifo(path)


def _rewrite_in_place(path, tmp_path, twin=_twin):
    # Same inode, same size, other bytes: only the mtime tells.
    st = path.stat()
    with open(path, "r+b") as f:
        f.write(twin(tmp_path).read_bytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


FAULTS = [_swap, _truncate, _append, _delete, _delete_and_recreate, _directory, _fifo, _rewrite_in_place]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_a_file_changed_after_inspect_is_refused(dcm, tmp_path, fault):
    layout = kvdicom.inspect(dcm)
    assert layout.file_id == fileid.identify(dcm)
    fault(dcm, tmp_path)
    with no_hang(), pytest.raises(kvdicom.DicomLoadError) as info:
        kvdicom._loader.read_pixels(layout, "cpu")
    assert info.value.path == str(dcm)


@contextlib.contextmanager
def fault_before(fault, path, tmp_path, target=(host_read, "read_into"), twin=_twin):
    """Run ``fault`` on ``path`` each time ``target`` (module, attribute) is called.

    The default target is the host pixel read: the fault falls between ``load``'s header parse and its read.
    """
    module, name = target
    original = getattr(module, name)

    def faulty(*args, **kwargs):
        fault(path, tmp_path, twin=twin)
        return original(*args, **kwargs)

    setattr(module, name, faulty)
    try:
        yield
    finally:
        setattr(module, name, original)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_a_file_changed_during_load_is_refused(dcm, tmp_path, fault):
    with fault_before(fault, dcm, tmp_path), no_hang(), pytest.raises(kvdicom.DicomLoadError) as info:
        kvdicom.load(dcm, "cpu")
    assert info.value.path == str(dcm)


def _truncate_after_each_read(path, monkeypatch):
    """Make each host pread cut the last byte off ``path`` once it has read."""
    real = host_read._pread_exact

    def truncating(fd, view, offset):
        got = real(fd, view, offset)
        os.truncate(path, path.stat().st_size - 1)
        return got

    monkeypatch.setattr(host_read, "_pread_exact", truncating)


def test_a_file_truncated_during_the_read_is_refused(dcm, monkeypatch):
    # The identity is checked after the read as well as before.
    _truncate_after_each_read(dcm, monkeypatch)
    with pytest.raises(kvdicom.DicomLoadError, match="after the pixel read"):
        kvdicom.load(dcm, "cpu")


def test_an_untouched_file_still_loads(dcm):
    assert mismatch(kvdicom.load(dcm, "cpu"), pydicom_pixels(dcm)) is None
    layout = kvdicom.inspect(dcm)
    raw = kvdicom._loader.read_pixels(layout, "cpu")
    assert raw.nbytes == layout.nbytes


# --- 3. exception types ------------------------------------------------------------------


def test_a_path_missing_at_call_time_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        kvdicom.load(tmp_path / "absent.dcm", "cpu")


def test_permission_denied_on_open_is_permission_error(dcm, monkeypatch):
    # As open() raises it (running as root, chmod cannot deny the read: simulate the open failing).
    real_open = os.open

    def denied(p, flags, *args):
        if os.fspath(p) == str(dcm):
            raise PermissionError(13, "Permission denied", str(dcm))
        return real_open(p, flags, *args)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermissionError):
        kvdicom.load(dcm, "cpu")


def test_missing_gpu_stack_is_one_error_before_any_file_work(tmp_path, monkeypatch):
    import kvdicom._io.gpu

    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    monkeypatch.setattr(kvdicom._io.gpu, "_ready", False)
    with pytest.raises(kvdicom.GpuUnavailableError) as info:
        kvdicom.load(tmp_path / "absent.dcm")  # default device="cuda"; no FileNotFoundError: no file work
    assert isinstance(info.value, ImportError)
    message = str(info.value)
    assert "cupy" in message and "pip install 'dicom-gpu-bench[gpu]'" in message and "cupy-cuda13x" in message


def test_read_errors_after_the_header_are_dicom_load_errors(dcm, monkeypatch):
    def failing(fd, view, offset):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(host_read, "_pread_exact", failing)
    with pytest.raises(kvdicom.DicomLoadError, match="Input/output error"):
        kvdicom.load(dcm, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("frames", [2, 1024], ids=["staged", "kvikio"])
def test_gpu_a_file_changed_during_load_is_refused(cuda, tmp_path, fault, frames):
    # 2 frames go through the staged (pinned preadv) path, 1024 (8 MiB) through KvikIO.
    from kvdicom._io import device_read

    path = tmp_path / "a.dcm"
    write_dicom(DicomSpec(frames=frames, rows=64, cols=64), path)
    with (fault_before(fault, path, tmp_path, (device_read, "read_into")), no_hang(20),
          pytest.raises(kvdicom.DicomLoadError) as info):
        kvdicom.load(path, "cuda")
    assert info.value.path == str(path)


@pytest.mark.gpu
def test_gpu_fifo_is_refused_at_once(cuda, tmp_path):
    path = tmp_path / "f.dcm"
    os.mkfifo(path)
    with no_hang(), pytest.raises(kvdicom.DicomLoadError, match="FIFO"):
        kvdicom.load(path, "cuda")


# --- 2b. the same for compressed (encapsulated) files --------------------------------------

COMPRESSED = DicomSpec(frames=2, rows=16, cols=16, transfer_syntax="rle")


def _write_rle(path, add: int):
    """An RLE file of COMPRESSED's header whose pixels are ``add`` more: same runs, so the same size."""
    import numpy as np
    from pydicom.uid import RLELossless

    from fixtures.writer import build_dataset

    ds = build_dataset(COMPRESSED)
    base = np.random.default_rng(0).integers(0, 100, (2, 16, 16)) * 0x0101  # high byte == low byte
    ds.compress(RLELossless, (base + add).astype(np.uint16), encoding_plugin="pydicom", generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


def _compressed_twin(tmp_path):
    return _write_rle(tmp_path / "twin-rle.dcm", 0x0101)


@pytest.fixture
def rle(tmp_path):
    path = _write_rle(tmp_path / "a-rle.dcm", 0)
    assert path.stat().st_size == _compressed_twin(tmp_path).stat().st_size  # only the identity tells them apart
    return path


def test_compressed_layout_carries_the_headers_file_id(rle):
    layout = kvdicom.inspect(rle)
    assert layout.compressed and layout.file_id == fileid.identify(rle)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_a_compressed_file_changed_after_inspect_is_refused(rle, tmp_path, fault):

    layout = kvdicom.inspect(rle)
    fault(rle, tmp_path, twin=_compressed_twin)
    with no_hang(), pytest.raises(kvdicom.DicomLoadError) as info:
        route.load(layout, "cpu")
    assert info.value.path == str(rle)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_a_compressed_file_changed_during_load_is_refused(rle, tmp_path, fault):
    with (fault_before(fault, rle, tmp_path, twin=_compressed_twin), no_hang(),
          pytest.raises(kvdicom.DicomLoadError) as info):
        kvdicom.load(rle, "cpu")
    assert info.value.path == str(rle)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_a_compressed_file_changed_before_the_fragment_walk_is_refused(rle, tmp_path, fault):
    # The frame table is found by walking the item headers in the file after the header parse: that
    # open, too, must be the header's file (and must not block on a FIFO).
    from kvdicom._header import encapsulated

    with (fault_before(fault, rle, tmp_path, (encapsulated, "locate"), twin=_compressed_twin), no_hang(),
          pytest.raises(kvdicom.DicomLoadError) as info):
        kvdicom.load(rle, "cpu")
    assert info.value.path == str(rle)


def test_a_compressed_file_truncated_during_the_read_is_refused(rle, monkeypatch):
    _truncate_after_each_read(rle, monkeypatch)  # the sequence delimiter goes: the fragments are all there
    with pytest.raises(kvdicom.DicomLoadError, match="after the pixel read"):
        kvdicom.load(rle, "cpu")


def test_an_untouched_compressed_file_still_loads(rle):
    assert mismatch(kvdicom.load(rle, "cpu"), pydicom_pixels(rle)) is None


@pytest.mark.gpu
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_gpu_a_compressed_file_changed_during_load_is_refused(cuda, rle, tmp_path, fault):
    # Compressed bytes are read on the host (then decoded on the GPU or the host): the same read.
    with (fault_before(fault, rle, tmp_path, twin=_compressed_twin), no_hang(20),
          pytest.raises(kvdicom.DicomLoadError) as info):
        kvdicom.load(rle, "cuda")
    assert info.value.path == str(rle)

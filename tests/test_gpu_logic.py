"""The GPU path's logic on the CPU: thread configuration and the KvikIO read, against a stand-in KvikIO.

The stand-in ``kvikio`` module records what kvdicom asks of it and reads with
``os.preadv`` into NumPy buffers, so the checks around the read (regular file,
same file before and after, which path KvikIO opens, pool sizing) run here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import kvdicom
from fixtures.spec import DicomSpec
from fixtures.writer import write_dicom
from kvdicom import settings
from kvdicom._io import device_read
from kvdicom._io import tuning as io_tuning


class FakeFuture:
    def __init__(self, n):
        self.n = n

    def get(self):
        return self.n


@pytest.fixture
def fake_kvikio(monkeypatch):
    """A ``kvikio`` module whose CuFile reads with preadv into NumPy memory; records its calls."""
    state = types.SimpleNamespace(settings={"num_threads": 1}, opened=[], sets=[])

    class CuFile:
        def __init__(self, path, flags="r"):
            state.opened.append(path)
            self._fd = os.open(path, os.O_RDONLY)

        def fileno(self):
            return self._fd

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            os.close(self._fd)

        def pread(self, buf, size, offset, task_size=None):
            return FakeFuture(os.preadv(self._fd, [memoryview(buf).cast("B")[:size]], offset))

    def set_(values):
        state.sets.append(dict(values))
        state.settings.update(values)

    defaults = types.SimpleNamespace(
        set=set_, get=lambda key: state.settings[key], is_compat_mode_preferred=lambda: True
    )
    module = types.ModuleType("kvikio")
    module.CuFile, module.defaults = CuFile, defaults
    monkeypatch.setitem(sys.modules, "kvikio", module)
    monkeypatch.setitem(sys.modules, "kvikio.defaults", defaults)
    monkeypatch.setattr(settings, "_current", settings.Settings())
    monkeypatch.setattr(io_tuning, "_applied", io_tuning._NOT_APPLIED)
    monkeypatch.delenv("KVIKIO_NTHREADS", raising=False)
    return state


# --- configure(threads=...) ---------------------------------------------------------------


def test_auto_sizes_kvikio_once_from_the_machine(fake_kvikio):
    assert io_tuning.configured_threads() == io_tuning.machine_threads()
    assert io_tuning.plan_read(64 << 20).threads == io_tuning.machine_threads()
    fake_kvikio.settings["num_threads"] = 3  # the user changes it afterwards: kvdicom leaves it
    io_tuning.plan_read(64 << 20)
    assert fake_kvikio.sets == [{"num_threads": io_tuning.machine_threads()}]


def test_auto_respects_kvikio_nthreads(fake_kvikio, monkeypatch):
    monkeypatch.setenv("KVIKIO_NTHREADS", "2")
    assert io_tuning.configured_threads() is None
    io_tuning.plan_read(64 << 20)
    assert fake_kvikio.sets == []


def test_none_never_touches_kvikios_pool(fake_kvikio):
    kvdicom.configure(None)
    try:
        assert io_tuning.configured_threads() is None
        assert io_tuning.plan_read(64 << 20).threads == 1  # the user's (KvikIO's default) setting
        assert fake_kvikio.sets == []
    finally:
        kvdicom.configure("auto")


def test_a_number_sets_kvikio_and_the_host_pool(fake_kvikio):
    from kvdicom._io import host_read

    kvdicom.configure(np.int64(3))
    try:
        assert io_tuning.configured_threads() == 3
        assert io_tuning.plan_read(64 << 20).threads == 3
        assert fake_kvikio.sets == [{"num_threads": 3}]
        assert host_read.pool()._max_workers == 3
    finally:
        kvdicom.configure("auto")
    assert host_read.pool()._max_workers == io_tuning.machine_threads()


@pytest.mark.parametrize("bad", [0, -1, "8", 2.0, True])
def test_configure_refuses_other_values(bad):
    with pytest.raises(ValueError, match="threads"):
        kvdicom.configure(bad)


def test_machine_info_records_the_configured_threads():
    from dgbench.machine import GpuStatus, machine_info

    info = machine_info(GpuStatus(False, "test"), ".", "quick")
    assert info["kvdicom_threads"] == io_tuning.configured_threads()


# --- the KvikIO read ----------------------------------------------------------------------


@pytest.fixture
def via_kvikio(fake_kvikio, monkeypatch):
    """Every read through the fake KvikIO, CuPy's current stream a non-blocking one (its waits recorded in
    ``events`` beside the reads)."""
    monkeypatch.setattr(settings, "KVIKIO_SMALL_READ_BYTES", 0)
    fake_kvikio.events = []
    stream = types.SimpleNamespace(ptr=0x1234, synchronize=lambda: fake_kvikio.events.append("stream waited"))
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(get_current_stream=lambda: stream)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    cufile = sys.modules["kvikio"].CuFile
    real_pread = cufile.pread

    def pread(self, *args, **kwargs):
        fake_kvikio.events.append("read")
        return real_pread(self, *args, **kwargs)

    monkeypatch.setattr(cufile, "pread", pread)
    return fake_kvikio


def test_kvikio_reads_the_same_open_file_through_procfs(via_kvikio, tmp_path):
    path = tmp_path / "a.dcm"
    write_dicom(DicomSpec(rows=8, cols=8), path)
    layout = kvdicom.inspect(path)
    buffer = np.empty(layout.nbytes, dtype=np.uint8)
    assert device_read.read_into(str(path), buffer, layout.offset, file_id=layout.file_id) == layout.nbytes
    assert buffer.tobytes() == path.read_bytes()[layout.offset : layout.offset + layout.nbytes]
    assert via_kvikio.opened[-1].startswith("/proc/self/fd/")
    assert via_kvikio.events == ["stream waited", "read"], "KvikIO's copies do not wait for a non-blocking stream"


def test_kvikio_read_of_a_replaced_file_is_refused(via_kvikio, tmp_path):
    path, other = tmp_path / "a.dcm", tmp_path / "b.dcm"
    write_dicom(DicomSpec(rows=8, cols=8), path)
    write_dicom(DicomSpec(rows=8, cols=8, seed=3), other)
    layout = kvdicom.inspect(path)
    os.replace(other, path)
    with pytest.raises(kvdicom.DicomLoadError, match="file changed between header and pixel read"):
        device_read.read_into(str(path), np.empty(layout.nbytes, dtype=np.uint8), layout.offset, file_id=layout.file_id)
    assert via_kvikio.opened == []  # refused before KvikIO opened anything


def test_kvikio_never_opens_a_fifo(via_kvikio, tmp_path):
    path = tmp_path / "f.dcm"
    os.mkfifo(path)
    with pytest.raises(kvdicom.DicomLoadError, match="FIFO"):
        device_read.read_into(str(path), np.empty(16, dtype=np.uint8), 0)
    assert via_kvikio.opened == []


# --- the YBR colour table -----------------------------------------------------------------


def test_ybr_table_is_built_once_by_concurrent_first_users():
    # A fresh process, so no table exists yet; builds are counted by pydicom's
    # convert_color_space calls (256 per build).
    script = textwrap.dedent("""
        import threading, time
        import numpy as np
        import kvdicom._pixels.color as color
        real, calls = color.convert_color_space, []
        def counting(*a, **k):
            calls.append(1)
            time.sleep(0.001)  # widen the window in which others may start a build
            return real(*a, **k)
        color.convert_color_space = counting
        barrier = threading.Barrier(8)
        results = []
        def worker():
            barrier.wait()
            results.append(color.ybr_full_to_rgb(np.full((2, 3), 128, dtype=np.uint8)))
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert len(results) == 8 and all((r == results[0]).all() for r in results)
        print(len(calls))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) == 256, f"{int(proc.stdout.split()[-1]) // 256} builds"

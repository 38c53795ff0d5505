"""The GPU path's overlap of header parsing and pixel reads (kvdicom._series.stage), run on the CPU.

NumPy stands in for the pinned staging buffer and the host-to-device copies;
the scheduling (which slot, which order, when reads are submitted, failure
handling) is the code the GPU path runs.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np
import pytest
from pydicom.pixels import apply_modality_lut

import kvdicom
from kvdicom import _loader, settings
from kvdicom._io import host_read
from kvdicom._series import headers as series_headers
from kvdicom._series import loader as series
from kvdicom._series import native, worker_reads
from kvdicom._series import order as series_order
from kvdicom._series import stage as series_stage
from kvdicom._series import volume as series_volume
from tests.test_series import make_series, pydicom_volume


class Recorder:
    """A NumPy backend that records what it allocated, read and copied."""

    def __init__(self):
        self.allocated: list[int] = []
        self.reads: list[str] = []
        self.copies: list[tuple[int, int, int]] = []
        self.finished = 0
        self.futures: list[concurrent.futures.Future] = []
        self.lock = threading.Lock()

    def backend(self, read=None) -> series_stage.Backend:
        def allocate(n):
            self.allocated.append(n)
            return np.full(n, 0xAB, np.uint8)  # garbage: any byte not read shows

        def submit(layout, view):
            with self.lock:
                self.reads.append(layout.path)
            future = (read or native.submit_read)(layout, view)
            self.futures.append(future)
            return future

        def copy(dst, dst_offset, staging, staging_offset, nbytes):
            self.copies.append((dst_offset, staging_offset, nbytes))
            dst[dst_offset : dst_offset + nbytes] = staging[staging_offset : staging_offset + nbytes]

        def finish():
            self.finished += 1

        return series_stage.Backend(allocate=allocate, read=submit, copy=copy, finish=finish)


def staged_load(folder, recorder, rescale=False, series_uid=None, out=None):
    """load_series through the GPU path's staging, on NumPy."""
    return series._load(folder, np, "cpu", rescale, series_uid, out, recorder.backend())


@pytest.fixture
def pooled(monkeypatch):
    """Headers from the process pool, several chunks (as on a 16-core machine with a long series), the pool's
    shared buffer not taken (busy with another load, or the series too large for it): the staged path."""
    monkeypatch.setattr(series_headers, "use_pool", lambda count: True)
    monkeypatch.setattr(series_headers, "CHUNKS_PER_WORKER", 64)  # one file per chunk here
    monkeypatch.setattr(worker_reads, "take", lambda *args, **kwargs: None)


@pytest.mark.parametrize("rescale", [False, True])
def test_staged_load_equals_pydicom_stacked(tmp_path, pooled, rescale):
    paths = make_series(tmp_path / "s", 7, rescale=lambda i: (0.5 + i, -1024.0 + i))
    recorder = Recorder()
    vol, info = staged_load(tmp_path / "s", recorder, rescale=rescale)
    assert info.paths == tuple(paths)
    ref = pydicom_volume(paths, rescale=rescale)
    assert vol.dtype == ref.dtype
    np.testing.assert_array_equal(vol, ref)
    assert sorted(recorder.reads) == sorted(paths)  # every file read once, all through the staging
    assert recorder.finished == 1


def test_slots_map_to_sorted_order(tmp_path):
    paths = make_series(tmp_path / "s", 6)  # file names not in slice order
    files = sorted(str(p) for p in (tmp_path / "s").iterdir())
    recorder = Recorder()
    staging = series_stage.stage(files, series_headers.header_batches(files, parallel=False), recorder.backend())
    slot = staging.slot
    assert slot == 3 * 4 * 2
    assert sorted(staging.slots) == list(range(6)) and sorted(staging.slots.values()) == list(range(6))
    ordered, _, _ = series_order.order(staging.headers)
    indices = staging.indices(ordered)
    assert [files[i] for i in indices] == paths
    dst = np.zeros(6 * slot, np.uint8)
    series_stage.gather(staging, indices, dst, recorder.backend())
    for k, path in enumerate(paths):
        layout = ordered[k].layout
        with open(path, "rb") as f:
            f.seek(layout.offset)
            assert dst[k * slot : (k + 1) * slot].tobytes() == f.read(slot)
    assert sum(n for _, _, n in recorder.copies) == 6 * slot


def test_consecutive_slots_are_copied_in_one_run():
    assert series_stage.runs([0, 1, 2, 3]) == [(0, 0, 4)]
    assert series_stage.runs([3, 4, 0, 1, 5]) == [(0, 3, 2), (2, 0, 2), (4, 5, 1)]
    assert series_stage.runs([2, 1, 0]) == [(0, 2, 1), (1, 1, 1), (2, 0, 1)]


def test_reads_start_before_later_headers_are_parsed(tmp_path):
    make_series(tmp_path / "s", 6)
    files = sorted(str(p) for p in (tmp_path / "s").iterdir())
    recorder = Recorder()
    seen = []

    def batches():
        yield [(i, series_headers.read_header(files[i])) for i in range(3)]
        seen.append(sorted(recorder.reads))  # what was submitted while "the pool" still parses
        yield [(i, series_headers.read_header(files[i])) for i in range(3, 6)]

    staging = series_stage.stage(files, batches(), recorder.backend())
    assert seen == [files[:3]]
    assert sorted(recorder.reads) == files and all(f.done() for f in recorder.futures)
    assert staging.errors == {}


def test_a_file_changed_mid_pipeline_is_refused_naming_it(tmp_path, monkeypatch):
    make_series(tmp_path / "s", 6)
    files = sorted(str(p) for p in (tmp_path / "s").iterdir())
    victim = files[4]

    def batches(paths, parallel=None):
        headers = [(i, series_headers.read_header(p)) for i, p in enumerate(paths)]
        yield headers[:3]  # their reads run while ...
        with open(victim, "rb") as f:
            data = f.read()
        with open(victim, "wb") as f:  # ... a later file changes after its header was parsed
            f.write(data[:-2])
        yield headers[3:]

    monkeypatch.setattr(series_headers, "header_batches", batches)
    recorder = Recorder()
    out = np.zeros((6, 3, 4), np.int16)
    with pytest.raises(kvdicom.DicomLoadError, match="changed between header and pixel read") as info:
        staged_load(tmp_path / "s", recorder, out=out)
    assert info.value.path == victim
    assert all(f.done() for f in recorder.futures)
    assert recorder.copies == []  # nothing reached the volume


def test_failure_while_headers_arrive_waits_for_every_read(tmp_path):
    make_series(tmp_path / "s", 4)
    files = sorted(str(p) for p in (tmp_path / "s").iterdir())
    gate = threading.Event()
    recorder = Recorder()

    def slow_read(layout, view):
        return host_read.pool().submit(lambda: (gate.wait(5), _loader.read_host_slice(layout, view)))

    def batches():
        yield [(i, series_headers.read_header(files[i])) for i in range(2)]
        threading.Timer(0.2, gate.set).start()
        raise RuntimeError("header pool gone")

    with pytest.raises(RuntimeError, match="header pool gone"):
        series_stage.stage(files, batches(), recorder.backend(read=slow_read))
    assert len(recorder.futures) == 2 and all(f.done() for f in recorder.futures)


def test_with_series_uid_only_its_files_are_read_and_read_errors_name_the_file(tmp_path, monkeypatch):
    make_series(tmp_path / "s", 3, uid="1.2.3.1")
    make_series(tmp_path / "o", 2, uid="1.2.3.2", origin=(0.0, 0.0, 100.0))
    for name in os.listdir(tmp_path / "o"):
        os.rename(tmp_path / "o" / name, tmp_path / "s" / ("o_" + name))
    real = native.submit_read

    def failing(layout, view):
        if "o_" in os.path.basename(layout.path):
            raise AssertionError("a file of another series was read")
        return real(layout, view)

    recorder = Recorder()
    vol, info = series._load(tmp_path / "s", np, "cpu", False, "1.2.3.1", None, recorder.backend(read=failing))
    np.testing.assert_array_equal(vol, pydicom_volume(info.paths))

    # a read error is raised only for files in the volume, as DicomLoadError naming the file
    staging = series_stage.Staging(headers=[])
    staging.errors = {0: OSError(5, "EIO")}
    staging.headers = [series_headers.Header(path="x.dcm")]
    with pytest.raises(kvdicom.DicomLoadError, match="EIO") as err:
        series_stage.raise_read_errors(staging, [0])
    assert err.value.path == "x.dcm"
    series_stage.raise_read_errors(staging, [])


def test_staging_never_exceeds_the_bytes_the_files_hold(tmp_path):
    make_series(tmp_path / "s", 1, spec=kvdicom_spec(rows=64, cols=64))
    for i in range(40):  # small non-DICOM files: no slot for them
        (tmp_path / "s" / f"note{i:02d}.txt").write_text("x" * 200)
    files = sorted(str(p) for p in (tmp_path / "s").iterdir())
    recorder = Recorder()
    staging = series_stage.stage(files, series_headers.header_batches(files, parallel=False), recorder.backend())
    assert recorder.allocated == [64 * 64 * 2]  # one slot, not one per file
    assert len(staging.slots) == 1


def test_slices_of_other_byte_counts_are_read_after_sorting(tmp_path):
    make_series(tmp_path / "s", 3)
    files = sorted(str(p) for p in (tmp_path / "s").iterdir())
    staging = series_stage.stage(files, series_headers.header_batches(files, parallel=False), Recorder().backend())
    indices = list(range(3))
    assert staging.covers(indices)
    del staging.slots[1]  # as for a slice whose pixel bytes differ from the slot
    assert not staging.covers(indices)  # then load_series reads after sorting (its CPU path)


def kvdicom_spec(**fields):
    from fixtures.spec import DicomSpec

    return DicomSpec(**{"bits_allocated": 16, "bits_stored": 12, "signed": True, **fields})


def test_header_batches_give_every_index_once_as_in_process(tmp_path, pooled):
    paths = make_series(tmp_path / "s", 6)
    batches = list(series_headers.header_batches(paths))
    assert len(batches) > 1  # several chunks, as the pool returns them
    indices = [i for batch in batches for i, _ in batch]
    assert sorted(indices) == list(range(6))
    pooled_headers = dict(h for batch in batches for h in batch)
    assert [pooled_headers[i] for i in range(6)] == series_headers.read_headers(paths, parallel=False)


def test_a_broken_header_pool_parses_the_chunks_not_yet_given_out_here(tmp_path, pooled, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    paths = make_series(tmp_path / "s", 6)
    calls = []

    class HalfBroken:
        """Answers the first chunk, then a worker dies."""

        def run(self, given):
            for k, (fn, args) in enumerate(given):
                calls.append(args[0])
                if k == 1:
                    raise BrokenProcessPool("a worker died")
                yield k, fn(*args)

    monkeypatch.setattr(series_headers, "header_pool", lambda: HalfBroken())
    monkeypatch.setattr(series_headers, "_shutdown_pool", lambda: calls.append("shutdown"))
    batches = list(series_headers.header_batches(paths))
    indices = sorted(i for batch in batches for i, _ in batch)
    assert indices == list(range(6)) and "shutdown" in calls
    assert [h for _, h in sorted(h for batch in batches for h in batch)] == series_headers.read_headers(
        paths, parallel=False)


# CPU rescale: per slice, on the host pool, pydicom's bits -----------------------------------------------

def test_cpu_rescale_runs_per_slice_on_the_host_pool_with_pydicoms_bits(tmp_path, monkeypatch):
    slopes = [(0.1, -1024.3), (1 / 3, 0.7), (2.5, -0.1), (1e-3, 1e4), (7.0, -3.3)]
    make_series(tmp_path / "s", 5, rescale=lambda i: slopes[i])
    monkeypatch.setattr(settings, "RESCALE_TASK_ELEMENTS", 1)
    pool = host_read.pool()
    submitted = []

    class Recording:
        def submit(self, fn, *args):
            submitted.append(fn)
            return pool.submit(fn, *args)

    monkeypatch.setattr(host_read, "pool", lambda: Recording())
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu", rescale=True)
    assert submitted.count(series_volume.rescale_slices) > 1
    import pydicom

    for k, path in enumerate(info.paths):
        ds = pydicom.dcmread(path)
        ref = apply_modality_lut(ds.pixel_array, ds)
        assert ref.dtype == vol.dtype == np.float64
        assert ref.tobytes() == vol[k].tobytes()  # bit for bit


@pytest.mark.gpu
def test_gpu_staged_load_equals_pydicom_stacked(cuda, tmp_path, pooled, monkeypatch):
    """The staging path (the header workers' shared reads, tests/test_series_shared.py, turned off)."""
    monkeypatch.setattr(worker_reads, "take", lambda *a, **k: None)
    paths = make_series(tmp_path / "s", 9)
    gathered = []
    real = series_stage.gather
    monkeypatch.setattr(series_stage, "gather", lambda *a: (gathered.append(1), real(*a)))
    for rescale in (False, True):
        vol, info = kvdicom.load_series(tmp_path / "s", "cuda", rescale=rescale)
        assert info.paths == tuple(paths)
        np.testing.assert_array_equal(vol.get(), pydicom_volume(paths, rescale=rescale))
    assert len(gathered) == 2  # both loads went through the pinned staging

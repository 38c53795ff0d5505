"""The header workers read a long series' pixel bytes into the pool's shared buffer (``kvdicom._io.shared_staging``).

The CPU path reads this way too (each slice then copied from the buffer to the volume on the host threads).
On the CPU machine the GPU path also runs with NumPy stand-ins (the device copies done by NumPy); the workers
and the memfd are real. The GPU tests run the same through CuPy.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys

import numpy as np
import pytest

import kvdicom
from kvdicom._io import process_pool, shared_staging
from kvdicom._series import early_copy, native, worker_reads
from kvdicom._series import headers as series_headers
from kvdicom._series import loader as series
from kvdicom._series import stage as series_stage
from tests.test_series import make_series, pydicom_volume
from tests.test_series_stage import Recorder, kvdicom_spec

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memfd_create is Linux only")


@pytest.fixture
def shared(monkeypatch):
    """Headers from the process pool (several chunks), the GPU path's shared reads on, with NumPy stand-ins;
    records each placement from the buffer."""
    monkeypatch.setattr(series_headers, "use_pool", lambda count: True)
    monkeypatch.setattr(series_headers, "CHUNKS_PER_WORKER", 64)
    placed = []
    real = worker_reads.place
    monkeypatch.setattr(worker_reads, "place", lambda *a: (placed.append(len(a[0])), real(*a)))
    return placed


def shared_load(folder, recorder, rescale=False, series_uid=None):
    return series._load(folder, np, "cpu", rescale, series_uid, None, recorder.backend())


@pytest.mark.parametrize("rescale", [False, True])
def test_workers_read_the_slices_and_the_volume_equals_pydicom(tmp_path, shared, rescale):
    paths = make_series(tmp_path / "s", 7, spec=kvdicom_spec(rows=16, cols=24),
                        rescale=lambda i: (0.5 + i, -1024.0 + i))
    recorder = Recorder()
    vol, info = shared_load(tmp_path / "s", recorder, rescale=rescale)
    assert info.paths == tuple(paths)
    np.testing.assert_array_equal(vol, pydicom_volume(paths, rescale=rescale))
    assert shared == [7]  # every slice came from the shared buffer ...
    assert recorder.reads == [] and recorder.allocated == []  # ... none was read or staged by the parent
    assert process_pool.staging() is not None and process_pool.staging().acquire()  # released after the load
    process_pool.staging().release()


def test_a_file_larger_than_its_slot_is_read_by_the_parent(tmp_path, shared, monkeypatch):
    """Slots are the files' sizes on disk: a file that grew past its slot is not read by a worker (no write
    beyond the slot); the series is then read here, equal to pydicom."""
    paths = make_series(tmp_path / "s", 5, spec=kvdicom_spec(rows=16, cols=24))
    victim = paths[2]
    real = series_stage.file_size
    monkeypatch.setattr(series_stage, "file_size", lambda p: 16 * 24 * 2 - 1 if p == victim else real(p))
    vol, info = shared_load(tmp_path / "s", Recorder())
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert shared == []


def test_only_the_asked_series_is_read_by_the_workers(tmp_path, shared):
    make_series(tmp_path / "s", 3, uid="1.2.3.1", spec=kvdicom_spec(rows=16, cols=24))
    make_series(tmp_path / "o", 2, uid="1.2.3.2", origin=(0.0, 0.0, 100.0), spec=kvdicom_spec(rows=16, cols=24))
    for name in os.listdir(tmp_path / "o"):
        shutil.move(tmp_path / "o" / name, tmp_path / "s" / ("o_" + name))
    paths = sorted(str(p) for p in (tmp_path / "s").iterdir())
    owner = worker_reads.take(paths, "1.2.3.1", pin=False)
    try:
        series_headers.read_headers(paths, parallel=True, reads=owner.reads)
    finally:
        owner.owner.release()
    read = {os.path.basename(paths[i]): got for i, got in owner.reads.results.items()}
    assert all((got is None) == name.startswith("o_") for name, got in read.items()), read


def test_a_busy_buffer_leaves_the_load_to_read_as_before(tmp_path, shared):
    """One load at a time uses the buffer; another one meanwhile reads as before, and is as correct."""
    paths = make_series(tmp_path / "s", 4, spec=kvdicom_spec(rows=16, cols=24))
    shared_load(tmp_path / "s", Recorder())  # starts the pool and its buffer
    owner = process_pool.staging()
    assert owner.acquire()
    try:
        recorder = Recorder()
        vol, _ = shared_load(tmp_path / "s", recorder)
    finally:
        owner.release()
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert shared == [4] and sorted(recorder.reads) == sorted(paths)


def test_a_failed_worker_read_of_a_volume_slice_is_an_error_naming_it(tmp_path):
    """A worker's read checks the file as ``load`` does; its reason comes back and names the file."""
    paths = make_series(tmp_path / "s", 2, spec=kvdicom_spec(rows=16, cols=24))
    header = series_headers.read_header(paths[1])
    with open(paths[1], "rb") as f:
        data = f.read()
    os.remove(paths[1])
    with open(paths[1], "wb") as f:  # another file under the same name after the header was parsed
        f.write(data)
    slot = np.zeros(len(data), np.uint8)
    why, infos = series_headers._read_into_slot(header, slot, None)
    assert isinstance(why, str) and "changed" in why, why
    assert infos is None
    assert not slot.any()

    reads = series_headers.SharedReads(fd=-1, size=0, slots=[(0, 10), (10, 10)], results={1: why})
    holder = worker_reads.WorkerReads(owner=None, buffer=np.zeros(20, np.uint8), reads=reads)
    headers = [series_headers.read_header(p) for p in paths]
    holder.index = {id(h): i for i, h in enumerate(headers)}
    with pytest.raises(kvdicom.DicomLoadError, match="changed") as err:
        holder.values(headers)
    assert err.value.path == paths[1]
    assert holder.values(headers[:1]) == [None]  # no answer: read by the parent


def test_workers_inherit_the_buffer_and_a_grown_buffer_is_remapped(tmp_path, shared):
    """The memfd reaches the workers at their start; a larger series grows it, and the workers map the new size."""
    small = make_series(tmp_path / "a", 3, spec=kvdicom_spec(rows=8, cols=8))
    big = make_series(tmp_path / "b", 3, spec=kvdicom_spec(rows=2048, cols=1024, bits_allocated=16, bits_stored=16))
    for paths in (small, big, small):
        vol, _ = shared_load(os.path.dirname(paths[0]), Recorder())
        np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert shared == [3, 3, 3]
    assert process_pool.staging().size >= 3 * 2048 * 1024 * 2


def test_a_forked_child_drops_the_parents_buffer(tmp_path, shared):
    make_series(tmp_path / "s", 2, spec=kvdicom_spec(rows=8, cols=8))
    shared_load(tmp_path / "s", Recorder())
    fd = process_pool.staging().fd
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the pool and the buffer are gone
        try:
            os.fstat(fd)
            os.write(write, b"open")
        except OSError:
            os.write(write, b"closed" if process_pool.staging() is None else b"pool")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"closed"
    assert shared_staging.create() is not None  # memfd is available here (Linux)


@pytest.mark.parametrize("rescale", [False, True])
def test_cpu_loads_of_a_native_series_read_the_slices_after_the_sort_not_in_the_workers(tmp_path, shared,
                                                                                         monkeypatch, rescale):
    """``load_series(..., "cpu")`` of a long native series: the workers parse only (no shared buffer taken, no copy
    from it); this process reads the slices into the volume after the sort; equal to pydicom, also into ``out=``."""
    paths = make_series(tmp_path / "s", 9, spec=kvdicom_spec(rows=16, cols=24),
                        rescale=lambda i: (0.5 + i, -1024.0 + i))
    monkeypatch.setattr(worker_reads, "copy_slices", lambda *a: pytest.fail("copied from the shared buffer"))
    read = []
    real = native.read_native
    monkeypatch.setattr(native, "read_native", lambda layouts, *a: (read.append(len(layouts)), real(layouts, *a)))
    want = pydicom_volume(paths, rescale=rescale)
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu", rescale=rescale)
    np.testing.assert_array_equal(vol, want)
    assert info.paths == tuple(paths) and shared == [] and read == [9]
    out = np.empty_like(want)
    assert kvdicom.load_series(tmp_path / "s", "cpu", rescale=rescale, out=out)[0] is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("first", ["text", "dicomdir"])
def test_files_that_are_no_image_listed_first_do_not_send_a_native_cpu_series_to_the_workers(tmp_path, shared,
                                                                                            monkeypatch, first):
    """A text file or a DICOMDIR listed before the slices: the CPU path still reads the slices itself (no shared
    buffer taken, no copy from it), predicts the volume from the slices alone, and lists the file as skipped."""
    from kvdicom import settings

    paths = make_series(tmp_path / "s", 9, spec=kvdicom_spec(rows=16, cols=24))
    monkeypatch.setattr(settings, "PREFAULT_MIN_BYTES", 0)  # this small series predicted too
    made = []
    real_prefault = series.Prefault
    monkeypatch.setattr(series, "Prefault", lambda *a: made.append(real_prefault(*a)) or made[-1])
    if first == "text":
        extra = tmp_path / "s" / "0-readme.txt"
        extra.write_bytes(b"not DICOM\n" * 100)
    else:
        import pydicom
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian

        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.9"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.FileSetID = "SET"
        ds.preamble = b"\0" * 128
        extra = tmp_path / "s" / "DICOMDIR"
        pydicom.dcmwrite(extra, ds, enforce_file_format=True)
    assert series_headers.list_files(tmp_path / "s")[0][0] == str(extra)  # listed first
    monkeypatch.setattr(worker_reads, "take", lambda *a, **k: pytest.fail("the workers read a native CPU series"))
    read = []
    real = native.read_native
    monkeypatch.setattr(native, "read_native", lambda layouts, *a: (read.append(len(layouts)), real(layouts, *a)))
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert read == [9] and [p for p, _ in info.skipped] == [str(extra)]
    assert len(made) == 1 and made[0].nbytes == vol.nbytes  # nine slices predicted, not ten


def test_a_cpu_load_of_a_native_series_reads_the_first_header_once_in_this_process(tmp_path, shared, monkeypatch):
    """The first file's header tells the CPU path to read the slices itself; the volume's prediction
    (``Prefault``) takes that layout instead of reading the header again."""
    from kvdicom import settings
    from kvdicom._series import prefault

    paths = make_series(tmp_path / "s", 9, spec=kvdicom_spec(rows=16, cols=24))
    monkeypatch.setattr(settings, "PREFAULT_MIN_BYTES", 0)  # this small series predicted too
    read = []
    real = series_headers.read_header
    counted = lambda p: (read.append(p), real(p))[1]  # noqa: E731
    monkeypatch.setattr(series_headers, "read_header", counted)
    monkeypatch.setattr(prefault, "read_header", counted)
    made = []
    real_prefault = series.Prefault
    monkeypatch.setattr(series, "Prefault", lambda *a: made.append(real_prefault(*a)) or made[-1])
    vol, _ = kvdicom.load_series(tmp_path / "s", "cpu")
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert made and made[0].nbytes == vol.nbytes  # predicted from the layout the loader read
    first = series_headers.list_files(tmp_path / "s")[0][0]
    assert read == [first]  # in this process, once: the workers parsed the headers


@pytest.mark.parametrize("syntax", ["rle", "jpeg2000_lossless"])
def test_cpu_compressed_slices_decode_the_bytes_the_workers_read(tmp_path, shared, monkeypatch, syntax):
    """``load_series(..., "cpu")`` of a long compressed series decodes the codestreams the header workers read
    into the shared buffer; the parent reads no file again. Equal to pydicom."""
    from fixtures.encode import unavailable
    from kvdicom._header import compressed
    from tests.test_series_decode import pydicom_volume as decoded_volume
    from tests.test_series_decode import write_series

    if reason := unavailable(syntax):
        pytest.skip(reason)
    paths = write_series(tmp_path / "s", [syntax] * 6)
    want = decoded_volume(paths)
    monkeypatch.setattr(compressed, "read_frames", lambda *a, **k: pytest.fail("the parent read a slice again"))
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    np.testing.assert_array_equal(vol, want, err_msg=str(info.decoders))


@pytest.fixture
def early_events(monkeypatch):
    """Records, in order, each chunk the loader received ("batch"), each span copied early ("copy") and each
    volume gathered from those copies ("gather", slices)."""
    events = []
    real_batches = series_headers.header_batches

    def batches(*args, **kwargs):
        for batch in real_batches(*args, **kwargs):
            events.append(("batch", len(batch)))
            yield batch

    monkeypatch.setattr(series_headers, "header_batches", batches)
    real_chunk, real_gather = early_copy.EarlyCopy.chunk, early_copy.EarlyCopy.gather

    def chunk(self, batch, results):
        before = self.chunks
        real_chunk(self, batch, results)
        if self.chunks > before:
            events.append(("copy", len(batch)))

    def gather(self, indices, nbytes, raw):
        events.append(("gather", len(indices)))
        real_gather(self, indices, nbytes, raw)

    monkeypatch.setattr(early_copy.EarlyCopy, "chunk", chunk)
    monkeypatch.setattr(early_copy.EarlyCopy, "gather", gather)
    return events


@pytest.mark.parametrize("rescale", [False, True])
def test_native_chunks_are_copied_as_they_arrive_and_gathered_in_slice_order(tmp_path, shared, early_events,
                                                                             rescale):
    """Each worker's chunk goes to the device copy right after it arrives, before the next chunk is taken;
    the sorted volume (file names not in slice order) is then gathered from those copies, equal to pydicom."""
    paths = make_series(tmp_path / "s", 9, spec=kvdicom_spec(rows=16, cols=24),
                        rescale=lambda i: (0.5 + i, -1024.0 + i))
    vol, info = shared_load(tmp_path / "s", Recorder(), rescale=rescale)
    np.testing.assert_array_equal(vol, pydicom_volume(paths, rescale=rescale))
    batches = [e for e in early_events if e[0] == "batch"]
    assert len(batches) > 1 and sum(n for _, n in batches) == 9
    # every batch is followed at once by its copy: a chunk's copy is issued before the next chunk is taken
    assert early_events[:-1] == [e for b in batches for e in (b, ("copy", b[1]))]
    assert early_events[-1] == ("gather", 9) and shared == [9]


def test_compressed_chunks_stay_on_the_host(tmp_path, shared, early_events):
    """Codestreams are decoded from host memory: no chunk of a compressed series is copied early."""
    from tests.test_series_decode import pydicom_volume as decoded_volume
    from tests.test_series_decode import write_series

    paths = write_series(tmp_path / "s", ["rle"] * 5, rows=16)
    vol, _ = shared_load(tmp_path / "s", Recorder())
    np.testing.assert_array_equal(vol, decoded_volume(paths))
    assert [e for e in early_events if e[0] != "batch"] == []


def test_a_chunk_not_copied_early_leaves_the_volume_to_the_host_copies(tmp_path, shared, early_events, monkeypatch):
    """Early copies must cover every slice of the volume; one missing chunk and each slice is copied from the
    host buffer instead, and the volume is as correct."""
    paths = make_series(tmp_path / "s", 6, spec=kvdicom_spec(rows=16, cols=24))
    real_chunk = early_copy.EarlyCopy.chunk
    skipped = []

    def chunk(self, batch, results):
        if not skipped:
            skipped.append(batch)
            return
        real_chunk(self, batch, results)

    monkeypatch.setattr(early_copy.EarlyCopy, "chunk", chunk)
    vol, _ = shared_load(tmp_path / "s", Recorder())
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert skipped and shared == [6]
    assert not any(e[0] == "gather" for e in early_events)


def test_no_device_room_for_the_early_copy_leaves_the_slices_to_the_host(tmp_path, shared, early_events, monkeypatch):
    """Early copies need as many device bytes as the files: where the device has none to spare, the load goes
    on as before early copies (each slice from the host buffer) and is as correct."""
    paths = make_series(tmp_path / "s", 6, spec=kvdicom_spec(rows=16, cols=24))

    def full(self):
        raise MemoryError("out of device memory")

    monkeypatch.setattr(early_copy.EarlyCopy, "_allocate", full)
    vol, _ = shared_load(tmp_path / "s", Recorder())
    np.testing.assert_array_equal(vol, pydicom_volume(paths))
    assert shared == [6] and not any(e[0] in ("copy", "gather") for e in early_events)


def test_a_volume_that_finds_no_room_gets_the_early_copys_room():
    """The volume is allocated after the early copy: where that fails, the copy is given back and the volume
    tried again, so a load that fitted before early copies still fits; with nothing to give back, the error."""
    calls = []

    class Device:  # an xp whose first allocation finds the device full
        uint8 = np.uint8

        @staticmethod
        def empty(shape, dtype):
            calls.append(shape)
            if len(calls) == 1:
                raise MemoryError("out of device memory")
            return np.empty(shape, dtype)

    early = early_copy.EarlyCopy(np.zeros(64, np.uint8), [(0, 32), (32, 32)], np)
    early.mirror = np.zeros(64, np.uint8)
    early.copied[:] = True
    holder = worker_reads.WorkerReads(owner=None, buffer=early.buffer, reads=None, early=early)
    volume = series._empty(Device, (2, 4, 4), np.int16, holder)
    assert volume.shape == (2, 4, 4) and len(calls) == 2
    assert early.mirror is None and not early.covers([0, 1])  # the slices then go from the host
    calls.clear()
    with pytest.raises(MemoryError):
        series._empty(Device, (2, 4, 4), np.int16, None)


def test_the_widest_element_that_divides_every_start_and_the_length():
    assert early_copy.unit([0, 8, 1024], 16) == 8
    assert early_copy.unit([0, 12], 16) == 4
    assert early_copy.unit([0, 8], 6) == 2
    assert early_copy.unit([0, 3], 16) == 1


@pytest.mark.gpu
@pytest.mark.parametrize(("starts", "nbytes", "width"), [([0, 4096, 1024], 1000, 8), ([20, 3000, 1004], 996, 4),
                                                         ([6, 4002, 2010], 1000, 2), ([3, 1001, 2050], 1000, 1)])
def test_gpu_gather_places_each_slot_at_its_slice(cuda, starts, nbytes, width):
    """The kernel at every element width, against NumPy; nothing written past the slices."""
    assert early_copy.unit(starts, nbytes) == width
    buffer = np.random.default_rng(width).integers(0, 256, 6000, dtype=np.uint8)
    early = early_copy.EarlyCopy(buffer, [(s, nbytes) for s in starts], cuda)
    early.mirror = cuda.asarray(buffer)
    early.copied[:] = True
    raw = cuda.zeros(3 * nbytes + 5, dtype=cuda.uint8)
    order = [2, 0, 1]
    assert early.covers(order)
    early.gather(order, nbytes, raw)
    got = raw.get()
    np.testing.assert_array_equal(got[: 3 * nbytes], np.concatenate([buffer[starts[i] : starts[i] + nbytes]
                                                                     for i in order]))
    assert not got[3 * nbytes :].any()

    # into a view that starts 2 bytes into its allocation (a user's ``out=`` may): narrower elements, same bytes
    base = cuda.zeros(3 * nbytes + 2, dtype=cuda.uint8)
    early.gather(order, nbytes, base[2:])
    np.testing.assert_array_equal(base[2:].get(), got[: 3 * nbytes])
    assert not base[:2].get().any()


@pytest.fixture
def pool_on(monkeypatch):
    """Headers from the process pool, several chunks, whatever the series' length (the real GPU path)."""
    monkeypatch.setattr(series_headers, "use_pool", lambda count: True)
    monkeypatch.setattr(series_headers, "CHUNKS_PER_WORKER", 64)


@pytest.mark.gpu
def test_gpu_slices_read_by_the_workers_equal_pydicom(cuda, tmp_path, pool_on, monkeypatch):
    paths = make_series(tmp_path / "s", 9, spec=kvdicom_spec(rows=32, cols=48),
                        rescale=lambda i: (0.5 + i, -1024.0 + i))
    placed = []
    real = worker_reads.place
    monkeypatch.setattr(worker_reads, "place", lambda *a: (placed.append(len(a[0])), real(*a)))
    gathered = []
    real_gather = early_copy.EarlyCopy.gather
    monkeypatch.setattr(early_copy.EarlyCopy, "gather",
                        lambda self, indices, *a: (gathered.append(len(indices)), real_gather(self, indices, *a)))
    for rescale in (False, True):
        vol, info = kvdicom.load_series(tmp_path / "s", "cuda", rescale=rescale)
        assert isinstance(vol, cuda.ndarray) and info.paths == tuple(paths)
        np.testing.assert_array_equal(vol.get(), pydicom_volume(paths, rescale=rescale))
    assert placed == [9, 9]
    assert gathered == [9, 9]  # from the chunks copied to the device as they arrived
    owner = process_pool.staging()
    # the buffer is page-locked for CUDA (1: cudaMemoryTypeHost) and free again
    assert cuda.cuda.runtime.pointerGetAttributes(owner.reserve(1, pin=True).ctypes.data).type == 1
    assert owner.acquire()
    owner.release()


@pytest.mark.gpu
def test_gpu_compressed_slices_read_by_the_workers_equal_pydicom(cuda, tmp_path, pool_on, monkeypatch):
    from kvdicom import settings
    from kvdicom._series import decode as series_decode
    from tests.test_series_decode import pydicom_volume as decoded_volume
    from tests.test_series_decode import write_series

    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    paths = write_series(tmp_path / "s", ["htj2k_lossless", "jpeg2000_lossless", "rle", "htj2k_lossless"], rows=64)
    given = []
    real = series_decode.read_all
    monkeypatch.setattr(series_decode, "read_all",
                        lambda *a, values=None, **k: (given.append(values), real(*a, values=values, **k))[1])
    vol, info = kvdicom.load_series(tmp_path / "s", "cuda")
    np.testing.assert_array_equal(cuda.asnumpy(vol), decoded_volume(paths), err_msg=str(info.decoders))
    assert len(given) == 1 and given[0] is not None and all(v is not None for v in given[0]), given


def test_gpu_logic_decodes_the_bytes_the_workers_read_without_reading_a_file(tmp_path, monkeypatch):
    """``decode_gpu`` with every slice's value given checks and decodes those bytes; nothing is read again."""
    pytest.importorskip("openjpeg")
    from kvdicom import settings
    from kvdicom._codecs import gpu_codec
    from kvdicom._header import compressed
    from kvdicom._series import decode as series_decode
    from tests.test_series_decode import FakeBatch, write_series
    from tests.test_series_decode import pydicom_volume as decoded_volume

    monkeypatch.setattr(gpu_codec, "nvimgcodec_problem", lambda: None)
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    monkeypatch.setattr(gpu_codec, "_decode_batch", FakeBatch())
    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 3 + ["rle"])
    layouts = [kvdicom.inspect(p) for p in paths]
    buffer = np.zeros(sum(compressed.value_nbytes(layout) for layout in layouts), np.uint8)
    values, start = [], 0
    for layout in layouts:
        view = buffer[start : start + compressed.value_nbytes(layout)]
        compressed.read_frames(layout, into=view)
        values.append(view)
        start += view.nbytes

    def no_read(*args, **kwargs):
        raise AssertionError("a slice was read again")

    monkeypatch.setattr(compressed, "read_frames", no_read)
    stored = np.full((4, layouts[0].rows, layouts[0].columns), -7, dtype=layouts[0].dtype)
    decoders = series_decode.decode_gpu(layouts, stored, [0, 1, 2, 3], values)
    np.testing.assert_array_equal(stored, decoded_volume(paths))
    assert any(d.startswith("nvimgcodec (jpeg2000, 3 frames") for d in decoders), decoders

    # with the frame facts the workers checked, no codestream is parsed here either
    infos = [compressed.check_frames(layout, compressed.frames_of(layout, value))
             for layout, value in zip(layouts, values)]
    monkeypatch.setattr(compressed, "check_frames", lambda *a: pytest.fail("a codestream was checked again"))
    stored[...] = -7
    decoders = series_decode.decode_gpu(layouts, stored, [0, 1, 2, 3], values, infos)
    np.testing.assert_array_equal(stored, decoded_volume(paths))
    assert any(d.startswith("nvimgcodec (jpeg2000, 3 frames") for d in decoders), decoders


def test_will_need_announces_regular_files_only_and_never_blocks_on_a_fifo(tmp_path, monkeypatch):
    advised = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: advised.append(advice))
    (tmp_path / "f").write_bytes(b"x" * 10)
    os.mkfifo(tmp_path / "p")
    for name in ("f", "p", "missing"):
        series_headers.will_need(str(tmp_path / name))
    assert advised == [os.POSIX_FADV_WILLNEED]


def test_a_worker_chunk_announces_its_files_then_reads_them_into_their_slots(tmp_path, monkeypatch):
    """The worker's task run here: every file of the chunk announced before the first header is read; each
    slice's pixel bytes land in its slot of the shared buffer."""
    paths = make_series(tmp_path / "s", 3, spec=kvdicom_spec(rows=16, cols=24))
    monkeypatch.setattr(shared_staging, "_worker_map", None)  # this process's mapping of another buffer: none
    events = []
    monkeypatch.setattr(series_headers, "will_need", lambda p: events.append(("announce", p)))
    real = series_headers.read_header
    monkeypatch.setattr(series_headers, "read_header", lambda p: (events.append(("header", p)), real(p))[1])
    owner = shared_staging.create()
    try:
        sizes = [os.path.getsize(p) for p in paths]
        buffer = owner.reserve(sum(sizes), pin=False)
        slots = list(zip(np.cumsum([0] + sizes[:-1]).tolist(), sizes))
        answers = series_headers._read_chunk_shared(paths, slots, owner.fd, owner.size, None)
        for path, (offset, _), (_, got, infos) in zip(paths, slots, answers):
            layout = kvdicom.inspect(path)
            assert got == layout.nbytes and infos is None  # native: no frame facts
            with open(path, "rb") as f:
                f.seek(layout.offset)
                assert bytes(buffer[offset : offset + got]) == f.read(layout.nbytes)
    finally:
        owner.close()
    assert [e[0] for e in events] == ["announce"] * 3 + ["header"] * 3


def test_a_parse_only_worker_chunk_announces_its_files_before_the_first_header(tmp_path, monkeypatch):
    """The workers of a CPU native series parse only and the parent reads the pixels after the sort: the chunk's
    files are still announced first, so from a cold page cache they arrive side by side."""
    paths = make_series(tmp_path / "s", 3, spec=kvdicom_spec(rows=16, cols=24))
    events = []
    monkeypatch.setattr(series_headers, "will_need", lambda p, nbytes=0: events.append(("announce", p)))
    real = series_headers.read_header
    monkeypatch.setattr(series_headers, "read_header", lambda p: (events.append(("header", p)), real(p))[1])
    answers = series_headers._read_chunk_packed(paths)
    assert [series_headers.unpack(a).path for a in answers] == paths
    assert events == [("announce", p) for p in paths] + [("header", p) for p in paths]


def test_a_worker_checks_a_compressed_files_codestreams_and_sends_their_facts(tmp_path, monkeypatch):
    """Compressed files: the worker checks each frame's codestream against the header (what the parent did
    per slice) and sends the facts back; one that disagrees is that file's failed read, its reason."""
    pytest.importorskip("openjpeg")
    from kvdicom._header import compressed
    from tests.test_series_decode import write_series

    paths = write_series(tmp_path / "s", ["jpeg2000_lossless", "rle"])
    monkeypatch.setattr(shared_staging, "_worker_map", None)
    owner = shared_staging.create()
    try:
        sizes = [os.path.getsize(p) for p in paths]
        owner.reserve(sum(sizes), pin=False)
        slots = list(zip(np.cumsum([0] + sizes[:-1]).tolist(), sizes))
        answers = series_headers._read_chunk_shared(paths, slots, owner.fd, owner.size, None)
        (_, j2k_read, j2k_infos), (_, rle_read, rle_infos) = answers
        layout = kvdicom.inspect(paths[0])
        assert j2k_read == compressed.value_nbytes(layout)
        _, frames = compressed.read_frames(layout)
        assert series_headers.unpack_infos(j2k_infos) == compressed.check_frames(layout, frames)
        assert type(rle_read) is int and series_headers.unpack_infos(rle_infos) == [None]

        lying = dataclasses.replace(layout, rows=layout.rows * 2)  # a header that disagrees with its codestream
        why, infos = series_headers._read_into_slot(series_headers.Header(paths[0], lying, header_keys(paths[0])),
                                                    np.zeros(sizes[0], np.uint8), None)
        assert isinstance(why, str) and "codestream is" in why and infos is None
    finally:
        owner.close()


def header_keys(path):
    return series_headers.read_header(path).keys


def test_the_parent_checks_no_codestream_a_worker_checked(tmp_path, shared, monkeypatch):
    """A long compressed series: the parent uses the workers' frame facts and parses no codestream itself."""
    pytest.importorskip("openjpeg")
    from kvdicom._header import compressed
    from tests.test_series_decode import pydicom_volume as decoded_volume
    from tests.test_series_decode import write_series

    paths = write_series(tmp_path / "s", ["jpeg2000_lossless"] * 5)
    want = decoded_volume(paths)
    monkeypatch.setattr(compressed, "check_frames", lambda *a: pytest.fail("the parent checked a codestream again"))
    vol, info = kvdicom.load_series(tmp_path / "s", "cpu")
    np.testing.assert_array_equal(vol, want, err_msg=str(info.decoders))
    vol, _ = shared_load(tmp_path / "s", Recorder())  # the GPU path, NumPy standing in
    np.testing.assert_array_equal(vol, want)

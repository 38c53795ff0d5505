"""Stage rows: each stage of ``kvdicom.load_series`` timed alone, with kvdicom's own internal functions.

Two series: the CT series (uncompressed; 256 × 512² int16 in ``full`` and ``nightly``) and the HTJ2K lossless
series (256 × 512² in ``full``); ``quick`` uses its 16-slice ones. Each row's ``loader`` is ``stage:<name>``
and its ``extra_info`` says what the timed call covers (``stage_covers``), what it is part of (``stage_of``) and,
for a row whose time another row already holds, which one (``stage_part_of``: ``open`` is inside ``read``).
``dgbench.derived`` gives each row ``pct_of_load``: its median as a share of the whole ``kvdicom`` load of the
same case on the same device (``bench/test_series.py`` ``test_series_kvdicom_*[stored-…]``,
``bench/test_compressed_series.py`` ``test_cseries_kvdicom_*``), when that ran in the same session.

The stages, in the order the load runs them (``kvdicom._series.loader._load``):

``headers``  list the folder, parse every header (:func:`kvdicom._series.headers.read_headers`)
``order``    refuse bad files, pick the series, check it stacks, sort, geometry (:mod:`kvdicom._series.order`)
``open``     open every file and check its identity before and after, no bytes read (part of ``read``)
``read``     the pixel bytes into host memory: native slices into the volume (CPU) or the pinned staging
             buffer (CUDA: :func:`kvdicom._series.stage.stage`); compressed slices' fragments, their
             codestreams checked and their route chosen (:func:`kvdicom._series.decode.read_all`)
``decode``   compressed: the GPU batch (nvImageCodec, corrections, blank-frame check) or the host's decode
``place``    the volume allocated and filled from what the reads left: CUDA, the staged slots copied to their
             sorted places (native) or each batch's frames put in their slots (compressed); CPU (native),
             the slices the header workers read into the pool's shared buffer copied to their sorted
             places on kvdicom's host threads, as ``load_series(device="cpu")`` does where headers are
             parsed in the process pool (4+ cores, 64+ files; elsewhere it reads into the volume: ``read``)

Their sum is comparable to the whole, not equal to it: the whole overlaps some stages (on CUDA the native reads
start while headers are still parsed; on the CPU, with four cores or more, each compressed slice is read and
decoded in one task), and each stage here starts warm from the previous stage's result computed beforehand.
Rows that produce pixels check them against the pydicom loop's volume (``matches_pydicom``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

from bench import compressed_peers as cpeers
from bench import peers
from bench.rounds import timed
from dgbench.schema import bench_extra, stage_loader
from fixtures.oracle import mismatch
from fixtures.profiles import CT_SERIES, compressed_series_specs, series_profile_specs
from kvdicom import _loader as kvdicom_loader
from kvdicom._series import decode as series_decode
from kvdicom._series import headers as series_headers
from kvdicom._series import loader as series_loader
from kvdicom._series import native as series_native
from kvdicom._series import order as series_order
from kvdicom._series import stage as series_stage
from kvdicom._series import worker_reads as series_worker_reads

pytestmark = pytest.mark.profile

#: Where each stage runs: ``decode`` only for compressed slices; ``place`` on the CPU only for native slices
#: (compressed slices are decoded into their slots there: ``decode``).
STAGE_KINDS = {"decode": ("htj2k",)}
STAGE_SKIPPED = {("place", "htj2k", "cpu")}


def stage_specs(profile: str) -> list:
    """The CT series (at most 256 × 512²) and the HTJ2K series of ``profile``, the largest of each."""
    native = [s for s in series_profile_specs(profile) if s.header == "ct" and s.transfer_syntax == "explicit_le"
              and s.pixel_bytes <= CT_SERIES.pixel_bytes]
    htj2k = [s for s in compressed_series_specs(profile) if s.transfer_syntax == "htj2k_lossless"]
    return [max(group, key=lambda s: s.pixel_bytes) for group in (native, htj2k) if group]


def _kind(spec) -> str:
    return "native" if spec.transfer_syntax == "explicit_le" else "htj2k"


def pytest_generate_tests(metafunc):
    if "stage_spec" not in metafunc.fixturenames:
        return
    stage = metafunc.function.__name__.removeprefix("test_stage_")
    specs = [s for s in stage_specs(metafunc.config.getoption("profile"))
             if _kind(s) in STAGE_KINDS.get(stage, ("native", "htj2k"))]
    metafunc.parametrize("stage_spec,device", [
        pytest.param(s, d, marks=[pytest.mark.gpu] if d == "cuda" else [], id=f"{s.case_id}-{d}")
        for s in specs for d in ("cpu", "cuda") if (stage, _kind(s), d) not in STAGE_SKIPPED], scope="session")


@pytest.fixture(autouse=True)
def _warm_cuda(request, device):
    """CUDA rows: CUDA, CuPy's pools and KvikIO warmed (the ``cuda`` fixture) before any timing."""
    if device == "cuda":
        request.getfixturevalue("cuda")


@pytest.fixture(scope="session")
def stage_dir(request, corpus, stage_spec):
    if _kind(stage_spec) == "native":
        return corpus.ensure_series(stage_spec)
    return cpeers.ensure_or_skip(corpus.ensure_series, stage_spec, "compressed series", ("pylibjpeg", "openjpeg"))


@pytest.fixture(scope="session")
def stage_reference(stage_dir, stage_spec):
    """The pydicom loop's volume (reference plugin pinned for compressed slices)."""
    if _kind(stage_spec) == "native":
        return peers.pydicom_series(stage_dir)
    return cpeers.pydicom_series_pinned(stage_dir)


@dataclass
class Parsed:
    """What the stages before each one produced, computed once, untimed."""

    folder: str
    paths: list
    name: str
    headers: list
    ordered: list
    layouts: list
    file_bytes: int


def _headers(folder):
    paths, name = series_headers.list_files(folder)
    return paths, name, series_headers.read_headers(paths)


def _order(headers, name):
    series_order.refuse_errors(headers)
    images = series_order.pick_series([h for h in headers if h.layout is not None], None, name)
    series_order.check_stackable(images)
    ordered, rule, distances = series_order.order(images)
    series_order.geometry(ordered, rule, distances)
    return ordered


@pytest.fixture(scope="session")
def parsed(stage_dir) -> Parsed:
    paths, name, headers = _headers(stage_dir)
    ordered = _order(headers, name)
    return Parsed(str(stage_dir), paths, name, headers, ordered, [h.layout for h in ordered],
                  sum(os.path.getsize(p) for p in paths))


def _record(benchmark, spec, parsed, device, stage, covers, reference, output=None, part_of=None):
    """The row's ``extra_info``; returns why ``output`` differs from the pydicom loop's volume, if it does."""
    problem = None if output is None else mismatch(output, reference)
    benchmark.extra_info.update(bench_extra(
        spec.case_id, stage_loader(stage), device, parsed.file_bytes, int(reference.nbytes), "warm",
        matches_pydicom=None if output is None else problem is None, ceiling=None,
        stage=stage, stage_of=f"kvdicom.load_series(device={device!r})", stage_covers=covers,
        stage_part_of=part_of, slices=spec.slices, files=len(parsed.paths),
    ))
    return problem


def _on_device(request, device, fn, *args):
    """``fn(*args)``, followed on CUDA by a device synchronize (one timed call)."""
    if device != "cuda":
        return lambda: fn(*args)
    return peers.synced(request.getfixturevalue("cuda"), fn, *args)


# --- host stages: the same code for both devices ------------------------------------------------------------


def test_stage_headers(benchmark, request, stage_spec, device, stage_dir, parsed, stage_reference):
    paths, _, headers = timed(benchmark, _on_device(request, device, _headers, stage_dir))
    pool = "in the process pool" if series_headers.use_pool(len(paths)) else "in this process"
    _record(benchmark, stage_spec, parsed, device, "headers",
            f"list the folder and parse all {len(paths)} headers {pool} (series_headers.list_files + read_headers)"
            + ("; load_series reads the pixel bytes while they are parsed (series_stage.stage)"
               if device == "cuda" and _kind(stage_spec) == "native" else ""), stage_reference)
    assert len(headers) == stage_spec.slices and all(h.layout is not None for h in headers), headers[:3]


def test_stage_order(benchmark, request, stage_spec, device, stage_dir, parsed, stage_reference):
    ordered = timed(benchmark, _on_device(request, device, _order, parsed.headers, parsed.name))
    _record(benchmark, stage_spec, parsed, device, "order",
            "refuse bad files, pick the series, check it stacks, sort the slices and work out the geometry "
            "(series_order.refuse_errors, pick_series, check_stackable, order, geometry)", stage_reference)
    import pydicom

    def key(path):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return peers.slice_sort_key(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"),
                                    ds.get("InstanceNumber"))

    expected = [os.path.abspath(p) for p in sorted(peers.series_files(stage_dir), key=key)]
    assert [h.path for h in ordered] == expected, "the slices are not in the pydicom loop's order"


def _open_all(layouts) -> int:
    """Open every file on kvdicom's read pool and check its identity before and after, as each pixel read does."""
    from kvdicom._io import fileid, host_read

    def one(layout):
        fd = fileid.open_regular(layout.path)
        try:
            fileid.check_same(layout.path, fd, layout.file_id, "before the pixel read")
            fileid.check_same(layout.path, fd, layout.file_id, "after the pixel read")
        finally:
            os.close(fd)

    return len(host_read.wait_all([host_read.pool().submit(one, layout) for layout in layouts]))


def test_stage_open(benchmark, request, stage_spec, device, parsed, stage_reference):
    opened = timed(benchmark, _on_device(request, device, _open_all, parsed.layouts))
    _record(benchmark, stage_spec, parsed, device, "open",
            "open every file (fileid.open_regular: stat, open, fstat) and check its identity before and after the "
            "read (fileid.check_same), one task per file on kvdicom's read pool; no bytes read", stage_reference,
            part_of="read")
    assert opened == stage_spec.slices


# --- reads ----------------------------------------------------------------------------------------------------


def _host_volume(layouts):
    """The CPU volume, allocated as load_series allocates it (a freed volume's memory kept for the next call:
    :mod:`kvdicom._io.host_memory`)."""
    first = layouts[0]
    return series_loader._empty(np, (len(layouts),) + first.shape, first.dtype, None)


def _read_native_cpu(layouts):
    """As load_series(device="cpu") in-process: the volume allocated, every slice's bytes read into it (they are
    the volume)."""
    volume = _host_volume(layouts)
    series_native.read_native(layouts, volume, layouts[0].dtype, "cpu", np)
    return volume


def _worker_reads(parsed) -> list:
    """Each sorted slice's pixel bytes where a header worker leaves them (untimed): one buffer, a slot per file
    of its size on disk, in the folder's order, as the pool's shared buffer (kvdicom._series.worker_reads.take)."""
    offsets = series_native.offsets_of([series_stage.file_size(p) for p in parsed.paths])  # the total last
    slot = dict(zip(parsed.paths, offsets))
    buffer = np.empty(offsets[-1], dtype=np.uint8)
    values = []
    for layout in parsed.layouts:
        value = buffer[slot[layout.path] : slot[layout.path] + layout.nbytes]
        kvdicom_loader.read_pixels(layout, "cpu", value)
        values.append(value)
    return values


def _place_native_cpu(layouts, values):
    """As load_series(device="cpu") after the header workers' reads: the volume allocated, each slice copied from
    the shared buffer to its sorted place (kvdicom._series.worker_reads.place)."""
    volume = _host_volume(layouts)
    series_worker_reads.place(values, layouts, volume, layouts[0].dtype, np)
    return volume


def _staged(parsed):
    """As load_series(device="cuda"): every slice's bytes into one pinned staging buffer (headers already in)."""
    return series_stage.stage(parsed.paths, [list(enumerate(parsed.headers))], series_native.gpu_backend())


def _staged_volume(parsed, staging) -> np.ndarray:
    """The staging buffer's slots in slice order, as a host volume (for the check)."""
    first = parsed.layouts[0]
    slots = np.asarray(staging.buffer).reshape(-1, staging.slot)
    order = [staging.slots[i] for i in staging.indices(parsed.ordered)]
    return slots[order].view(first.dtype.newbyteorder("=")).reshape((len(order),) + first.shape)


def _read_compressed(layouts, device):
    """Every slice's fragments read, checked against the header and routed (GPU: planned as one batch)."""
    from kvdicom._codecs import gpu_codec

    plan = None if device == "cpu" or gpu_codec.nvimgcodec_problem() else len(layouts)
    return series_decode.read_all(layouts, list(range(len(layouts))), plan_frames=plan)


def test_stage_read(benchmark, request, stage_spec, device, parsed, stage_reference):
    n = stage_spec.slices
    if _kind(stage_spec) == "htj2k":
        pieces = timed(benchmark, _on_device(request, device, _read_compressed, parsed.layouts, device))
        plans = " and plan the slices as one GPU batch" if device == "cuda" else ""
        _record(benchmark, stage_spec, parsed, device, "read",
                f"read all {n} slices' fragments on kvdicom's read pool (open, identity checks, preadv), check "
                f"each codestream against its header{plans} (series_decode.read_all)", stage_reference)
        assert [p.slot for p in pieces] == list(range(n)) and all(len(p.frames) == 1 for p in pieces)
        return
    if device == "cpu":
        volume = timed(benchmark, _read_native_cpu, parsed.layouts)
        problem = _record(benchmark, stage_spec, parsed, device, "read",
                          f"allocate the volume (kept host memory) and read all {n} slices' pixel bytes into it "
                          "on kvdicom's read pool (kvdicom._series.native.read_native: open, identity checks, preadv); "
                          "the stored bytes are the volume, nothing is decoded; what load_series does for a "
                          "native series on the CPU, its headers parsed in this process or in the pool",
                          stage_reference, volume)
        assert problem is None, problem
        return
    staging = timed(benchmark, _on_device(request, device, _staged, parsed))
    problem = _record(benchmark, stage_spec, parsed, device, "read",
                      f"read all {n} slices' pixel bytes into one pinned staging buffer on kvdicom's read pool "
                      "(series_stage.stage with the headers already parsed: the overlap with parsing is left out)",
                      stage_reference, _staged_volume(parsed, staging))
    assert problem is None, problem


# --- decode (compressed) --------------------------------------------------------------------------------------


def _decode_gpu(pieces) -> list:
    """As series_decode._decode_gpu, without putting the frames in the volume: each batch's nvImageCodec decode
    (gpu_codec._decode_batch), pydicom's corrections (corrections.finish) and the blank-frame check.
    Returns ``(slots, frames, indices to decode again on the host)`` per batch."""
    from kvdicom._codecs import gpu_codec
    from kvdicom._pixels import corrections

    batches, _ = series_decode.groups(pieces)  # no slice for the host: _gpu_pieces
    out = []
    for group in batches:
        for batch in series_decode.split(group):
            first = batch[0]
            block = series_decode.as_batch(first.layout, len(batch))
            raw, redo = gpu_codec._decode_batch([p.frames[0] for p in batch], block, first.how)
            frames = corrections.finish(raw, block, first.how)
            blank = gpu_codec.blank_frames(frames.reshape(len(batch), -1))
            out.append(([p.slot for p in batch], frames, sorted(set(redo) | set(blank))))
    return out


def _decode_host(pieces):
    """As load_series(device="cpu") on the slices already read: the volume allocated, each slice's decoder chosen
    and every slice decoded into its slot on the host (series_decode.host_into_all)."""
    for piece in pieces:
        piece.choice = None  # chosen inside, as the load chooses after its reads
    first = pieces[0].layout
    volume = np.empty((len(pieces),) + first.shape, dtype=first.dtype)
    series_decode.host_into_all(pieces, [volume[p.slot] for p in pieces])
    return volume


def _gpu_pieces(device, parsed):
    """The slices read and planned for the GPU; skipped where load_series would decode any on the host."""
    from kvdicom._codecs import gpu_codec

    if (why := gpu_codec.nvimgcodec_problem()) is not None:
        pytest.skip(why)
    pieces = _read_compressed(parsed.layouts, device)
    _, host = series_decode.groups(pieces)
    if host:
        pytest.skip(f"load_series decodes {len(host)} of these slices on the host, not in a GPU batch "
                    f"({host[0].choice.declined[0] if host[0].choice and host[0].choice.declined else 'no plan'})")
    return pieces


def test_stage_decode(benchmark, request, stage_spec, device, parsed, stage_reference):
    n = stage_spec.slices
    if device == "cpu":
        pieces = _read_compressed(parsed.layouts, device)
        volume = timed(benchmark, _decode_host, pieces)
        decoders = sorted({series_decode.host_decoder(p.layout, p) for p in pieces})
        problem = _record(benchmark, stage_spec, parsed, device, "decode",
                          f"allocate the volume (np.empty), choose each slice's decoder and decode all {n} slices "
                          f"read beforehand into their slots on the host ({'; '.join(decoders)}; "
                          "series_decode.host_into_all); with four cores or more load_series reads and decodes "
                          "each slice in one task instead",
                          stage_reference, volume)
        assert problem is None, problem
        return
    pieces = _gpu_pieces(device, parsed)
    batches = timed(benchmark, _on_device(request, device, _decode_gpu, pieces))
    import cupy

    volume = cupy.concatenate([frames for _, frames, _ in batches])
    problem = _record(benchmark, stage_spec, parsed, device, "decode",
                      f"decode all {n} slices read beforehand in {len(batches)} nvImageCodec batch(es) "
                      "(gpu_codec._decode_batch: code streams, one Decoder.decode, copies into one array), "
                      "apply pydicom's corrections (corrections.finish) and look for blank frames "
                      "(gpu_codec.blank_frames); not put into the volume (that is 'place')", stage_reference, volume)
    redo = [i for _, _, again in batches for i in again]
    assert not redo, f"nvImageCodec returned no image or zeros for frames {redo} (load_series redoes them on the host)"
    assert problem is None, problem


# --- place ----------------------------------------------------------------------------------------------------


def _place_native(parsed, staging):
    import cupy

    first = parsed.layouts[0]
    volume = cupy.empty((len(parsed.layouts),) + first.shape, dtype=first.dtype)
    series_native.gather_native(staging, staging.indices(parsed.ordered), parsed.layouts, volume, first.dtype, cupy,
                                series_native.gpu_backend())
    return volume


def _place_decoded(parsed, batches):
    import cupy

    first = parsed.layouts[0]
    volume = cupy.empty((len(parsed.layouts),) + first.shape, dtype=first.dtype)
    for slots, frames, _ in batches:
        series_decode._scatter(volume, slots, frames)
    return volume


def test_stage_place(benchmark, request, stage_spec, device, parsed, stage_reference):
    n = stage_spec.slices
    if device == "cpu":  # native slices only (STAGE_SKIPPED)
        volume = timed(benchmark, _place_native_cpu, parsed.layouts, _worker_reads(parsed))
        covers = (f"allocate the volume (kept host memory) and copy the {n} slices the header workers read into "
                  "the shared buffer to their sorted places on kvdicom's host threads "
                  "(kvdicom._series.worker_reads.place); load_series no longer does this on the CPU: its "
                  "workers parse only and it reads into the volume after the sort ('read'); kept to measure the "
                  "copy those reads replaced")
    elif _kind(stage_spec) == "native":
        staging = _staged(parsed)
        volume = timed(benchmark, _on_device(request, device, _place_native, parsed, staging))
        covers = (f"allocate the volume on the device and copy the {n} staged slots to their sorted places "
                  "(kvdicom._series.native.gather_native: one async host-to-device copy per run of consecutive slots, "
                  "one sync)")
    else:
        batches = _decode_gpu(_gpu_pieces(device, parsed))
        volume = timed(benchmark, _on_device(request, device, _place_decoded, parsed, batches))
        covers = (f"allocate the volume on the device and put the {n} decoded frames into their slots "
                  "(series_decode._scatter, one per batch), synchronized")
    problem = _record(benchmark, stage_spec, parsed, device, "place", covers, stage_reference, volume)
    assert problem is None, problem

"""The compressed slices of a series decoded together: one read per file, concurrently; one GPU batch.

``kvdicom.load`` decodes one file per call: for a series that is one
nvImageCodec call per slice, each paying the batch's fixed cost (one 128²
int16 JPEG 2000 frame took 12.0 ms on the GPU against 3.7 ms with pydicom,
H200, ``gpu_codec.GPU_MIN_DECODED_BYTES``). Here, for slices in their final
order:

1. every file's fragments are read on kvdicom's read pool
   (:func:`kvdicom._io.host_read.pool`, :func:`kvdicom._header.compressed.read_frames`)
   and checked against the header (:func:`kvdicom._header.compressed.check_frames`)
   before anything is decoded, so a corrupt or lying slice is a
   :class:`DicomLoadError` naming it and no volume is returned;
2. ``device="cuda"``: each slice is planned by :func:`kvdicom._codecs.gpu_codec.plan`
   (its size rule seeing the series' decoded bytes, since the batch, not
   the slice, is the decode call); slices whose plans and decode-relevant
   layout fields agree (:func:`batch_key`) form one group, and each group's
   frames go to ONE ``Decoder.decode`` batch (:func:`kvdicom._codecs.gpu_codec._decode_batch`;
   split only past :data:`settings.GPU_BATCH_MAX_DECODED_BYTES`, a device-memory bound),
   corrected by :func:`kvdicom._pixels.corrections.finish` and written into the
   volume's slots; frames nvImageCodec returns as nothing or as all zeros,
   and slices planned for the host, decode on the host (pinned staging,
   one copy per run of slots);
3. ``device="cpu"``: slices :mod:`kvdicom._codecs.host_codecs` takes (lossless JPEG
   2000 / HTJ2K / JPEG-LS, imagecodecs with the GIL released) and RLE
   (imagecodecs' PackBits) are read and decoded each in its own task on
   kvdicom's thread pool where :func:`kvdicom._codecs.host_codecs._concurrent` /
   :func:`kvdicom._codecs.rle._concurrent` say it pays; other slices decode with
   pydicom's reference plugin into their slots (on the process pool where
   that pays; pylibjpeg, openjpeg and pyjpegls hold the GIL).

:func:`decode_into` returns which decoders ran (``SeriesInfo.decoders``), so
benchmarks can record it. Grouping (:func:`groups`) is plain Python, tested
on the CPU; only :func:`_decode_gpu` and :func:`_host_to_device` touch CuPy.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import operator
from dataclasses import dataclass

import numpy as np

from kvdicom import settings
from kvdicom._codecs import gpu_codec, host_codecs, host_parallel, rle, route
from kvdicom._header import compressed
from kvdicom._io import device as devices
from kvdicom._io import host_read, process_pool
from kvdicom._pixels import corrections
from kvdicom._pixels.decode import array_module
from kvdicom._series import stage as series_stage
from kvdicom.errors import DicomLoadError

#: Layout fields a GPU batch must share besides the plan: they decide how ``corrections.finish`` corrects the
#: decoder's samples and what array each frame is.
BATCH_FIELDS = ("transfer_syntax", "codec", "dtype", "rows", "columns", "samples_per_pixel", "planar_configuration",
                "bits_allocated", "bits_stored", "pixel_representation", "photometric_interpretation")
_batch_fields = operator.attrgetter(*BATCH_FIELDS)


@dataclass
class Slice:
    """One compressed slice after its read: its slot in the volume, the bytes and how they decode."""

    slot: int
    layout: object  #: CompressedLayout
    value: np.ndarray  #: the encapsulated value as read (pydicom's host decoders want it whole)
    frames: list  #: one buffer per frame
    infos: list  #: codestream facts per frame (compressed.check_frames)
    choice: route.Choice | None = None  #: the route's choice, made once per slice (:func:`choice`)

    @property
    def how(self):
        """The GPU plan where the slice joins a GPU batch, else None."""
        return self.choice.plan if self.choice is not None and self.choice.on_gpu else None


as_batch = route.as_batch


def check_expansion(name: str, layouts: list) -> None:
    """Refuse a compressed series whose slices, or whose whole, promise more than their bytes can hold
    (:func:`kvdicom._header.compressed.expansion_problem`), before the volume is allocated: slices of 32 MiB
    each stay below the size at which one file is checked, a thousand of them do not."""
    packed = [layout for layout in layouts if layout.compressed]
    for layout in packed:
        compressed.check_expansion(layout)
    if len(packed) > 1:
        codecs = sorted({layout.codec for layout in packed})
        why = compressed.expansion_problem(codecs[0] if len(codecs) == 1 else "/".join(codecs),
                                           packed[0].dtype.itemsize, sum(layout.decoded_nbytes for layout in packed),
                                           sum(layout.nbytes for layout in packed))
        if why is not None:
            raise DicomLoadError(name, f"{len(packed)} compressed slices: {why}")


def read_slice(slot: int, layout, plan_frames: int | None = None, into: np.ndarray | None = None,
               read: bool = True, infos: list | None = None, choices: route.Choices | None = None) -> Slice:
    """Read and check one file's frames; with ``plan_frames``, plan it as part of a batch of that many frames;
    ``into``: where its bytes go (:func:`kvdicom._header.compressed.value_nbytes` of them), else a new buffer;
    ``read=False``: ``into`` holds them already (a header worker read them into the shared buffer), and
    ``infos``, where given, are its frames' facts the worker checked on those bytes (else checked here);
    ``choices``: the series' route choices, shared by its slices (:class:`kvdicom._codecs.route.Choices`)."""
    if read:
        value, frames = compressed.read_frames(layout, into=into)
    else:
        value, frames = into, compressed.frames_of(layout, into)
    if infos is None or read or len(infos) != len(frames):
        infos = compressed.check_frames(layout, frames)
    if len(frames) != layout.number_of_frames:  # frames split on markers: known only now
        raise DicomLoadError(layout.path, f"encapsulated pixel data holds {len(frames)} frame(s); the header "
                             f"says {layout.number_of_frames} (a series slice has one)")
    piece = Slice(slot, layout, value, frames, infos)
    if plan_frames is not None:
        choose = route.choose if choices is None else choices.choose
        piece.choice = choose(layout, frames, infos, "cuda", batch_frames=max(plan_frames, 1))
    return piece


def _read_group(items: list, plan_frames: int | None, choices: route.Choices | None = None) -> list[Slice]:
    return [read_slice(slot, layout, plan_frames, into, not done, infos, choices)
            for slot, layout, into, done, infos in items]


def read_all(layouts: list, slots: list[int], plan_frames: int | None = None, allocate=None,
             values: list | None = None, infos: list | None = None) -> list[Slice]:
    """:func:`read_slice` of every layout, in :data:`settings.SERIES_READ_TASKS` tasks on kvdicom's pool (each a
    run of consecutive slices, read one after the other); all of them or an error.

    ``allocate(nbytes)``: one uint8 buffer for every slice's bytes (the GPU path's pinned staging, from CuPy's
    pool: no page faults once warm, where one buffer per file faulted afresh in a Dask worker, whose
    ``MALLOC_TRIM_THRESHOLD_`` makes glibc map and unmap each; docs/loader.md), else one buffer per slice.
    ``values``: per slice, its bytes already read by a header worker (None: read it here); slices all read
    already are checked here in the caller, no task (their checks are Python: threads would only queue on the GIL).
    ``infos``: per slice, the frame facts the worker checked (None: checked here).
    """
    done = [False] * len(layouts)
    intos: list = [None] * len(layouts)
    if values is not None:
        intos, done = list(values), [v is not None for v in values]
    elif allocate is not None and layouts:
        sizes = [compressed.value_nbytes(layout) for layout in layouts]
        buffer = allocate(sum(sizes))
        starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        intos = [buffer[a:b] for a, b in itertools.pairwise(starts)]
    items = list(zip(slots, layouts, intos, done, infos if infos is not None else [None] * len(layouts)))
    per_task = max(1, -(-len(items) // settings.SERIES_READ_TASKS))
    runs = [items[i:i + per_task] for i in range(0, len(items), per_task)]
    choices = route.Choices() if plan_frames is not None else None
    if len(runs) == 1 or all(done):
        return _read_group(items, plan_frames, choices)
    pool = host_read.pool()
    return [piece for run in host_read.wait_all([pool.submit(_read_group, run, plan_frames, choices) for run in runs])
            for piece in run]


def batch_key(piece: Slice) -> tuple | None:
    """What a slice's GPU batch is keyed on, or None where it decodes on the host."""
    if piece.how is None or len(piece.frames) != 1:
        return None
    return (piece.how,) + _batch_fields(piece.layout)


def groups(pieces: list[Slice]) -> tuple[list[list[Slice]], list[Slice]]:
    """(GPU batches, each a list of slices sharing a :func:`batch_key`, in slot order; host-route slices)."""
    batches: dict[tuple, list[Slice]] = {}
    host = []
    for piece in pieces:
        key = batch_key(piece)
        if key is None:
            host.append(piece)
        else:
            batches.setdefault(key, []).append(piece)
    return list(batches.values()), host


def split(group: list[Slice]) -> list[list[Slice]]:
    """``group`` in consecutive calls of at most ``settings.GPU_BATCH_MAX_DECODED_BYTES`` decoded bytes (one frame
    at least)."""
    frame = group[0].layout.rows * group[0].layout.columns * group[0].layout.samples_per_pixel
    per_call = max(1, settings.GPU_BATCH_MAX_DECODED_BYTES // (frame * group[0].layout.dtype.itemsize))
    return [group[i : i + per_call] for i in range(0, len(group), per_call)]


def choice(piece: Slice) -> route.Choice:
    """The route's host choice for ``piece``, made once per slice: choosing, decoding and naming all ask (the
    imagecodecs plan walks every JPEG 2000 tile-part header: :func:`kvdicom._header.codestream.j2k_reversible`)."""
    if piece.choice is None or piece.choice.on_gpu:
        piece.choice = route.choose(piece.layout, piece.frames, piece.infos, "cpu")
    return piece.choice


def host_decoder(layout, piece: Slice | None = None) -> str:
    """Which host decoder :func:`host_into` runs for ``layout`` (``piece``: its frames as read, else read here)."""
    if piece is None:
        return route.describe(layout, "cpu").removeprefix("host:")
    return route.name(layout, choice(piece))


def host_into(piece: Slice, dst: np.ndarray) -> None:
    """Decode ``piece`` on the host into ``dst`` (a NumPy array of the slice's shape and dtype), as ``load``."""
    route.host_into(piece.layout, choice(piece), piece.value, piece.frames, dst)


def pooled_plugin(pieces: list[Slice]) -> str | None:
    """The reference plugin when ``pieces`` decode side by side on kvdicom's process pool, else None.

    pydicom's plugins hold the GIL, so only processes decode slices side by side
    (:func:`kvdicom._codecs.host_parallel.decode_slices`); RLE has its own threaded path (:mod:`kvdicom._codecs.rle`).
    """
    layouts = [p.layout for p in pieces]
    if not layouts or len({layout.transfer_syntax for layout in layouts}) != 1:
        return None
    if any(rle.problem(layout) is None for layout in layouts):
        return None
    plugin = compressed.reference_plugin(layouts[0].transfer_syntax)
    return plugin if host_parallel.series_problem(layouts, plugin) is None else None


def host_into_all(pieces: list[Slice], dst) -> bool:
    """Decode ``pieces`` on the host into ``dst[k]`` (an array or a list of slot views); True if pooled.

    On the process pool where :func:`pooled_plugin` allows it (each slice exactly as in-process), else one
    after the other here; a pool that cannot do it leaves the slices to the in-process path, which raises
    its own errors naming the file.
    """
    if pieces and all(choice(p).backend in ("imagecodecs", "rle") for p in pieces):
        _on_read_pool(host_into, [(p, dst[k]) for k, p in enumerate(pieces)])  # the GIL released: threads
        return False
    plugin = pooled_plugin(pieces)
    arr = None
    if plugin is not None:
        arr = host_parallel.decode_slices([p.layout for p in pieces], [p.value for p in pieces], plugin)
    if arr is not None:
        for k in range(len(pieces)):
            dst[k][...] = arr[k]
        return True
    for k, piece in enumerate(pieces):
        host_into(piece, dst[k])
    return False


def _summary(counts: collections.Counter) -> tuple[str, ...]:
    return tuple(f"{name}: {n} slice{'s' if n != 1 else ''}" for name, n in counts.items())


# --- device="cpu" --------------------------------------------------------------------------------


def _decode_slice(slot: int, layout, stored: np.ndarray, value: np.ndarray | None = None,
                  infos: list | None = None) -> Slice:
    piece = read_slice(slot, layout, into=value, read=value is None, infos=infos)
    host_into(piece, stored[slot])
    return piece


def _on_read_pool(fn, calls: list[tuple]) -> None:
    """``fn(*args)`` for each of ``calls``, side by side on kvdicom's read pool (here when already on it)."""
    if not host_codecs._concurrent(len(calls)):  # also False on a pool thread
        for args in calls:
            fn(*args)
        return
    host_read.wait_all([host_read.pool().submit(fn, *args) for args in calls])


def decode_cpu(layouts: list, stored: np.ndarray, slots: list[int], values: list | None = None,
               infos: list | None = None) -> tuple[str, ...]:
    """Each slice decoded on the host into ``stored[slot]``; returns which decoders ran.

    ``values``, ``infos``: per slice, its bytes read already by a header worker and the frame facts it
    checked (None: read / checked here)."""
    pool = host_read.pool()
    values = list(values) if values is not None else [None] * len(layouts)
    infos = list(infos) if infos is not None else [None] * len(layouts)
    if all(rle.problem(layout) is None for layout in layouts) and rle._concurrent(layouts[0], len(layouts)):
        # PackBits releases the GIL: read and decode each slice in its own task
        host_read.wait_all([pool.submit(_decode_slice, slot, layout, stored, value, info)
                            for slot, layout, value, info in zip(slots, layouts, values, infos)])
        return _summary(collections.Counter(host_decoder(layout) for layout in layouts))
    if any(rle.problem(layout) is not None for layout in layouts):  # not RLE: imagecodecs or the process pool
        first = read_slice(slots[0], layouts[0], into=values[0], read=values[0] is None, infos=infos[0])
        if choice(first).backend == "imagecodecs" and host_codecs._concurrent(len(layouts)):
            # imagecodecs releases the GIL: read and decode each slice in its own task, as RLE
            pieces = [first] + host_read.wait_all([pool.submit(_decode_slice, slot, layout, stored, value, info)
                                                   for slot, layout, value, info in zip(slots[1:], layouts[1:],
                                                                                        values[1:], infos[1:])])
            host_into(first, stored[slots[0]])
            return _summary(collections.Counter(host_decoder(p.layout, p) for p in pieces))
        pieces = [first] + read_all(layouts[1:], slots[1:], values=values[1:], infos=infos[1:])
        if host_into_all(pieces, [stored[slot] for slot in slots]):
            return _summary(collections.Counter(f"{host_decoder(p.layout, p)} (slices on "
                                                f"{process_pool.processes()} processes)" for p in pieces))
        return _summary(collections.Counter(host_decoder(p.layout, p) for p in pieces))
    counts = collections.Counter(host_decoder(layout) for layout in layouts)
    reads = [pool.submit(read_slice, slot, layout, None, value, value is None, info)
             for slot, layout, value, info in zip(slots, layouts, values, infos)]
    try:
        for slot, future in zip(slots, reads):  # decoding slice k overlaps the reads of the later ones
            host_into(future.result(), stored[slot])
    finally:
        for future in reads:
            future.cancel()
        concurrent.futures.wait(reads)
    return _summary(counts)


# --- device="cuda" -------------------------------------------------------------------------------


def _host_to_device(pieces: list[Slice], stored) -> None:
    """Host-decode ``pieces`` into one pinned buffer, then copy each run of consecutive slots once."""
    import cupy
    import cupyx

    staging = cupyx.empty_pinned((len(pieces),) + tuple(stored.shape[1:]), dtype=stored.dtype)
    host_into_all(pieces, staging)
    stream = cupy.cuda.get_current_stream()
    try:
        for k, slot, count in series_stage.runs([p.slot for p in pieces]):
            stored[slot:slot + count].set(staging[k:k + count], stream=stream)  # async: pinned source
    finally:
        stream.synchronize()  # the pinned buffer goes back to CuPy's pool only after its copies ran


def _host_to_host(pieces: list[Slice], stored: np.ndarray) -> None:
    """The same for a NumPy ``stored`` (the tests run :func:`decode_gpu`'s logic on the CPU this way)."""
    host_into_all(pieces, [stored[piece.slot] for piece in pieces])


def _scatter(stored, slots: list[int], out) -> None:
    """``stored[slots[k]] = out[k]``: one slice assignment where the slots are consecutive."""
    if slots == list(range(slots[0], slots[0] + len(slots))):
        stored[slots[0]:slots[0] + len(slots)] = out
    else:
        stored[array_module(stored).asarray(slots)] = out


def _decode_gpu(batch: list[Slice], stored) -> tuple[list[Slice], str]:
    """One nvImageCodec batch for ``batch``'s frames into their slots; returns (slices to redo on the host, why)."""
    first = batch[0]
    block = as_batch(first.layout, len(batch))
    try:
        raw, redo = gpu_codec._decode_batch([p.frames[0] for p in batch], block, first.how)
    except Exception as exc:  # noqa: BLE001  the host decoders then decide, naming any bad file
        return batch, f"nvImageCodec batch failed ({type(exc).__name__}: {exc})"
    out = corrections.finish(raw, block, first.how)
    blank = gpu_codec.blank_frames(out.reshape(len(batch), -1))
    _scatter(stored, [p.slot for p in batch], out)
    again = sorted(set(redo) | set(blank))
    return [batch[i] for i in again], "no image or all zeros from nvImageCodec"


def _pinned(nbytes: int) -> np.ndarray:
    import cupyx

    return cupyx.empty_pinned(nbytes, dtype=np.uint8)


def decode_gpu(layouts: list, stored, slots: list[int], values: list | None = None,
               infos: list | None = None) -> tuple[str, ...]:
    """Each slice into ``stored[slot]`` (CuPy): GPU batches where planned, the host for the rest.

    Every slice's codestream is read into one pinned buffer (:func:`read_all`), which nvImageCodec reads from.
    ``stored`` may be a NumPy array where ``gpu_codec._decode_batch`` is a NumPy stand-in (tests); the staging
    is then plain host memory. ``values``, ``infos``: slices' bytes the header workers read already and the
    frame facts they checked (:func:`read_all`).
    """
    staging = (lambda n: np.empty(n, dtype=np.uint8)) if isinstance(stored, np.ndarray) else _pinned
    unusable = gpu_codec.nvimgcodec_problem()
    pieces = read_all(layouts, slots, plan_frames=None if unusable else len(layouts),
                      allocate=None if values is not None else staging, values=values, infos=infos)
    batches, host = groups(pieces)
    counts: collections.Counter = collections.Counter()
    for piece in host:
        counts[f"{host_decoder(piece.layout, piece)} ({unusable or piece.choice.declined[0]})"] += 1
    for group in batches:
        calls = split(group)
        name = f"nvimgcodec ({group[0].layout.codec}, {len(group)} frames in "
        name += "one batch)" if len(calls) == 1 else f"{len(calls)} batches)"
        for batch in calls:
            again, why = _decode_gpu(batch, stored)
            if len(again) < len(batch):
                counts[name] += len(batch) - len(again)
            for piece in again:
                counts[f"{host_decoder(piece.layout, piece)} ({why})"] += 1
            host += again
    if host:
        to_stored = _host_to_host if isinstance(stored, np.ndarray) else _host_to_device
        to_stored(sorted(host, key=lambda p: p.slot), stored)
    return _summary(counts)


def decode_into(layouts: list, stored, device: str, slots: list[int] | None = None,
                values: list | None = None, infos: list | None = None) -> tuple[str, ...]:
    """Decode compressed ``layouts`` into ``stored[slots[k]]`` (default: slot k) on ``device``; the decoders run.

    ``values``: per layout, its bytes read already into the shared buffer by a header worker, or None;
    ``infos``: the frame facts that worker checked, or None.

    Returns ``"<decoder> (<why>): <n> slices"`` for each decoder that ran. Raises :class:`DicomLoadError`
    naming the file for a slice that cannot be read or decoded; ``stored`` is then partly written.
    """
    slots = list(range(len(layouts))) if slots is None else list(slots)
    if not layouts:
        return ()
    if not devices.named(device).on_gpu:
        return decode_cpu(layouts, stored, slots, values, infos)
    return decode_gpu(layouts, stored, slots, values, infos)

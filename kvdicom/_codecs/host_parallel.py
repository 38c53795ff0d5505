"""Frame-parallel host decoding: one compressed file's frames decoded side by side in worker processes.

pydicom's decoding plugins hold the GIL while they decode, so threads do not
help (2-core CPU dev machine, one thread vs two: 16 × 512² int16 JPEG-LS
428 vs 416 ms; lossless JPEG 16 × 512² 12-bit 227 vs 233 ms; JPEG 2000
lossless 32 × 512² 1331 vs 1262 ms). Processes do: the frames of a
multi-frame file are split into contiguous chunks decoded on kvdicom's
process pool (:mod:`kvdicom._io.process_pool`), each frame by pydicom's own
``Decoder.as_array(value, index=i)`` with the reference plugin pinned.

No frame is pickled: the encapsulated value goes to the workers through an
anonymous memory file (``memfd``, opened by the workers as
``/proc/<parent>/fd/<n>``; not ``/dev/shm``, which containers often cap at
64 MiB), and each worker ``pwrite``\\ s its decoded frames into a second one,
which the parent maps, copy on write, as the returned array. Measured on the
2-core CPU dev machine, 2 workers, 256 × 512² int16 HTJ2K (128 MiB decoded),
median of 8, each followed by one sum over the array: frames pickled back
and copied into place took 2519 ms, 841 ms of it the parent's CPU; the
memory files 1722 ms, 125 ms of parent CPU (16 × 512² 12-bit lossless
JPEG: 266 vs 268 ms, 12.6 vs 9.1 ms).

Exactness. pydicom's whole-value decode (``pixel_array``) applies its
corrections (JPEG 2000 / JPEG-LS sign, JPEG colour space) once, from the
*last* frame's codestream; ``as_array(index=i)`` applies them from frame
``i``'s. The two agree when every frame's codestream parameters, parsed by
pydicom's own parsers, are equal; the workers report them, and where they
differ, or any worker reports an error, or a frame comes back in another
shape or dtype, the file is decoded again in-process (so an error is exactly
the one the in-process path raises, naming the file). A worker that dies
(killed, out of memory) or workers that cannot start break the pool: the
file is decoded in-process, and so is everything after it.
"""

from __future__ import annotations

import errno
import hashlib
import math
import mmap
import os
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pydicom
from pydicom.uid import UID, JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes

from kvdicom._io import process_pool

#: Reference plugins measured to hold the GIL while decoding (pylibjpeg: its libjpeg, openjpeg and rle
#: back ends; pyjpegls), so that only processes decode their frames side by side.
GIL_BOUND_PLUGINS = ("pylibjpeg", "pyjpegls")
#: Files with fewer frames decode in-process (one frame has nothing to share out).
POOL_MIN_FRAMES = 2
#: ... or decoding to fewer bytes. The hand-off costs a few ms per file: on the 2-core CPU dev machine,
#: small files forced into the pool took 6.6 ms against 2.6 ms in-process (4 × 64 × 80 RGB JPEG, best
#: of 15) and 5.4 against 2.5 ms (4 × 128² int16 HTJ2K); the parent's own CPU time per pooled file was
#: 5-11 ms for 16-32 frames of 512² int16 (two memory files, one mapping, the tasks). One MiB of decoded
#: frames takes 20 ms or more with these plugins there (JPEG-LS 26 ms per 512² int16 frame; JPEG
#: baseline 30 × 240 × 320 RGB, 6.9 MB, 130 ms), so at the threshold the hand-off is at most ~20%.
POOL_MIN_DECODED_BYTES = 1 << 20
#: ... or on machines with fewer cores than this. On the 2-core CPU dev machine (shared with other jobs,
#: load 3+) two worker processes were no reliable gain, medians of 15 warm rounds, one process vs pool:
#: JPEG-LS 16 × 512² int16 447 vs 523 ms; lossless JPEG 16 × 512² 12-bit 259 vs 290 ms; HTJ2K 32 × 512²
#: 182 vs 282 ms; JPEG baseline 30 × 240 × 320 YBR 369 vs 296 ms. In a quieter run (7 rounds, the pool
#: timed twice): JPEG 2000 32 × 512² 1224 vs 1082 / 730 ms, lossless JPEG 266 vs 174 / 158 ms, HTJ2K 166
#: vs 139 / 141 ms, JPEG-LS 433 vs 464 / 469 ms. Most of what is lost is waiting for a core: with one
#: worker, the worker's CPU time per file against in-process decoding was 223 vs 232 ms (lossless JPEG),
#: 443-454 vs 412-425 ms (JPEG-LS), 188-206 vs 143-152 ms (HTJ2K, 32 frames; the worker path's own
#: reads and writes profile at ~10 ms of that, the rest is unexplained). With 16 cores the pool should
#: approach the core count on files of 16 frames or more: to confirm on the device with
#: a one-off measure_host_decode profiler (since removed).
POOL_MIN_PROCESSES = 4
#: Chunks per worker process: small enough to balance frames of uneven cost, large enough that the
#: per-task cost (opening the two memory files, a pickled job) stays small.
CHUNKS_PER_WORKER = 2

_unusable: str | None = None  #: why the workers cannot decode here (found once, then in-process)


def _pool_problem(plugin: str, units: int, unit: str, decoded: int) -> str | None:
    """The thresholds and pool state every pooled decode must pass (``units``: frames or slices)."""
    if plugin not in GIL_BOUND_PLUGINS:
        return f"pydicom plugin {plugin!r} is not known to hold the GIL"
    if units < POOL_MIN_FRAMES:
        return f"{units} {unit}(s): fewer than {POOL_MIN_FRAMES}"
    if decoded < POOL_MIN_DECODED_BYTES:
        return f"{decoded} decoded bytes: fewer than {POOL_MIN_DECODED_BYTES}"
    if process_pool.processes() < POOL_MIN_PROCESSES:
        return f"{process_pool.processes()} core(s): fewer than {POOL_MIN_PROCESSES}"
    if process_pool.broken():
        return "kvdicom's process pool broke earlier in this process"
    return _unusable


def problem(layout, plugin: str) -> str | None:
    """Why ``layout``'s whole-value host decode with ``plugin`` stays in-process, or None to use the pool."""
    if layout.frame_table.split_on_eoi and plugin in GIL_BOUND_PLUGINS:
        return "frames split on JPEG markers: known only while decoding"
    return _pool_problem(plugin, layout.number_of_frames, "frame", layout.decoded_nbytes)


def decoder(layout, plugin: str) -> str:
    """Which pydicom plugin decodes ``layout`` on the host, and where (benchmark records): "pylibjpeg" or
    "pylibjpeg (frames on 16 processes)"."""
    if problem(layout, plugin) is None:
        return f"{plugin} (frames on {process_pool.processes()} processes)"
    return plugin


def _fd_folder() -> str:
    """Where a worker opens this process's descriptors (the memory files)."""
    return f"/proc/{os.getpid()}/fd"


def _memfd(size: int) -> int:
    fd = os.memfd_create("kvdicom-frames", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _chunks(count: int) -> list[tuple[int, int]]:
    """``range(count)`` cut in about :data:`CHUNKS_PER_WORKER` chunks per worker process, as (start, stop)."""
    size = max(1, math.ceil(count / (process_pool.processes() * CHUNKS_PER_WORKER)))
    return [(s, min(s + size, count)) for s in range(0, count, size)]


def _run_on_pool(values: list, dst_nbytes: int, tasks) -> tuple[list, mmap.mmap] | None:
    """Run worker tasks over ``values`` in one memory file and a ``dst_nbytes`` output memory file.

    ``tasks(src, dst, offsets)`` returns the ``(function, args)`` to submit, given the two files'
    descriptors and each value's offset in the first. Returns (each task's result, the output mapped
    privately: copy on write, so a process forked later cannot write into the caller's array; not
    populated, as populating a private writable mapping copies every page), or None where the pool
    cannot do it (the caller then decodes in-process): no memory files, workers that cannot start or
    died (the pool is then marked broken), a worker failing outside the decoder.
    """
    global _unusable
    offsets = np.concatenate([[0], np.cumsum([v.nbytes for v in values])]).astype(int).tolist()
    src = dst = -1
    try:
        try:
            src = _memfd(max(1, offsets[-1]))
            for value, offset in zip(values, offsets):
                _write_all(src, memoryview(np.ascontiguousarray(value)).cast("B"), offset)
            dst = _memfd(dst_nbytes)
        except (AttributeError, OSError) as exc:  # no memfd_create here (not Linux, a sandbox), or no room
            if isinstance(exc, AttributeError) or exc.errno in (errno.ENOSYS, errno.EPERM):
                _unusable = f"no memory files here ({type(exc).__name__}: {exc})"
            return None
        try:
            pool = process_pool.pool()
            pool.start()
        except process_pool.PoolUnavailable:  # shut down, or all its workers busy: in-process this time
            return None
        except (BrokenProcessPool, RuntimeError, OSError):  # cannot start workers here
            process_pool.mark_broken()
            return None
        calls = tasks(src, dst, offsets)
        results: list = [None] * len(calls)
        try:
            # the first failure ends the run: no task is sent after it, and it is raised once the others are done
            for index, result in pool.run(calls):
                results[index] = result
        except process_pool.PoolUnavailable:
            return None
        except BrokenProcessPool:  # a worker died
            process_pool.mark_broken()
            return None
        except Exception as exc:  # noqa: BLE001  a worker could not use the memory files (no /proc?): not again
            _unusable = f"a decode worker failed outside the decoder ({type(exc).__name__}: {exc})"
            return None
        return results, mmap.mmap(dst, dst_nbytes, flags=mmap.MAP_PRIVATE)
    finally:
        for fd in (src, dst):
            if fd >= 0:
                os.close(fd)


def decode(layout, value: np.ndarray, plugin: str) -> np.ndarray | None:
    """Every frame of ``layout`` decoded on the pool into one array, or None: then decode in-process.

    None where the pool cannot run (it broke, or breaks now), a worker reports an error, or the frames'
    codestream parameters differ (see the module docstring).
    """
    frames = layout.number_of_frames
    frame_shape = layout.frame_shape
    frame_nbytes = math.prod(frame_shape) * layout.dtype.itemsize
    options = dict(layout.options)
    options["number_of_frames"] = frames

    def tasks(src, dst, offsets):
        job = (layout.path, str(layout.transfer_syntax), options, plugin, _fd_folder(), src, dst, frame_nbytes,
               frame_shape, layout.dtype.str)
        return [(decode_chunk, (job, start, stop)) for start, stop in _chunks(frames)]

    ran = _run_on_pool([value], frame_nbytes * frames, tasks)
    if ran is None:
        return None
    results, buffer = ran
    if any(isinstance(r, str) for r in results):  # a frame failed: the in-process decode raises its own error
        return None
    facts = {fact for result in results for fact in result}
    if len(facts) != 1:  # frames whose corrections differ: only the whole-value decode is pixel_array
        return None
    return np.frombuffer(buffer, dtype=layout.dtype).reshape(layout.shape)


def _facts(tsyntax: UID, frame: bytes) -> str:
    """pydicom's own codestream parameters of one frame, the ones its corrections read, as a digest."""
    from pydicom.pixels.utils import _get_jpg_parameters, get_j2k_parameters

    if tsyntax in JPEG2000TransferSyntaxes:
        info = get_j2k_parameters(frame)
    elif tsyntax in JPEGLSTransferSyntaxes or tsyntax in JPEGTransferSyntaxes:
        info = _get_jpg_parameters(frame)
    else:
        return ""
    return hashlib.blake2b(repr(sorted(info.items())).encode(), digest_size=16).hexdigest()


def decode_chunk(job: tuple, start: int, stop: int) -> list[str] | str:
    """Worker: decode frames ``start``…``stop - 1`` into the output memory file.

    Returns each frame's codestream facts (:func:`_facts`), or a string: why a frame could not be decoded
    here (the parent then decodes the file in-process, which raises its own error).
    """
    from pydicom.encaps import get_frame

    path, tsyntax, options, plugin, fds, src, dst, frame_nbytes, frame_shape, dtype = job
    tsyntax = UID(tsyntax)
    decoder = pydicom.pixels.get_decoder(tsyntax)
    facts = []
    with open(f"{fds}/{src}", "rb") as value, open(f"{fds}/{dst}", "r+b") as out:
        for index in range(start, stop):
            try:
                frame = get_frame(value, index, number_of_frames=options["number_of_frames"],
                                  extended_offsets=options.get("extended_offsets"))
                facts.append(_facts(tsyntax, frame))
                # validate=False: inspect validated these options (DecodeRunner._validate_options), 0.4 ms a frame
                arr, _ = decoder.as_array(value, index=index, validate=False, decoding_plugin=plugin, **options)
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except BaseException as exc:  # noqa: BLE001  plugins' Rust panics are BaseExceptions
                return f"{path}: frame {index}: {type(exc).__name__}: {exc}"
            if arr.shape != frame_shape or arr.dtype != np.dtype(dtype):
                return f"{path}: frame {index} decoded to {arr.shape} {arr.dtype}, not {frame_shape} {dtype}"
            _write_all(out.fileno(), memoryview(np.ascontiguousarray(arr)).cast("B"), index * frame_nbytes)
    return facts


# --- the slices of a series: one whole-value decode per file, files side by side -----------------------


def series_problem(layouts: list, plugin: str) -> str | None:
    """Why the host-route slices ``layouts`` of a series decode one after the other in-process, or None.

    Each slice is a single-frame file, decoded whole (as ``pixel_array`` decodes it) by one worker, so no
    codestream facts need to agree across slices; the thresholds are the multi-frame ones, counted over
    the slices. Measured on the 2-core CPU dev machine (quiet, medians of 7, ``load_series(device="cpu")``
    of 16 × 512² slices with ``ct`` headers, in-process vs the pool forced on its 2 processes): lossless
    JPEG 12-bit 277 vs 137 ms, JPEG-LS 410 vs 249 ms, JPEG 2000 lossless 582 vs 345 ms.
    """
    if any(layout.frame_table.split_on_eoi or layout.number_of_frames != 1 for layout in layouts):
        return "a slice that is not one frame located from its offset table"
    return _pool_problem(plugin, len(layouts), "slice", sum(layout.decoded_nbytes for layout in layouts))


def decode_slices(layouts: list, values: list, plugin: str) -> np.ndarray | None:
    """Each slice's whole value decoded by a worker into one array ``(slices,) + frame shape``, or None.

    None where the pool cannot run or a worker reports an error or an unexpected array: the caller then
    decodes in-process, which raises its own error naming the file. ``values``: the encapsulated values
    as read (``compressed.read_frames``), one per layout; every layout has the first one's frame shape
    and dtype (a series that :func:`kvdicom._series.order.check_stackable` accepted).
    """
    first = layouts[0]
    frame_shape = first.frame_shape
    frame_nbytes = math.prod(frame_shape) * first.dtype.itemsize

    def tasks(src, dst, offsets):
        items = [(k, layout.path, str(layout.transfer_syntax), dict(layout.options), offsets[k], values[k].nbytes)
                 for k, layout in enumerate(layouts)]
        job = (plugin, _fd_folder(), src, dst, frame_nbytes, frame_shape, first.dtype.str)
        return [(decode_slice_chunk, (job, items[start:stop])) for start, stop in _chunks(len(items))]

    ran = _run_on_pool(values, frame_nbytes * len(layouts), tasks)
    if ran is None:
        return None
    results, buffer = ran
    if any(results):  # a slice failed: the in-process decode raises its own error
        return None
    return np.frombuffer(buffer, dtype=first.dtype).reshape((len(layouts),) + frame_shape)


def decode_slice_chunk(job: tuple, items: list) -> str:
    """Worker: decode each item's whole value as ``route.host_decode`` does in-process, into its slot.

    Returns "" or why a slice could not be decoded here.
    """
    plugin, fds, src, dst, frame_nbytes, frame_shape, dtype = job
    with open(f"{fds}/{src}", "rb") as values, open(f"{fds}/{dst}", "r+b") as out:
        for k, path, tsyntax, options, offset, length in items:
            try:
                value = os.pread(values.fileno(), length, offset)
                if len(value) != length:
                    return f"{path}: read {len(value)} of {length} bytes from the memory file"
                options["number_of_frames"] = 1
                decoder = pydicom.pixels.get_decoder(UID(tsyntax))
                arr, _ = decoder.as_array(value, validate=False, decoding_plugin=plugin, **options)
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except BaseException as exc:  # noqa: BLE001  plugins' Rust panics are BaseExceptions
                return f"{path}: {type(exc).__name__}: {exc}"
            arr = arr.reshape(arr.shape[1:]) if arr.ndim == len(frame_shape) + 1 and arr.shape[0] == 1 else arr
            if arr.shape != frame_shape or arr.dtype != np.dtype(dtype):
                return f"{path}: decoded to {arr.shape} {arr.dtype}, not {frame_shape} {dtype}"
            _write_all(out.fileno(), memoryview(np.ascontiguousarray(arr)).cast("B"), k * frame_nbytes)
    return ""

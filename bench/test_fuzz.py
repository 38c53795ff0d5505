"""Fuzz: corrupted files either load exactly as pydicom would or raise DicomLoadError.

Valid small files from :func:`fixtures.strategies.dicom_specs` are mutated
(truncated, header bytes overwritten, Image Pixel values and element lengths
rewritten, elements deleted). For every mutant, kvdicom must

* agree with pydicom (``check_load`` returns ``None``): the same array, or a
  :class:`kvdicom.DicomLoadError` where pydicom fails;
* raise nothing but :class:`kvdicom.DicomLoadError`;
* finish within :data:`EXAMPLE_TIMEOUT_S` (a signal alarm, so a hang fails
  the example instead of the run);
* never ask ``kvdicom._loader._allocate`` for more bytes than the file holds,
  and keep the peak Python allocation (tracemalloc) below the file size plus
  :data:`HEAP_SLACK_BYTES`.

The same mutants are also loaded with the file changed between the header
parse and the pixel read (:data:`FAULTS`: swapped for a file with the same
header and other pixels, deleted, turned into a FIFO or a directory,
truncated, rewritten in place with its mtime restored): that must always be a :class:`kvdicom.DicomLoadError` naming the
file, never another exception, a hang, or the other file's pixels. Compressed
files (:data:`COMPRESSED_BASES`, whole or truncated) get the same faults, plus
a replacement by an identical copy (only the identity differs), fired before
the fragment walk of the header parse or before the pixel read.

Series (:data:`SERIES_BASES`: native, RLE, JPEG 2000) with up to two slices mutated the same ways are loaded
in-process and on the header workers: the volume is ``np.stack`` of pydicom's arrays of the files it names, or a
:class:`kvdicom.DicomLoadError` naming the folder or a file in it; ``kvdicom.dask.scan`` of the folder plans what
then loads, and refuses nothing that loads.

Where users run kvdicom: mutants are loaded in a child forked from a process whose worker processes and
read pool are running (the same outcome as in the parent, within the time limit), and a process looping
over mutants and series with its workers busy is killed (SIGKILL) at a drawn moment: its workers must
exit and must not hold its output open.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import kvdicom
import kvdicom._loader
from fixtures import mutate
from fixtures.oracle import check_load, mismatch, pydicom_pixels
from fixtures.series import SeriesSpec, write_series
from fixtures.spec import TRANSFER_SYNTAXES, DicomSpec
from fixtures.strategies import dicom_specs
from fixtures.time_limit import TimeLimitExceeded, time_limit
from fixtures.writer import write_dicom
from kvdicom._header import encapsulated
from kvdicom._header.layout import PIXEL_ELEMENTS
from kvdicom._io import device_read, host_read, process_pool
from kvdicom._series import headers
from tests.worker_targets import alive

EXAMPLE_TIMEOUT_S = 20
HEAP_SLACK_BYTES = 8 << 20
#: Mutants stay small: property tests are about layouts, not sizes.
MAX_PIXELS = 512

PIXEL_TAGS = tuple(tag for tag, _ in PIXEL_ELEMENTS)
US_INTERESTING = [0, 1, 2, 3, 4, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 128, 255, 256,
                  0x7FFF, 0x8000, 0xFFFE, 0xFFFF]
NUMBER_OF_FRAMES_VALUES = ["0", "-1", "-7", "1", "2", "3", "65535", "99999999999", "2147483648",
                           "abc", "", " ", "1.5", "2.0", "3.5", "2\\3", "+2", " 4", "1e3", "0x10", "\0\0"]
PHOTOMETRIC_VALUES = ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR",
                      "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420", "HSV", "ARGB", "CMYK", "rgb", "", "X" * 17,
                      "MONOCHROME2\\RGB"]
DS_VALUES = ["1", "0", "-1", "2.5", "-1024", "1e3", "1E-3", "nan", "inf", "-inf", "abc", "", "1\\2",
             "1.7976931348623157e308", "0.0000001"]


@contextlib.contextmanager
def recorded_allocations():
    """Patch ``kvdicom._loader._allocate`` to record each requested size; restore it after."""
    sizes: list[int] = []
    original = kvdicom._loader._allocate

    def recording(layout, device):
        sizes.append(layout.nbytes)
        return original(layout, device)

    kvdicom._loader._allocate = recording
    try:
        yield sizes
    finally:
        kvdicom._loader._allocate = original


def bounded_load(path: Path, device: str, *, force: bool, rescale: bool = False):
    """kvdicom.load, asserting it stays within the file's size; returns the array or the DicomLoadError."""
    file_size = path.stat().st_size
    tracemalloc.start()
    try:
        with recorded_allocations() as sizes:
            try:
                result = kvdicom.load(path, device, force=force, rescale=rescale)
            except kvdicom.DicomLoadError as exc:
                result = exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert all(n <= file_size for n in sizes), f"asked to allocate {sizes} bytes for a {file_size}-byte file"
    assert peak <= file_size + HEAP_SLACK_BYTES, f"peak Python allocation {peak} bytes for a {file_size}-byte file"
    if isinstance(result, kvdicom.DicomLoadError):
        assert str(path) in str(result), f"error does not name the file: {result}"
    return result


@dataclass
class Mutant:
    spec: DicomSpec
    data: bytes
    force: bool
    edits: list[str] = field(default_factory=list)


def _encoding(spec: DicomSpec) -> dict:
    """Encoding arguments for :mod:`fixtures.mutate` (needed only for files without meta)."""
    if spec.file_meta:
        return {}
    uid = TRANSFER_SYNTAXES[spec.transfer_syntax]
    return {"implicit": uid == TRANSFER_SYNTAXES["implicit_le"], "little": uid != TRANSFER_SYNTAXES["explicit_be"]}


@functools.lru_cache(maxsize=512)
def _original(spec: DicomSpec) -> tuple[bytes, int]:
    """The valid file of ``spec`` and its pixel data offset (from kvdicom.inspect)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "original.dcm"
        write_dicom(spec, path)
        data = path.read_bytes()
        try:
            offset = kvdicom.inspect(path, force=not spec.file_meta).offset
        except kvdicom.DicomLoadError:  # a file pydicom refuses too (e.g. YBR_FULL_422 padded by a third)
            # where pydicom found the pixel data (fixtures.mutate's walk takes no undefined lengths: clinical headers)
            ds = pydicom.dcmread(path, force=not spec.file_meta, defer_size=0)
            item = next(ds.get_item(tag) for tag in PIXEL_TAGS if tag in ds)
            offset = getattr(item, "value_tell", None) or item.file_tell
    return data, offset


@st.composite
def mutants(draw) -> Mutant:
    spec = draw(dicom_specs(max_pixels=MAX_PIXELS, headers=True))
    data, pixel_offset = _original(spec)
    force = not spec.file_meta or draw(st.booleans())
    return _edited(draw, Mutant(spec, data, force), pixel_offset, _encoding(spec))


def _edited(draw, mutant: Mutant, pixel_offset: int, enc: dict) -> Mutant:
    """``mutant`` with one to three edits drawn: truncation, header bytes, Image Pixel values, element lengths,
    pixel data resized, Bits Allocated, an element deleted."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "header_bytes", "image_pixel", "image_pixel", "length",
                                     "pixel_length", "pixel_resize", "bits_allocated", "delete"]))
        data = mutant.data
        try:
            elements = mutate.walk(data, **enc)
        except (mutate.WalkError, UnicodeDecodeError, IndexError, ValueError):
            elements = None  # an earlier edit broke the structure: only byte edits apply now
            kind = draw(st.sampled_from(["truncate", "header_bytes"]))
        if kind == "truncate":
            # mostly around and inside the pixel data, where the length checks are
            at = draw(st.one_of(st.integers(max(0, min(pixel_offset, len(data)) - 16), len(data)),
                                st.integers(0, len(data))))
            mutant.data, edit = data[:at], f"truncate at {at} of {len(data)}"
        elif kind == "header_bytes":
            end = min(pixel_offset, len(data))
            if end == 0:
                continue
            at = draw(st.integers(0, end - 1))
            new = draw(st.binary(min_size=1, max_size=min(8, end - at)))
            mutant.data, edit = data[:at] + new + data[at + len(new):], f"bytes {new.hex()} at {at}"
        elif kind == "image_pixel":
            name = draw(st.sampled_from(sorted(mutate.IMAGE_PIXEL)))
            tag, vr = mutate.IMAGE_PIXEL[name]
            if vr == "US":
                value = draw(st.one_of(
                    st.sampled_from(US_INTERESTING), st.integers(0, 0xFFFF),
                    st.binary(max_size=5),  # wrong value length
                ))
            elif vr == "IS":
                value = draw(st.one_of(st.sampled_from(NUMBER_OF_FRAMES_VALUES), st.integers(-(2**40), 2**40)))
            elif vr == "DS":
                value = draw(st.sampled_from(DS_VALUES))
            else:
                value = draw(st.one_of(st.sampled_from(PHOTOMETRIC_VALUES), st.text("ABCMOR12_ ", max_size=12)))
            mutant.data, edit = mutate.set_value(data, tag, vr, value, **enc), f"{name} = {value!r}"
        elif kind == "pixel_resize":
            # New pixel data of a size that may fit the rewritten Image Pixel values.
            target = next((e for e in elements if e.tag in PIXEL_TAGS), None)
            if target is None:
                continue
            value = data[target.value_at : target.end]
            size = draw(st.one_of(
                st.sampled_from([0, 1, len(value) // 2, len(value) * 3 // 2, len(value) * 3 // 4, len(value) * 2,
                                 len(value) * 3, len(value) + 1, len(value) - 1]),
                st.integers(0, 2 * len(value) + 16),
            ))
            size = max(0, size)
            new = (value * (size // max(1, len(value)) + 1))[:size]
            mutant.data = mutate.set_value(data, target.tag, target.vr or "OB", new, **enc)
            edit = f"pixel data resized {len(value)} -> {size}"
        elif kind == "bits_allocated":
            # Bits Allocated and a pixel data length that agrees with it, so the
            # length checks pass and the width itself is what is tested.
            target = next((e for e in elements if e.tag in PIXEL_TAGS), None)
            if target is None:
                continue
            bits = draw(st.sampled_from([1, 8, 16, 24, 32, 40, 48, 56, 64, 72, 128]))
            size = -(-mutant.spec.pixel_count * bits // 8)
            value = data[target.value_at : target.end] or b"\x5a"
            data = mutate.set_value(data, mutate.IMAGE_PIXEL["BitsAllocated"][0], "US", bits, **enc)
            filled = (value * (size // len(value) + 1))[:size]
            mutant.data = mutate.set_value(data, target.tag, target.vr or "OB", filled, **enc)
            edit = f"BitsAllocated = {bits} with {size} bytes of pixel data"
        elif kind == "delete":
            name = draw(st.sampled_from(sorted(mutate.IMAGE_PIXEL)))
            mutant.data, edit = mutate.delete(data, mutate.IMAGE_PIXEL[name][0], **enc), f"delete {name}"
        else:
            if kind == "pixel_length":
                target = next((e for e in elements if e.tag in PIXEL_TAGS), None)
            else:
                target = draw(st.sampled_from(elements)) if elements else None
            if target is None:
                continue
            limit = 0xFFFFFFFF if target.length_size == 4 else 0xFFFF
            length = draw(st.one_of(
                st.sampled_from([0, 1, target.length - 1, target.length + 1, target.length + 2,
                                 len(data), len(data) + 1, limit - 1, limit]),
                st.integers(0, limit),
            ))
            length = max(0, min(length, limit))
            mutant.data = mutate.set_length(data, target.tag, length, **enc)
            edit = f"length of ({target.tag >> 16:04X},{target.tag & 0xFFFF:04X}) {target.length} -> {length}"
        mutant.edits.append(edit)
    return mutant


@pytest.fixture(scope="session")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="session")
def warm_kvdicom(fuzz_dir):
    """Build lazily cached tables and import pydicom's plugins before memory is measured."""
    from kvdicom._pixels.color import _host_table

    _host_table()
    for spec in (DicomSpec(rows=2, cols=2), DicomSpec(rows=2, cols=2, bits_allocated=1, bits_stored=1)):
        path = fuzz_dir / f"warm-{spec.key()}.dcm"
        write_dicom(spec, path)
        kvdicom.load(path, "cpu", rescale=True)
        check_load(path, "cpu", rescale=True)


def _check_mutant(fuzz_dir, mutant: Mutant, device: str, rescale: bool):
    note(f"spec={mutant.spec} force={mutant.force} rescale={rescale} edits={mutant.edits}")
    path = fuzz_dir / f"mutant-{device}.dcm"
    path.write_bytes(mutant.data)
    with time_limit(EXAMPLE_TIMEOUT_S):
        try:
            bounded_load(path, device, force=mutant.force, rescale=rescale)
            problem = check_load(path, device, force=mutant.force, rescale=rescale)
        except (AssertionError, TimeLimitExceeded):
            raise
        except Exception as exc:
            pytest.fail(f"kvdicom raised {type(exc).__name__} (not DicomLoadError): {exc}; edits={mutant.edits}")
    assert problem is None, f"{problem}; edits={mutant.edits}"


FUZZ_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                HealthCheck.data_too_large])


@FUZZ_SETTINGS
@given(mutant=mutants(), rescale=st.booleans())
def test_cpu_mutants_load_like_pydicom_or_raise_dicom_load_error(warm_kvdicom, fuzz_dir, mutant, rescale):
    _check_mutant(fuzz_dir, mutant, "cpu", rescale)


@pytest.mark.gpu
@FUZZ_SETTINGS
@given(mutant=mutants(), rescale=st.booleans())
def test_gpu_mutants_load_like_pydicom_or_raise_dicom_load_error(cuda, warm_kvdicom, fuzz_dir, mutant, rescale):
    _check_mutant(fuzz_dir, mutant, "cuda", rescale)


# --- files changed mid-load ------------------------------------------------------------------

FAULTS = ("swap", "delete", "fifo", "directory", "truncate", "rewrite_keep_mtime")


def _apply_fault(path: Path, fault: str, data: bytes, pixel_offset: int) -> None:
    """Change ``path`` the way ``fault`` says, as a concurrent writer would."""
    if fault == "copy":
        # Another file with the same bytes: only its identity (inode, mtime) differs.
        other = path.with_name(path.name + ".other")
        other.write_bytes(path.read_bytes())
        os.replace(other, path)
    elif fault == "swap":
        # Same header, other pixels, same size: only the file's identity tells.
        other = path.with_name(path.name + ".other")
        other.write_bytes(data[:pixel_offset] + bytes(b ^ 0xFF for b in data[pixel_offset:]))
        os.replace(other, path)
    elif fault == "truncate":
        os.truncate(path, max(0, len(data) - 1))
    elif fault == "rewrite_keep_mtime":
        # Other pixels written into the same inode, size kept, mtime put back (os.utime): only the inode change
        # time tells. A rewrite in the clock tick that wrote the file changes nothing any stat can see, so wait
        # for the tick to pass first (the kernel's coarse clock: 4 ms at most at HZ=250).
        before = os.stat(path)
        time.sleep(0.02)
        with open(path, "r+b") as f:
            f.seek(pixel_offset)
            f.write(bytes(b ^ 0xFF for b in data[pixel_offset:]))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        path.unlink()
        if fault == "fifo":
            os.mkfifo(path)
        elif fault == "directory":
            path.mkdir()


@contextlib.contextmanager
def fault_before_pixel_read(reader, path: Path, fault: str, data: bytes, pixel_offset: int, name: str = "read_into"):
    """Patch ``reader.<name>`` (host or device ``read_into``) to apply ``fault`` once, just before it runs."""
    original = getattr(reader, name)
    fired = []

    def faulty(*args, **kwargs):
        if not fired:
            fired.append(fault)
            _apply_fault(path, fault, data, pixel_offset)
        return original(*args, **kwargs)

    setattr(reader, name, faulty)
    try:
        yield fired
    finally:
        setattr(reader, name, original)


def _expect_refusal(fuzz_dir, name: str, mutant: Mutant, fault: str, patched: tuple, device: str, when: str):
    """Load ``mutant`` from ``fuzz_dir/name`` with ``fault`` applied just before ``patched`` (module, attribute)
    runs: the load must raise a DicomLoadError naming the file. ``when`` says where, for the failure messages.
    """
    path = fuzz_dir / name
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.write_bytes(mutant.data)
    _, pixel_offset = _original(mutant.spec)
    module, attribute = patched
    with (time_limit(EXAMPLE_TIMEOUT_S),
          fault_before_pixel_read(module, path, fault, mutant.data, pixel_offset, attribute) as fired):
        try:
            result = kvdicom.load(path, device, force=mutant.force)
        except kvdicom.DicomLoadError as exc:
            assert exc.path == str(path), f"error does not name the file: {exc}"
            return
        except TimeLimitExceeded:
            raise
        except Exception as exc:
            pytest.fail(f"kvdicom raised {type(exc).__name__} (not DicomLoadError) after a {fault} {when}: {exc}; "
                        f"edits={mutant.edits}")
    pytest.fail(f"kvdicom returned a {type(result).__name__} of shape {result.shape} although the file was "
                f"changed ({fault} {when}, fired={bool(fired)}); edits={mutant.edits}")


def _check_changed_mid_load(fuzz_dir, mutant: Mutant, fault: str, device: str):
    note(f"spec={mutant.spec} force={mutant.force} fault={fault} edits={mutant.edits}")
    reader = device_read if device == "cuda" else host_read
    _expect_refusal(fuzz_dir, f"changing-{device}.dcm", mutant, fault, (reader, "read_into"), device,
                    "between header and pixel read")


@FUZZ_SETTINGS
@given(mutant=mutants(), fault=st.sampled_from(FAULTS))
def test_cpu_files_changed_mid_load_raise_dicom_load_error(warm_kvdicom, fuzz_dir, mutant, fault):
    _check_changed_mid_load(fuzz_dir, mutant, fault, "cpu")


@pytest.mark.gpu
@FUZZ_SETTINGS
@given(mutant=mutants(), fault=st.sampled_from(FAULTS))
def test_gpu_files_changed_mid_load_raise_dicom_load_error(cuda, warm_kvdicom, fuzz_dir, mutant, fault):
    _check_changed_mid_load(fuzz_dir, mutant, fault, "cuda")


# --- compressed files changed mid-load -----------------------------------------------------------

#: Small compressed files of every codec whose encoder the suite always has (pydicom, pylibjpeg-openjpeg).
COMPRESSED_BASES = (
    DicomSpec(frames=2, rows=16, cols=16, bits_allocated=16, bits_stored=16, signed=True, transfer_syntax="rle"),
    DicomSpec(frames=3, rows=8, cols=8, bits_allocated=8, bits_stored=8, samples_per_pixel=3, transfer_syntax="rle"),
    DicomSpec(frames=2, rows=32, cols=32, bits_allocated=16, bits_stored=12, transfer_syntax="jpeg2000_lossless"),
    DicomSpec(frames=3, rows=32, cols=32, bits_allocated=16, bits_stored=16, signed=True,
              transfer_syntax="jpeg2000_lossless", offset_table="eot"),
    DicomSpec(frames=2, rows=16, cols=16, bits_allocated=16, bits_stored=16, signed=True, transfer_syntax="rle",
              header="enhanced_mr"),
)
#: Where the fault fires: before the fragment walk (inside the header parse) or before the pixel read.
COMPRESSED_FAULT_POINTS = {"walk": (encapsulated, "locate"), "read": (host_read, "read_into")}


@st.composite
def compressed_mutants(draw) -> Mutant:
    """A compressed base file, whole (most often: the load must otherwise succeed) or truncated."""
    pytest.importorskip("openjpeg", reason="compressed fuzz cases need pylibjpeg-openjpeg (requirements.txt)")
    spec = draw(st.sampled_from(COMPRESSED_BASES))
    data, pixel_offset = _original(spec)
    mutant = Mutant(spec, data, force=False)
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(max(0, pixel_offset - 16), len(data)))
        mutant.data = data[:at]
        mutant.edits.append(f"truncate at {at} of {len(data)}")
    return mutant


@st.composite
def compressed_header_mutants(draw) -> Mutant:
    """A compressed base file with one to three edits drawn as :func:`mutants` draws them (its header, the
    encapsulated value's length, truncation...)."""
    pytest.importorskip("openjpeg", reason="compressed fuzz cases need pylibjpeg-openjpeg (requirements.txt)")
    spec = draw(st.sampled_from(COMPRESSED_BASES))
    data, pixel_offset = _original(spec)
    return _edited(draw, Mutant(spec, data, force=False), pixel_offset, {})


def _check_compressed_mutant(fuzz_dir, mutant: Mutant, device: str) -> None:
    """``check_load``: pydicom's array (lossless: equal), or a DicomLoadError where pydicom fails; nothing else,
    within the time limit. No allocation bound: a compressed file decodes to more than its bytes."""
    note(f"spec={mutant.spec} edits={mutant.edits}")
    path = fuzz_dir / f"compressed-mutant-{device}.dcm"
    path.write_bytes(mutant.data)
    with time_limit(EXAMPLE_TIMEOUT_S):
        try:
            problem = check_load(path, device)
        except (AssertionError, TimeLimitExceeded):
            raise
        except Exception as exc:
            pytest.fail(f"kvdicom raised {type(exc).__name__} (not DicomLoadError): {exc}; edits={mutant.edits}")
    assert problem is None, f"{problem}; edits={mutant.edits}"


@FUZZ_SETTINGS
@given(mutant=compressed_header_mutants())
def test_cpu_compressed_mutants_load_like_pydicom_or_raise_dicom_load_error(warm_kvdicom, fuzz_dir, mutant):
    _check_compressed_mutant(fuzz_dir, mutant, "cpu")


@pytest.mark.gpu
@FUZZ_SETTINGS
@given(mutant=compressed_header_mutants())
def test_gpu_compressed_mutants_load_like_pydicom_or_raise_dicom_load_error(cuda, warm_kvdicom, fuzz_dir, mutant):
    _check_compressed_mutant(fuzz_dir, mutant, "cuda")


def _check_compressed_changed_mid_load(fuzz_dir, mutant: Mutant, fault: str, point: str, device: str):
    note(f"spec={mutant.spec} fault={fault} at={point} edits={mutant.edits}")
    _expect_refusal(fuzz_dir, f"changing-compressed-{device}.dcm", mutant, fault, COMPRESSED_FAULT_POINTS[point],
                    device, f"before the {point}")


@FUZZ_SETTINGS
@given(mutant=compressed_mutants(), fault=st.sampled_from(FAULTS + ("copy",)),
       point=st.sampled_from(sorted(COMPRESSED_FAULT_POINTS)))
def test_cpu_compressed_files_changed_mid_load_raise_dicom_load_error(warm_kvdicom, fuzz_dir, mutant, fault, point):
    _check_compressed_changed_mid_load(fuzz_dir, mutant, fault, point, "cpu")


@pytest.mark.gpu
@FUZZ_SETTINGS
@given(mutant=compressed_mutants(), fault=st.sampled_from(FAULTS + ("copy",)),
       point=st.sampled_from(sorted(COMPRESSED_FAULT_POINTS)))
def test_gpu_compressed_files_changed_mid_load_raise_dicom_load_error(cuda, warm_kvdicom, fuzz_dir, mutant, fault,
                                                                      point):
    _check_compressed_changed_mid_load(fuzz_dir, mutant, fault, point, "cuda")


# --- series with mutant slices -----------------------------------------------------------------

#: Small CT series whose slices the series fuzz mutates: five files, so the header workers (forced on) take
#: several chunks, and a mutant slice shares its chunk with valid ones. Native first (the simplest example; also an
#: MR series in implicit VR, whose walk asks pydicom's dictionary which undefined lengths are sequences), then RLE
#: and JPEG 2000, whose codestreams the workers check against each header.
SERIES_BASES = (SeriesSpec(slices=5, rows=8, cols=8, header="ct"),
                SeriesSpec(slices=5, rows=8, cols=8, header="mr", transfer_syntax="implicit_le"),
                SeriesSpec(slices=5, rows=8, cols=8, header="ct", transfer_syntax="rle"),
                SeriesSpec(slices=5, rows=32, cols=32, header="ct", transfer_syntax="jpeg2000_lossless"))


@contextlib.contextmanager
def _workers_forced(forced: bool = True):
    """Series headers parsed on kvdicom's worker processes whatever the series' length and the machine's cores,
    for this block only: held past it, every later test's series went through the workers (dgbench/isolation.py)."""
    saved = headers.POOL_MIN_FILES, headers.POOL_MIN_PROCESSES
    if forced:
        headers.POOL_MIN_FILES, headers.POOL_MIN_PROCESSES = 1, 1
    try:
        yield
    finally:
        headers.POOL_MIN_FILES, headers.POOL_MIN_PROCESSES = saved


@dataclass
class SeriesMutant:
    files: dict[str, bytes]  #: file name -> bytes, the mutated slices among them
    edits: list[str]

    def write(self, folder: Path) -> Path:
        """The series' files into ``folder``, emptied first."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        return folder


@functools.lru_cache(maxsize=len(SERIES_BASES))
def _series_original(base: SeriesSpec) -> tuple[tuple[str, bytes, int, DicomSpec], ...]:
    """Each file of ``base``: (name, bytes, pixel data offset, its slice's spec)."""
    from fixtures.series import layout

    with tempfile.TemporaryDirectory() as tmp:
        write_series(base, tmp)
        files = []
        for f in layout(base):
            path = Path(tmp) / f.name
            files.append((f.name, path.read_bytes(), kvdicom.inspect(path).offset, f.spec))
    return tuple(files)


@st.composite
def series_mutants(draw) -> SeriesMutant:
    """The base series with up to two of its slices edited as :func:`mutants` edits a file. None edited is the
    simplest example, so every run (the CI profile's 30 too) loads whole series and compares them: a loader that
    put one slice in another's place passed 60 examples of mutated series, all refused."""
    base = draw(st.sampled_from(SERIES_BASES))
    if base.transfer_syntax == "jpeg2000_lossless":
        pytest.importorskip("openjpeg", reason="JPEG 2000 series fuzz cases need pylibjpeg-openjpeg (requirements.txt)")
    files = _series_original(base)
    picked = draw(st.sets(st.integers(0, len(files) - 1), max_size=2))
    out, edits = {}, []
    for i, (name, data, offset, spec) in enumerate(files):
        if i in picked:
            edited = _edited(draw, Mutant(spec, data, False), offset, {})
            data = edited.data
            edits += [f"{name}: {edit}" for edit in edited.edits]
        out[name] = data
    return SeriesMutant(out, [base.case_id] + edits)


def _check_series_mutant(fuzz_dir, mutant: SeriesMutant, device: str, rescale: bool, workers: bool) -> None:
    """load_series gives ``np.stack`` of pydicom's arrays of the files it names, in its order, or a DicomLoadError
    naming the folder or a file in it; nothing else, within the time limit, in-process or on the header workers
    (which parse, read each slice into the shared buffer, and check it, in chunks)."""
    note(f"rescale={rescale} workers={workers} edits={mutant.edits}")
    folder = mutant.write(fuzz_dir / f"series-{device}")
    with _workers_forced(workers), time_limit(EXAMPLE_TIMEOUT_S):
        try:
            volume, info = kvdicom.load_series(folder, device, rescale=rescale)
        except kvdicom.DicomLoadError as exc:
            assert str(folder) in str(exc), f"the error names nothing of the folder: {exc}; {mutant.edits}"
            return
        except (AssertionError, TimeLimitExceeded):
            raise
        except Exception as exc:
            pytest.fail(f"load_series raised {type(exc).__name__} (not DicomLoadError): {exc}; {mutant.edits}")
    arrays = []
    for path in info.paths:
        try:
            arrays.append(pydicom_pixels(path, rescale=rescale))
        except Exception as exc:  # noqa: BLE001  reported
            pytest.fail(f"load_series stacked {path}, on which pydicom fails ({type(exc).__name__}: {exc}); "
                        f"{mutant.edits}")
    try:
        expected = np.stack(arrays)
    except ValueError as exc:
        pytest.fail(f"load_series stacked slices np.stack refuses ({exc}); {mutant.edits}")
    problem = mismatch(volume, expected)
    assert problem is None, f"{problem}; {mutant.edits}"


@FUZZ_SETTINGS
@given(mutant=series_mutants(), rescale=st.booleans(), workers=st.booleans())
def test_cpu_series_with_mutant_slices_load_as_pydicom_stacks_them_or_raise_dicom_load_error(
        warm_kvdicom, fuzz_dir, mutant, rescale, workers):
    _check_series_mutant(fuzz_dir, mutant, "cpu", rescale, workers)


@FUZZ_SETTINGS
@given(mutant=series_mutants())
def test_scan_plans_series_with_mutant_slices_as_they_load(warm_kvdicom, fuzz_dir, mutant):
    """kvdicom.dask.scan of the folder never raises; a row it says ``load_series`` refuses is refused, and a row
    it plans loads with its shape, dtype and bytes, or raises a DicomLoadError its headers could not foresee (a
    slice's pixels, say)."""
    from kvdicom import dask as kvdask

    note(f"edits={mutant.edits}")
    folder = mutant.write(fuzz_dir / "scanned")
    with time_limit(EXAMPLE_TIMEOUT_S):
        rows = kvdask.scan(folder)
        for row in rows:
            try:
                if row.multiframe:
                    array = kvdicom.load(row.paths[0], "cpu")
                else:
                    array, _ = kvdicom.load_series(list(row.paths), "cpu", series_uid=row.series_uid)
            except kvdicom.DicomLoadError:
                continue
            assert row.problem is None, f"scan planned a refusal ({row.problem}) of a series that loads; {mutant.edits}"
            assert (array.shape, array.dtype.str, array.nbytes) == (row.shape, row.dtype, row.decoded_bytes), (
                f"scan planned {row.shape} {row.dtype} ({row.decoded_bytes} bytes), the load gave {array.shape} "
                f"{array.dtype.str} ({array.nbytes}); {mutant.edits}")


@pytest.mark.gpu
@FUZZ_SETTINGS
@given(mutant=series_mutants(), rescale=st.booleans(), workers=st.booleans())
def test_gpu_series_with_mutant_slices_load_as_pydicom_stacks_them_or_raise_dicom_load_error(
        cuda, warm_kvdicom, fuzz_dir, mutant, rescale, workers):
    _check_series_mutant(fuzz_dir, mutant, "cuda", rescale, workers)


# --- forked children and a killed parent ---------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _outcome(path: Path, force: bool) -> tuple:
    """What kvdicom.load(path, "cpu") gives, in a form two processes can compare."""
    try:
        arr = kvdicom.load(path, "cpu", force=force)
    except kvdicom.DicomLoadError:
        return ("DicomLoadError",)
    except Exception as exc:  # noqa: BLE001  compared, and reported, by the test
        return (type(exc).__name__, str(exc)[:200])
    return ("array", str(arr.dtype), arr.shape, hashlib.sha256(arr.tobytes()).hexdigest())


@pytest.fixture(scope="session")
def pool_in_use(tmp_path_factory):
    """A series folder, loaded once with kvdicom's worker processes forced on, so that the pool is running."""
    folder = tmp_path_factory.mktemp("fuzz-pool-series")
    write_series(SeriesSpec(slices=6, rows=16, cols=16, header="ct"), folder)
    with _workers_forced():  # for this load only
        volume, _ = kvdicom.load_series(folder, "cpu")
    if process_pool._pool is None:
        pytest.skip(f"kvdicom's worker processes did not start here ({process_pool.broken()=})")
    return folder, volume


def _in_forked_child(fn) -> tuple:
    """``fn()`` in a child forked from this process, under EXAMPLE_TIMEOUT_S; its result, or why it failed."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read)
            signal.alarm(EXAMPLE_TIMEOUT_S)
            os.write(write, repr(fn()).encode())
        except BaseException as exc:  # noqa: BLE001  reported to the parent
            os.write(write, repr(("child raised", type(exc).__name__, str(exc)[:200])).encode())
            code = 3
        finally:
            os._exit(code)
    os.close(write)
    chunks, deadline = [], time.monotonic() + EXAMPLE_TIMEOUT_S + 10
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(read, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read)
    done, status = os.waitpid(pid, os.WNOHANG)
    while done == 0 and time.monotonic() < deadline:  # its output closed: it is exiting, or stuck in atexit
        time.sleep(0.01)
        done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return ("child hung", b"".join(chunks).decode())
    text = b"".join(chunks).decode()
    if os.WIFSIGNALED(status):
        return ("child killed by signal", os.WTERMSIG(status), text)
    return ast.literal_eval(text) if text else ("child wrote nothing", os.waitstatus_to_exitcode(status))


def _series_outcome(folder: Path) -> tuple:
    headers.POOL_MIN_FILES, headers.POOL_MIN_PROCESSES = 1, 1  # the child uses the workers it inherited
    volume, _ = kvdicom.load_series(folder, "cpu")
    return ("series", hashlib.sha256(volume.tobytes()).hexdigest())


@settings(FUZZ_SETTINGS, max_examples=25, deadline=None)
@given(mutant=st.one_of(mutants(), compressed_mutants()))
def test_forked_children_load_mutants_as_their_parent_does(warm_kvdicom, pool_in_use, fuzz_dir, mutant):
    """Issue 24, item 1: a child forked after the pool was used hung in load_series and frame-parallel decodes."""
    folder, volume = pool_in_use
    note(f"spec={mutant.spec} force={mutant.force} edits={mutant.edits}")
    path = fuzz_dir / "forked.dcm"
    path.write_bytes(mutant.data)
    expected = _outcome(path, mutant.force)
    got = _in_forked_child(lambda: (_outcome(path, mutant.force), _series_outcome(folder)))
    assert got == (expected, ("series", hashlib.sha256(volume.tobytes()).hexdigest())), (
        f"forked child: {got}; parent: {expected}")
    assert _outcome(path, mutant.force) == expected  # and the parent's pool still serves it


KILLED_SCRIPT = """
import itertools, sys
import kvdicom
from kvdicom._io import process_pool
from tests.worker_targets import force_workers
force_workers()
folder, path = sys.argv[1], sys.argv[2]
for i in itertools.count():
    kvdicom.load_series(folder, "cpu")
    try:
        kvdicom.load(path, "cpu")
    except kvdicom.DicomLoadError:
        pass
    if i == 0:
        print("workers", *[w.process.pid for w in process_pool._pool._workers], flush=True)
"""


@settings(FUZZ_SETTINGS, max_examples=3, deadline=None)
@given(mutant=st.one_of(mutants(), compressed_mutants()), delay=st.floats(0, 0.3))
def test_a_parent_killed_mid_load_leaves_no_worker_behind(warm_kvdicom, pool_in_use, fuzz_dir, mutant, delay):
    """Issue 24, item 5: SIGKILL of a process whose workers are busy; they exit, and its output closes."""
    folder, _ = pool_in_use
    note(f"spec={mutant.spec} edits={mutant.edits} delay={delay}")
    path = fuzz_dir / "killed.dcm"
    path.write_bytes(mutant.data)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_SCRIPT), str(folder), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("workers"), f"no worker line: {line!r} {proc.poll()=}"
        pids = [int(p) for p in line.split()[1:]]
        time.sleep(delay)
        proc.kill()
        proc.communicate(timeout=30)  # a worker holding the killed process's stdout would block this
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), "a worker outlived its killed parent"

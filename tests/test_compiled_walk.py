"""The compiled header walk (kvdicom/_header/_walk.c) gives exactly what the Python walk gives, and walks far.

The other header tests hold the fast walk to pydicom with the compiled walk in use where it is built; these hold
the compiled walk to the Python walk alone (so both equal pydicom), on generated, clinical and mutated headers,
with the first read chunk cut small so that windows end inside elements and sequences; and they check that it
really walks (to the pixel data of every clinical header kind), never reads outside its buffer, is not used when
stale, and that kvdicom installs and loads without it where no C compiler is found.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import kvdicom
from fixtures.spec import DicomSpec
from fixtures.strategies import dicom_specs
from kvdicom._header import fast_header
from tests import header_strategies as hs
from tests.test_fast_header import _write

ROOT = Path(__file__).resolve().parent.parent

needs_compiled = pytest.mark.skipif(
    fast_header.compiled_walk is None,
    reason="kvdicom's compiled header walk is not built here (no C compiler where ./dgb ran): the Python walk "
           "is tested alone")

PROPERTY = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large], deadline=None)


@contextmanager
def python_walk_only():
    with mock.patch.object(fast_header, "compiled_walk", None):
        yield


def scan(path, force=False, chunk=None):
    """What :func:`fast_header.scan` gives: (layout, keys), None (pydicom decides) or ("refused", reason)."""
    with mock.patch.object(fast_header, "CHUNK_BYTES", chunk or fast_header.CHUNK_BYTES):
        try:
            header = fast_header.scan(str(path), force)
        except kvdicom.DicomLoadError as exc:
            return ("refused", exc.reason)
    return None if header is None else (header.layout, header.keys)


def check_walks_agree(path, force=False, chunk=None):
    compiled = scan(path, force, chunk)
    with python_walk_only():
        pure = scan(path, force, chunk)
    if currently_in_test_context():
        note(f"compiled={compiled!r}\npure={pure!r}")
    assert compiled == pure
    return compiled


CHUNKS = st.sampled_from([None, 64, 200, 333, 1024, 4096])


@needs_compiled
@PROPERTY
@given(spec=dicom_specs(rescale=True, headers=True), elements=hs.header_blocks(), chunk=CHUNKS)
def test_compiled_walk_equals_the_python_walk_on_generated_headers(tmp_path, spec, elements, chunk):
    check_walks_agree(*_write(tmp_path, spec, elements), chunk)


@needs_compiled
@PROPERTY
@given(spec=dicom_specs(rescale=True, headers=True), elements=hs.header_blocks(), chunk=CHUNKS, data=st.data())
def test_compiled_walk_equals_the_python_walk_on_mutated_headers(tmp_path, spec, elements, chunk, data):
    path, _ = _write(tmp_path, spec, elements)
    raw = bytearray(path.read_bytes())
    end = max(1, len(raw) - spec.pixel_bytes)  # the header, and the pixel element's own header
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, end - 1))
        new = data.draw(st.one_of(st.binary(min_size=1, max_size=4),
                                  st.sampled_from([b"\xff\xff\xff\xff", b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0",
                                                   b"\xfe\xff\x0d\xe0", b"SQ\0\0", b"UN\0\0", b"OB\0\0"])))
        raw[at:at + len(new)] = new
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw))):]
    note(f"{len(raw)} bytes")
    path.write_bytes(bytes(raw))
    check_walks_agree(path, data.draw(st.booleans()), chunk)


def _pixel_element_offset(path, force=False):
    """Where the pixel data element's header starts, by the Python walk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        src = fast_header._Source(fd, os.fstat(fd).st_size)
        with python_walk_only():
            pos, implicit, _ = fast_header._start(src, force)
            kept, (_, vr, value_at, _) = fast_header._walk_top(src, pos, implicit)
        return pos, implicit, kept, value_at - (12 if vr in fast_header.LONG_VRS else 8)
    finally:
        os.close(fd)


@needs_compiled
@pytest.mark.parametrize("kind", ["ct", "mr", "enhanced_mr", "seed"])
@pytest.mark.parametrize("syntax", ["explicit_le", "implicit_le"])
def test_compiled_walk_reaches_the_pixel_data_of_every_clinical_header_kind(tmp_path, kind, syntax):
    frames = 3 if kind in ("enhanced_mr", "seed") else 1
    path, _ = _write(tmp_path, DicomSpec(rows=16, cols=16, frames=frames, header=kind, transfer_syntax=syntax))
    pos, implicit, kept, pixel_at = _pixel_element_offset(path)
    with open(path, "rb") as f:
        buf = f.read(pixel_at + 16)
    stop, found, _ = fast_header.compiled_walk.walk(buf, 0, pos, implicit)
    assert stop == pixel_at, f"the compiled walk stopped at {stop}, before the pixel data at {pixel_at}"
    assert found == kept
    # the file meta too: the same end and transfer syntax as the Python walk's
    fd = os.open(path, os.O_RDONLY)
    try:
        src = fast_header._Source(fd, os.fstat(fd).st_size)
        src.fill(0, min(fast_header.CHUNK_BYTES, src.size))
        meta_end, tsyntax = fast_header._file_meta(src)
    finally:
        os.close(fd)
    end, raw = fast_header.compiled_walk.meta(buf[:fast_header.CHUNK_BYTES], path.stat().st_size)
    assert (end, raw.rstrip(b" \0")) == (meta_end, tsyntax)
    assert check_walks_agree(path) is not None


@needs_compiled
@pytest.mark.parametrize("kind", ["ct", "enhanced_mr"])
@pytest.mark.parametrize("syntax", ["explicit_le", "implicit_le"])
def test_compiled_walk_reads_on_past_its_first_window_up_to_the_cap(tmp_path, kind, syntax, monkeypatch):
    frames = 3 if kind == "enhanced_mr" else 1
    path, _ = _write(tmp_path, DicomSpec(rows=16, cols=16, frames=frames, header=kind, transfer_syntax=syntax))
    pos, implicit, kept, pixel_at = _pixel_element_offset(path)

    def fast_forward():
        fd = os.open(path, os.O_RDONLY)
        try:
            src = fast_header._Source(fd, os.fstat(fd).st_size)
            src.fill(0, 256)  # a first window far shorter than the header
            return fast_header._fast_forward(src, pos, implicit)
        finally:
            os.close(fd)

    with mock.patch.object(fast_header, "CHUNK_BYTES", 256):
        assert fast_forward() == (pixel_at, kept)  # windows twice as long each time, to the pixel data
        monkeypatch.setattr(fast_header, "COMPILED_WINDOW_MAX_BYTES", 512)
        stop, found = fast_forward()  # never a window past the cap: the Python walk carries on from there
        assert pos <= stop < pixel_at and found.items() <= kept.items()
    assert check_walks_agree(path, chunk=256) is not None


@needs_compiled
@pytest.mark.parametrize("tag", [0x00081140, 0x00091010, 0x00191001])  # in pydicom's dictionary, private, private
def test_compiled_walk_asks_the_dictionary_for_implicit_sequences_of_undefined_length(tmp_path, tag):
    # implicit VR: only pydicom's dictionary, or else an item tag next, says an undefined length is a sequence
    inner = hs.Sequence(0x00081140, False, (hs.Item(False, (hs.Value(0x00081150, "UI", b"1.2.3\0"),)),))
    seq = hs.Sequence(tag, False, (hs.Item(False, (inner,)), hs.Item(True, ())))
    path, _ = _write(tmp_path, DicomSpec(rows=4, cols=4, transfer_syntax="implicit_le"), (seq,))
    pos, implicit, kept, pixel_at = _pixel_element_offset(path)
    stop, found, _ = fast_header.compiled_walk.walk(path.read_bytes(), 0, pos, implicit)
    assert stop == pixel_at and found == kept
    assert isinstance(check_walks_agree(path)[0], kvdicom.PixelLayout)


@needs_compiled
@settings(deadline=None)
@given(buf=st.binary(max_size=256), base=st.integers(0, 1 << 40), offset=st.integers(-64, 320),
       implicit=st.booleans())
def test_compiled_walk_survives_random_bytes_and_keeps_only_bytes_of_its_buffer(buf, base, offset, implicit):
    # whatever the bytes and positions: no crash, it stops where it started or past whole elements, and what it
    # keeps are bytes of its buffer (reads outside it are AddressSanitizer's to find: docs/loader.md)
    stop, kept, need = fast_header.compiled_walk.walk(buf, base, base + offset, implicit)
    assert stop == base + offset or (0 <= offset and stop > base + offset)
    for word, (vr, value) in kept.items():
        assert word in fast_header._EXPECTED_VR and value in buf and (vr is None) == implicit


def test_a_stale_build_or_a_big_endian_host_does_not_use_it(monkeypatch):
    source = (ROOT / "kvdicom" / "_header" / "_walk.c").read_text()
    assert f"#define WALK_VERSION {fast_header.COMPILED_WALK_VERSION}\n" in source
    built = mock.Mock(VERSION=fast_header.COMPILED_WALK_VERSION)
    assert fast_header._load_compiled_walk(built) is built and built.configure.called
    monkeypatch.setattr(fast_header.sys, "byteorder", "big")
    assert fast_header._load_compiled_walk(built) is None
    monkeypatch.undo()
    monkeypatch.setattr(fast_header, "COMPILED_WALK_VERSION", fast_header.COMPILED_WALK_VERSION + 1)
    assert fast_header._load_compiled_walk(built) is None


def test_python_walk_alone_loads_as_pydicom(make_file):
    import numpy as np
    import pydicom

    path = make_file(rows=8, cols=6, header="ct", rescale_slope=2.0, rescale_intercept=-1.0)
    with python_walk_only():
        assert fast_header.scan(str(path)) is not None
        got = kvdicom.load(path, "cpu")
    assert np.array_equal(got, pydicom.dcmread(path).pixel_array)


def test_without_a_c_compiler_the_build_goes_on_without_the_walk(tmp_path):
    for name in ("setup.py", "pyproject.toml", "README.md", "kvdicom/_header/_walk.c"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    env = dict(os.environ, CC="/bin/false", LDSHARED="/bin/false")
    done = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "kvdicom").rglob("*.so"))
    if fast_header.compiled_walk is None:
        return  # nor can this machine build it (no compiler or no Python headers): the other half is moot here
    done = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "kvdicom").rglob("_walk*.so")), "this machine built it for ./dgb, yet not here"


# An item delimiter with a length (found by the series fuzz: two bytes "OV" written over a CT header's first
# item delimiter length). pydicom reads (FFFE,E00D) as an explicit VR element: where the two bytes after the tag
# spell a VR with a 4-byte length ("OV", "OB", ...), it reads 4 bytes more and loses its place (pydicom: "No tag
# to read at file position ..."); other bytes there it reads as a 2-byte length and stops at the delimiter. Both
# walks step aside on any length, so pydicom decides.

@pytest.mark.parametrize("walk", ["compiled", "python"])
@pytest.mark.parametrize("length, pydicom_reads", [(b"OV\0\0", False), (b"OB\x10\0", False), (b"\x01\0\0\0", True)])
def test_an_item_delimiter_with_a_length_is_left_to_pydicom(tmp_path, walk, length, pydicom_reads):
    if walk == "compiled" and fast_header.compiled_walk is None:
        pytest.skip("kvdicom's compiled header walk is not built here")
    path, _ = _write(tmp_path, DicomSpec(rows=8, cols=8, header="ct", signed=True))
    data = path.read_bytes()
    at = data.index(b"\xfe\xff\x0d\xe0\x00\x00\x00\x00") + 4  # the first item delimiter's length
    path.write_bytes(data[:at] + length + data[at + 4:])
    with contextlib.ExitStack() as stack:
        if walk == "python":
            stack.enter_context(python_walk_only())
        assert fast_header.scan(str(path)) is None, "the walk read past an item delimiter with a length"
        try:
            expected = pydicom.dcmread(path).pixel_array
        except OSError:
            expected = None
        assert (expected is not None) == pydicom_reads
        if expected is None:
            with pytest.raises(kvdicom.DicomLoadError, match="No tag to read"):
                kvdicom.load(path, "cpu")
        else:
            np.testing.assert_array_equal(kvdicom.load(path, "cpu"), expected)


# (0008,0005) Specific Character Set (found by the file fuzz with clinical headers: a NUL written into it). pydicom's
# reader looks each value up as it reads, at the top level and in the items of undefined-length sequences, and
# codecs.lookup raises ValueError on a NUL ("embedded null character"): dcmread fails, so kvdicom must refuse.

def _charset_file(tmp_path, where: str, value: bytes):
    """The CT fixture with a (0008,0005) of ``value`` (6 bytes): its own at the top level, or one in place of the
    first item element (0008,0100) "CTCAP " of an undefined-length sequence."""
    path, _ = _write(tmp_path, DicomSpec(rows=8, cols=8, header="ct", signed=True))
    data = path.read_bytes()
    if where == "top":
        old = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"
        new = b"\x08\x00\x05\x00CS\x0a\x00" + value + b" " * (10 - len(value))
    else:
        old = b"\x08\x00\x00\x01SH\x06\x00CTCAP "
        new = b"\x08\x00\x05\x00CS\x06\x00" + value
    assert data.count(old) >= 1
    path.write_bytes(data.replace(old, new, 1))
    return path


@pytest.mark.parametrize("walk", ["compiled", "python"])
@pytest.mark.parametrize("where", ["top", "item"])
@pytest.mark.parametrize("value, pydicom_reads", [(b"A\0B   ", False), (b"\0SO_IR", False), (b"ISO\0IR", True),
                                                  (b"AB\0\0\0\0", True)])
def test_a_character_set_pydicoms_reader_fails_on_is_refused(tmp_path, walk, where, value, pydicom_reads):
    if walk == "compiled" and fast_header.compiled_walk is None:
        pytest.skip("kvdicom's compiled header walk is not built here")
    path = _charset_file(tmp_path, where, value)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns of the unknown encodings it replaces
            expected = pydicom.dcmread(path).pixel_array
    except ValueError:
        expected = None
    assert (expected is not None) == pydicom_reads
    with contextlib.ExitStack() as stack:
        if walk == "python":
            stack.enter_context(python_walk_only())
        if expected is None:
            assert fast_header.scan(str(path)) is None, "the walk read past a character set pydicom fails on"
            with pytest.raises(kvdicom.DicomLoadError, match="embedded null character"):
                kvdicom.load(path, "cpu")
        else:
            np.testing.assert_array_equal(kvdicom.load(path, "cpu"), expected)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(
    st.binary(max_size=24),
    st.lists(st.sampled_from([b"ISO_IR 100", b"ISO IR 100", b"ISO_IR 6", b"ISO 2022 IR 87", b"ISO-2022-IR-87",
                              b"ISO_IR 192", b"latin_1", b"utf8", b"XYZ", b"", b"\0", b" ", b"\\", b"A\0B",
                              b"ISO\0IR"]), max_size=4).map(b"".join)))
def test_the_character_set_rule_is_pydicoms_reader(raw):
    from pydicom.charset import convert_encodings
    from pydicom.values import convert_string

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert_encodings(convert_string(raw, True))
        fails = False
    except LookupError:  # only with pydicom's reading validation set to RAISE, not its default
        fails = False
    except Exception:  # noqa: BLE001
        fails = True
    assert fast_header._charset_fails(raw) == fails

"""The fast header walk on encapsulated (compressed) files: pydicom's CompressedLayout, or it steps aside.

Every compressed syntax the fixtures write, with a Basic, an Extended or no
offset table, minimal and ``ct`` headers; clinical header blocks spliced in
and elements after the pixel data (Hypothesis); mutated headers, offset
tables and item headers (the fast path gives the pydicom path's layout or
steps aside, so ``inspect`` gives the same layout or ``DicomLoadError``).
"""

from __future__ import annotations

import dataclasses
import math
import struct

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import kvdicom
from bench.test_fuzz import DS_VALUES, NUMBER_OF_FRAMES_VALUES, PHOTOMETRIC_VALUES, US_INTERESTING
from fixtures import mutate
from fixtures.encode import COMPRESSED_SYNTAXES, unavailable
from fixtures.oracle import pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.writer import write_dicom
from kvdicom._header import compressed, fast_header
from kvdicom._header.inspect import inspect_dataset
from kvdicom._series import headers as series_headers
from tests import header_strategies as hs

S16 = {"bits_allocated": 16, "bits_stored": 16, "signed": True}
U12 = {"bits_allocated": 16, "bits_stored": 12}
U8 = {"bits_allocated": 8, "bits_stored": 8}
#: per syntax, the samples its encoder takes
SAMPLES = {"rle": S16, "jpeg_baseline": U8, "jpeg_extended": U12, "jpeg_lossless": U12, "jpeg_lossless_sv1": U12,
           "jpegls_lossless": S16, "jpeg2000_lossless": S16, "jpeg2000": S16, "htj2k_lossless": S16, "htj2k": S16}
#: (offset table, fragments per frame, header kind)
VARIANTS = [("bot", 1, "minimal"), ("eot", 1, "ct"), ("none", 2, "ct"), ("bot", 2, "minimal"), ("none", 1, "ct")]

SPECS = [DicomSpec(frames=3, rows=32, cols=32, transfer_syntax=syntax, offset_table=table, fragments=fragments,
                   header=header, **SAMPLES[syntax])
         for syntax in COMPRESSED_SYNTAXES for table, fragments, header in VARIANTS]
SPECS.append(DicomSpec(frames=3, rows=32, cols=32, bits_allocated=8, bits_stored=8, samples_per_pixel=3,
                       photometric="YBR_FULL_422", transfer_syntax="jpeg_baseline", header="ct"))
SPECS.append(DicomSpec(frames=1, rows=32, cols=32, transfer_syntax="jpeg2000_lossless", header="ct", **S16))
IDS = [s.case_id for s in SPECS]


def _available(specs):
    return [s for s in specs if unavailable(s.transfer_syntax) is None]


class _Originals(dict):
    def __repr__(self) -> str:  # Hypothesis prints the fixtures of a failing example
        return f"<{len(self)} compressed files>"


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict:
    """spec → the bytes the writer made for it (every spec whose encoder is installed)."""
    root = tmp_path_factory.mktemp("fast-compressed")
    out = _Originals()
    for spec in _available(SPECS):
        path = root / f"{spec.case_id}.dcm"
        write_dicom(spec, path)
        out[spec] = path.read_bytes()
    return out


def _comparable(layout):
    """A layout with the modality problem reduced to its presence, its slope and intercept to their repr (a NaN,
    as DS "nan" reads, equals no other NaN object), and ``options`` (compare=False) made a field."""
    modality = dataclasses.replace(layout.modality, problem=layout.modality.problem is not None,
                                   slope=repr(layout.modality.slope), intercept=repr(layout.modality.intercept))
    return dataclasses.replace(layout, modality=modality), layout.options


def fast(path):
    header = fast_header.scan(str(path))
    return None if header is None else header.layout


def slow(path):
    try:
        return inspect_dataset(path)[0]
    except kvdicom.DicomLoadError as exc:
        return exc


def check_same(path):
    """The fast result is None or equals the pydicom path's; ``inspect`` equals it. Returns the fast result."""
    got, ref = fast(path), slow(path)
    if currently_in_test_context():
        note(f"fast={got!r}\nslow={ref!r}")
    if got is not None:
        assert isinstance(got, kvdicom.CompressedLayout)
        assert not isinstance(ref, kvdicom.DicomLoadError), f"fast path read what pydicom refuses: {ref}"
        assert _comparable(got) == _comparable(ref)
    try:
        via_inspect = kvdicom.inspect(path)
    except kvdicom.DicomLoadError as exc:
        assert isinstance(ref, kvdicom.DicomLoadError), f"inspect refused what pydicom reads: {exc}"
    else:
        assert not isinstance(ref, kvdicom.DicomLoadError), f"inspect read what pydicom refuses: {ref}"
        assert _comparable(via_inspect) == _comparable(ref)
    return got


@pytest.mark.parametrize("case", SPECS, ids=IDS)
def test_fast_compressed_layout_equals_pydicoms_on_every_fixture_syntax(tmp_path, originals, case):
    spec = case
    if reason := unavailable(spec.transfer_syntax):
        pytest.skip(reason)
    path = tmp_path / "f.dcm"
    path.write_bytes(originals[spec])
    got = check_same(path)
    assert got is not None, "the fast path stepped aside on a plain compressed file"
    assert got.codec == compressed.CODECS[got.transfer_syntax] and got.number_of_frames == spec.frames
    if spec.offset_table == "eot":
        assert "extended_offsets" in got.options
    if spec.header == "ct":
        assert got.modality.kind == "rescale"
        assert {"series_uid", "position", "orientation"} <= set(fast_header.scan(str(path)).keys)


PROPERTY = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large], deadline=None, max_examples=60)


def _spliced(originals, spec, elements, trailing) -> bytes:
    data = hs.splice(originals[spec], elements, implicit=False, with_meta=True)
    return hs.append(data, trailing, implicit=False)


@PROPERTY
@given(data=st.data(), elements=hs.header_blocks(), trailing=st.sampled_from(hs.TRAILING))
def test_fast_compressed_layout_equals_pydicoms_on_generated_headers(tmp_path, originals, data, elements, trailing):
    spec = data.draw(st.sampled_from(sorted(originals, key=lambda s: s.case_id)))
    note(f"spec={spec.case_id}")
    path = tmp_path / "g.dcm"
    path.write_bytes(_spliced(originals, spec, elements, trailing))
    got = check_same(path)
    # series keys are kept as raw bytes, however spelled; only a duplicate of one (a clinical header has
    # them already) makes the walk step aside
    duplicate = spec.header != "minimal" and any(
        isinstance(e, hs.Value) and e.tag in fast_header.SERIES_KEYS for e in elements)
    assert got is not None or duplicate, "the fast path stepped aside on a compressed header it can read"


# Mutants: header values, offset tables, item headers, truncation.

EXTENDED_TAGS = (0x7FE00001, 0x7FE00002)


def _pixel_element_start(data: bytes) -> int:
    """Offset of the (7FE0,0010) tag: the header ends there (mutate.walk stops at undefined lengths)."""
    at = data.find(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")
    return len(data) if at < 0 else at


@st.composite
def compressed_mutants(draw, originals):
    spec = draw(st.sampled_from(sorted(originals, key=lambda s: s.case_id)))
    data = originals[spec]
    edits = []
    for _ in range(draw(st.integers(0, 3))):
        start = _pixel_element_start(data)
        head, tail = data[:start], data[start:]
        kind = draw(st.sampled_from(["image_pixel", "image_pixel", "extended", "delete", "header_bytes",
                                     "item_bytes", "truncate"]))
        try:
            if kind == "image_pixel":
                name = draw(st.sampled_from(sorted(mutate.IMAGE_PIXEL)))
                tag, vr = mutate.IMAGE_PIXEL[name]
                value = draw({"US": st.one_of(st.sampled_from(US_INTERESTING), st.binary(max_size=5)),
                              "IS": st.sampled_from(NUMBER_OF_FRAMES_VALUES), "DS": st.sampled_from(DS_VALUES),
                              "CS": st.sampled_from(PHOTOMETRIC_VALUES)}[vr])
                head = mutate.set_value(head, tag, vr, value)
                edit = f"{name}={value!r}"
            elif kind == "extended":
                tag = draw(st.sampled_from(EXTENDED_TAGS))
                value = draw(st.one_of(st.binary(min_size=0, max_size=40),
                                       st.lists(st.integers(0, 1 << 20), max_size=5).map(
                                           lambda v: struct.pack(f"<{len(v)}Q", *v))))
                head = mutate.set_value(head, tag, draw(st.sampled_from(["OV", "OB", "UN"])), value)
                edit = f"({tag >> 16:04X},{tag & 0xFFFF:04X})={value.hex()}"
            elif kind == "delete":
                tag = draw(st.sampled_from([t for t, _ in mutate.IMAGE_PIXEL.values()] + list(EXTENDED_TAGS)))
                head = mutate.delete(head, tag)
                edit = f"delete ({tag >> 16:04X},{tag & 0xFFFF:04X})"
            elif kind == "header_bytes":
                if not head:
                    continue
                at = draw(st.integers(0, len(head) - 1))
                new = draw(st.binary(min_size=1, max_size=min(8, len(head) - at)))
                head = head[:at] + new + head[at + len(new):]
                edit = f"bytes {new.hex()} at {at}"
            elif kind == "item_bytes":  # the Basic Offset Table and fragment item headers, mostly
                if len(tail) < 13:
                    continue
                at = draw(st.integers(12, min(len(tail) - 1, 12 + 64)))
                new = draw(st.binary(min_size=1, max_size=min(8, len(tail) - at)))
                tail = tail[:at] + new + tail[at + len(new):]
                edit = f"bytes {new.hex()} at pixel element + {at}"
            else:
                at = draw(st.integers(0, len(data)))
                head, tail = data[:at], b""
                edit = f"truncate at {at} of {len(data)}"
        except (mutate.WalkError, UnicodeDecodeError, struct.error, IndexError, ValueError):
            continue  # an earlier edit broke the structure the editor walks
        data = head + tail
        edits.append(edit)
    return spec, data, edits


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large], deadline=None, max_examples=150)
@given(data=st.data())
def test_mutated_compressed_headers_give_pydicoms_layout_or_an_error(tmp_path, originals, data):
    spec, mutant, edits = data.draw(compressed_mutants(originals))
    note(f"spec={spec.case_id} edits={edits}")
    path = tmp_path / "mutant.dcm"
    path.write_bytes(mutant)
    got = check_same(path)
    event("fast path taken" if got is not None else "stepped aside")
    assert got is not None or edits, "the fast path stepped aside on an unchanged compressed file"


# The fast path is the one taken.

@pytest.fixture
def no_dcmread(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pydicom.dcmread was called: the fast header path was not taken")

    monkeypatch.setattr(pydicom, "dcmread", refuse)
    monkeypatch.setattr(pydicom.filereader, "dcmread", refuse)


#: ct headers and extended offset tables, less RLE split into fragments without an offset table (RLE
#: has no EOI marker to split on: pydicom cannot decode it either)
NO_DCMREAD = [s for s in SPECS if (s.header == "ct" or s.offset_table == "eot")
              and not (s.transfer_syntax == "rle" and s.offset_table == "none" and s.fragments > 1)]


@pytest.mark.parametrize("case", NO_DCMREAD, ids=lambda s: s.case_id)
def test_compressed_inspect_load_and_series_header_do_not_parse_with_pydicom(tmp_path, originals, request, case):
    spec = case
    if reason := unavailable(spec.transfer_syntax):
        pytest.skip(reason)
    path = tmp_path / "c.dcm"
    path.write_bytes(originals[spec])
    ref_layout, ref_pixels = slow(path), pydicom_pixels(path)
    request.getfixturevalue("no_dcmread")
    assert _comparable(kvdicom.inspect(path)) == _comparable(ref_layout)
    np.testing.assert_array_equal(kvdicom.load(path, device="cpu"), ref_pixels)
    header = series_headers.read_header(str(path))
    assert header.error is None and header.keys is not None
    assert _comparable(header.layout) == _comparable(ref_layout)


def test_decode_runner_runs_once_per_compressed_image_pixel_module(tmp_path, monkeypatch):
    compressed._cached_rules.cache_clear()
    calls = []
    original = compressed.DecodeRunner
    monkeypatch.setattr(compressed, "DecodeRunner", lambda *a: calls.append(a) or original(*a))
    paths = []
    for seed in range(4):
        path = tmp_path / f"{seed}.dcm"
        write_dicom(DicomSpec(frames=2, rows=8, cols=8, seed=seed, transfer_syntax="rle", **S16), path)
        paths.append(path)
    layouts = [kvdicom.inspect(p) for p in paths] + [inspect_dataset(p)[0] for p in paths]
    assert len(calls) == 1
    assert len({(layout.dtype, layout.shape, layout.bits_stored) for layout in layouts}) == 1


@pytest.mark.parametrize("case", NO_DCMREAD, ids=lambda s: s.case_id)
def test_series_pool_packs_compressed_headers_as_plain_tuples(tmp_path, originals, case):
    import pickle

    if reason := unavailable(case.transfer_syntax):  # as its sibling above: no encoder, no file
        pytest.skip(reason)
    path = tmp_path / "p.dcm"
    path.write_bytes(originals[case])
    header = series_headers.read_header(str(path))
    blob = pickle.dumps(series_headers.pack(header))
    assert b"kvdicom" not in blob, "a kvdicom class is pickled: the parent pays for rebuilding it"
    back = series_headers.unpack(pickle.loads(blob))
    assert _comparable(back.layout) == _comparable(header.layout) and back.keys == header.keys


def test_a_nan_rescale_slope_gives_pydicoms_layout_by_every_path(tmp_path, originals):
    # Found by the mutation test above on a fresh clone: DS "nan" reads as a NaN, which equals no other NaN object,
    # so the layouts were compared unequal though both paths read the same transform.
    spec = next(s for s in originals if s.case_id == "f3_32x32_i16_jpeg2000_lossless_oj2.6.0")
    data = originals[spec]
    start = _pixel_element_start(data)  # the editor walks the header only, as the mutation test's does
    head = mutate.set_value(data[:start], 0x00281053, "DS", "nan")  # Rescale Slope
    path = tmp_path / "nan.dcm"
    path.write_bytes(mutate.set_value(head, 0x00281052, "DS", "1") + data[start:])  # Rescale Intercept
    check_same(path)
    assert math.isnan(kvdicom.inspect(path).modality.slope)

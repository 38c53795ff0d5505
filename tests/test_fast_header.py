"""The fast header walk gives pydicom's layout, or steps aside: never a different one."""

from __future__ import annotations

import dataclasses
import struct

import pydicom
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import kvdicom
from bench.test_fuzz import mutants
from fixtures import mutate
from fixtures.spec import TRANSFER_SYNTAXES, DicomSpec
from fixtures.strategies import dicom_specs
from fixtures.writer import add_modality_lut, build_dataset, write_dicom
from kvdicom._header import fast_header
from kvdicom._header import layout as layout_module
from kvdicom._header.inspect import inspect_dataset
from tests import header_strategies as hs


def _comparable(result):
    """A layout with the modality problem reduced to its presence (its text is pydicom's)."""
    if isinstance(result, kvdicom.PixelLayout):
        modality = dataclasses.replace(result.modality, problem=result.modality.problem is not None)
        return dataclasses.replace(result, modality=modality)
    return result


def fast(path, force=False):
    try:
        header = fast_header.scan(str(path), force)
    except kvdicom.DicomLoadError as exc:
        return exc
    return None if header is None else header.layout


def slow(path, force=False):
    try:
        return inspect_dataset(path, force=force)[0]
    except kvdicom.DicomLoadError as exc:
        return exc


def check_same(path, force=False):
    """The fast result equals the pydicom path's (or is None); returns the fast result."""
    got, ref = fast(path, force), slow(path, force)
    if currently_in_test_context():
        note(f"fast={got!r}\nslow={ref!r}")
    if got is None:
        return None
    if isinstance(got, kvdicom.DicomLoadError):
        assert isinstance(ref, kvdicom.DicomLoadError), f"fast path refused what pydicom reads: {got}"
    else:
        assert not isinstance(ref, kvdicom.DicomLoadError), f"fast path read what pydicom refuses: {ref}"
        assert _comparable(got) == _comparable(ref)
    return got


def _write(tmp_path, spec: DicomSpec, elements=(), trailing=()) -> tuple:
    path = tmp_path / f"{spec.key()}-{abs(hash((elements, trailing)))}.dcm"
    write_dicom(spec, path)
    if elements or trailing:
        implicit = spec.transfer_syntax == "implicit_le"
        data = hs.splice(path.read_bytes(), elements, implicit=implicit, with_meta=spec.file_meta)
        path.write_bytes(hs.append(data, trailing, implicit=implicit))
    return path, not spec.file_meta


PROPERTY = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large], deadline=None)


@PROPERTY
@given(spec=dicom_specs(rescale=True), elements=hs.header_blocks(), trailing=st.sampled_from(hs.TRAILING))
def test_fast_layout_equals_pydicom_layout_on_generated_headers(tmp_path, spec, elements, trailing):
    path, force = _write(tmp_path, spec, elements, trailing)
    check_same(path, force)


@PROPERTY
@given(spec=dicom_specs(transfer_syntaxes=("explicit_le", "implicit_le"), rescale=True),
       elements=hs.header_blocks(lenient=False), trailing=st.sampled_from(hs.TRAILING))
def test_fast_path_is_taken_for_little_endian_headers_it_can_prove(tmp_path, spec, elements, trailing):
    path, force = _write(tmp_path, spec, elements, trailing)
    got = check_same(path, force)
    assert got is not None, "the fast path stepped aside on a plain little-endian header"


@pytest.mark.parametrize("syntax", ["explicit_be", "deflated_le"])
def test_big_endian_and_deflated_go_to_pydicom(make_file, syntax):
    path = make_file(transfer_syntax=syntax, rows=8, cols=8)
    assert fast_header.scan(str(path)) is None


def test_duplicate_rows_goes_to_pydicom(tmp_path):
    spec = DicomSpec(rows=4, cols=4)
    path, _ = _write(tmp_path, spec, (hs.Value(0x00280010, "US", struct.pack("<H", 2)),))
    assert fast_header.scan(str(path)) is None
    assert isinstance(slow(path), kvdicom.PixelLayout)  # pydicom keeps the later Rows


def test_modality_lut_sequence_goes_to_pydicom(tmp_path):
    ds = add_modality_lut(build_dataset(DicomSpec(rows=2, cols=2, bits_allocated=8, bits_stored=8)), [4, 0, 8],
                          [1, 2, 3, 4])
    path = tmp_path / "lut.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert fast_header.scan(str(path)) is None
    assert kvdicom.inspect(path).modality.kind == "lut"


def test_needed_element_after_the_pixel_data_goes_to_pydicom(make_file):
    path = make_file(rows=2, cols=2)
    path.write_bytes(path.read_bytes() + struct.pack("<HH2sH", 0x0028, 0x1053, b"DS", 2) + b"2 ")
    assert fast_header.scan(str(path)) is None


def test_trailing_padding_after_the_pixel_data_is_walked(make_file):
    path = make_file(rows=2, cols=2)
    path.write_bytes(path.read_bytes() + struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, 6) + bytes(6))
    assert isinstance(check_same(path), kvdicom.PixelLayout)


def test_no_dicm_prefix_without_force_goes_to_pydicom_which_refuses(make_file):
    path = make_file(file_meta=False)
    assert fast_header.scan(str(path)) is None
    with pytest.raises(kvdicom.DicomLoadError, match="cannot parse"):
        kvdicom.inspect(path)


def test_long_private_value_past_the_first_chunk_is_skipped(tmp_path):
    blob = hs.Value(0x00091010, "OB", b"\x01" * (3 * fast_header.CHUNK_BYTES + 1))
    spec = DicomSpec(rows=8, cols=8, rescale_slope=2.0, rescale_intercept=-3.0)
    path, _ = _write(tmp_path, spec, (hs.Value(0x00090010, "LO", b"ACME"), blob))
    got = check_same(path)
    assert isinstance(got, kvdicom.PixelLayout) and got.modality.kind == "rescale"


def test_undefined_length_nested_sequences_are_walked(tmp_path):
    inner = hs.Sequence(0x00081140, False, (hs.Item(False, (hs.Value(0x00091010, "UN", b"abc"),)),))
    outer = hs.Sequence(0x00081115, False, (hs.Item(True, (inner,)), hs.Item(False, ())))
    for syntax in ("explicit_le", "implicit_le"):
        spec = DicomSpec(rows=3, cols=5, transfer_syntax=syntax)
        path, _ = _write(tmp_path, spec, (outer,))
        assert isinstance(check_same(path), kvdicom.PixelLayout)


def test_layout_carries_the_file_identity(make_file):
    path = make_file(rows=2, cols=2)
    st_ = path.stat()
    assert kvdicom.inspect(path).file_id == (st_.st_dev, st_.st_ino, st_.st_size, st_.st_mtime_ns, st_.st_ctime_ns)
    assert slow(path).file_id == kvdicom.inspect(path).file_id


def test_decode_runner_runs_once_per_image_pixel_module(tmp_path, monkeypatch):
    layout_module._cached_rules.cache_clear()
    calls = []
    original = layout_module._runner
    monkeypatch.setattr(layout_module, "_runner", lambda *a: calls.append(a) or original(*a))
    paths = []
    for seed in range(5):
        path = tmp_path / f"{seed}.dcm"
        write_dicom(DicomSpec(rows=6, cols=6, seed=seed, bits_stored=12, signed=True), path)
        paths.append(path)
    layouts = [kvdicom.inspect(p) for p in paths] + [inspect_dataset(p)[0] for p in paths]
    assert len(calls) == 1
    assert len({(layout.dtype, layout.shape, layout.bits_stored) for layout in layouts}) == 1


def test_files_sharing_their_values_are_checked_once_and_keep_their_own_path_identity_and_refusal(
        tmp_path, monkeypatch):
    """A series' slices repeat one set of layout values: the checks run once for them, and every file still
    gets its own path and identity, and a refusal naming it."""
    layout_module._layout_or_reason.cache_clear()
    checks = []
    original = layout_module._frames_present
    monkeypatch.setattr(layout_module, "_frames_present", lambda *a: checks.append(a) or original(*a))
    whole, cut = [], []
    for name in "ab":
        path = tmp_path / f"{name}.dcm"
        write_dicom(DicomSpec(rows=8, cols=8, seed=3, signed=True), path)
        whole.append(path)
        short = tmp_path / f"{name}-short.dcm"
        short.write_bytes(path.read_bytes()[:-10])  # pixel data shorter than the header promises
        cut.append(short)
    layouts = [fast(p) for p in whole]
    refusals = [fast(p) for p in cut]
    assert len(checks) == 2  # one for the whole files' values, one for the cut files'
    for path, layout in zip(whole, layouts):
        assert layout.path == str(path)
        assert layout.file_id == kvdicom.inspect(path).file_id
        assert _comparable(layout) == _comparable(slow(path))
    assert layouts[0].file_id != layouts[1].file_id
    for path, refusal in zip(cut, refusals):
        assert isinstance(refusal, kvdicom.DicomLoadError), refusal
        assert refusal.path == str(path) and "shorter than the header promises" in refusal.reason


def test_number_of_frames_spelled_with_sign_and_padding(tmp_path):
    path, _ = _write(tmp_path, DicomSpec(frames=2, rows=2, cols=2))
    data = mutate.set_value(path.read_bytes(), 0x00280008, "IS", b"+2 ")
    path.write_bytes(data + b"")
    got = check_same(path)
    assert isinstance(got, kvdicom.PixelLayout) and got.number_of_frames == 2


# Fuzz: the mutants of bench/test_fuzz.py, against the fast path directly.

@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.data())
def test_mutated_headers_give_pydicoms_layout_or_step_aside(tmp_path, data):
    mutant = data.draw(mutants())
    note(f"spec={mutant.spec} edits={mutant.edits}")
    path = tmp_path / "mutant.dcm"
    path.write_bytes(mutant.data)
    check_same(path, mutant.force)


def test_transfer_syntax_names_cover_the_fast_syntaxes():
    assert fast_header._TS_EXPLICIT.decode() == TRANSFER_SYNTAXES["explicit_le"]
    assert fast_header._TS_IMPLICIT.decode() == TRANSFER_SYNTAXES["implicit_le"]


# Clinical header kinds (fixtures/headers.py): ct, mr, enhanced_mr, seed.

@PROPERTY
@given(spec=dicom_specs(rescale=True, headers=True), elements=hs.header_blocks())
def test_fast_layout_equals_pydicom_layout_on_clinical_header_kinds(tmp_path, spec, elements):
    path, force = _write(tmp_path, spec, elements)
    check_same(path, force)


@pytest.mark.parametrize("kind", ["ct", "mr", "enhanced_mr", "seed"])
@pytest.mark.parametrize("syntax", ["explicit_le", "implicit_le"])
def test_fast_path_is_taken_for_every_clinical_header_kind(tmp_path, kind, syntax):
    frames = 3 if kind in ("enhanced_mr", "seed") else 1
    spec = DicomSpec(rows=16, cols=16, frames=frames, header=kind, transfer_syntax=syntax, signed=True)
    path, _ = _write(tmp_path, spec)
    got = check_same(path)
    assert isinstance(got, kvdicom.PixelLayout), f"fast path stepped aside on a {kind} header"
    header = fast_header.scan(str(path))
    if kind in ("ct", "mr"):
        assert {"series_uid", "position", "orientation", "instance_number", "pixel_spacing"} <= set(header.keys)


# Series keys: the fast path's decoding of DS / IS / UI values equals pydicom's.

@PROPERTY
@given(elements=hs.series_keys(lenient=True), syntax=st.sampled_from(["explicit_le", "implicit_le"]))
def test_series_keys_from_raw_bytes_equal_pydicoms_values(tmp_path, elements, syntax):
    from kvdicom._series import keys as series_keys

    path, _ = _write(tmp_path, DicomSpec(rows=2, cols=2, transfer_syntax=syntax), tuple(elements))
    header = fast_header.scan(str(path))
    assert header is not None
    try:
        ref = series_keys.from_dataset(str(path), pydicom.dcmread(path))
    except kvdicom.DicomLoadError as exc:
        ref = exc
    try:
        got = series_keys.from_raw(str(path), header.keys)
    except series_keys.Unprovable:
        return  # load_series asks pydicom for this file
    except kvdicom.DicomLoadError as exc:
        assert isinstance(ref, kvdicom.DicomLoadError), f"fast keys refused what pydicom reads: {exc}"
        return
    assert got == ref

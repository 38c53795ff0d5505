"""Clinical header kinds: sizes, nested sequences of both lengths, private blocks, realistic values."""

from __future__ import annotations

import hashlib

import numpy as np
import pydicom
import pytest
from hypothesis import given

from fixtures.headers import CT_RESCALE, normal
from fixtures.oracle import check_load
from fixtures.profiles import CT_SLICE, CT_SLICE_CT, ENHANCED_MR, SEED_VOLUME, SEED_VOLUME_SEED, profile_specs
from fixtures.spec import DicomSpec
from fixtures.strategies import dicom_specs
from fixtures.writer import pixel_bytes, write_dicom

SYNTAXES = ["explicit_le", "implicit_le", "explicit_be"]
KINDS = {
    "ct": dict(rows=32, cols=32, signed=True),
    "mr": dict(rows=32, cols=32, bits_stored=12),
    "enhanced_mr": dict(frames=5, rows=16, cols=16, bits_stored=12),
    "seed": dict(frames=4, rows=16, cols=16),
}


def _spec(kind, syntax="explicit_le", **extra):
    return DicomSpec(header=kind, transfer_syntax=syntax, **{**KINDS[kind], **extra})


def count_elements(ds) -> int:
    """Elements of a dataset, those inside sequence items included."""
    total = 0
    for elem in ds:
        total += 1
        if elem.VR == "SQ":
            total += sum(count_elements(item) for item in elem.value)
    return total


def sequences(ds):
    """Every sequence element, nested ones included."""
    for elem in ds:
        if elem.VR == "SQ":
            yield elem
            for item in elem.value:
                yield from sequences(item)


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_ct_header_has_the_size_of_a_scanners(make_file, syntax):
    spec = DicomSpec(rows=512, cols=512, signed=True, header="ct", transfer_syntax=syntax)
    path = make_file(spec)
    ds = pydicom.dcmread(path)
    assert 250 <= count_elements(ds) <= 300
    header_bytes = path.stat().st_size - spec.pixel_bytes  # preamble, meta, header, pixel element tag
    assert 6 * 1024 <= header_bytes <= 10 * 1024


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("kind", ["ct", "mr", "enhanced_mr"])
def test_sequences_of_defined_and_undefined_length_and_private_blocks(make_file, kind, syntax):
    ds = pydicom.dcmread(make_file(_spec(kind, syntax)))
    seqs = list(sequences(ds))
    assert any(s.is_undefined_length for s in seqs) and any(not s.is_undefined_length for s in seqs)
    items = [item for s in seqs for item in s.value]
    assert any(i.is_undefined_length_sequence_item for i in items)
    assert any(not i.is_undefined_length_sequence_item for i in items)
    # a sequence nested in an undefined-length item
    assert any(e.VR == "SQ" for i in items if i.is_undefined_length_sequence_item for e in i)
    private = [e for e in ds if e.tag.is_private]
    creators = [e for e in private if e.tag.is_private_creator]
    assert creators and len(private) - len(creators) >= 20


@pytest.mark.parametrize("syntax", [*SYNTAXES, "deflated_le"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_pydicom_reads_every_kind_with_the_specs_values(make_file, kind, syntax):
    spec = _spec(kind, syntax)
    ds = pydicom.dcmread(make_file(spec))
    order = ">" if syntax == "explicit_be" else "<"
    expected = np.frombuffer(pixel_bytes(spec), dtype=spec.dtype.newbyteorder(order))
    shape = (spec.frames, spec.rows, spec.cols) if spec.frames > 1 else (spec.rows, spec.cols)
    np.testing.assert_array_equal(ds.pixel_array, expected.reshape(shape))
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.parametrize("kind", list(KINDS))
def test_kvdicom_agrees_with_pydicom_on_every_kind(make_file, kind):
    for syntax in SYNTAXES:
        path = make_file(_spec(kind, syntax))
        assert check_load(path, "cpu") is None
        assert check_load(path, "cpu", rescale=True) is None


@given(spec=dicom_specs(headers=True, rescale=True))
def test_kvdicom_agrees_with_pydicom_on_generated_specs_with_headers(tmp_path_factory, spec):
    path = tmp_path_factory.mktemp("gen") / f"{spec.key()}.dcm"
    write_dicom(spec, path)
    force = not spec.file_meta
    assert check_load(path, "cpu", force=force) is None
    assert check_load(path, "cpu", force=force, rescale=True) is None


@pytest.mark.parametrize("kind", list(KINDS))
def test_same_spec_same_bytes(tmp_path, kind):
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    write_dicom(_spec(kind), a)
    write_dicom(_spec(kind), b)
    assert a.read_bytes() == b.read_bytes()
    write_dicom(_spec(kind, seed=1), b)
    assert a.read_bytes() != b.read_bytes()


def test_minimal_default_keeps_existing_ids_keys_and_bytes(tmp_path):
    # Values computed at fef2bbd, before the header field existed: committed baselines compare on them.
    assert CT_SLICE.case_id == "f1_512x512_i16_explicit_le" and CT_SLICE.key() == "135aa025afd71c7f"
    assert SEED_VOLUME.case_id == "f128_1024x1024_u16_explicit_le" and SEED_VOLUME.key() == "c599c994db456841"
    cases = {
        DicomSpec(frames=2, rows=8, cols=8, bits_allocated=16, bits_stored=12, signed=True):
            ("fb521942db6aeff9", "d9390dfd4f0ad8159331b1a520baeed8cdafc0d4d9e0f510328a1616cb19ea2c"),
        DicomSpec(rows=4, cols=4, transfer_syntax="explicit_be", rescale_slope=2.0, rescale_intercept=-1024.0):
            ("a688b774e363cf43", "f8846dfdc1d5fdb017eadf5b52eb55283057f803aa50631cfe5e6d62850ed1d5"),
    }
    for spec, (key, digest) in cases.items():
        path = tmp_path / f"{key}.dcm"
        write_dicom(spec, path)
        assert spec.key() == key
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_header_kinds_get_their_own_ids_and_unknown_kinds_are_refused():
    assert CT_SLICE_CT.case_id == CT_SLICE.case_id + "_ct" and CT_SLICE_CT.key() != CT_SLICE.key()
    assert SEED_VOLUME_SEED.case_id.endswith("_seed") and ENHANCED_MR.case_id.endswith("_enhanced_mr")
    with pytest.raises(ValueError, match="header kind"):
        DicomSpec(header="pet")


def test_profiles_hold_the_header_cases():
    quick, full = profile_specs("quick"), profile_specs("full")
    assert CT_SLICE_CT in quick and CT_SLICE in quick
    assert {ENHANCED_MR, SEED_VOLUME_SEED, SEED_VOLUME} <= set(full)
    assert ENHANCED_MR.frames == 200 and (ENHANCED_MR.rows, ENHANCED_MR.cols) == (256, 256)
    assert ENHANCED_MR.dtype == np.uint16 and ENHANCED_MR.bits_stored == 12


def test_ct_values_are_realistic(make_file):
    ds = pydicom.dcmread(make_file(_spec("ct")))
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == CT_RESCALE and ds.RescaleType == "HU"
    assert ds.Modality == "CT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert len(ds.ImagePositionPatient) == 3 and len(ds.ImageOrientationPatient) == 6
    assert len(ds.WindowCenter) == len(ds.WindowWidth) == 3  # multi-valued DS
    assert len(ds.SOPInstanceUID) > 50 and ds.PatientName.family_name == "Synthetic"
    mr = pydicom.dcmread(make_file(_spec("mr")))
    assert "RescaleSlope" not in mr and mr.Modality == "MR" and mr.MagneticFieldStrength == 3


def test_enhanced_mr_has_one_functional_group_item_per_frame(make_file):
    spec = _spec("enhanced_mr", frames=7)
    ds = pydicom.dcmread(make_file(spec))
    assert ds.NumberOfFrames == 7 and len(ds.PerFrameFunctionalGroupsSequence) == 7
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert "MRTimingAndRelatedParametersSequence" in shared and "PixelValueTransformationSequence" in shared
    assert "RescaleSlope" not in ds  # the nested one only
    positions = []
    for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        assert item.FrameContentSequence[0].InStackPositionNumber == i + 1
        assert len(item.PixelMeasuresSequence[0].PixelSpacing) == 2
        orientation = [float(v) for v in item.PlaneOrientationSequence[0].ImageOrientationPatient]
        positions.append([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
    steps = np.diff(np.array(positions) @ np.array(normal(orientation)))
    np.testing.assert_allclose(steps, 1.0, atol=1e-4)


def test_seed_kind_holds_what_the_seed_notebook_writes(make_file):
    spec = _spec("seed")
    ds = pydicom.dcmread(make_file(spec))
    assert ds.PatientName == "Test^Patient" and ds.PatientID == "123456" and ds.Modality == "CT"
    frames = ds.PerFrameFunctionalGroupsSequence
    assert len(frames) == spec.frames
    for i, item in enumerate(frames):
        assert [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient] == [0, 0, i]
        assert [float(v) for v in item.PlaneOrientationSequence[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert float(item.PixelMeasuresSequence[0].SliceThickness) == 1
    assert "Manufacturer" not in ds and "SharedFunctionalGroupsSequence" not in ds

"""Synthetic files: valid, deterministic, spanning the stored range, meta consistent with encoding."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from fixtures.oracle import pydicom_pixels
from fixtures.profiles import CT_SLICE, SEED_VOLUME, profile_specs
from fixtures.spec import TRANSFER_SYNTAXES, DicomSpec
from fixtures.writer import stored_range, write_dicom


def test_same_spec_gives_same_bytes_and_seed_changes_them(tmp_path):
    spec = DicomSpec(frames=2, rows=8, cols=8, bits_allocated=16, bits_stored=12, signed=True)
    a, b, c = tmp_path / "a.dcm", tmp_path / "b.dcm", tmp_path / "c.dcm"
    write_dicom(spec, a)
    write_dicom(spec, b)
    write_dicom(DicomSpec(**{**spec.__dict__, "seed": 1}), c)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("bits_stored,signed", [(12, True), (12, False), (16, True), (8, True)])
def test_values_span_the_whole_stored_range(make_file, bits_stored, signed):
    spec = DicomSpec(frames=4, rows=32, cols=32, bits_allocated=16, bits_stored=bits_stored, signed=signed)
    arr = pydicom_pixels(make_file(spec))
    lo, hi = stored_range(spec)
    assert arr.min() == lo and arr.max() == hi
    if signed:
        assert (arr < 0).any()


@pytest.mark.parametrize("name", ["implicit_le", "explicit_le", "explicit_be"])
def test_file_meta_matches_the_dataset_encoding(make_file, name):
    path = make_file(DicomSpec(transfer_syntax=name, rows=4, cols=4))
    ds = pydicom.dcmread(path)
    uid = pydicom.uid.UID(TRANSFER_SYNTAXES[name])
    assert ds.file_meta.TransferSyntaxUID == uid
    assert ds.original_encoding == (uid.is_implicit_VR, uid.is_little_endian)


def test_dirty_unused_bits_really_are_dirty(make_file):
    spec = DicomSpec(rows=16, cols=16, bits_allocated=16, bits_stored=10, dirty_unused_bits=True)
    ds = pydicom.dcmread(make_file(spec))
    raw = np.frombuffer(ds.PixelData, dtype="<u2")
    assert (raw >> 10).any(), "no noise above Bits Stored"
    assert (ds.pixel_array >> 10 == 0).all()


def test_spec_rejects_impossible_values():
    with pytest.raises(ValueError, match="bits_stored"):
        DicomSpec(bits_allocated=8, bits_stored=9)
    with pytest.raises(ValueError, match="transfer syntax"):
        DicomSpec(transfer_syntax="jpeg")


def test_profiles_grow_and_hold_the_seed_case():
    quick, full, nightly = (profile_specs(p) for p in ("quick", "full", "nightly"))
    assert CT_SLICE in quick and SEED_VOLUME not in quick
    assert set(quick) < set(full) < set(nightly)
    assert SEED_VOLUME.pixel_bytes == 256 << 20 and SEED_VOLUME in full
    assert max(s.pixel_bytes for s in nightly) >= 1 << 30
    assert sum(s.pixel_bytes for s in quick) < 64 << 20
    with pytest.raises(ValueError, match="unknown profile"):
        profile_specs("huge")


def test_mutate_rewrites_values_and_lengths_in_place(make_file):
    from fixtures import mutate

    path = make_file(DicomSpec(rows=4, cols=4, transfer_syntax="explicit_be"))
    data = path.read_bytes()
    edited = mutate.set_value(data, 0x00280008, "IS", "abc")  # absent: inserted in tag order
    edited = mutate.set_value(edited, 0x00280010, "US", 7)
    path.write_bytes(edited)
    ds = pydicom.dcmread(path)
    assert ds.Rows == 7 and ds["NumberOfFrames"].value == "abc"
    pixel = mutate.find(mutate.walk(edited), 0x7FE00010)
    longer = mutate.set_length(edited, 0x7FE00010, 0xFFFFFFF0)
    assert mutate.find(mutate.walk(longer[: pixel.value_at]), 0x7FE00010).length == 0xFFFFFFF0
    assert mutate.delete(edited, 0x00280008) != edited


def test_ow_big_endian_8_bit_pixels_are_swapped_pairwise(make_file):
    spec = DicomSpec(rows=1, cols=3, bits_allocated=8, bits_stored=8, transfer_syntax="explicit_be", pixel_vr="OW")
    ds = pydicom.dcmread(make_file(spec))
    assert ds["PixelData"].VR == "OW"
    # values 0, 255, x and the pad byte: written as (255, 0), (0, x)
    assert ds.PixelData[0] == 255 and ds.PixelData[1] == 0 and ds.PixelData[2] == 0
    assert ds.pixel_array.tolist()[0][:2] == [0, 255]
    with pytest.raises(ValueError, match="pixel_vr"):
        DicomSpec(bits_allocated=16, pixel_vr="OB")


@pytest.mark.parametrize("bits_stored", [8, 12, 16])
def test_signed_values_are_negative_about_half_the_time(make_file, bits_stored):
    # Values are drawn over the whole signed range, not from 0 up with only the forced minimum negative.
    spec = DicomSpec(frames=4, rows=32, cols=32, bits_allocated=16, bits_stored=bits_stored, signed=True)
    arr = pydicom_pixels(make_file(spec))
    share = float((arr < 0).mean())
    assert 0.4 < share < 0.6, f"{share:.3f} of the values are negative"

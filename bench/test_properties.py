"""Property tests: for any file in the matrix, kvdicom's output is pydicom's, on CPU and GPU.

Kept apart from the benchmarks: these run many small files, once each.
"""

from __future__ import annotations

import pytest
from hypothesis import given

import kvdicom
from bench.reference import mismatch, pydicom_pixels
from fixtures.spec import DicomSpec
from fixtures.strategies import dicom_specs
from fixtures.writer import write_dicom


@pytest.fixture(scope="session")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("property-files")


def _write(scratch, spec: DicomSpec):
    path = scratch / f"{spec.case_id}-{spec.key()}.dcm"
    if not path.exists():
        write_dicom(spec, path)
    return path


@given(spec=dicom_specs())
def test_cpu_load_equals_pydicom(scratch, spec):
    path = _write(scratch, spec)
    problem = mismatch(kvdicom.load(path, "cpu"), pydicom_pixels(path))
    assert problem is None, f"{spec}: {problem}"


@pytest.mark.gpu
@given(spec=dicom_specs())
def test_gpu_load_equals_pydicom(cuda, scratch, spec):
    path = _write(scratch, spec)
    out = kvdicom.load(path, "cuda")
    assert isinstance(out, cuda.ndarray)
    problem = mismatch(out, pydicom_pixels(path))
    assert problem is None, f"{spec}: {problem}"

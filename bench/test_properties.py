"""Property tests: for any file in the matrix, kvdicom's output is pydicom's, on CPU and GPU.

Kept apart from the benchmarks: these run many small files, once each. Files
without file meta are read with ``force=True`` (the only way pydicom reads them).
"""

from __future__ import annotations

import pytest
from hypothesis import given

from fixtures.oracle import check_load
from fixtures.spec import DicomSpec
from fixtures.strategies import dicom_specs
from fixtures.writer import write_dicom


@pytest.fixture(scope="session")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("property-files")


def _write(scratch, spec: DicomSpec):
    path = scratch / f"{spec.key()}.dcm"
    if not path.exists():
        write_dicom(spec, path)
    return path


@given(spec=dicom_specs())
def test_cpu_load_equals_pydicom(scratch, spec):
    problem = check_load(_write(scratch, spec), "cpu", force=not spec.file_meta)
    assert problem is None, f"{spec}: {problem}"


@pytest.mark.gpu
@given(spec=dicom_specs())
def test_gpu_load_equals_pydicom(cuda, scratch, spec):
    problem = check_load(_write(scratch, spec), "cuda", force=not spec.file_meta)
    assert problem is None, f"{spec}: {problem}"


@given(spec=dicom_specs(rescale=True))
def test_cpu_rescale_equals_pydicom_apply_modality_lut(scratch, spec):
    problem = check_load(_write(scratch, spec), "cpu", force=not spec.file_meta, rescale=True)
    assert problem is None, f"{spec}: {problem}"


@pytest.mark.gpu
@given(spec=dicom_specs(rescale=True))
def test_gpu_rescale_equals_pydicom_apply_modality_lut(cuda, scratch, spec):
    problem = check_load(_write(scratch, spec), "cuda", force=not spec.file_meta, rescale=True)
    assert problem is None, f"{spec}: {problem}"

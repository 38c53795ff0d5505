"""Helpers for the suite's own unit tests."""

from __future__ import annotations

import pytest

from fixtures.spec import DicomSpec
from fixtures.writer import write_dicom


@pytest.fixture
def make_file(tmp_path):
    """Write the file of a spec into tmp_path and return its path."""

    def make(spec: DicomSpec | None = None, **fields):
        spec = spec or DicomSpec(**fields)
        path = tmp_path / f"{spec.case_id}.dcm"
        write_dicom(spec, path)
        return path

    return make

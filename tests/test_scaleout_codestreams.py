"""The scale-out decode ceiling's codestreams (bench/test_scaleout.py): read in a worker, pickled to it, and
handed to nvImageCodec's ``CodeStream``, which takes ``bytes`` or a 1-D uint8 array, never a 0-d bytes array
(``np.ascontiguousarray(b"...")``, what ``bench.ceilings.GpuDecode`` made of the ``bytes`` kept before: a
TypeError in every worker on the H200 device, so the ceiling row was never recorded)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fixtures.series import SeriesSpec, write_series
from kvdicom._header import compressed

pytest.importorskip("imagecodecs", reason="the HTJ2K fixtures need imagecodecs (requirements.txt)")


def test_codestreams_are_uint8_arrays_equal_to_each_files_frame(tmp_path):
    import kvdicom
    from bench.test_scaleout import Codestreams, _load_codestreams

    write_series(SeriesSpec(slices=3, rows=16, cols=16, transfer_syntax="htj2k_lossless", seed=5), tmp_path)
    paths = sorted(str(p) for p in tmp_path.iterdir())
    loaded = pickle.loads(pickle.dumps(_load_codestreams(paths)))  # as Dask sends it
    assert isinstance(loaded, Codestreams) and loaded.decode is None
    assert len(loaded.frames) == 3
    for path, frame in zip(paths, loaded.frames):
        as_given = np.ascontiguousarray(frame)  # what GpuDecode passes to nvimgcodec.CodeStream
        assert as_given.dtype == np.uint8 and as_given.ndim == 1
        _, (expected,) = compressed.read_frames(kvdicom.inspect(path))
        assert as_given.tobytes() == bytes(expected)

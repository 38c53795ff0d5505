"""MONAI pipelines on the series fixtures: ``LoadImage(reader=..., ensure_channel_first=True)`` with MONAI's
readers and kvdicom's (``kvdicom.monai.KvDicomReader``), page cache warm, each on the same folder.

Cases: the profile's uncompressed series and its HTJ2K series (``full``: 256 × 512² CT). Readers:
PydicomReader (CPU, as pipelines build it), ITKReader where ``itk`` is installed, MONAI's nvImageCodec
reader where this MONAI has one, and KvDicomReader on the GPU and the CPU. ``matches_pydicom_values``: the
image's values, in MONAI's axis order, equal the pydicom loop's volume (sorted along the normal, rescaled
where the files say so). Skipped, with the reason, without MONAI.
"""

from __future__ import annotations

import numpy as np
import pytest

import kvdicom
from bench import compressed_peers as cpeers
from bench import peers
from bench.rounds import timed
from dgbench.schema import bench_extra
from fixtures.profiles import compressed_series_specs, series_profile_specs

#: (loader name in results, MONAI reader factory, device)
READERS = {
    "monai+pydicom": ("PydicomReader", "cpu"),
    "monai+itk": ("ITKReader", "cpu"),
    "monai+nvimgcodec": ("NvImgCodecPydicomReader", "cuda"),
    "monai+kvdicom": ("KvDicomReader", "cuda"),
    "monai+kvdicom-cpu": ("KvDicomReader", "cpu"),
}


def pytest_generate_tests(metafunc):
    if "monai_spec" in metafunc.fixturenames:
        profile = metafunc.config.getoption("profile")
        specs = list(series_profile_specs(profile))
        specs += [s for s in compressed_series_specs(profile) if s.transfer_syntax.startswith("htj2k")]
        metafunc.parametrize("monai_spec", specs, ids=[s.case_id for s in specs], scope="session")


@pytest.fixture(scope="session")
def monai_dir(corpus, monai_spec):
    if monai_spec.transfer_syntax == "explicit_le":
        return corpus.ensure_series(monai_spec)
    return cpeers.ensure_or_skip(corpus.ensure_series, monai_spec, "compressed series", ("pylibjpeg", "openjpeg"))


@pytest.fixture(scope="session")
def monai_reference(monai_dir):
    """The pydicom loop's volume, rescaled as MONAI's readers rescale, in MONAI's (columns, rows, slices)."""
    volume = peers.pydicom_series(monai_dir, rescale=True)
    return volume.transpose(2, 1, 0)


def _reader(name: str, device: str):
    try:
        import monai.data
    except ImportError as exc:
        pytest.skip(f"MONAI is not installed ({exc})")
    if name == "KvDicomReader":
        from kvdicom.monai import KvDicomReader

        return KvDicomReader(device=device)
    if name == "ITKReader":
        pytest.importorskip("itk", reason="ITK is not installed: no ITKReader row")
    cls = getattr(monai.data, name, None)
    if cls is None:
        pytest.skip(f"this MONAI ({monai.__version__}) has no {name}")
    return cls()


@pytest.mark.parametrize("loader", sorted(READERS))
def test_monai_load_image(benchmark, request, loader, monai_spec, monai_dir, monai_reference):
    name, device = READERS[loader]
    if device == "cuda":
        cuda = request.getfixturevalue("cuda")
    reader = _reader(name, device)
    from monai.transforms import LoadImage

    load = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)
    call = peers.synced(cuda, load, str(monai_dir)) if device == "cuda" else (lambda: load(str(monai_dir)))
    image = timed(benchmark, call)
    host = np.asarray(image.detach().cpu().numpy())
    same = host.shape == (1,) + monai_reference.shape and bool(
        np.array_equal(host[0].astype(np.float64), monai_reference.astype(np.float64)))
    files = peers.series_files(monai_dir)
    benchmark.extra_info.update(bench_extra(
        monai_spec.case_id, loader, device, sum(p.stat().st_size for p in files),
        kvdicom.inspect(files[0]).decoded_nbytes * len(files),
        "warm", matches_pydicom=None, matches_pydicom_values=same, output_dtype=str(host.dtype), rescale=True,
        slices=monai_spec.slices, files=len(files), decoder=f"{name} (LoadImage, EnsureChannelFirst)",
    ))
    if loader.startswith("monai+kvdicom"):
        assert same, "KvDicomReader's image differs from the pydicom loop's volume"

"""Series of compressed single-frame slices into one volume, page cache warm (issue 10's series targets).

Cases: ``fixtures.profiles.compressed_series_specs`` (JPEG 2000 lossless and
HTJ2K lossless CT slices; 256 × 512² int16 in ``full``). Loaders, each
checked against the pydicom loop with the reference plugin pinned
(``extra_info['matches_pydicom']``, exact: the syntaxes are lossless):
pydicom loop + sort + ``np.stack`` (+ ``cupy.asarray``), the same loop with
nvImageCodec's pydicom plugin (+ ``cupy.asarray``), dicomsdl loop (+
``cupy.asarray``; probed in a child process first, so a native crash is a
skip), and ``kvdicom.load_series`` on the CPU and the GPU (one nvImageCodec
batch for the series: ``kvdicom._series.decode``). Each loader's checked volume is
the one its timed calls returned (``bench.rounds.timed``: the slow peers get
three fixed rounds). ``extra_info`` adds the
compressed bytes, the compression ratio, the frames (one per slice:
``frames_per_s`` is derived) and which decoder ran.

Ceilings, as for compressed files (``bench/test_compressed.py``): every slice's
codestream, read once beforehand in slice order, decoded from memory by one
nvImageCodec batch (``ceiling:decode_gpu``) and by imagecodecs on every core
(``ceiling:decode_host``, HTJ2K also ``decode_host_openjph``), each checked equal
to the pydicom loop's volume before and after its timing; every loader row
names its ceiling (``dgbench.schema.decode_ceiling_for``).

Cold (``-m cold``, series decoding to at least ``COLD_MIN_BYTES``): ``kvdicom.load_series`` on the CPU and the
GPU with every file's page cache dropped before each round, held against the same files read whole with
O_DIRECT (``ceiling:series_disk_read``/``_h2d``, ``bench.series_disk.time_disk_ceiling``) in decoded bytes per
second: how close the cold load comes to reading the compressed files alone.
"""

from __future__ import annotations

import numpy as np
import pytest

import kvdicom
from bench import compressed_peers as cpeers
from bench import peers
from bench.ceilings import GpuDecode, host_ceiling, time_checked_decode, time_cold
from bench.rounds import timed
from bench.series_disk import time_disk_ceiling
from dgbench.config import COLD_MIN_BYTES
from dgbench.schema import bench_extra, ceiling_loader, decode_ceiling_for, series_ceiling_for
from fixtures.encode import COMPRESSED_SYNTAXES
from fixtures.oracle import mismatch
from fixtures.profiles import compressed_series_specs
from kvdicom import settings


def pytest_generate_tests(metafunc):
    if "csspec" in metafunc.fixturenames:
        specs = compressed_series_specs(metafunc.config.getoption("profile"))
        if metafunc.function.__name__.endswith("_openjph"):  # OpenJPH decodes HTJ2K only
            specs = [s for s in specs if s.transfer_syntax.startswith("htj2k")]
        if metafunc.definition.get_closest_marker("cold"):  # as dgbench.plugin does for files and series
            specs = [s for s in specs if s.pixel_bytes >= COLD_MIN_BYTES]
        metafunc.parametrize("csspec", specs, ids=[s.case_id for s in specs], scope="session")


@pytest.fixture(scope="session")
def csdir(corpus, csspec):
    """The cached series folder, generated on first use (skipped when its encoder or pylibjpeg is missing)."""
    return cpeers.ensure_or_skip(corpus.ensure_series, csspec, "compressed series", ("pylibjpeg", "openjpeg"))


@pytest.fixture(scope="session")
def csreference(csdir):
    """The pydicom loop's volume, reference plugin pinned, computed once per session."""
    return cpeers.pydicom_series_pinned(csdir)


@pytest.fixture(scope="session")
def cslayouts(csdir):
    """(file bytes, compressed bytes, codec, transfer syntax) of the folder's slices, found once (untimed)."""
    files = peers.series_files(csdir)
    layouts = [kvdicom.inspect(p) for p in files]
    return (sum(p.stat().st_size for p in files), sum(layout.nbytes for layout in layouts), layouts[0].codec,
            layouts[0].transfer_syntax)


def _record(benchmark, spec, cslayouts, loader, device, output, reference, decoder, page_cache="warm"):
    """Describe this benchmark in ``extra_info``; return why its volume differs from pydicom's, if it does.

    Warm rows are held against the decode of the codestreams from memory, cold ones against the disk."""
    file_bytes, compressed_bytes, codec, _ = cslayouts
    problem = None if output is None else mismatch(output, reference)
    benchmark.extra_info.update(bench_extra(
        spec.case_id, loader, device, file_bytes, int(reference.nbytes), page_cache,
        matches_pydicom=None if output is None else problem is None,
        # a ceiling row names none
        ceiling=decode_ceiling_for(device) if page_cache == "warm" else series_ceiling_for(device, page_cache),
        compressed_bytes=compressed_bytes, compression_ratio=reference.nbytes / file_bytes, frames=spec.slices,
        codec=codec, decoder=decoder, lossless=COMPRESSED_SYNTAXES[spec.transfer_syntax][2],
        slices=spec.slices, files=spec.file_count,
    ))
    return problem


# --- property tests (run by ./dgb test) --------------------------------------------------------


def test_cseries_cpu_load_matches_pydicom(csspec, csdir, csreference):
    volume, info = kvdicom.load_series(csdir, "cpu")
    assert mismatch(volume, csreference) is None, mismatch(volume, csreference)
    assert info.decoders, "load_series did not say which decoder ran"


@pytest.mark.gpu
def test_cseries_gpu_load_matches_pydicom(cuda, csspec, csdir, csreference, monkeypatch):
    """On the device: the batched GPU decode (forced for small series too) equals the pydicom loop exactly."""
    from kvdicom._codecs import gpu_codec

    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    volume, info = kvdicom.load_series(csdir, "cuda")
    assert type(volume).__module__.startswith("cupy")
    problem = mismatch(volume, csreference)
    assert problem is None, f"{problem} (decoders: {info.decoders})"
    if gpu_codec.nvimgcodec_problem() is None and csspec.transfer_syntax == "jpeg2000_lossless":
        # mono int16 J2K lossless always plans the GPU route: the batch must really have run
        assert any(d.startswith("nvimgcodec") for d in info.decoders), info.decoders


# --- benchmarks, warm page cache ---------------------------------------------------------------


def test_cseries_pydicom_cpu(benchmark, csspec, csdir, cslayouts, csreference):
    plugin = cpeers.reference_plugin(cslayouts[3])
    out = timed(benchmark, cpeers.pydicom_series_pinned, csdir)
    _record(benchmark, csspec, cslayouts, "pydicom", "cpu", out, csreference, f"pydicom:{plugin}")


@pytest.mark.gpu
def test_cseries_pydicom_to_cupy(benchmark, cuda, csspec, csdir, cslayouts, csreference):
    plugin = cpeers.reference_plugin(cslayouts[3])
    out = timed(benchmark, peers.synced(cuda, cpeers.pydicom_series_to_cupy, csdir))
    _record(benchmark, csspec, cslayouts, "pydicom+cupy", "cuda", out, csreference, f"pydicom:{plugin}")


@pytest.mark.gpu
def test_cseries_pydicom_nvimgcodec_cupy(benchmark, cuda, csspec, csdir, cslayouts, csreference):
    if (why := cpeers.register_nvimgcodec()) is not None:
        pytest.skip(why)
    first = peers.series_files(csdir)[0]
    if (why := cpeers.plugin_available(first, cpeers.NVIMGCODEC_PLUGIN)) is not None:
        pytest.skip(why)
    out = timed(benchmark, peers.synced(cuda, cpeers.pydicom_series_to_cupy, csdir, cpeers.NVIMGCODEC_PLUGIN))
    _record(benchmark, csspec, cslayouts, "pydicom+nvimgcodec+cupy", "cuda", out, csreference,
            "nvimgcodec plugin (per slice)")


def test_cseries_dicomsdl_cpu(benchmark, csspec, csdir, cslayouts, csreference):
    peers.skip_unless_dicomsdl_reads_series(csdir)
    out = timed(benchmark, peers.dicomsdl_series, csdir)
    _record(benchmark, csspec, cslayouts, "dicomsdl", "cpu", out, csreference, "dicomsdl")


@pytest.mark.gpu
def test_cseries_dicomsdl_to_cupy(benchmark, cuda, csspec, csdir, cslayouts, csreference):
    peers.skip_unless_dicomsdl_reads_series(csdir)
    out = timed(benchmark, peers.synced(cuda, peers.dicomsdl_series_to_cupy, csdir))
    _record(benchmark, csspec, cslayouts, "dicomsdl+cupy", "cuda", out, csreference, "dicomsdl")


def test_cseries_kvdicom_cpu(benchmark, csspec, csdir, cslayouts, csreference):
    load_series = peers.load_series_or_skip()
    volume, info = timed(benchmark, load_series, csdir, "cpu")
    problem = _record(benchmark, csspec, cslayouts, "kvdicom", "cpu", volume, csreference, "; ".join(info.decoders))
    assert problem is None, problem


@pytest.mark.gpu
def test_cseries_kvdicom_gpu(benchmark, cuda, csspec, csdir, cslayouts, csreference):
    load_series = peers.load_series_or_skip()
    volume, info = timed(benchmark, peers.synced(cuda, load_series, csdir, "cuda"))
    problem = _record(benchmark, csspec, cslayouts, "kvdicom", "cuda", volume, csreference, "; ".join(info.decoders))
    assert problem is None, f"{problem} (decoders: {info.decoders})"


@pytest.mark.cold
def test_cseries_kvdicom_cpu_cold(benchmark, csspec, csdir, cslayouts, csreference):
    load_series = peers.load_series_or_skip()
    volume, info = load_series(csdir, "cpu")
    problem = _record(benchmark, csspec, cslayouts, "kvdicom", "cpu", volume, csreference, "; ".join(info.decoders),
                      page_cache="cold")
    assert problem is None, problem
    time_cold(benchmark, peers.series_files(csdir), lambda: load_series(csdir, "cpu"))


@pytest.mark.gpu
@pytest.mark.cold
def test_cseries_kvdicom_gpu_cold(benchmark, cuda, csspec, csdir, cslayouts, csreference):
    load_series = peers.load_series_or_skip()
    volume, info = load_series(csdir, "cuda")
    problem = _record(benchmark, csspec, cslayouts, "kvdicom", "cuda", volume, csreference,
                      "; ".join(info.decoders), page_cache="cold")
    assert problem is None, f"{problem} (decoders: {info.decoders})"
    del volume
    time_cold(benchmark, peers.series_files(csdir), peers.synced(cuda, load_series, csdir, "cuda"))


@pytest.mark.cold
def test_cseries_disk_ceiling_cpu_cold(benchmark, csspec, csdir, csreference):
    """Every compressed file read whole with O_DIRECT, in decoded bytes per second (bench/series_disk.py)."""
    time_disk_ceiling(benchmark, csspec.case_id, peers.series_files(csdir), int(csreference.nbytes), "cpu",
                      slices=csspec.slices, files=csspec.file_count)


@pytest.mark.gpu
@pytest.mark.cold
def test_cseries_disk_ceiling_gpu_cold(benchmark, cuda, csspec, csdir, csreference):
    time_disk_ceiling(benchmark, csspec.case_id, peers.series_files(csdir), int(csreference.nbytes), "cuda",
                      slices=csspec.slices, files=csspec.file_count)


def test_cseries_fixture_is_the_phantom_compressed(csspec, csdir, cslayouts, csreference):
    """The folder holds ``slices`` compressed files of the spec's syntax whose pixels compress (not noise)."""
    file_bytes, compressed_bytes, _, tsyntax = cslayouts
    assert len(peers.series_files(csdir)) == csspec.slices
    assert str(tsyntax) == COMPRESSED_SYNTAXES[csspec.transfer_syntax][0]
    assert csreference.shape == (csspec.slices, csspec.rows, csspec.cols)
    assert csreference.nbytes / compressed_bytes > 1.5, "compression ratio too low for image-like content"
    assert np.ptp(csreference) > 1000  # HU-like levels, air to bone


# --- ceilings: the same codestreams decoded from memory (bench/ceilings.py) ------------------------------------


@pytest.fixture(scope="session")
def csframes(csdir):
    """(the first slice's layout as a batch of all, every slice's frame in slice order, codestream facts), untimed.

    Slice order is the reference's (``bench.peers.slice_sort_key``), found with pydicom, not kvdicom."""
    import pydicom

    from kvdicom._codecs.route import as_batch
    from kvdicom._header import compressed

    def key(path):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return peers.slice_sort_key(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"),
                                    ds.get("InstanceNumber"))

    layouts = [kvdicom.inspect(p) for p in sorted(peers.series_files(csdir), key=key)]
    frames, infos = [], []
    for layout in layouts:
        _, got = compressed.read_frames(layout)
        frames += got
        infos += compressed.check_frames(layout, got)
    return as_batch(layouts[0], len(frames)), frames, infos


def _checked(output, reference, decoder: str):
    """``output`` if it equals the pydicom loop's volume; else the test fails (no ceiling times a wrong decode)."""
    if isinstance(output, str):
        pytest.fail(f"{decoder}: {output}")
    problem = mismatch(output, reference)
    assert problem is None, f"{decoder}: {problem}; a ceiling must not time a wrong decode"
    return output


def _host_ceiling(benchmark, spec, cslayouts, reference, csframes, variant: str):
    batch, frames, infos = csframes
    host_ceiling(benchmark, batch, frames, infos, variant, lambda out, decoder: _checked(out, reference, decoder),
                 lambda loader, out, decoder: _record(benchmark, spec, cslayouts, loader, "cpu", out, reference,
                                                      decoder))


def test_cseries_ceiling_cpu(benchmark, csspec, cslayouts, csreference, csframes):
    """imagecodecs on every core (openjpeg), the slices' codestreams in memory."""
    _host_ceiling(benchmark, csspec, cslayouts, csreference, csframes, "")


def test_cseries_ceiling_cpu_openjph(benchmark, csspec, cslayouts, csreference, csframes):
    """HTJ2K series: the same with OpenJPH (``imagecodecs.htj2k_decode``), a second ``decode_host`` variant."""
    _host_ceiling(benchmark, csspec, cslayouts, csreference, csframes, "openjph")


@pytest.mark.gpu
def test_cseries_ceiling_gpu(benchmark, cuda, csspec, cslayouts, csreference, csframes):
    """nvImageCodec, every slice in one ``Decoder.decode``, the codestreams in memory."""
    from kvdicom._codecs import gpu_codec

    if (why := gpu_codec.nvimgcodec_problem()) is not None:
        pytest.skip(why)
    batch, frames, infos = csframes
    how = gpu_codec.plan(batch, infos)  # the batch meets the size rule, as load_series' does
    if how.route != "gpu":
        pytest.skip(f"nvImageCodec does not decode this series exactly: {how.reason}")
    decode = GpuDecode(frames, how)
    time_checked_decode(benchmark, decode, lambda: decode.result(batch),
                        lambda out, decoder: _checked(out, csreference, decoder),
                        lambda out: _record(benchmark, csspec, cslayouts, ceiling_loader("decode_gpu"), "cuda", out,
                                            csreference, decode.name))
    decode.images = []

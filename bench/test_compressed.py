"""Compressed DICOM: GPU decode property tests, and each loader's warm decode of each compressed case.

Exactness rule: lossless syntaxes equal pydicom's ``pixel_array`` (reference
plugin pinned) exactly; irreversible JPEG 2000 / HTJ2K within 1 (pydicom's
own test tolerance), JPEG baseline within 5. ``extra_info`` records the
compressed and decoded bytes, the compression ratio, the frames (``frames_per_s``
is derived), and which decoder ran.

Ceilings, beside each case and in the same session: the case's codestreams, read
once beforehand, decoded from memory by nvImageCodec in one batch into device
memory (``ceiling:decode_gpu``) and by imagecodecs on every core
(``ceiling:decode_host``; HTJ2K also with OpenJPH, ``decode_host_openjph``), each
checked by the exactness rule before and after its timing. Every loader row names
its ceiling (``dgbench.schema.decode_ceiling_for``): a CPU row the host's fastest,
a CUDA row the fastest of all, so % of ceiling is the share of the decode this
machine can do that the loader delivers, reads and checks included.
"""

from __future__ import annotations

import numpy as np
import pytest

import kvdicom
from bench import compressed_peers as peers
from bench.ceilings import GpuDecode, host_ceiling, time_checked_decode
from bench.peers import dicomsdl_crash, dicomsdl_to_cupy, synced
from bench.rounds import timed
from dgbench.schema import bench_extra, ceiling_loader, decode_ceiling_for
from fixtures.encode import COMPRESSED_SYNTAXES
from fixtures.oracle import to_host
from fixtures.profiles import compressed_specs, is_series_stand_in
from kvdicom import settings

#: largest |kvdicom - pydicom| allowed per syntax (0: lossless)
TOLERANCE = {"jpeg_baseline": 5, "jpeg_extended": 5, "jpeg2000": 1, "htj2k": 1}


def _is_colour_j2k(spec) -> bool:
    return spec.samples_per_pixel > 1 and spec.transfer_syntax in ("jpeg2000_lossless", "jpeg2000", "htj2k_lossless",
                                                                   "htj2k")


def pytest_generate_tests(metafunc):
    if "cspec" in metafunc.fixturenames:
        specs = compressed_specs(metafunc.config.getoption("profile"))
        if metafunc.function.__name__.startswith("test_gpu_colour_j2k"):
            specs = [s for s in specs if _is_colour_j2k(s)]
        if metafunc.function.__name__.endswith("_openjph"):  # OpenJPH decodes HTJ2K only
            specs = [s for s in specs if s.transfer_syntax.startswith("htj2k")]
        metafunc.parametrize("cspec", specs, ids=[s.case_id for s in specs], scope="session")


@pytest.fixture(scope="session")
def cfile(request, corpus, cspec):
    """The cached compressed file, generated on first use (skipped when its encoder is missing)."""
    return peers.ensure_or_skip(corpus.ensure, cspec, "compressed cases", ("pylibjpeg", "openjpeg", "rle"))


@pytest.fixture(scope="session")
def creference(cfile):
    return peers.pydicom_pinned(cfile)


def difference(got, ref) -> int | None:
    """Largest absolute difference, or None when shape or dtype differ."""
    host = to_host(got)
    if host.shape != ref.shape or host.dtype != ref.dtype:
        return None
    return int(np.abs(host.astype(np.int64) - ref.astype(np.int64)).max()) if ref.size else 0


def within_tolerance(spec, got, ref) -> bool:
    diff = difference(got, ref)
    return diff is not None and diff <= TOLERANCE.get(spec.transfer_syntax, 0)


def _gpu_route(path) -> str:
    """Which decoder kvdicom's GPU load uses for ``path`` (the decoder route's own answer)."""
    from kvdicom._codecs import route

    return route.describe(kvdicom.inspect(path), "cuda")


def _record(benchmark, spec, path, loader, device, output, reference, decoder):
    layout = kvdicom.inspect(path)
    ok = None if output is None else within_tolerance(spec, output, reference)
    benchmark.extra_info.update(bench_extra(
        spec.case_id, loader, device, path.stat().st_size, int(reference.nbytes), "warm",
        matches_pydicom=ok, ceiling=decode_ceiling_for(device),  # a ceiling row names none
        compressed_bytes=layout.nbytes, compression_ratio=reference.nbytes / path.stat().st_size,
        frames=layout.number_of_frames, codec=layout.codec, decoder=decoder,
        lossless=COMPRESSED_SYNTAXES[spec.transfer_syntax][2], series_stand_in=is_series_stand_in(spec),
    ))
    return ok


@pytest.fixture(autouse=True)
def _decoder_recorded(request):
    """Every compressed benchmark row says which decoder ran (``extra_info['decoder']``, issue 10)."""
    bench = request.getfixturevalue("benchmark") if "benchmark" in request.fixturenames else None
    yield
    info = bench.extra_info if bench is not None else {}
    if info.get("case"):  # a row was recorded (skipped tests record none)
        assert info.get("decoder"), f"{request.node.name}: extra_info has no 'decoder' ({info})"


# --- property tests (run by ./dgb test) --------------------------------------------------------


def test_compressed_cpu_load_matches_pydicom(cspec, cfile, creference):
    got = kvdicom.load(cfile, "cpu")
    assert isinstance(got, np.ndarray)
    assert difference(got, creference) == 0  # the CPU path is pydicom's decoder: always exact


@pytest.mark.gpu
def test_compressed_gpu_load_matches_pydicom(cuda, cspec, cfile, creference, monkeypatch):
    from kvdicom._codecs import gpu_codec

    if (why := gpu_codec.nvimgcodec_problem()) is not None:
        pytest.skip(why)
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)  # small files too: test the GPU route on all
    monkeypatch.setattr(gpu_codec, "GPU_COLOUR_J2K", True)  # and every colour J2K kind, verified or not
    got = kvdicom.load(cfile, "cuda")
    assert type(got).__module__.startswith("cupy")
    diff = difference(got, creference)
    assert diff is not None, f"shape/dtype {got.shape}/{got.dtype} != pydicom's {creference.shape}/{creference.dtype}"
    assert diff <= TOLERANCE.get(cspec.transfer_syntax, 0), f"max difference {diff} ({_gpu_route(cfile)})"


@pytest.mark.gpu
def test_gpu_colour_j2k_decodes_like_pydicom_so_GPU_COLOUR_J2K_may_be_enabled(cuda, cspec, cfile, creference,
                                                                               monkeypatch):
    """The device check behind ``gpu_codec.GPU_COLOUR_J2K_VERIFIED`` (the colour J2K kinds decoded on the GPU).

    Forces colour JPEG 2000 (RGB, YBR_RCT, YBR_ICT) onto the GPU route and requires that nvImageCodec
    really decoded it (not a host fallback) within the exactness rule. A kind joins the verified set
    only after this passes for it on the device; a failure names the case and the difference.
    """
    from kvdicom._codecs import gpu_codec
    from kvdicom._header import compressed

    if (why := gpu_codec.nvimgcodec_problem()) is not None:
        pytest.skip(why)
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    monkeypatch.setattr(gpu_codec, "GPU_COLOUR_J2K", True)
    layout = kvdicom.inspect(cfile)
    _, frames = compressed.read_frames(layout)
    how = gpu_codec.plan(layout, compressed.check_frames(layout, frames))
    assert how.route == "gpu", f"colour J2K did not take the GPU route even when forced: {how.reason}"
    redo = []
    real = gpu_codec._decode_batch

    def recording(*args):
        raw, again = real(*args)
        redo.extend(again)
        return raw, again

    monkeypatch.setattr(gpu_codec, "_decode_batch", recording)
    got = kvdicom.load(cfile, "cuda")
    assert not redo, f"nvImageCodec returned no usable image for frames {redo} (decoded again on the host)"
    diff = difference(got, creference)
    assert diff is not None, f"shape/dtype {got.shape}/{got.dtype} != pydicom's {creference.shape}/{creference.dtype}"
    assert diff <= TOLERANCE.get(cspec.transfer_syntax, 0), (
        f"{cspec.case_id}: max difference {diff} from pydicom with colour J2K forced onto the GPU; "
        "keep this kind out of GPU_COLOUR_J2K_VERIFIED")


@pytest.mark.gpu
def test_compressed_gpu_blank_frames_are_not_mistaken_for_failures(cuda, tmp_path, monkeypatch):
    """A legitimately black frame decodes to zeros (re-decoded on the host, still zeros) beside a non-black one."""
    pytest.importorskip("openjpeg")
    from kvdicom._codecs import gpu_codec

    if (why := gpu_codec.nvimgcodec_problem()) is not None:
        pytest.skip(why)
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)
    import pydicom
    from pydicom.encaps import encapsulate

    from fixtures.encode import encode_frames
    from fixtures.spec import DicomSpec
    from fixtures.writer import build_dataset

    spec = DicomSpec(frames=2, rows=64, cols=64, bits_allocated=16, bits_stored=16, signed=True,
                     transfer_syntax="jpeg2000_lossless")
    ds = build_dataset(spec)
    frames = np.zeros((2, 64, 64), dtype=np.int16)
    frames[1] = np.arange(64 * 64, dtype=np.int16).reshape(64, 64)
    ds.PixelData = encapsulate(encode_frames("jpeg2000_lossless", frames, bits_stored=16, signed=True,
                                             photometric="MONOCHROME2"))
    path = tmp_path / "blank.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert np.array_equal(to_host(kvdicom.load(path, "cuda")), pydicom.dcmread(path).pixel_array)


# --- benchmarks, warm page cache ---------------------------------------------------------------


def test_compressed_pydicom(benchmark, cspec, cfile, creference):
    plugin = peers.reference_plugin(kvdicom.inspect(cfile).transfer_syntax)
    out = timed(benchmark, peers.pydicom_pinned, cfile)
    _record(benchmark, cspec, cfile, "pydicom", "cpu", out, creference, f"pydicom:{plugin}")


def test_compressed_pydicom_gdcm(benchmark, cspec, cfile, creference):
    if (why := peers.plugin_available(cfile, "gdcm")) is not None:
        pytest.skip(why)
    out = timed(benchmark, peers.pydicom_pinned, cfile, "gdcm")
    _record(benchmark, cspec, cfile, "pydicom+gdcm", "cpu", out, creference, "pydicom:gdcm")


def _cpu_route(path) -> str:
    """Which decoder kvdicom's CPU load uses for ``path``."""
    from kvdicom._codecs import route

    return route.describe(kvdicom.inspect(path), "cpu")


def test_compressed_kvdicom_cpu(benchmark, cspec, cfile, creference):
    out = kvdicom.load(cfile, "cpu")
    assert _record(benchmark, cspec, cfile, "kvdicom", "cpu", out, creference, _cpu_route(cfile))
    benchmark(kvdicom.load, cfile, "cpu")


@pytest.mark.gpu
def test_compressed_kvdicom_gpu(benchmark, cuda, cspec, cfile, creference):
    out = kvdicom.load(cfile, "cuda")
    ok = _record(benchmark, cspec, cfile, "kvdicom", "cuda", out, creference, _gpu_route(cfile))
    assert ok, f"max difference {difference(out, creference)}"
    del out
    benchmark(synced(cuda, kvdicom.load, cfile, "cuda"))


@pytest.mark.gpu
def test_compressed_pydicom_nvimgcodec_cupy(benchmark, cuda, cspec, cfile, creference):
    if (why := peers.register_nvimgcodec()) is not None:
        pytest.skip(why)
    if (why := peers.plugin_available(cfile, peers.NVIMGCODEC_PLUGIN)) is not None:
        pytest.skip(why)
    out = timed(benchmark, synced(cuda, peers.pydicom_nvimgcodec_to_cupy, cfile))
    _record(benchmark, cspec, cfile, "pydicom+nvimgcodec+cupy", "cuda", out, creference,
            "nvimgcodec plugin (per frame)")


@pytest.mark.gpu
def test_compressed_dicomsdl_cupy(benchmark, cuda, cspec, cfile, creference):
    if (why := dicomsdl_crash([cfile])) is not None:
        pytest.skip(why)
    out = timed(benchmark, synced(cuda, dicomsdl_to_cupy, cfile))
    _record(benchmark, cspec, cfile, "dicomsdl+cupy", "cuda", out, creference, "dicomsdl")


# --- ceilings: the same codestreams decoded from memory (bench/ceilings.py) ------------------------------------


@pytest.fixture(scope="session")
def cframes(cfile):
    """(layout, frames, codestream facts) of the case: its codestreams read once, untimed."""
    from kvdicom._header import compressed

    layout = kvdicom.inspect(cfile)
    _, frames = compressed.read_frames(layout)
    return layout, frames, compressed.check_frames(layout, frames)


def _checked(spec, output, reference, decoder: str):
    """``output`` if it meets the exactness rule against pydicom's ``pixel_array``; else the test fails."""
    if isinstance(output, str):
        pytest.fail(f"{decoder}: {output}")
    diff = difference(output, reference)
    assert diff is not None and diff <= TOLERANCE.get(spec.transfer_syntax, 0), (
        f"{decoder}: max difference {diff} from pydicom's pixel_array (None: shape or dtype differ); "
        "a ceiling must not time a wrong decode")
    return output


def _host_ceiling(benchmark, spec, path, reference, cframes, variant: str):
    layout, frames, infos = cframes
    host_ceiling(benchmark, layout, frames, infos, variant,
                 lambda out, decoder: _checked(spec, out, reference, decoder),
                 lambda loader, out, decoder: _record(benchmark, spec, path, loader, "cpu", out, reference, decoder))


def test_compressed_ceiling_cpu(benchmark, cspec, cfile, creference, cframes):
    """imagecodecs on every core, the codestreams in memory (openjpeg for JPEG 2000 and HTJ2K)."""
    _host_ceiling(benchmark, cspec, cfile, creference, cframes, "")


def test_compressed_ceiling_cpu_openjph(benchmark, cspec, cfile, creference, cframes):
    """HTJ2K cases: the same with OpenJPH (``imagecodecs.htj2k_decode``), a second ``decode_host`` variant."""
    _host_ceiling(benchmark, cspec, cfile, creference, cframes, "openjph")


@pytest.mark.gpu
def test_compressed_ceiling_gpu(benchmark, cuda, cspec, cfile, creference, cframes, monkeypatch):
    """nvImageCodec, all frames in one ``Decoder.decode``, the codestreams in memory, where it decodes them exactly."""
    from kvdicom._codecs import gpu_codec

    if (why := gpu_codec.nvimgcodec_problem()) is not None:
        pytest.skip(why)
    layout, frames, infos = cframes
    monkeypatch.setattr(settings, "GPU_MIN_DECODED_BYTES", 0)  # small files too: the size rule is kvdicom's choice
    how = gpu_codec.plan(layout, infos)
    if how.route != "gpu":
        pytest.skip(f"nvImageCodec does not decode this case exactly: {how.reason}")
    decode = GpuDecode(frames, how)
    time_checked_decode(benchmark, decode, lambda: decode.result(layout),
                        lambda out, decoder: _checked(cspec, out, creference, decoder),
                        lambda out: _record(benchmark, cspec, cfile, ceiling_loader("decode_gpu"), "cuda", out,
                                            creference, decode.name))
    decode.images = []

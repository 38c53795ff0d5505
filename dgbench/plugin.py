"""The dicom-gpu-bench pytest plugin: options, GPU probe, corpus, machine info, results folder, summary.

Loaded by the root ``conftest.py`` (``pytest_plugins = ["dgbench.plugin"]``), so it serves
``bench/`` and ``tests/`` alike and is not registered for other projects (no ``pytest11`` entry point).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dgbench import config as cfg
from dgbench.benchmark_session import benchmark_session
from dgbench.derived import add_derived_fields, format_table, summary_rows
from dgbench.machine import GpuStatus, machine_slug, probe_gpu
from dgbench.machine import machine_info as describe_machine
from fixtures.cache import Corpus, CorpusError
from fixtures.encode import EncoderUnavailable
from fixtures.profiles import PROFILES, profile_specs, series_profile_specs

# Regression tracking (BASELINE file, noise rule, --regression-noise-k): see dgbench/baseline.py; a run stopped
# early (SIGTERM, Ctrl-C, -x) saves what it measured, marked: see dgbench/interrupt.py; a run taken in parts goes on
# where its saved parts stop (--continue-from): see dgbench/continue_run.py; a test that leaves a kvdicom constant
# changed fails: see dgbench/isolation.py. Interrupt first: baseline imports it.
pytest_plugins = ["dgbench.interrupt", "dgbench.baseline", "dgbench.continue_run", "dgbench.isolation"]

ROOT = cfg.ROOT
GPU_STATUS = pytest.StashKey[GpuStatus]()
CORPUS = pytest.StashKey[Corpus]()

cfg.register_hypothesis_profiles()


def pytest_addoption(parser):
    group = parser.getgroup("dicom-gpu-bench")
    group.addoption(
        "--profile", choices=PROFILES, default=os.environ.get("DGB_PROFILE"),
        help="benchmark matrix: quick (CI), full (default with a GPU), nightly (adds >= 1 GiB files). Env: DGB_PROFILE",
    )
    group.addoption(
        "--corpus-dir", default=os.environ.get("DGB_CORPUS_DIR", str(cfg.DEFAULT_CORPUS_DIR)),
        help="where generated DICOM fixtures are cached between sessions. Env: DGB_CORPUS_DIR",
    )
    group.addoption(
        "--corpus-cap", type=float, default=float(os.environ.get("DGB_CORPUS_CAP_GB", cfg.DEFAULT_CORPUS_CAP_GB)),
        help="size cap of the corpus in GiB; least recently used files are evicted. Env: DGB_CORPUS_CAP_GB",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy, a CUDA device and KvikIO; skipped with the reason otherwise")
    config.addinivalue_line("markers", "cold: page cache dropped before every round; run on the larger files only")
    config.addinivalue_line("markers", "profile: one stage of a kvdicom load timed alone (bench/test_series_stages.py);"
                                       " in every profile, cheap; -m 'not profile' leaves them out")
    gpu = probe_gpu()
    config.stash[GPU_STATUS] = gpu
    if config.getoption("profile") is None:
        config.option.profile = cfg.DEFAULT_PROFILE_GPU if gpu.available else cfg.DEFAULT_PROFILE_CPU


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    """Name pytest-benchmark's storage folder after the GPU, not the Python version."""
    bench_session = benchmark_session(session.config)
    if bench_session is None:
        return
    slug = machine_slug(session.config.stash[GPU_STATUS])
    bench_session.machine_id = slug
    bench_session.storage.default_machine_id = slug
    if dgb_commit() and bench_session.autosave:  # the file name carries the commit too
        from pytest_benchmark.utils import get_current_time

        bench_session.autosave = f"{dgb_commit()}_{get_current_time()}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A fixture or test that needs an encoder this machine lacks (``EncoderUnavailable``: pyjpegls, imagecodecs'
    HTJ2K…) is a skip with that one-line reason, wherever it is raised, not an error: on the device with
    imagecodecs but without pyjpegls, 105 tests errored in their fixtures instead of skipping."""
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(EncoderUnavailable):
        path, line, _ = item.location
        report.outcome = "skipped"
        report.longrepr = (str(item.path), (line or 0) + 1, f"Skipped: {call.excinfo.value}")


def pytest_collection_modifyitems(config, items):
    gpu = config.stash[GPU_STATUS]
    if gpu.available:
        return
    skip = pytest.mark.skip(reason=f"no GPU: {gpu.reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_generate_tests(metafunc):
    """Parametrize every test that asks for ``spec`` or ``series_spec`` over the profile's matrix (``cold``: files
    and series of at least COLD_MIN_BYTES of pixels only, so ``quick``'s tiny series has no cold rows)."""
    cold = metafunc.definition.get_closest_marker("cold") is not None
    if "spec" in metafunc.fixturenames:
        specs = profile_specs(metafunc.config.getoption("profile"))
        if cold:
            specs = [s for s in specs if s.pixel_bytes >= cfg.COLD_MIN_BYTES]
        metafunc.parametrize("spec", specs, ids=[s.case_id for s in specs], scope="session")
    if "series_spec" in metafunc.fixturenames:
        series = series_profile_specs(metafunc.config.getoption("profile"))
        if cold:
            series = [s for s in series if s.pixel_bytes >= cfg.COLD_MIN_BYTES]
        metafunc.parametrize("series_spec", series, ids=[s.case_id for s in series], scope="session")


@pytest.fixture(scope="session")
def gpu_status(pytestconfig) -> GpuStatus:
    return pytestconfig.stash[GPU_STATUS]


@pytest.fixture(scope="session")
def corpus(pytestconfig) -> Corpus:
    """The on-disk fixture cache, checked to hold the whole profile before anything is written."""
    cap = int(pytestconfig.getoption("corpus_cap") * 2**30)
    try:
        store = Corpus(pytestconfig.getoption("corpus_dir"), cap)
        profile = pytestconfig.getoption("profile")
        store.check_fits([*profile_specs(profile), *series_profile_specs(profile)])
    except (CorpusError, OSError) as exc:
        pytest.fail(f"corpus unusable: {exc}", pytrace=False)
    pytestconfig.stash[CORPUS] = store  # its notices (regenerated files) go into the summary
    return store


def _profile_paths(corpus: Corpus, profile: str) -> set[Path]:
    """The corpus paths of every file and series of ``profile``: what making room must not evict."""
    keep = {corpus.path_for(s) for s in profile_specs(profile)}
    keep |= {corpus.series_path_for(s) for s in series_profile_specs(profile)}
    return keep


@pytest.fixture(scope="session")
def spec_file(request, corpus, spec) -> Path:
    """The cached file of the current matrix point, generated on first use."""
    keep = _profile_paths(corpus, request.config.getoption("profile"))
    try:
        return corpus.ensure(spec, keep)
    except (CorpusError, OSError) as exc:
        pytest.fail(f"cannot generate fixture {spec.case_id}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def series_dir(request, corpus, series_spec) -> Path:
    """The cached folder of the current series, generated on first use."""
    keep = _profile_paths(corpus, request.config.getoption("profile"))
    try:
        return corpus.ensure_series(series_spec, keep)
    except (CorpusError, OSError) as exc:
        pytest.fail(f"cannot generate series fixture {series_spec.case_id}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def cuda(gpu_status):
    """Warm CUDA, CuPy's memory pool and KvikIO (thread pool, cuFile/compat path) before any timing."""
    if not gpu_status.available:
        pytest.skip(f"no GPU: {gpu_status.reason}")
    import tempfile

    import cupy
    import kvikio

    from kvdicom._io.tuning import configure_kvikio

    configure_kvikio()
    data = cupy.arange(1 << 20, dtype=cupy.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "warmup.bin")
        with kvikio.CuFile(path, "w") as f:
            f.write(data)
        back = cupy.empty_like(data)
        with kvikio.CuFile(path, "r") as f:
            f.read(back)
    assert bool((back == data).all()), "KvikIO warm-up read back different bytes"
    cupy.cuda.Device().synchronize()
    return cupy


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(
        describe_machine(config.stash[GPU_STATUS], config.getoption("corpus_dir"), config.getoption("profile"), ROOT)
    )


def pytest_benchmark_update_commit_info(config, commit_info):
    """DGB_COMMIT, when set, names the commit: a copied tree has no .git, and a tree nested in another
    checkout would otherwise record the outer repository's commit."""
    commit = dgb_commit()
    if commit and commit_info.get("id") != commit:
        commit_info.clear()  # time, branch, dirty flag of the outer checkout do not describe this tree
        commit_info.update(id=commit, time=None, author_time=None, dirty=False, project="dicom-gpu-bench",
                           branch=os.environ.get("DGB_BRANCH") or "(DGB_COMMIT)")


def dgb_commit() -> str | None:
    """The commit named by DGB_COMMIT, if set (it wins over whatever git checkout encloses the tree)."""
    return os.environ.get("DGB_COMMIT", "").strip() or None


def pytest_benchmark_update_json(config, benchmarks, output_json):
    add_derived_fields(output_json["benchmarks"])


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    gpu = config.stash[GPU_STATUS]
    bench_session = benchmark_session(config)
    ran = [b for b in getattr(bench_session, "benchmarks", []) if b]
    if ran:
        dicts = [b.as_dict(include_data=False) for b in ran]
        add_derived_fields(dicts)
        rows = summary_rows(dicts)
        if rows:
            terminalreporter.section("dicom-gpu-bench: throughput")
            for line in format_table(rows):
                terminalreporter.write_line(line)
    corpus = config.stash.get(CORPUS, None)
    for notice in corpus.notices if corpus is not None else ():
        terminalreporter.write_line(notice, yellow=True)
    if not gpu.available:
        terminalreporter.write_line(f"dicom-gpu-bench: GPU benchmarks and GPU property tests did not run: {gpu.reason}")

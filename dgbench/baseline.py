"""Regression tracking: which saved run ``--benchmark-compare`` uses, and which slow-downs count.

A pytest plugin, loaded by the root ``conftest.py`` (``pytest_plugins``). It
works on pytest-benchmark 5.2's ``BenchmarkSession`` (:mod:`dgbench.benchmark_session`):

* **Baseline choice.** pytest-benchmark loads the compared run in its own
  ``pytest_configure``, before ``conftest.py`` has renamed the machine folder
  (``pytest_sessionstart``), so it would look in the wrong folder. This plugin
  takes ``--benchmark-compare`` (no value) away from it in ``pytest_configure``
  and, once every ``pytest_sessionstart`` has run (so ``machine_id`` is the
  slug), resolves it to one file of ``<storage>/<machine_id>/``: the one named
  in ``BASELINE`` if that file exists, else the newest numbered run that was not
  stopped before its end (:mod:`dgbench.interrupt`: its missing rows would go
  uncompared); then it
  lets pytest-benchmark load that file (``handle_loading``). An explicit
  ``--benchmark-compare=NUM`` is left to pytest-benchmark, in the right folder.
* **Missing baseline.** No folder, no run in it, or ``BASELINE`` naming a file
  that is not there: one line (:func:`missing_message`) at the start and again
  in the terminal summary; the run goes on uncompared and ``--benchmark-compare-fail``
  is dropped (it would otherwise end in pytest-benchmark's usage error), so
  the exit status is that of the tests alone.
* **Broken baseline.** A ``BASELINE`` that is a directory, unreadable, binary,
  has a byte-order mark or more than one line, or names a run whose stats lack
  fields or hold NaN, negative or non-numeric values: the same one line, naming
  the file and the fault (:func:`baseline_marker_fault`, :func:`run_fault`),
  and the run is "not compared" — never judged against bad numbers, never a traceback.
* **Noise.** After pytest-benchmark has compared (``finish`` in its
  ``pytest_sessionfinish`` wrapper), each of its ``--benchmark-compare-fail``
  regressions is kept only if it also exceeds the case's run-to-run noise, see
  :func:`noise_floor`. What is left is what pytest-benchmark then fails on.
  The summary section "regressions beyond noise" lists them. A baseline row whose
  IQR exceeds its median is left out of the comparison and named there as not
  judged (any slow-down would pass as its noise); the rest of the run is compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dgbench.benchmark_session import benchmark_session
from dgbench.config import DEFAULT_NOISE_K
from dgbench.derived import noise_floor
from dgbench.interrupt import is_interrupted
from dgbench.store import RunFault, read_bytes, read_run, run_fault, too_noisy

BASELINE_FILE = "BASELINE"
#: Stats a compared run must hold as finite, non-negative numbers (pytest-benchmark's table and the noise rule).
_STATE = pytest.StashKey["BaselineState"]()


@dataclass
class BaselineState:
    requested: object = None          # what the user passed to --benchmark-compare (True, a NUM, or None)
    folder: Path | None = None        # the machine folder that was searched
    chosen: Path | None = None        # the file compared against
    how: str = ""                     # "BASELINE" or "newest run"
    missing: str | None = None        # the one-line message when there is nothing to compare against
    compare_fail_dropped: bool = False
    verdicts: list | None = None      # list[Verdict] once compared
    too_noisy: list[str] | None = None  # the baseline's benchmarks left unjudged (IQR above the median)


@dataclass
class Verdict:
    name: str
    field: str
    change: float        # in the check's units: percent for "median:10%", seconds for "median:0.001"
    threshold: float
    noise: float         # k × max(spread now, spread baseline), same units
    percent: bool

    @property
    def beyond_noise(self) -> bool:
        return self.change > max(self.threshold, self.noise)

    @property
    def over_threshold(self) -> bool:
        return self.change > self.threshold

    def describe(self) -> str:
        unit = "%" if self.percent else "s"
        fmt = (lambda v: f"{v:.1f}%") if self.percent else (lambda v: f"{v:.6f}s")
        return (f"{self.name}: {self.field} {'+' if self.change >= 0 else ''}{fmt(self.change)}"
                f" > max(threshold {fmt(self.threshold)}, noise {fmt(self.noise)})"
                if self.beyond_noise else
                f"{self.name}: {self.field} {'+' if self.change >= 0 else ''}{fmt(self.change)}"
                f" within noise {fmt(self.noise)} (threshold {self.threshold:g}{unit})")


# --------------------------------------------------------------------------- choosing the baseline

def numbered_runs(folder: Path) -> list[Path]:
    """The saved runs of one machine folder (pytest-benchmark's NNNN_ names), oldest first."""
    return sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.json"), key=lambda p: p.name)


def _display(folder: Path) -> str:
    try:
        return str(folder.relative_to(Path.cwd()))
    except ValueError:
        return str(folder)


def missing_message(folder: Path, reason: str) -> str:
    """The one line printed when there is no baseline to compare against."""
    where = _display(folder)
    return (f"dicom-gpu-bench: no baseline in {where}/ ({reason}); this run is not compared. "
            f"To create one, run `./dgb bench` once on this machine and commit its JSON "
            f"(or write the name of a saved run into {where}/{BASELINE_FILE}).")


def baseline_marker_fault(marker: Path) -> tuple[str | None, str | None]:
    """(the run's file name, None) or (None, what is wrong with ``marker``)."""
    if marker.is_dir():
        return None, f"{BASELINE_FILE} is a directory, not a file holding a run's name"
    try:
        raw = read_bytes(marker, limit=4096)  # a file name: a FIFO or /dev/zero is refused, never read
    except RunFault as exc:
        return None, str(exc)
    if raw.startswith(b"\xef\xbb\xbf") or raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None, f"{BASELINE_FILE} starts with a byte-order mark; save it as plain text (one file name)"
    if b"\0" in raw:
        return None, f"{BASELINE_FILE} is binary, not a run's file name"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, f"{BASELINE_FILE} is binary (not UTF-8), not a run's file name"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None, f"{BASELINE_FILE} is empty"
    if len(lines) > 1:
        return None, f"{BASELINE_FILE} has {len(lines)} lines; it must name one run"
    return lines[0], None


def resolve_baseline(folder: Path) -> tuple[Path | None, str, str | None]:
    """(file, how it was chosen, None) or (None, "", reason it is missing) for one machine folder."""
    if not folder.is_dir():
        return None, "", "the folder does not exist"
    marker = folder / BASELINE_FILE
    if marker.exists() or marker.is_symlink():
        name, fault = baseline_marker_fault(marker)
        if fault:
            return None, "", fault
        chosen = folder / Path(name).name
        if not chosen.is_file():
            return None, "", f"{BASELINE_FILE} names {name}, which is not there"
        return chosen, BASELINE_FILE, None
    runs = numbered_runs(folder)
    if not runs:
        return None, "", "the folder holds no saved run"
    for passed, run in enumerate(reversed(runs)):
        try:
            stopped = is_interrupted(read_run(run))
        except RunFault:  # named with its fault by the caller's run_fault
            stopped = False
        if not stopped:
            how = "newest run" if not passed else f"newest run not interrupted; {passed} newer one(s) passed over"
            return run, how, None
    return None, "", f"every saved run there was interrupted before its end (the newest: {runs[-1].name})"


# --------------------------------------------------------------------------- noise rule

def judge(bench_session, k: float) -> list[Verdict]:
    """One verdict per (compared benchmark, --benchmark-compare-fail check); median:0% when none given."""
    from pytest_benchmark.utils import PercentageRegressionCheck

    checks = bench_session.compare_fail or [PercentageRegressionCheck("median", 0)]
    verdicts = []
    for bench in bench_session.benchmarks:
        if not bench:
            continue
        now = bench.as_dict(include_data=False, flat=True)
        for mapping in (bench_session.compared_mapping or {}).values():
            base = mapping.get(bench.fullname)
            if base is None:
                continue
            base_stats = base["stats"]
            for check in checks:
                percent = isinstance(check, PercentageRegressionCheck)
                verdicts.append(Verdict(
                    name=bench_session.name_format({**now, "source": None}),
                    field=check.field,
                    change=check.compute(now, base_stats),
                    threshold=float(check.threshold),
                    noise=noise_floor(now, base_stats, k, percent),
                    percent=percent,
                ))
    return verdicts


# --------------------------------------------------------------------------- hooks

def pytest_addoption(parser):
    parser.getgroup("dicom-gpu-bench").addoption(
        "--regression-noise-k", type=float, default=DEFAULT_NOISE_K, metavar="K",
        help="a compared case regresses only if its slow-down exceeds both the --benchmark-compare-fail "
             "threshold and K × the larger IQR/median of the two runs. Default: %(default)s",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Before pytest-benchmark loads anything: keep a bare --benchmark-compare for ourselves."""
    state = BaselineState(requested=config.getoption("benchmark_compare", None) or None)
    config.stash[_STATE] = state
    if state.requested:
        config.option.benchmark_compare = []   # pytest-benchmark's own "not given": it loads nothing yet


@pytest.hookimpl(wrapper=True)
def pytest_sessionstart(session):
    """After conftest.py has set the machine folder: pick the baseline and load it."""
    result = yield
    _load_baseline(session)
    return result


def _load_baseline(session):
    config = session.config
    state = config.stash.get(_STATE, None)
    bs = benchmark_session(config)
    if state is None or bs is None or not state.requested:
        return
    storage = bs.storage
    if hasattr(storage, "default_machine_id"):
        storage.default_machine_id = bs.machine_id
    if not hasattr(storage, "path"):      # elasticsearch storage: leave it to pytest-benchmark
        bs.compare = state.requested
        bs.handle_loading()
        return
    state.folder = Path(storage.path) / bs.machine_id
    if state.requested is True:
        state.chosen, state.how, reason = resolve_baseline(state.folder)
        reason = reason or run_fault(state.chosen)
        if reason:
            state.missing = missing_message(state.folder, reason)
        else:
            bs.compare = str(state.chosen)
    elif not storage.query(str(state.requested)):
        state.missing = missing_message(state.folder, f"no saved run matches --benchmark-compare={state.requested}")
    elif reason := run_fault(Path(storage.query(str(state.requested))[0])):
        state.missing = missing_message(state.folder, reason)
    else:
        bs.compare = state.requested
        state.how = f"--benchmark-compare={state.requested}"
    if not state.missing:
        bs.handle_loading()
        if not bs.compared_mapping:
            state.missing = missing_message(state.folder, f"{bs.compare} could not be loaded")
        else:
            if state.chosen is None:
                state.chosen = Path(storage.path) / next(iter(bs.compared_mapping))
            state.too_noisy = _leave_out_noisy(bs.compared_mapping)
    if state.missing:
        bs.compare = []
        if bs.compare_fail:
            bs.compare_fail = None
            state.compare_fail_dropped = True
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(state.missing, yellow=True, bold=True)


def _leave_out_noisy(compared_mapping: dict) -> list[str]:
    """Take the baseline's benchmarks whose IQR exceeds their median out of the comparison, and name them: judged,
    any slow-down of theirs would pass as noise. The rest of that run is compared as usual."""
    left_out = []
    for mapping in compared_mapping.values():
        for fullname, bench in list(mapping.items()):
            if too_noisy(bench["stats"]):
                del mapping[fullname]
                left_out.append(fullname)
    return sorted(left_out)


def pytest_sessionfinish(session):
    """Runs after pytest-benchmark's finish() (its sessionfinish is a wrapper): drop regressions within noise."""
    config = session.config
    state = config.stash.get(_STATE, None)
    bs = benchmark_session(config)
    if state is None or bs is None or not bs.compared_mapping:
        return
    state.verdicts = judge(bs, config.getoption("regression_noise_k"))
    # pytest-benchmark would raise PerformanceRegression out of its pytest_terminal_summary for
    # every threshold breach: a traceback, and the summary sections after it are lost. We fail
    # instead, through the exit status, and only for breaches beyond noise.
    bs.performance_regressions = []
    if bs.compare_fail and any(v.beyond_noise for v in state.verdicts) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    state = config.stash.get(_STATE, None)
    if state is None or not state.requested:
        return
    tr = terminalreporter
    if state.missing:
        tr.section("dicom-gpu-bench: baseline", yellow=True)
        tr.write_line(state.missing, yellow=True, bold=True)
        if state.compare_fail_dropped:
            tr.write_line("dicom-gpu-bench: --benchmark-compare-fail was NOT applied (nothing to compare against).",
                          yellow=True, bold=True)
        return
    if state.verdicts is None:
        return
    tr.section("dicom-gpu-bench: regressions beyond noise")
    if state.too_noisy:
        shown = ", ".join(state.too_noisy[:5]) + (f" and {len(state.too_noisy) - 5} more" if len(state.too_noisy) > 5
                                                  else "")
        tr.write_line(f"not judged, too noisy in the baseline (IQR above its median): {len(state.too_noisy)}: {shown}",
                      yellow=True, bold=True)
    k = config.getoption("regression_noise_k")
    if state.chosen is not None:
        tr.write_line(f"baseline: {_display(state.chosen)} ({state.how})")
    tr.write_line(f"rule: change > max(threshold, {k:g} x max(IQR/median now, IQR/median baseline))"
                  + ("" if benchmark_session(config).compare_fail
                     else "; no --benchmark-compare-fail: threshold median:0%, report only"))
    beyond = [v for v in state.verdicts if v.beyond_noise]
    ignored = [v for v in state.verdicts if v.over_threshold and not v.beyond_noise]
    for v in beyond:
        label = "REGRESSED " if benchmark_session(config).compare_fail else "slower    "
        tr.write_line(label + v.describe(), red=True, bold=True)
    for v in ignored:
        tr.write_line("noise     " + v.describe())
    tr.write_line(f"{len({v.name for v in state.verdicts})} compared, {len({v.name for v in beyond})} beyond noise, "
                  f"{len({v.name for v in ignored})} over threshold but within noise")
    if beyond and benchmark_session(config).compare_fail:
        tr.write_line("dicom-gpu-bench: performance has regressed beyond noise; "
                      "exit status 1 (--benchmark-compare-fail)",
                      red=True, bold=True)

"""A benchmark run stopped before its end still saves what it measured, and says that it stopped.

pytest-benchmark saves a run once, when the session ends. A run ended by ``SIGTERM`` (``timeout``, a CI job's
time limit, ``kill``) never got there: Python's default action ends the process at once, and every benchmark
already measured was lost. On the device, two benchmark parts cut by ``timeout`` lost about 550 s of
measurements that way in one lease. A run interrupted by Ctrl-C (``SIGINT``), or stopped by ``-x`` /
``--maxfail``, did reach the end of the session and saved a file that looked like any other.

This plugin, while a run saves (``--benchmark-autosave``, ``--benchmark-save``, ``--benchmark-json``) and pytest
runs in the main thread, turns the first ``SIGTERM`` into the ``KeyboardInterrupt`` pytest already handles, so
the session ends as after Ctrl-C and pytest-benchmark saves the benchmarks that finished (the one the
interruption cut between its rounds is left out: it holds fewer rounds than it asked for). A second ``SIGTERM``
is ignored meanwhile, so it cannot cut the save half-way (``SIGKILL`` still ends the process). A run that
stopped early for any of these reasons holds ``"interrupted": "<why>"`` at the top of its JSON;
:func:`dgbench.baseline.resolve_baseline` passes over such runs when it looks for the newest one to compare
against, since their missing rows would be compared with nothing, and the terminal summary says what happened.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass

import pytest

from dgbench.benchmark_session import benchmark_session

#: The key a run that stopped early holds at the top of its saved JSON, with the reason as its value.
INTERRUPTED = "interrupted"


@dataclass
class _State:
    previous: object = None      # the SIGTERM handler before ours, restored when the session ends
    installed: bool = False
    signal: str | None = None    # "SIGTERM" once ours fired
    stopped: str | None = None   # why the run stopped before the end of its selection
    deferred: bool = False       # a SIGTERM came while the run was being saved
    running: str | None = None   # the test running now (its node id), or the one the interruption cut


_STATE = pytest.StashKey[_State]()


def is_interrupted(document: object) -> bool:
    """Whether a saved run (its parsed JSON) stopped before the end of its selection."""
    return isinstance(document, dict) and bool(document.get(INTERRUPTED))


def _saves(config) -> bool:
    bs = benchmark_session(config)
    return bs is not None and not bs.disabled and bool(bs.save or bs.autosave or bs.json)


def pytest_configure(config):
    config.stash[_STATE] = _State()


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    state = session.config.stash[_STATE]
    if not _saves(session.config) or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:  # the caller handles SIGTERM: leave it to them
        return

    def on_sigterm(signum, frame):
        state.signal = "SIGTERM"
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough; the session now ends
        raise KeyboardInterrupt("SIGTERM")

    state.previous = signal.signal(signal.SIGTERM, on_sigterm)
    state.installed = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    state = item.config.stash.get(_STATE, None)
    if state is not None:
        state.running = item.nodeid
    result = yield  # an interruption raises here: ``running`` keeps the test it cut
    if state is not None:
        state.running = None
    return result


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Outside pytest-benchmark's own wrapper, which saves: say why the run stopped before it saves, hold any
    SIGTERM while it saves, and give SIGTERM back to its previous handler afterwards."""
    state = session.config.stash.get(_STATE, None)
    if state is None:
        return (yield)
    if state.signal:
        state.stopped = f"stopped by {state.signal} before the end of its selection"
    elif exitstatus == pytest.ExitCode.INTERRUPTED:
        state.stopped = "interrupted (KeyboardInterrupt) before the end of its selection"
    elif session.shouldfail or session.shouldstop:
        state.stopped = f"stopped early: {session.shouldfail or session.shouldstop}"
    elif state.running:  # pytest.exit() inside a test, say
        state.stopped = f"stopped during {state.running}"
    bs = benchmark_session(session.config)
    if state.running and bs is not None:  # a benchmark cut between its rounds holds fewer than it asked for
        bs.benchmarks[:] = [b for b in bs.benchmarks if getattr(b, "fullname", None) != state.running]
    if state.installed:
        signal.signal(signal.SIGTERM, lambda signum, frame: setattr(state, "deferred", True))
    try:
        return (yield)
    finally:
        if state.installed:
            signal.signal(signal.SIGTERM, state.previous)
            state.installed = False
            if state.deferred:  # saved now: the SIGTERM takes its course
                signal.raise_signal(signal.SIGTERM)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    state = config.stash.get(_STATE, None)
    if state is not None and state.stopped:
        output_json[INTERRUPTED] = state.stopped


def pytest_terminal_summary(terminalreporter, config):
    state = config.stash.get(_STATE, None)
    if state is None or not state.stopped or not _saves(config):
        return
    terminalreporter.write_line(
        f"dicom-gpu-bench: this run {state.stopped}; the benchmarks that finished were saved, marked "
        f"{INTERRUPTED!r}, and a bare --benchmark-compare passes over such runs", yellow=True, bold=True)

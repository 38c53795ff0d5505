"""bench.rounds.timed: which rule times a callable, how many calls it costs, and which value it returns."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import rounds
from tests.nested import nested_pytest_env

ROOT = Path(__file__).resolve().parents[1]


class FakeBenchmark:
    """The two entry points of pytest-benchmark's fixture that ``timed`` uses, counting what they are asked."""

    def __init__(self, disabled=False):
        self.disabled = disabled
        self.plain = 0
        self.pedantic_kwargs = None

    def __call__(self, fn, *args, **kwargs):
        self.plain += 1
        return fn(*args, **kwargs)

    def pedantic(self, fn, args=(), kwargs=None, rounds=1, iterations=1, warmup_rounds=0):
        self.pedantic_kwargs = dict(rounds=rounds, iterations=iterations, warmup_rounds=warmup_rounds)
        result = None
        for _ in range(rounds):
            result = fn(*args, **(kwargs or {}))
        return result


class Clock:
    """perf_counter that advances ``step`` seconds per reading, so a call 'takes' ``step``."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


def counting():
    calls = []

    def fn(x, *, scale=1):
        calls.append(x)
        return x * scale * len(calls)

    return fn, calls


@pytest.mark.parametrize("seconds", [rounds.SLOW_CALL_S, 12.7])
def test_a_slow_call_gets_fixed_rounds_and_returns_the_last_timed_value(monkeypatch, seconds):
    monkeypatch.setattr(rounds.time, "perf_counter", Clock(seconds))
    fn, calls = counting()
    bench = FakeBenchmark()
    out = rounds.timed(bench, fn, 2, scale=10)
    assert bench.plain == 0
    assert bench.pedantic_kwargs == dict(rounds=rounds.SLOW_ROUNDS, iterations=1, warmup_rounds=0)
    assert len(calls) == 1 + rounds.SLOW_ROUNDS  # the warming call, then the timed rounds: no calibration, no extra
    assert out == 2 * 10 * len(calls)            # the value of the last timed call


def test_a_fast_call_keeps_pytest_benchmarks_rule(monkeypatch):
    monkeypatch.setattr(rounds.time, "perf_counter", Clock(rounds.SLOW_CALL_S / 4))
    fn, calls = counting()
    bench = FakeBenchmark()
    out = rounds.timed(bench, fn, 3)
    assert (bench.plain, bench.pedantic_kwargs) == (1, None)
    assert out == 3 * 2 and len(calls) == 2


def test_disabled_benchmarks_call_once(monkeypatch):
    monkeypatch.setattr(rounds.time, "perf_counter", Clock(100.0))
    fn, calls = counting()
    bench = FakeBenchmark(disabled=True)
    assert rounds.timed(bench, fn, 5) == 5
    assert len(calls) == 1 and bench.pedantic_kwargs is None


def test_timed_works_with_pytest_benchmarks_real_fixture(tmp_path):
    """With the real fixture, a slow callable costs the warming call plus SLOW_ROUNDS, and the saved stats say so."""
    (tmp_path / "test_slow.py").write_text(textwrap.dedent("""
        import time
        from bench import rounds

        def test_slow(benchmark, monkeypatch):
            monkeypatch.setattr(rounds, "SLOW_CALL_S", 0.01)
            calls = []
            def fn():
                calls.append(1)
                time.sleep(0.012)
                return len(calls)
            assert rounds.timed(benchmark, fn) == 1 + rounds.SLOW_ROUNDS
            assert len(calls) == 1 + rounds.SLOW_ROUNDS
    """))
    saved = tmp_path / "run.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "test_slow.py", "-q", "-p", "no:cacheprovider",
                           f"--benchmark-json={saved}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=nested_pytest_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads(saved.read_text())["benchmarks"][0]["stats"]["rounds"] == rounds.SLOW_ROUNDS


def test_the_compressed_files_slow_pydicom_peer_gets_fixed_rounds_and_its_timed_value_is_checked(monkeypatch, tmp_path):
    # pydicom on the full profile's 256-frame JPEG 2000 file spent 63.5 s in five timed rounds alone (H100, run 0009)
    from bench import test_compressed as compressed
    from fixtures.cache import Corpus
    from fixtures.profiles import compressed_specs

    spec = next(s for s in compressed_specs("quick") if s.case_id == "f2_128x128_i16_rle")
    path = Corpus(tmp_path, 1 << 30).ensure(spec)
    reference = compressed.peers.pydicom_pinned(path)
    monkeypatch.setattr(rounds.time, "perf_counter", Clock(12.7))
    bench = FakeBenchmark()
    bench.extra_info = {}
    compressed.test_compressed_pydicom(bench, spec, path, reference)
    assert bench.plain == 0
    assert bench.pedantic_kwargs == dict(rounds=rounds.SLOW_ROUNDS, iterations=1, warmup_rounds=0)
    assert bench.extra_info["matches_pydicom"] is True

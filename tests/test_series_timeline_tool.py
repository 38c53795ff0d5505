"""tools/series_timeline.py still reaches the internals it clocks (it patches the header workers' chunk functions)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_series import make_series

ROOT = Path(__file__).resolve().parent.parent


def test_the_timeline_tool_clocks_the_workers_chunks_and_the_parent(tmp_path):
    make_series(tmp_path / "s", 8)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "series_timeline.py"), str(tmp_path / "s"), "cpu",
                           "--loads", "1", "--pool", "--chunks-per-worker", "2", "--cold"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[0]: float(line.split()[2]) for line in done.stdout.splitlines()[1:]}
    assert rows["chunks"] >= 2 and 0 < rows["workers_first"] <= rows["workers_last"] <= rows["end"], done.stdout
    assert rows["got_last"] <= rows["end"], done.stdout
    assert 0 <= rows["resident_before"] <= 1, done.stdout  # the harness's drop, and what it left, per load

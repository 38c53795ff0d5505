"""The installable distribution is the loader alone; the suite's needs are extras (issue 11)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower()


def _requirements(*files: str) -> dict[str, str]:
    lines = [line.strip() for f in files for line in (ROOT / f).read_text().splitlines()]
    return {_name(line): line for line in lines if line and not line.startswith("#")}


def test_runtime_dependencies_are_numpy_and_pydicom_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "dependencies" not in project.get("dynamic", [])
    assert {_name(r) for r in project["dependencies"]} == {"numpy", "pydicom"}
    extras = {k: {_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    assert extras["gpu"] >= {"kvikio-cu13"} and any(n.startswith("cupy") for n in extras["gpu"])
    assert extras["bench"] == {"pytest", "pytest-benchmark", "hypothesis"}
    assert extras["report"] == {"matplotlib"}
    assert extras["codecs"] == {"imagecodecs"}  # kvdicom._codecs (host_codecs, rle) use it
    assert extras["monai"] == {"monai"}  # kvdicom.monai
    assert extras["dask"] == {"dask", "distributed"}  # kvdicom.dask


def test_no_pytest_plugin_is_registered_for_other_projects():
    document = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry_points = document["project"].get("entry-points", {})
    assert "pytest11" not in entry_points
    assert (ROOT / "conftest.py").read_text().strip().endswith('pytest_plugins = ["dgbench.plugin"]')


def test_only_the_loader_is_packaged():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["kvdicom*"]


def test_requirements_files_that_drive_dgb_agree_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [r for v in project["optional-dependencies"].values() for r in v]
    pinned = _requirements("requirements.txt", "requirements-gpu.txt", "requirements-integrations.txt")
    for requirement in declared:
        assert pinned.get(_name(requirement)) == requirement.strip(), requirement


def test_the_loader_imports_nothing_of_the_suite():
    for path in (ROOT / "kvdicom").rglob("*.py"):
        text = path.read_text()
        for banned in ("dgbench", "pytest", "matplotlib", "fixtures", "bench."):
            assert not re.search(rf"^\s*(from|import)\s+{re.escape(banned)}", text, re.M), (path, banned)


def test_pytest_benchmarks_private_state_is_touched_in_one_module_at_the_versions_it_was_checked_against():
    from dgbench.benchmark_session import CHECKED

    touching = sorted(str(p.relative_to(ROOT)) for folder in ("dgbench", "bench") for p in (ROOT / folder).rglob("*.py")
                      if "config._benchmarksession" in p.read_text() or '"_benchmarksession"' in p.read_text())
    assert touching == ["dgbench/benchmark_session.py"]
    assert _requirements("requirements.txt")["pytest-benchmark"] == f"pytest-benchmark{CHECKED}"


def _older_python() -> str | None:
    """An interpreter older than 3.11 on this machine (pyenv's, or on PATH), or None."""
    found = [shutil.which(f"python3.{minor}") for minor in (10, 9, 8)]
    found += sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.1[0]*/bin/python")))
    return next((p for p in found if p), None)


def _dgb_test_with(tmp_path, python: str, timeout: float) -> subprocess.CompletedProcess:
    """``./dgb test`` run from a copy in ``tmp_path`` (it works in its own folder) with ``PYTHON=python``, outside
    any virtualenv."""
    shutil.copy(ROOT / "dgb", tmp_path / "dgb")
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return subprocess.run([str(tmp_path / "dgb"), "test"], env={**env, "PYTHON": python}, capture_output=True,
                          text=True, timeout=timeout)


def test_dgb_refuses_a_python_older_than_requires_python_before_making_a_venv(tmp_path):
    """On 3.10 pip found no imagecodecs 2026 (nor kvikio 26) and ./dgb died in the middle of pip's output."""
    older = _older_python()
    if older is None:
        pytest.skip("no Python older than 3.11 on this machine")
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor == ">=3.11"
    done = _dgb_test_with(tmp_path, older, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "older than Python 3.11" in done.stderr and "PYTHON" in done.stderr
    assert not (tmp_path / ".venv").exists()


def test_dgb_names_a_missing_interpreter(tmp_path):
    done = _dgb_test_with(tmp_path, str(tmp_path / "no-python"), timeout=60)
    assert done.returncode == 2 and "no Python interpreter" in done.stderr and "no-python" in done.stderr
    assert not (tmp_path / ".venv").exists()


def test_dgb_offline_names_what_requirements_txt_lacks_in_one_line(tmp_path):
    """The device has no network: pip's two ERROR lines for a requirement not in .whl/ read as a failure of
    ./dgb itself, and the line after them did not say which requirement was missing."""
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "present-1.0-py3-none-any.whl").write_bytes(b"")
    stand_in = tmp_path / "python"  # pip fails on requirements.txt as it does offline; everything else succeeds
    stand_in.write_text(f"""#!/usr/bin/env bash
if [ "$1 $2" = "-m pip" ]; then
  case "$*" in *"-r requirements.txt"*)
    echo "ERROR: Could not find a version that satisfies the requirement dask>=2024.1 (from versions: none)" >&2
    echo "ERROR: No matching distribution found for dask>=2024.1" >&2; exit 1;; esac
  exit 0
fi
[ "$1 $2" = "-m pytest" ] && {{ echo "pytest ran"; exit 0; }}
[ "$1" = setup.py ] && exit 0
exec {sys.executable} "$@"
""")
    stand_in.chmod(0o755)
    shutil.copy(ROOT / "dgb", tmp_path / "dgb")
    env = {**os.environ, "PYTHON": str(stand_in), "VIRTUAL_ENV": str(tmp_path)}
    done = subprocess.run([str(tmp_path / "dgb"), "test"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "pytest ran" in done.stdout, done.stderr
    assert "ERROR" not in done.stderr, done.stderr
    assert "dgb: offline and requirements.txt's dask>=2024.1 not in .whl/; tests that need it skip" in done.stderr

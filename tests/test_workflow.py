"""Tests for .github/workflows/nightly-gpu.yml: valid for GitHub, and doing what it should.

Validation uses the GitHub workflow schema that check-jsonschema vendors from
SchemaStore, so it runs offline.
"""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

get_builtin_schema = pytest.importorskip(
    "check_jsonschema.builtin_schemas", reason="check-jsonschema is not installed (offline machine)"
).get_builtin_schema
jsonschema = pytest.importorskip("jsonschema")

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "nightly-gpu.yml"
BENCH_COMMAND = "./dgb bench --profile nightly --benchmark-compare --benchmark-compare-fail=median:10%"
REPORT_COMMAND = "-m dgbench.report results -o report"


class GitHubYamlLoader(yaml.SafeLoader):
    """YAML as GitHub reads it: only true/false are booleans, so ``on:`` stays a key."""


GitHubYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
GitHubYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_workflow() -> dict:
    with open(WORKFLOW, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=GitHubYamlLoader)


def schema_errors(document: dict) -> list[str]:
    schema = get_builtin_schema("vendor.github-workflows")
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def steps(job: dict) -> list[dict]:
    return job["steps"]


def step_using(job: dict, action: str) -> dict:
    found = [s for s in steps(job) if str(s.get("uses", "")).startswith(action + "@")]
    assert len(found) == 1, f"expected one step using {action}"
    return found[0]


def step_running(job: dict, fragment: str) -> dict:
    found = [s for s in steps(job) if fragment in " ".join(str(s.get("run", "")).split())]
    assert len(found) == 1, f"expected one step running {fragment!r}"
    return found[0]


# --- a tiny evaluator for the `if:` expressions this workflow uses ----------

_TOKEN = re.compile(r"\s*(?:(\|\||&&|==|!=|!|\(|\))|'((?:[^']|'')*)'|([A-Za-z_][\w.\-]*))")


def evaluate_if(expression: str, context: dict[str, str]) -> bool:
    """Evaluate ``==``/``!=``/``&&``/``||``/``!`` over context values and string literals.

    GitHub compares strings case-insensitively; anything else is an error, so
    the test fails loudly rather than guessing if the workflow grows new syntax.
    """
    text = expression.strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    python, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ValueError(f"cannot evaluate {expression!r} at {text[position:]!r}")
        operator, literal, name = match.groups()
        if operator:
            python.append({"||": " or ", "&&": " and ", "!": " not "}.get(operator, f" {operator} "))
        elif literal is not None:
            python.append(repr(literal.replace("''", "'").casefold()))
        elif name in context:
            python.append(repr(context[name].casefold()))
        else:
            raise ValueError(f"unknown name {name!r} in {expression!r}")
        position = match.end()
    return bool(eval("".join(python), {"__builtins__": {}}, {}))  # only literals and operators


def job_runs(workflow: dict, job_name: str, event: str, ref: str) -> bool:
    """Would GitHub start this job for this event? (trigger listed and `if:` true)"""
    triggers = workflow["on"]
    if event not in triggers:
        return False
    if event == "push":
        branches = (triggers["push"] or {}).get("branches")
        if branches is not None and ref.removeprefix("refs/heads/") not in branches:
            return False
    condition = workflow["jobs"][job_name].get("if")
    return condition is None or evaluate_if(str(condition), {"github.event_name": event, "github.ref": ref})


EVENTS = {
    "schedule": "refs/heads/main",
    "workflow_dispatch": "refs/heads/main",
    "pull_request": "refs/pull/7/merge",
    "push": "refs/heads/main",
}


# --- tests -------------------------------------------------------------------


def test_workflow_is_valid_against_github_schema():
    workflow = load_workflow()
    assert schema_errors(workflow) == []


def test_schema_check_has_teeth():
    """The same check rejects a broken copy, so a pass above means something."""
    broken = copy.deepcopy(load_workflow())
    del broken["jobs"]["gpu-nightly"]["runs-on"]
    broken["jobs"]["cpu-tests"]["steps"][0]["uses"] = 42
    assert schema_errors(broken)


def test_check_jsonschema_command_accepts_workflow():
    """The documented command line, with the schema bundled in the package (no network)."""
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_triggers():
    triggers = load_workflow()["on"]
    crons = [entry["cron"] for entry in triggers["schedule"]]
    assert len(crons) == 1
    minute, hour, day, month, weekday = crons[0].split()
    assert (day, month, weekday) == ("*", "*", "*")  # every night
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24
    assert "workflow_dispatch" in triggers
    assert "pull_request" in triggers
    assert triggers["push"]["branches"] == ["main"]


@pytest.mark.parametrize(
    ("event", "gpu", "cpu"),
    [
        ("schedule", True, False),
        ("workflow_dispatch", True, False),
        ("pull_request", False, True),
        ("push", False, True),
    ],
)
def test_which_jobs_run_for_each_event(event, gpu, cpu):
    workflow = load_workflow()
    assert job_runs(workflow, "gpu-nightly", event, EVENTS[event]) is gpu
    assert job_runs(workflow, "cpu-tests", event, EVENTS[event]) is cpu


def test_push_to_other_branches_runs_nothing():
    workflow = load_workflow()
    assert not job_runs(workflow, "cpu-tests", "push", "refs/heads/feature")
    assert not job_runs(workflow, "gpu-nightly", "push", "refs/heads/feature")


def test_gpu_job_benchmarks_then_always_reports_and_uploads():
    job = load_workflow()["jobs"]["gpu-nightly"]
    assert job["runs-on"] == ["self-hosted", "gpu"]
    checkout = step_using(job, "actions/checkout")
    bench = step_running(job, BENCH_COMMAND)
    assert " ".join(bench["run"].split()) == BENCH_COMMAND
    assert "if" not in bench
    report = step_running(job, REPORT_COMMAND)
    assert report["if"] == "always()"
    upload = step_using(job, "actions/upload-artifact")
    assert upload["uses"] == "actions/upload-artifact@v4"
    assert upload["if"] == "always()"
    paths = [line.strip() for line in upload["with"]["path"].splitlines() if line.strip()]
    assert "results/**/*.json" in paths
    assert any(p.rstrip("/") == "report" for p in paths)
    order = [steps(job).index(s) for s in (checkout, bench, report, upload)]
    assert order == sorted(order)


FUZZ_COMMAND = './dgb test -q -k "test_fuzz or test_properties"'


def test_gpu_job_fuzzes_with_the_nightly_profile_after_the_benchmark_always():
    """``./dgb bench`` runs the property tests and the fuzzer too, but at the default profile (``ci`` where CI is
    set, as on GitHub: 30 fixed examples); the night also runs them with 1,000 new examples a test, on the GPU
    too, whether or not the benchmark regressed."""
    job = load_workflow()["jobs"]["gpu-nightly"]
    fuzz, bench = step_running(job, FUZZ_COMMAND), step_running(job, BENCH_COMMAND)
    assert " ".join(fuzz["run"].split()) == FUZZ_COMMAND
    assert fuzz["env"] == {"HYPOTHESIS_PROFILE": "nightly"} and fuzz["if"] == "always()"
    report = step_running(job, REPORT_COMMAND)
    assert steps(job).index(bench) < steps(job).index(fuzz) < steps(job).index(report)


def _fake_python(path: Path, label: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{label} $*" > called.txt\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_report_step_prefers_the_venv_python(tmp_path):
    """Run the step's own shell script with stand-in interpreters."""
    script = step_running(load_workflow()["jobs"]["gpu-nightly"], REPORT_COMMAND)["run"]
    bin_dir = tmp_path / "bin"
    _fake_python(bin_dir / "python3", "python3")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, check=True, timeout=30)
    assert (tmp_path / "called.txt").read_text().split() == ["python3", *REPORT_COMMAND.split()]

    _fake_python(tmp_path / ".venv" / "bin" / "python", "venv")
    subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, check=True, timeout=30)
    assert (tmp_path / "called.txt").read_text().split() == ["venv", *REPORT_COMMAND.split()]


def test_cpu_job_runs_tests_on_python_312():
    job = load_workflow()["jobs"]["cpu-tests"]
    assert job["runs-on"] == "ubuntu-latest"
    step_using(job, "actions/checkout")
    setup = step_using(job, "actions/setup-python")
    assert str(setup["with"]["python-version"]) == "3.12"
    assert " ".join(step_running(job, "./dgb test")["run"].split()) == "./dgb test"
    assert not any("bench" in str(s.get("run", "")) for s in steps(job))


def test_cpu_job_checks_the_compiled_walk_under_asan_after_the_tests():
    job = load_workflow()["jobs"]["cpu-tests"]
    tests, asan = step_running(job, "./dgb test"), step_running(job, "tools/walk_asan.sh")
    assert asan["run"].strip() == "tools/walk_asan.sh"
    assert steps(job).index(tests) < steps(job).index(asan)  # the tests' ./dgb run made the .venv it uses
    assert os.access(Path(__file__).resolve().parent.parent / "tools" / "walk_asan.sh", os.X_OK)


# --- the results history branch ------------------------------------------------

FETCH_STEP = "git archive FETCH_HEAD results"
PUBLISH_STEP = 'git push --quiet origin "HEAD:refs/heads/$RESULTS_BRANCH"'


def test_only_the_publish_job_may_write_and_it_runs_on_a_hosted_runner():
    workflow = load_workflow()
    assert workflow["permissions"] == {"contents": "read"}
    writers = [name for name, job in workflow["jobs"].items()
               if (job.get("permissions") or {}).get("contents") == "write"]
    assert writers == ["publish-results"]
    job = workflow["jobs"]["publish-results"]
    assert job["needs"] == "gpu-nightly" and job["runs-on"] == "ubuntu-latest"
    assert "always()" in job["if"] and "needs.gpu-nightly.result" in job["if"]  # a regression's results count too
    download = step_using(job, "actions/download-artifact")
    assert download["with"]["name"] == "gpu-nightly-${{ github.run_id }}"
    assert workflow["env"]["RESULTS_BRANCH"]


def test_history_is_fetched_before_the_comparison():
    job = load_workflow()["jobs"]["gpu-nightly"]
    fetch, bench = step_running(job, FETCH_STEP), step_running(job, BENCH_COMMAND)
    assert steps(job).index(fetch) < steps(job).index(bench)


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def _run_step(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "RESULTS_BRANCH": "bench-results", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", **env}
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=full, capture_output=True, text=True, timeout=60)


@pytest.fixture
def origin_and_checkout(tmp_path):
    """A bare 'origin' whose main holds one committed run, and a checkout of main."""
    origin = tmp_path / "origin.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    seed = tmp_path / "seed"
    _git(tmp_path, "clone", "-q", str(origin), str(seed))
    (seed / "results" / "m").mkdir(parents=True)
    (seed / "results" / "m" / "0001_main.json").write_text("{}")
    _git(seed, "add", ".")
    _git(seed, "commit", "-q", "-m", "main")
    _git(seed, "push", "-q", "origin", "HEAD:main")
    checkout = tmp_path / "checkout"
    _git(tmp_path, "clone", "-q", "--depth=1", f"file://{origin}", str(checkout))
    return origin, checkout


def test_publish_then_fetch_round_trip(origin_and_checkout, tmp_path):
    """Two nights: each commits only its new files to the branch; the GPU job then sees them all."""
    origin, checkout = origin_and_checkout
    workflow = load_workflow()
    publish = step_running(workflow["jobs"]["publish-results"], PUBLISH_STEP)["run"]
    fetch = step_running(workflow["jobs"]["gpu-nightly"], FETCH_STEP)["run"]

    first = _run_step(fetch, checkout)
    assert first.returncode == 0 and "no branch bench-results yet" in first.stdout

    for night in ("0002_night1.json", "0003_night2.json"):
        nightly = tmp_path / f"artifact-{night}"
        (nightly / "results" / "m").mkdir(parents=True)
        (nightly / "results" / "m" / night).write_text(json.dumps({"night": night}))
        (nightly / "results" / "m" / "0001_main.json").write_text("{}")
        job = tmp_path / f"publish-{night}"
        _git(tmp_path, "clone", "-q", "--depth=1", f"file://{origin}", str(job))
        done = _run_step(publish, job, NIGHTLY=str(nightly))
        assert done.returncode == 0, done.stderr
    files = _git(origin, "ls-tree", "-r", "--name-only", "bench-results").split()
    assert files == ["results/m/0001_main.json", "results/m/0002_night1.json", "results/m/0003_night2.json"]
    assert len(_git(origin, "log", "--format=%H", "bench-results").split()) == 2   # one commit per night
    assert "main" in _git(origin, "branch")                                       # main untouched

    done = _run_step(fetch, checkout)
    assert done.returncode == 0, done.stderr
    assert "3 runs from bench-results" in done.stdout
    assert json.loads((checkout / "results" / "m" / "0003_night2.json").read_text()) == {"night": "0003_night2.json"}
    assert _git(checkout, "status", "--porcelain", "--untracked-files=no") == ""  # tracked files unchanged

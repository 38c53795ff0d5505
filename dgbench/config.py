"""The suite's knobs in one place: profile defaults, corpus defaults, cold-run rules, Hypothesis profiles,
regression thresholds. The matrix of each profile (which files) lives in ``fixtures/profiles.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Profile when --profile / DGB_PROFILE is not given.
DEFAULT_PROFILE_GPU = "full"
DEFAULT_PROFILE_CPU = "quick"

#: Corpus of generated files: where, and its size cap in GiB (the nightly profile needs about 5 GiB).
DEFAULT_CORPUS_DIR = ROOT / ".corpus"
DEFAULT_CORPUS_CAP_GB = 16.0

#: Cold-cache benchmarks run on files at least this large: below it, the read is
#: mostly latency and the disk's sequential speed says little.
COLD_MIN_BYTES = 8 << 20
#: Rounds of a cold benchmark: each one reads the whole file from the disk.
COLD_ROUNDS = 5
#: A round counts as cold when at most this fraction of the file's pages is still
#: resident after the drop (mincore); above it the row is recorded ``unverified``.
COLD_MAX_RESIDENT = 0.01

#: --regression-noise-k default: a slow-down counts when above k × the larger IQR/median of the two runs.
DEFAULT_NOISE_K = 2.0
#: The nightly's --benchmark-compare-fail threshold, also the report's trend rule.
REGRESSION_THRESHOLD_PCT = 10.0

#: Hypothesis: `ci` is fast and repeatable, `dev` explores, `nightly` digs.
HYPOTHESIS_PROFILES = {
    "ci": dict(max_examples=30, derandomize=True, print_blob=True),
    "dev": dict(max_examples=60),
    "nightly": dict(max_examples=1000, print_blob=True),  # new examples each run: a failure says how to replay it
}


def hypothesis_profile_name() -> str:
    return os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")


def register_hypothesis_profiles() -> None:
    """Register :data:`HYPOTHESIS_PROFILES` and load the one HYPOTHESIS_PROFILE (or CI) asks for."""
    from hypothesis import HealthCheck, settings

    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    for name, knobs in HYPOTHESIS_PROFILES.items():
        settings.register_profile(name, **common, **knobs)
    settings.load_profile(hypothesis_profile_name())

#!/usr/bin/env bash
# Run the suite on the lent GPU machine (no network: wheels come from .whl/).
# Usage: tools/device_run.sh "<test args>" "<bench args>"; logs and new results go to $OUT.
# "<test args>" are added to ./dgb test (which always runs tests/ and bench/): pass "-q", not a file.
# Each string is word-split as a shell line, so quote inside it: "--profile full -k 'cseries and series256'".
# DGB_TIMEOUT=SECONDS: ./dgb bench gets SIGTERM then (0: no limit) and saves the benchmarks that finished, marked
# "interrupted" (dgbench/interrupt.py), instead of losing the part to the device's 10-minute command limit.
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
before=$(find results -name '*.json' 2>/dev/null | sort)
rc=0
# The whole suite runs past the device's 10-minute command limit in one process (about 1,200 tests with
# the GPU ones); with pytest-xdist (installed there) 8 workers ran it in 160 s. DGB_TEST_WORKERS=0: one process.
workers=()
if [ "${DGB_TEST_WORKERS:-8}" != 0 ] && python3 -c 'import xdist' 2>/dev/null; then workers=(-n "${DGB_TEST_WORKERS:-8}"); fi
if [ -n "${1:-}" ]; then eval "test_args=($1)"; ./dgb test "${workers[@]}" "${test_args[@]}" 2>&1 | tee "$out/test.log"; rc=${PIPESTATUS[0]}; fi
if [ -n "${2:-}" ]; then eval "bench_args=($2)"; timeout "${DGB_TIMEOUT:-0}" ./dgb bench "${bench_args[@]}" 2>&1 | tee "$out/bench.log"; rc=$(( rc | PIPESTATUS[0] )); fi
for f in $(find results -name '*.json' | sort); do
  grep -qxF "$f" <<<"$before" || cp "$f" "$out/"
done
exit $rc

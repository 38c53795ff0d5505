#!/usr/bin/env bash
# Run the suite on the lent GPU machine (no network: wheels come from .whl/).
# Usage: tools/device_run.sh "<test args>" "<bench args>"; logs and new results go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
before=$(find results -name '*.json' 2>/dev/null | sort)
rc=0
if [ -n "${1:-}" ]; then ./dgb test $1 2>&1 | tee "$out/test.log"; rc=${PIPESTATUS[0]}; fi
if [ -n "${2:-}" ]; then ./dgb bench $2 2>&1 | tee "$out/bench.log"; rc=$(( rc | PIPESTATUS[0] )); fi
for f in $(find results -name '*.json' | sort); do
  grep -qxF "$f" <<<"$before" || cp "$f" "$out/"
done
exit $rc

#!/usr/bin/env bash
# On the lent GPU machine: benchmark a baseline commit's tree and this tree in one lease, into one
# pytest-benchmark storage, so the second run compares against the first (absolute numbers move
# between leases; only runs on one warm machine compare).
#
#   tools/device_compare.sh base TREE COMMIT [pytest args...]   # the baseline commit's tree (carried)
#   tools/device_compare.sh head COMMIT [pytest args...]        # this tree, --benchmark-compare against it
#
# e.g. tools/device_compare.sh base .wt/base afb8fb0 --profile full -q -k "kvdicom or ceiling"
#      tools/device_compare.sh head d24144a --profile full -q -k "not series and not compressed" \
#          --benchmark-compare-fail=median:10%
#
# Both stages share this tree's fixture corpus (./.corpus, or DGB_CORPUS_DIR): fixtures are deterministic and
# keyed by their spec, so the head stage reuses what the base stage wrote instead of writing it again.
# The base stage writes the storage's BASELINE, so a head split into parts (-k selections, one call each)
# compares every part against the base run; join the parts afterwards with dgbench.merge_runs.
# Durations on the H200 device (16 cores), full profile: base "-k 'kvdicom or ceiling'" (192 benchmarks,
# corpus written) did not finish in 200 s; head "-k 'not compressed and not cseries'" (264) did not in 370 s;
# the series cases alone took 131 s. Give each stage its own call with the whole 10 minutes.
#
# The storage is ./.cmp inside this tree: pytest-benchmark 5.2 crashes printing its "machine_info is
# different" warning when the storage lies outside the working directory. New JSON and logs go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
# DGB_TIMEOUT=SECONDS: the stage's pytest gets SIGTERM then (0: no limit), so a part that runs long ends within the
# device's 10-minute command; a tree with dgbench/interrupt.py saves what finished, marked "interrupted".
limit=${DGB_TIMEOUT:-0}
store=$PWD/.cmp
# Only this stage's runs come back: the device returns 8 files at most, and a warm machine keeps .cmp between calls.
before=$(find "$store" -name '*.json' 2>/dev/null | sort)
export DGB_CORPUS_DIR=${DGB_CORPUS_DIR:-$PWD/.corpus}
stage=${1:-}; shift || true
case "$stage" in
  base)
    tree=$1 commit=$2; shift 2
    (cd "$tree" && PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} DGB_COMMIT=$commit timeout "$limit" python3 -m pytest bench -p no:cacheprovider \
        --benchmark-autosave --benchmark-storage="file://$store" "$@") > "$out/base.log" 2>&1
    rc=$?
    # Every head part compares against this run, not against the part saved before it.
    saved=$(ls -t "$store"/*/[0-9][0-9][0-9][0-9]_*.json 2>/dev/null | head -n 1)
    [ -n "$saved" ] && basename "$saved" > "$(dirname "$saved")/BASELINE";;
  head)
    commit=$1; shift
    DGB_COMMIT=$commit timeout "$limit" ./dgb bench --benchmark-storage="file://./.cmp" --benchmark-compare "$@" > "$out/head.log" 2>&1
    rc=$?;;
  *) echo "usage: $0 base TREE COMMIT [ARGS...] | head COMMIT [ARGS...]" >&2; exit 2;;
esac
for f in $(find "$store" -name '*.json' 2>/dev/null | sort); do
  grep -qxF "$f" <<<"$before" || cp "$f" "$out/"
done
tail -n 60 "$out/$stage.log"
exit $rc

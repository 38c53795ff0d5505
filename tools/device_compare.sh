#!/usr/bin/env bash
# On the lent GPU machine: benchmark a baseline commit's tree and this tree in one lease, into one
# pytest-benchmark storage, so the second run compares against the first (absolute numbers move
# between leases; only runs on one warm machine compare).
#
#   tools/device_compare.sh base  <tree> <commit> "<bench args>"   # the baseline commit's tree (git worktree, carried)
#   tools/device_compare.sh head  <commit> "<bench args>"          # this tree, --benchmark-compare against it
#
# Both runs save under /tmp/dgb-compare (kept while the machine stays warm); new JSON and logs go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
store=/tmp/dgb-compare
stage=$1; shift
case "$stage" in
  base)
    tree=$1 commit=$2 args=$3
    (cd "$tree" && PYTHONPATH=$PWD DGB_COMMIT=$commit python3 -m pytest bench -p no:cacheprovider \
        --benchmark-autosave --benchmark-storage="file://$store" $args) > "$out/base.log" 2>&1
    rc=$?;;
  head)
    commit=$1 args=$2
    DGB_COMMIT=$commit ./dgb bench --benchmark-storage="file://$store" --benchmark-compare $args > "$out/head.log" 2>&1
    rc=$?;;
  *) echo "usage: $0 base TREE COMMIT ARGS | head COMMIT ARGS" >&2; exit 2;;
esac
find "$store" -name '*.json' -newer "$out" -exec cp {} "$out/" \; 2>/dev/null
find "$store" -name '*.json' -mmin -15 -exec cp {} "$out/" \;
tail -n 60 "$out/$stage.log"
exit $rc

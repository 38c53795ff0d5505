#!/usr/bin/env bash
# kvdicom's compiled parts under AddressSanitizer (docs/loader.md): the header walk (kvdicom/_header/_walk.c) and
# the series slice reads (kvdicom/_io/_known_reads.c) built with -fsanitize=address in a copy of the tracked tree,
# then their tests, the fast header's, the read faults' and the CPU fuzzer run there with every Python object
# allocated by malloc (so a read past a bytes object hits a red zone).
#
#   tools/walk_asan.sh [pytest options]      # e.g. HYPOTHESIS_PROFILE=nightly tools/walk_asan.sh -x
#
# Needs gcc with libasan and Python's headers; the suite's .venv (./dgb made it) runs the tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
asan=$(gcc -print-file-name=libasan.so)
[ -e "$asan" ] || { echo "walk_asan: gcc has no libasan" >&2; exit 2; }
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
git -C "$root" ls-files -z | (cd "$root" && tar --null -T - -cf -) | tar -xf - -C "$copy"
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
for part in _header/_walk _io/_known_reads; do
  gcc -O1 -g -fsanitize=address -fno-omit-frame-pointer -fPIC -shared -DPy_LIMITED_API=0x030A0000 -I"$include" \
      "$copy/kvdicom/$part.c" -o "$copy/kvdicom/$part.abi3.so"
done
cd "$copy"
LD_PRELOAD=$asan ASAN_OPTIONS=detect_leaks=0 PYTHONMALLOC=malloc DGB_CORPUS_DIR=${DGB_CORPUS_DIR:-$root/.corpus} \
    "$python" -m pytest -q -p no:cacheprovider tests/test_compiled_walk.py tests/test_fast_header.py \
    tests/test_fast_header_compressed.py tests/test_known_reads.py tests/test_faults.py bench/test_fuzz.py -k "not gpu and not fork and not kill" "$@"

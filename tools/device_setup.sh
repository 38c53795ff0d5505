# Source at the start of every device call (`source tools/device_setup.sh; ...`): installs the carried wheel sets
# into /tmp/site (what one call installs is not there at the next on a fresh machine), puts it and the tree on
# PYTHONPATH, shares one fixture corpus between calls (./.corpus), and says what a warm machine kept.
# Carry: .whl (kvikio, pydicom, pytest-benchmark 5.3.1), .whl-gpu (nvImageCodec slimmed, nvJPEG, nvJPEG2000,
# pylibjpeg), .whl-peers (dicomsdl, MONAI), .whl-slim (imagecodecs slimmed, pyjpegls), and
# kvdicom/_header/_walk.abi3.so, kvdicom/_io/_known_reads.abi3.so (docs/device.md says how each is made): about 49 MB with the tree.
export PYTHONUNBUFFERED=1
echo "kept from the last call: /tmp/site $(ls /tmp/site 2>/dev/null | wc -l) entries, .corpus $(ls .corpus 2>/dev/null | wc -l)"
wheels=()
for set in .whl .whl-gpu .whl-peers .whl-slim; do compgen -G "$set/*.whl" >/dev/null && wheels+=("$set"/*.whl); done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}" \
  2>&1 | grep -v WARNING | tail -3
export PYTHONPATH=/tmp/site:$PWD
export DGB_CORPUS_DIR=${DGB_CORPUS_DIR:-$PWD/.corpus}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null

#!/usr/bin/env bash
# Build the image twice, in separate scratch and output folders, and compare: the same commit
# and the same Debian packages must give the same manifest digest, byte for byte the same
# archive. Prints both build times (the first is "cold" only if the caches are: set
# PIP_CACHE_DIR to an empty folder for that). Leaves the first build in dist/.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
second="$(mktemp -d)"
trap 'rm -rf "$second"' EXIT
hack/build-image.sh >/dev/null
HYBRIDGPU_IMAGE_WORK="$second/work" DIST="$second/dist" hack/build-image.sh >/dev/null
python3 - dist/image.json "$second/dist/image.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
print(f"first:  {a['digest']}  {a['buildSeconds']} s")
print(f"second: {b['digest']}  {b['buildSeconds']} s")
sys.exit(0 if a["digest"] == b["digest"] else 1)
PY
cmp "dist/$(basename "$(python3 -c 'import json; print(json.load(open("dist/image.json"))["archive"])')")" \
  "$second/dist/$(basename "$(python3 -c 'import json; print(json.load(open("dist/image.json"))["archive"])')")"
echo "reproducible: same digest, same archive"

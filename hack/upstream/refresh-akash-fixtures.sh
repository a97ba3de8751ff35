#!/usr/bin/env bash
# Regenerates tests/unit/fixtures/akash-manifests.json: SDLs written by hybridgpu's Akash
# adapter, with the manifest and version hash @akashnetwork/chain-sdk computes for each.
# Needs node and npm (dev time only; `make test` reads the committed file).
set -euo pipefail
VERSION=${CHAIN_SDK_VERSION:-1.0.0-alpha.25}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$ROOT/hack/upstream/akash-manifest-fixtures.mjs" "$WORK/gen.mjs"
(cd "$WORK" && echo '{"private":true,"type":"module"}' >package.json &&
  npm install -q --no-audit --no-fund --ignore-scripts "@akashnetwork/chain-sdk@$VERSION" js-yaml >/dev/null)
"$ROOT/.venv/bin/python" "$ROOT/hack/upstream/akash_fixture_sdls.py" |
  (cd "$WORK" && node gen.mjs) |
  "$ROOT/.venv/bin/python" -c "
import json, sys
cases = json.load(sys.stdin)
print(json.dumps({'source': '@akashnetwork/chain-sdk@$VERSION generateManifest + generateManifestVersion',
                  'generated': '$(date -u +%F)', 'cases': cases}, indent=1))" \
  >"$ROOT/tests/unit/fixtures/akash-manifests.json"
echo "wrote tests/unit/fixtures/akash-manifests.json"

#!/usr/bin/env bash
# Refreshes the vendored upstream API specs in tests/contract/specs/ from local git mirrors
# of the upstream repositories (for example the ones the `fetch` tool brings in), printing the
# commit each came from for tests/contract/specs/README.md.
#   AKASH_CONSOLE_GIT=/path/to/akash-network/console.git hack/upstream/refresh-specs.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -n "${AKASH_CONSOLE_GIT:-}" ]]; then
  git --git-dir="$AKASH_CONSOLE_GIT" show HEAD:apps/api/swagger/openapi.json \
    >"$ROOT/tests/contract/specs/akash-console.openapi.json"
  echo "akash-console.openapi.json from $(git --git-dir="$AKASH_CONSOLE_GIT" log -1 --format='%H %cs')"
fi

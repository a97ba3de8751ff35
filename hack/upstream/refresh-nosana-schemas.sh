#!/usr/bin/env bash
# Regenerates tests/contract/specs/nosana-api.generated.json: JSON Schemas of the Nosana API
# calls, generated with ts-json-schema-generator from the types of the @nosana/api npm package
# (themselves generated from Nosana's production swagger). Dev time only; needs node and npm.
set -euo pipefail
VERSION=${NOSANA_API_VERSION:-2.1.8}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$ROOT/hack/upstream/nosana-types.ts" "$WORK/types.ts"
cd "$WORK"
echo '{"private":true}' >package.json
echo '{"compilerOptions":{"strict":true,"module":"nodenext","moduleResolution":"nodenext","skipLibCheck":true,"target":"es2022"},"files":["types.ts"]}' >tsconfig.json
npm install -q --no-audit --no-fund --ignore-scripts "@nosana/api@$VERSION" ts-json-schema-generator@2 typescript@5 >/dev/null
types=$(grep -o '^export type [A-Za-z]*' types.ts | awk '{print $3}')
for t in $types; do
  npx ts-json-schema-generator --path types.ts --tsconfig tsconfig.json --type "$t" \
    --no-top-ref --expose none -o "$t.json" >/dev/null
done
"$ROOT/.venv/bin/python" - "$VERSION" $types <<'PY' >"$ROOT/tests/contract/specs/nosana-api.generated.json"
import json, sys, datetime
version, names = sys.argv[1], sys.argv[2:]
out = {"source": f"@nosana/api@{version} dist/client/schema.d.ts via ts-json-schema-generator",
       "generated": datetime.date.today().isoformat(), "schemas": {}}
for name in names:
    schema = json.load(open(f"{name}.json"))
    schema.pop("$schema", None)
    out["schemas"][name] = schema
print(json.dumps(out, indent=1, sort_keys=True))
PY
echo "wrote tests/contract/specs/nosana-api.generated.json"

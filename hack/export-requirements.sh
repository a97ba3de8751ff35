#!/usr/bin/env bash
# Export uv.lock as pip-installable requirement files with hashes:
#   requirements/runtime.txt  what `hybridgpu run` needs: the image, the Dockerfile
#   requirements/dev.txt      runtime + [simulate] + [dev]: `make venv`, CI
# Refresh the lock itself with `make lock` (UV_LOCK_ARGS=--upgrade for new releases).
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-.venv/bin/uv}"
OUT="${REQUIREMENTS_DIR:-requirements}"
export UV_NO_PROGRESS=1
"$UV" export --quiet --frozen --no-dev --no-emit-project --format requirements-txt \
  --no-header -o "$OUT/runtime.txt"
"$UV" export --quiet --frozen --no-dev --extra dev --no-emit-project --format requirements-txt \
  --no-header -o "$OUT/dev.txt"

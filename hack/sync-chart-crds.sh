#!/usr/bin/env bash
# Copy the generated CRDs (crds/, from `make crds`) into the Helm chart, which templates them
# from charts/hybridgpu/files/crds/. One source: tests/unit/test_chart_crds.py fails on drift.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/charts/hybridgpu/files/crds"
mkdir -p "$DEST"
rm -f "$DEST"/*.yaml
cp "$ROOT"/crds/*.yaml "$DEST"/
echo "synced $(ls "$DEST" | wc -l) CRDs into ${DEST#"$ROOT"/}"

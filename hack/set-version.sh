#!/usr/bin/env bash
# Set the release version in its one place, hybridgpu.__version__ (pyproject.toml reads it),
# and make the chart follow: Chart.yaml's version and appVersion (the image tag by default).
# tests/unit/test_versions.py fails when they drift.
# Usage: hack/set-version.sh 0.2.0
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:?usage: hack/set-version.sh VERSION}"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-.+][0-9A-Za-z.]+)?$ ]] || {
  echo "not a version: $version" >&2
  exit 1
}
sed -i -E "s/^__version__ = \".*\"/__version__ = \"$version\"/" operator/hybridgpu/__init__.py
sed -i -E "s/^version: .*/version: $version/; s/^appVersion: .*/appVersion: \"$version\"/" \
  charts/hybridgpu/Chart.yaml
grep -H -E '^__version__|^(app)?[vV]ersion:' operator/hybridgpu/__init__.py charts/hybridgpu/Chart.yaml

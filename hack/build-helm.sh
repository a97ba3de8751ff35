#!/usr/bin/env bash
# Build the real `helm` command from the pinned Go module (hack/helm/go.mod,
# helm.sh/helm/v3) into a cache outside the clone, in the style of
# build-controlplane.sh: the directory is named after a hash of the pin files,
# the Go version and RECIPE, so changing a pin builds into a fresh directory,
# and -trimpath makes the same pins give identical binaries.
#
# The cache lives under $CACHE_ROOT/helm/<hash>/ rather than $CACHE_ROOT/bin/:
# build-controlplane.sh prunes every bin/<hash>/ that is not its own pin.
#
# Usage: hack/build-helm.sh          # prints the path of the helm binary on stdout
#        hack/build-helm.sh --print  # only print that path, build nothing
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${HYBRIDGPU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridgpu}"
MOD_DIR="$HACK_DIR/helm"

# Bump when the build recipe (flags below) changes, so the binary gets rebuilt.
RECIPE=1

# shellcheck source=lib/pins.sh
source "$HACK_DIR/lib/pins.sh"
BIN_DIR="$CACHE_ROOT/helm/$(pin_hash "$RECIPE" "$MOD_DIR")"
OUT="$BIN_DIR/helm"
if [[ "${1:-}" == "--print" ]]; then
  echo "$OUT"
  exit 0
fi

log() { echo "[build-helm] $*" >&2; }

# Version stamping normally done by helm's Makefile via -X: `helm version`
# reports the pinned release, and lint/template assume the Kubernetes minor of
# the client-go helm was built with (the same derivation as helm's Makefile).
helm_ldflags() {
  local helm_ver k8s_ver k8s_minor
  helm_ver="$(cd "$MOD_DIR" && go list -m -f '{{.Version}}' helm.sh/helm/v3)"
  k8s_ver="$(cd "$MOD_DIR" && go list -m -f '{{.Version}}' k8s.io/client-go)"
  if [[ "$helm_ver" != v3.* || "$k8s_ver" != v0.* ]]; then
    log "cannot read the helm / client-go versions from hack/helm/go.mod"
    return 1
  fi
  k8s_minor="${k8s_ver#v0.}"
  k8s_minor="${k8s_minor%%.*}"
  local flags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_ver"
  flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  echo "$flags"
}

if [[ ! -x "$OUT" ]]; then
  mkdir -p "$BIN_DIR"
  export CGO_ENABLED="${CGO_ENABLED:-0}"
  log "building helm (helm.sh/helm/v3/cmd/helm) ..."
  start=$SECONDS
  ldflags="$(helm_ldflags)"
  # Build to a temp name and rename, so an interrupted build never leaves a
  # truncated binary that later counts as "built".
  (cd "$MOD_DIR" && go build -trimpath -ldflags="$ldflags" -o "$OUT.tmp.$$" helm.sh/helm/v3/cmd/helm)
  mv -f "$OUT.tmp.$$" "$OUT"
  log "built helm in $((SECONDS - start))s ($(du -h "$OUT" | cut -f1)) into $BIN_DIR"
  prune_pins "$CACHE_ROOT/helm" "$BIN_DIR" log
fi
echo "$OUT"

#!/usr/bin/env bash
# Build SeaweedFS's `weed` command (Apache-2.0) from the pinned Go module
# (hack/seaweedfs/go.mod, github.com/seaweedfs/seaweedfs) into a cache outside
# the clone, in the style of build-helm.sh: the directory is named after a hash
# of the pin files, the Go version and RECIPE, so changing a pin builds into a
# fresh directory. The tests and the demo run it as a real S3-compatible object
# store on loopback (`weed server -s3`, see hack/seaweedfs.sh).
#
# Usage: hack/build-seaweedfs.sh          # prints the path of the weed binary on stdout
#        hack/build-seaweedfs.sh --print  # only print that path, build nothing
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${HYBRIDGPU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridgpu}"
MOD_DIR="$HACK_DIR/seaweedfs"

# Bump when the build recipe (flags below) changes, so the binary gets rebuilt.
RECIPE=1

# shellcheck source=lib/pins.sh
source "$HACK_DIR/lib/pins.sh"
BIN_DIR="$CACHE_ROOT/seaweedfs/$(pin_hash "$RECIPE" "$MOD_DIR")"
OUT="$BIN_DIR/weed"
if [[ "${1:-}" == "--print" ]]; then
  echo "$OUT"
  exit 0
fi

log() { echo "[build-seaweedfs] $*" >&2; }

if [[ ! -x "$OUT" ]]; then
  mkdir -p "$BIN_DIR"
  export CGO_ENABLED="${CGO_ENABLED:-0}"
  log "building weed (github.com/seaweedfs/seaweedfs/weed); several minutes on 2 cores ..."
  start=$SECONDS
  # Build to a temp name and rename, so an interrupted build never leaves a
  # truncated binary that later counts as "built".
  (cd "$MOD_DIR" && go build -trimpath -ldflags="-s -w" -o "$OUT.tmp.$$" github.com/seaweedfs/seaweedfs/weed)
  mv -f "$OUT.tmp.$$" "$OUT"
  log "built weed in $((SECONDS - start))s ($(du -h "$OUT" | cut -f1)) into $BIN_DIR"
  prune_pins "$CACHE_ROOT/seaweedfs" "$BIN_DIR" log
fi
echo "$OUT"

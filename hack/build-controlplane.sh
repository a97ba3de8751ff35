#!/usr/bin/env bash
# Build the local control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok) from pinned Go modules into a cache
# outside the clone. The cache directory is named after a hash of the pin
# files (go.mod/go.sum of hack/controlplane, hack/etcd, hack/kwok), the Go
# version and RECIPE below, so changing a pin builds into a fresh directory.
# Builds are reproducible (-trimpath): the same pins give identical binaries.
#
# Usage: hack/build-controlplane.sh          # prints the bin dir on stdout
#        hack/build-controlplane.sh --print  # only print the bin dir, build nothing
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_ROOT="${HYBRIDGPU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hybridgpu}"

# Kubernetes version stamping (what `kubectl version` and /version report);
# normally done by the k8s release tooling via -X. Derived from the pin.
k8s_ldflags() {
  local ver time minor
  read -r ver time < <(cd "$HACK_DIR/controlplane" && go list -m -f '{{.Version}} {{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
  if [[ "$ver" != v1.* ]]; then
    echo "[build-controlplane] cannot read the k8s.io/kubernetes version from hack/controlplane/go.mod" >&2
    return 1
  fi
  minor="${ver#v1.}"
  minor="${minor%%.*}"
  local pkg flags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$time"
  done
  echo "$flags"
}

# Bump when the build recipe (flags below) changes, so binaries get rebuilt.
RECIPE=2

# shellcheck source=lib/pins.sh
source "$HACK_DIR/lib/pins.sh"
BIN_DIR="$CACHE_ROOT/bin/$(pin_hash "$RECIPE" "$HACK_DIR/controlplane" "$HACK_DIR/etcd" "$HACK_DIR/kwok")"
if [[ "${1:-}" == "--print" ]]; then
  echo "$BIN_DIR"
  exit 0
fi

mkdir -p "$BIN_DIR"
# Modules and the build cache persist across runs (defaults under ~/go and
# ~/.cache/go-build unless the caller set them).
export CGO_ENABLED="${CGO_ENABLED:-0}"
K8S_LDFLAGS=""

log() { echo "[build-controlplane] $*" >&2; }

# name  module-dir  package
TARGETS=(
  "kube-apiserver          controlplane k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager controlplane k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler          controlplane k8s.io/kubernetes/cmd/kube-scheduler"
  "kubectl                 controlplane k8s.io/kubernetes/cmd/kubectl"
  "etcd                    etcd         github.com/hybridgpu/hybridgpu/hack/etcd"
  "kwok                    kwok         sigs.k8s.io/kwok/cmd/kwok"
)

total_start=$SECONDS
built=0
for t in "${TARGETS[@]}"; do
  read -r name mod pkg <<<"$t"
  out="$BIN_DIR/$name"
  if [[ -x "$out" ]]; then
    continue
  fi
  log "building $name ($pkg) ..."
  start=$SECONDS
  # Build to a temp name and rename, so an interrupted build never leaves a
  # truncated binary that later counts as "built".
  ldflags="-s -w"
  if [[ "$mod" == controlplane ]]; then
    [[ -n "$K8S_LDFLAGS" ]] || K8S_LDFLAGS="$(k8s_ldflags)"
    ldflags+="$K8S_LDFLAGS"
  fi
  (cd "$HACK_DIR/$mod" && go build -trimpath -ldflags="$ldflags" -o "$out.tmp.$$" "$pkg")
  mv -f "$out.tmp.$$" "$out"
  log "built $name in $((SECONDS - start))s ($(du -h "$out" | cut -f1))"
  built=$((built + 1))
done
if ((built > 0)); then
  log "built $built binaries in $((SECONDS - total_start))s into $BIN_DIR"
  prune_pins "$CACHE_ROOT/bin" "$BIN_DIR" log
fi
echo "$BIN_DIR"

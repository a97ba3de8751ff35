#!/usr/bin/env bash
# Run the operator image built by hack/build-image.sh without a container engine: umoci unpacks
# it into an OCI runtime bundle, and bubblewrap runs the bundle's process (the image's
# entrypoint, user, environment and working directory, as umoci wrote them in config.json)
# with the image's root filesystem read-only, a fresh /tmp (the chart's emptyDir), its own
# /proc and /dev, on the host network.
#
# As root, bwrap itself runs as the image's user (setpriv), so the process is uid 65532 on
# the host too and sees the image's files as owned by nobody; as anyone else, the user is
# mapped in a user namespace.
#
# Usage:
#   hack/run-image.sh [--archive A] [--bundle DIR] [--unpack-only]
#                     [--ro-bind SRC DST]... [--] [ARGS to the entrypoint]...
#     --archive   default: the archive dist/image.json names
#     --bundle    where to unpack (default /tmp/hybridgpu-image-<uid>/bundle: every folder
#                 above it must be searchable by the image's user); a bundle of the same
#                 archive is reused
#   e.g. hack/run-image.sh --ro-bind ~/.kube /tmp/kube -- --kubeconfig /tmp/kube/config
#   (mount points can be made only under the fresh /tmp: the root is read-only)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "[run-image] $*" >&2; }

ARCHIVE=""
BUNDLE="/tmp/hybridgpu-image-$(id -u)/bundle"
UNPACK_ONLY=0
BINDS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --archive) ARCHIVE="$2"; shift 2 ;;
    --bundle) BUNDLE="$2"; shift 2 ;;
    --unpack-only) UNPACK_ONLY=1; shift ;;
    --ro-bind) BINDS+=(--ro-bind "$2" "$3"); shift 3 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
if [[ -z "$ARCHIVE" ]]; then
  [[ -f "$REPO/dist/image.json" ]] || { log "no dist/image.json: run make image"; exit 1; }
  ARCHIVE="$REPO/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["archive"])' \
    "$REPO/dist/image.json")"
fi
for tool in umoci bwrap; do
  command -v "$tool" >/dev/null || { log "missing $tool (apt-get install umoci bubblewrap)"; exit 1; }
done

# The archive is an OCI layout in a tar; its one tag names the image.
digest_of() { sha256sum "$1" | cut -d' ' -f1; }
want="$(digest_of "$ARCHIVE")"
if [[ ! -f "$BUNDLE/config.json" || "$(cat "$BUNDLE/.archive-sha256" 2>/dev/null)" != "$want" ]]; then
  log "unpacking $ARCHIVE into $BUNDLE"
  rm -rf "$BUNDLE" "$BUNDLE.layout"
  mkdir -p "$BUNDLE.layout" "$(dirname "$BUNDLE")"
  chmod 0711 "$(dirname "$BUNDLE")"
  tar -xf "$ARCHIVE" -C "$BUNDLE.layout"
  tag="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])' "$BUNDLE.layout/index.json")"
  umoci unpack --image "$BUNDLE.layout:$tag" "$BUNDLE" >/dev/null
  rm -rf "$BUNDLE.layout"
  echo "$want" >"$BUNDLE/.archive-sha256"
  # The bundle's path must be reachable for the image's user.
  chmod 0755 "$BUNDLE"
fi
[[ "$UNPACK_ONLY" == 1 ]] && { echo "$BUNDLE"; exit 0; }

# The process as the image's config gives it (umoci's config.json, OCI runtime spec).
mapfile -t SPEC < <(python3 - "$BUNDLE/config.json" <<'EOF'
import json, sys
process = json.load(open(sys.argv[1]))["process"]
print(process["user"]["uid"])
print(process["user"]["gid"])
print(process.get("cwd") or "/")
print(json.dumps(process["args"]))
for kv in process.get("env", []):
    print(kv)
EOF
)
uid="${SPEC[0]}" gid="${SPEC[1]}" cwd="${SPEC[2]}"
mapfile -t ENTRYPOINT < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "${SPEC[3]}")
ENV_ARGS=()
for kv in "${SPEC[@]:4}"; do ENV_ARGS+=(--setenv "${kv%%=*}" "${kv#*=}"); done
# What a kubelet or Kopf would add: the pod's name (Kopf's peering identity), if given.
[[ -n "${POD_ID:-}" ]] && ENV_ARGS+=(--setenv POD_ID "$POD_ID")

BWRAP=(
  bwrap --unshare-all --share-net --die-with-parent --new-session
  --ro-bind "$BUNDLE/rootfs" / --proc /proc --dev /dev --tmpfs /tmp
  "${BINDS[@]}" --chdir "$cwd" --clearenv "${ENV_ARGS[@]}"
)
if [[ "$(id -u)" == 0 ]]; then
  exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --bounding-set=-all \
    "${BWRAP[@]}" --unshare-user -- "${ENTRYPOINT[@]}" "$@"
fi
exec "${BWRAP[@]}" --unshare-user --uid "$uid" --gid "$gid" -- "${ENTRYPOINT[@]}" "$@"

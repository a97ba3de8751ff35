# shellcheck shell=bash disable=SC2034  # sourced; variables are used by the callers
# Shared settings for hack/cluster-up.sh and hack/cluster-down.sh (sourced).
# Every port and path can be overridden from the environment.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HACK_DIR="$REPO_ROOT/hack"
LOCAL_DIR="${HYBRIDGPU_LOCAL_DIR:-$REPO_ROOT/.local}"
PKI_DIR="$LOCAL_DIR/pki"
LOG_DIR="$LOCAL_DIR/logs"
PID_DIR="$LOCAL_DIR/pids"
KUBECONFIG_PATH="$LOCAL_DIR/kubeconfig"

# High ports, away from the usual 2379/6443/10250-10259 so a real cluster
# or a kind/kwokctl cluster on the same host does not clash.
ETCD_PORT="${HYBRIDGPU_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${HYBRIDGPU_ETCD_PEER_PORT:-23791}"
APISERVER_PORT="${HYBRIDGPU_APISERVER_PORT:-26443}"
KCM_PORT="${HYBRIDGPU_KCM_PORT:-20257}"
SCHEDULER_PORT="${HYBRIDGPU_SCHEDULER_PORT:-20259}"
KWOK_PORT="${HYBRIDGPU_KWOK_PORT:-20247}"

# How long a Job's Pod "runs" on a fake node before kwok marks it Succeeded.
JOB_DURATION_MS="${HYBRIDGPU_JOB_DURATION_MS:-3000}"

SERVICE_CIDR="${HYBRIDGPU_SERVICE_CIDR:-10.96.0.0/16}"
SERVICE_IP="${HYBRIDGPU_SERVICE_IP:-10.96.0.1}"

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

BIN_DIR="$("$HACK_DIR/build-controlplane.sh" --print)"
KUBECTL="$BIN_DIR/kubectl"

# Root of all pinned bin dirs (a cluster may still run from an older pin).
BIN_ROOT="$(dirname "$BIN_DIR")"

# pids (one per line) of processes started from $BIN_ROOT whose command line
# mentions this checkout's $LOCAL_DIR: ours, and nobody else's.
our_pids() {
  local pid cmd
  for pid in $(pgrep -f "$BIN_ROOT/" || true); do
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    if [[ "$cmd" == "$BIN_ROOT/"* && "$cmd" == *"$LOCAL_DIR/"* ]]; then
      echo "$pid"
    fi
  done
}

# Running and not a zombie (an init that reaps slowly leaves dead children as
# zombies for a while, and kill -0 succeeds on those).
proc_alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat:0:1}" != Z && "${stat:0:1}" != X ]]
}

pid_alive() { [[ -f "$1" ]] && proc_alive "$(cat "$1")"; }

cluster_healthy() {
  local c
  [[ -x "$KUBECTL" && -f "$KUBECONFIG_PATH" ]] || return 1
  for c in "${COMPONENTS[@]}"; do
    pid_alive "$PID_DIR/$c.pid" || return 1
  done
  "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

# Serialize cluster-up/cluster-down: several test runs in one checkout may call
# them at once. cluster-up holds the lock while it calls cluster-down itself.
take_cluster_lock() {
  [[ -n "${HYBRIDGPU_CLUSTER_LOCKED:-}" ]] && return 0
  mkdir -p "$LOCAL_DIR"
  exec 9>"$LOCAL_DIR/.cluster.lock"
  if ! flock -w 900 9; then
    echo "timed out waiting for $LOCAL_DIR/.cluster.lock" >&2
    exit 1
  fi
  export HYBRIDGPU_CLUSTER_LOCKED=1
}

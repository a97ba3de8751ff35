#!/usr/bin/env bash
# Stop the local control plane started by hack/cluster-up.sh.
#   hack/cluster-down.sh           stop processes, keep .local/ (etcd data, pki)
#   hack/cluster-down.sh --purge   also delete the cluster's data in .local/
# Stops by pid file first (reverse start order), then sweeps any process that
# was started from our bin dir with this checkout's .local/ in its command
# line (never anything else), so no process is left behind.
set -euo pipefail
# shellcheck source=cluster-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-env.sh"

PURGE=0
for arg in "$@"; do
  case "$arg" in
    --purge) PURGE=1 ;;
    -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "[cluster-down] $*" >&2; }
take_cluster_lock

stop_pid() { # pid name
  local pid=$1 name=$2 i
  proc_alive "$pid" || return 0
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    proc_alive "$pid" || return 0
    sleep 0.1
  done
  log "$name (pid $pid) ignored SIGTERM for 10s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# Reverse start order: clients before the API server, etcd last.
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  c=${COMPONENTS[i]}
  f="$PID_DIR/$c.pid"
  if [[ -f "$f" ]]; then
    pid="$(cat "$f")"
    # Only signal the pid if it still is our binary (pids get reused).
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    if [[ "$exe" == "$BIN_ROOT/"*"/$c" ]]; then
      stop_pid "$pid" "$c"
    fi
    rm -f "$f"
  fi
done

# Fallback sweep (e.g. pid files lost): processes from our bin dir using our .local/.
for pid in $(our_pids); do
  stop_pid "$pid" "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null || echo leftover)")"
done

left="$(our_pids)"
if [[ -n "$left" ]]; then
  log "processes still running: $left"
  exit 1
fi

if ((PURGE)); then
  # Only what cluster-up made: other tools (e.g. hack/prometheus.sh) keep
  # their own state in .local/ too.
  log "removing cluster data from $LOCAL_DIR"
  rm -rf "$LOCAL_DIR/etcd" "$PKI_DIR" "$LOCAL_DIR/kwok" "$KUBECONFIG_PATH"
  for c in "${COMPONENTS[@]}"; do
    rm -f "$LOG_DIR/$c.log" "$PID_DIR/$c.pid"
  done
  rmdir "$LOG_DIR" "$PID_DIR" "$LOCAL_DIR" 2>/dev/null || true
fi
log "cluster down"

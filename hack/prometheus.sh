#!/usr/bin/env bash
# Run a real Prometheus (Debian's `prometheus` package) for local runs and e2e tests.
#
#   hack/prometheus.sh start    install if missing, render the config, start, wait for /-/ready
#   hack/prometheus.sh stop     stop the Prometheus this checkout started
#   hack/prometheus.sh status   print whether it runs and where (exit 1 if not running)
#
# It scrapes the dcgm-exporter stand-in at 127.0.0.1:$HYBRIDGPU_DCGM_EXPORTER_PORT and, when
# $HYBRIDGPU_OPERATOR_METRICS_PORT is set, the operator's /metrics. The binary is run directly in
# the background (never the Debian service). Everything lives under $HYBRIDGPU_LOCAL_DIR
# (default .local/): data in prometheus/, the rendered config in prometheus/prometheus.yml,
# the pid in pids/prometheus.pid and the log in logs/prometheus.log.
#
# Environment (all optional):
#   HYBRIDGPU_LOCAL_DIR                 state directory               (.local)
#   HYBRIDGPU_PROMETHEUS_PORT           listen port on 127.0.0.1       (19090)
#   HYBRIDGPU_DCGM_EXPORTER_PORT        port of the DCGM stand-in      (19400)
#   HYBRIDGPU_OPERATOR_METRICS_PORT     operator /metrics port         (unset: not scraped)
#   HYBRIDGPU_PROMETHEUS_SCRAPE_INTERVAL                               (2s)
#   HYBRIDGPU_PROMETHEUS_READY_TIMEOUT  seconds to wait for /-/ready   (60)
#   PROMETHEUS_BIN                      the binary                     (/usr/bin/prometheus)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_DIR="${HYBRIDGPU_LOCAL_DIR:-$REPO_ROOT/.local}"
PORT="${HYBRIDGPU_PROMETHEUS_PORT:-19090}"
DCGM_PORT="${HYBRIDGPU_DCGM_EXPORTER_PORT:-19400}"
OPERATOR_PORT="${HYBRIDGPU_OPERATOR_METRICS_PORT:-}"
SCRAPE_INTERVAL="${HYBRIDGPU_PROMETHEUS_SCRAPE_INTERVAL:-2s}"
READY_TIMEOUT="${HYBRIDGPU_PROMETHEUS_READY_TIMEOUT:-60}"
PROMETHEUS_BIN="${PROMETHEUS_BIN:-/usr/bin/prometheus}"

DATA_DIR="$LOCAL_DIR/prometheus"
CONFIG="$DATA_DIR/prometheus.yml"
PID_FILE="$LOCAL_DIR/pids/prometheus.pid"
LOG_FILE="$LOCAL_DIR/logs/prometheus.log"
URL="http://127.0.0.1:$PORT"

log() { echo "prometheus.sh: $*" >&2; }

for value in "$PORT" "$DCGM_PORT" ${OPERATOR_PORT:+"$OPERATOR_PORT"}; do
  [[ "$value" =~ ^[0-9]+$ ]] || { log "port '$value' is not a number"; exit 2; }
done
[[ "$SCRAPE_INTERVAL" =~ ^[0-9]+(ms|s|m)$ ]] || {
  log "HYBRIDGPU_PROMETHEUS_SCRAPE_INTERVAL '$SCRAPE_INTERVAL' is not a duration like 2s"; exit 2; }

running_pid() {
  # The pid from our pid file, if that process is still a prometheus using our config.
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--config.file=$CONFIG" || return 1
  echo "$pid"
}

install_prometheus() {
  [[ -x "$PROMETHEUS_BIN" ]] && return 0
  if [[ "$(id -u)" != 0 ]]; then
    log "$PROMETHEUS_BIN is missing; install it as root: apt-get update && apt-get install -y --no-install-recommends prometheus"
    exit 1
  fi
  log "installing Debian's prometheus package"
  # Keep the package's maintainer scripts from starting the system service (Docker's trick).
  local made_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends prometheus; } >&2 || rc=$?
  [[ -n "$made_policy" ]] && rm -f /usr/sbin/policy-rc.d
  [[ $rc == 0 && -x "$PROMETHEUS_BIN" ]] || { log "installing prometheus failed"; exit 1; }
}

render_config() {
  local operator_job=""
  if [[ -n "$OPERATOR_PORT" ]]; then
    operator_job="  - job_name: hybridgpu-operator
    static_configs:
      - targets: [\"127.0.0.1:$OPERATOR_PORT\"]"
  fi
  local timeout="$SCRAPE_INTERVAL"  # a scrape may not outlast its interval
  mkdir -p "$DATA_DIR"
  local tmpl="$REPO_ROOT/hack/prometheus.yml.tmpl"
  python3 - "$tmpl" "$CONFIG" "$SCRAPE_INTERVAL" "$timeout" "$DCGM_PORT" "$operator_job" <<'PY'
import sys
tmpl, out, interval, timeout, dcgm, operator_job = sys.argv[1:]
text = open(tmpl).read()
for key, value in {"SCRAPE_INTERVAL": interval, "SCRAPE_TIMEOUT": timeout,
                   "DCGM_PORT": dcgm, "OPERATOR_JOB": operator_job}.items():
    text = text.replace(f"@@{key}@@", value)
open(out, "w").write(text)
PY
}

wait_ready() {
  local pid="$1" deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS -o /dev/null --max-time 2 "$URL/-/ready" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "prometheus exited during start-up; last lines of $LOG_FILE:"
      tail -n 20 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE"
      exit 1
    fi
    if ((SECONDS > deadline)); then
      log "not ready after ${READY_TIMEOUT}s; see $LOG_FILE"
      exit 1
    fi
    sleep 0.3
  done
}

start() {
  local pid
  if pid="$(running_pid)"; then
    log "already running (pid $pid) at $URL"
    echo "$URL"
    return 0
  fi
  install_prometheus
  mkdir -p "$LOCAL_DIR/pids" "$LOCAL_DIR/logs"
  render_config
  if command -v promtool >/dev/null; then
    promtool check config "$CONFIG" >/dev/null || { log "invalid config $CONFIG"; exit 1; }
  fi
  setsid "$PROMETHEUS_BIN" \
    --config.file="$CONFIG" \
    --storage.tsdb.path="$DATA_DIR/data" \
    --storage.tsdb.retention.time=1d \
    --web.listen-address="127.0.0.1:$PORT" \
    --web.enable-lifecycle \
    >>"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"
  wait_ready "$pid"
  log "ready (pid $pid) at $URL, scraping 127.0.0.1:$DCGM_PORT every $SCRAPE_INTERVAL"
  echo "$URL"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$PID_FILE"
    return 0
  fi
  kill "$pid"
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored SIGTERM for 10s; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

status() {
  local pid
  if pid="$(running_pid)"; then
    echo "running pid=$pid url=$URL config=$CONFIG"
    return 0
  fi
  echo "not running"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

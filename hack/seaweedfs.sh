#!/usr/bin/env bash
# The demo's result store: SeaweedFS (`weed server -filer -s3`, built by
# hack/build-seaweedfs.sh) on loopback, data in .local/seaweedfs, one admin identity.
# (The tests start their own on free ports: tests/objectstore.py.)
#
# Usage: hack/seaweedfs.sh start|stop|env
#   env prints the variables the operator (HYBRIDGPU_RESULTS_*) and `hybridgpu results`
#   (AWS_*) read, for `eval "$(hack/seaweedfs.sh env)"`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=$ROOT/.local/seaweedfs
PIDFILE=$ROOT/.local/pids/seaweedfs.pid
S3_PORT=${HYBRIDGPU_DEMO_S3_PORT:-18333}
BUCKET=${HYBRIDGPU_DEMO_BUCKET:-hybridgpu-demo}
KEY=demo-admin
SECRET=demo-admin-secret-key

case "${1:-}" in
  env)
    cat <<ENV
export HYBRIDGPU_RESULTS_ENDPOINT=http://127.0.0.1:$S3_PORT HYBRIDGPU_RESULTS_BUCKET=$BUCKET
export HYBRIDGPU_RESULTS_PREFIX=hybridgpu HYBRIDGPU_RESULTS_ACCESS_KEY_ID=$KEY
export HYBRIDGPU_RESULTS_SECRET_ACCESS_KEY=$SECRET
ENV
    ;;
  start)
    if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then exit 0; fi
    WEED=$(hack/build-seaweedfs.sh)
    mkdir -p "$DATA" "$ROOT/.local/logs" "$(dirname "$PIDFILE")"
    cat >"$DATA/s3.json" <<JSON
{"identities": [{"name": "admin", "credentials": [{"accessKey": "$KEY", "secretKey": "$SECRET"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
    nohup "$WEED" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$DATA" \
      -master.port=18933 -master.port.grpc=28933 -master.volumeSizeLimitMB=64 \
      -volume.port=18940 -volume.port.grpc=28940 -volume.max=100 \
      -filer -filer.port=18988 -filer.port.grpc=28988 \
      -s3 -s3.port="$S3_PORT" -s3.port.grpc=28334 -s3.port.iceberg=0 -s3.port.lance=0 \
      -s3.config="$DATA/s3.json" >"$ROOT/.local/logs/seaweedfs.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 60); do
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" || true)
      [[ $code != 000 ]] && exit 0
      sleep 0.5
    done
    echo "SeaweedFS did not start; see .local/logs/seaweedfs.log" >&2
    exit 1
    ;;
  stop)
    if [[ -f $PIDFILE ]]; then
      pid=$(cat "$PIDFILE")
      kill "$pid" 2>/dev/null || true
      # Wait for it to let go of its ports, or the next start finds them taken.
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$PIDFILE"
    fi
    ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac

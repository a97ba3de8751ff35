#!/usr/bin/env bash
# make demo: the local cluster with fake GPU nodes, a real Prometheus scraping a DCGM exporter
# stand-in, the stand-in GPU networks, and the operator; then the examples, watched to the end.
# Everything keeps running for you to explore until `make cluster-down` (which also stops these).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
LOGS=$ROOT/.local/logs
PIDS=$ROOT/.local/pids
mkdir -p "$LOGS" "$PIDS"
KUBECONFIG=$ROOT/.local/kubeconfig
export KUBECONFIG
KUBECTL="$("$ROOT/hack/build-controlplane.sh" --print)/kubectl"

start() {  # name, command...: start in the background unless already running
  local name=$1; shift
  if [[ -f $PIDS/$name.pid ]] && kill -0 "$(cat "$PIDS/$name.pid")" 2>/dev/null; then return; fi
  nohup "$@" >"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}

"$KUBECTL" apply --server-side --force-conflicts -f crds/ >/dev/null
"$KUBECTL" wait --for=condition=Established --timeout=60s crd --all >/dev/null

# The result store (SeaweedFS) and the demo's input object, in this namespace's part of it.
hack/seaweedfs.sh start
eval "$(hack/seaweedfs.sh env)"
export AWS_ACCESS_KEY_ID=$HYBRIDGPU_RESULTS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$HYBRIDGPU_RESULTS_SECRET_ACCESS_KEY
export AWS_ENDPOINT_URL=$HYBRIDGPU_RESULTS_ENDPOINT
"$PY" hack/demo-input.py "s3://$HYBRIDGPU_RESULTS_BUCKET/hybridgpu/default/inputs/tickets.jsonl" 200
"$PY" hack/demo-input.py "s3://$HYBRIDGPU_RESULTS_BUCKET/hybridgpu/default/inputs/discharge-notes.jsonl" 120 letters

start standins "$PY" -m hybridgpu.cli networks serve --base-port 18081
# GPU nodes whose Pods really run (the KWOK nodes only look busy): the operator counts only them.
start demo-nodes "$PY" hack/demo-nodes.py
export HYBRIDGPU_GPU_NODE_SELECTOR='{"type": "process-agent"}'
start dcgm-exporter "$PY" -m hybridgpu.cli dcgm-exporter serve --kubeconfig "$KUBECONFIG" --port 19400
HYBRIDGPU_OPERATOR_METRICS_PORT=18080 hack/prometheus.sh start
# Only the default namespace: the test suite runs its own operator for its own namespaces.
start operator "$PY" -m hybridgpu.cli run --kubeconfig "$KUBECONFIG" -n default --metrics-port 18080 \
  --liveness http://127.0.0.1:18089/healthz --prometheus-url http://127.0.0.1:19090 \
  --log-format json

# A re-run starts the jobs afresh (the operator, running now, honours their finalizers).
"$KUBECTL" delete ij --all -n default --ignore-not-found --timeout=60s >/dev/null
for f in examples/*.yaml; do "$KUBECTL" apply -f "$f" >/dev/null; done
echo "Applied examples/. Watching the InferenceJobs (Ctrl-C stops watching; all keeps running):"
deadline=$((SECONDS + ${HYBRIDGPU_DEMO_TIMEOUT:-300}))
while (( SECONDS < deadline )); do
  table=$("$KUBECTL" get ij -n default 2>/dev/null || true)
  clear 2>/dev/null || true
  echo "$table"
  pending=$(echo "$table" | tail -n +2 | awk '$2 != "Succeeded" && $2 != "Failed"' | wc -l)
  (( pending <= 1 )) && break   # the capped job waits on purpose and never finishes
  sleep 3
done
echo
# Every finished model-task job's results are in the store; show the first lines of each.
for job in $("$KUBECTL" get ij -n default -o jsonpath='{range .items[?(@.status.phase=="Succeeded")]}{.metadata.name}{" "}{end}'); do
  echo "== hybridgpu results $job (first 2 lines of $("$KUBECTL" get ij "$job" -n default -o jsonpath='{.status.output.summary}') records)"
  "$ROOT/.venv/bin/hybridgpu" results "$job" -n default --kubeconfig "$KUBECONFIG" | head -n 2 | cut -c1-300 || true
done
echo
echo "A job's results:                  .venv/bin/hybridgpu results summarise-tickets --kubeconfig $KUBECONFIG"
echo "Why did a job go where it went?   .venv/bin/hybridgpu explain bargain-hunter --kubeconfig $KUBECONFIG"
echo "Providers:                        $KUBECTL get cp"
echo "Operator metrics:                 curl -s 127.0.0.1:18080/metrics | grep hybridgpu_"
echo "Prometheus:                       http://127.0.0.1:19090"
echo "Stop everything:                  make cluster-down"

#!/usr/bin/env bash
# Start a real local Kubernetes control plane on 127.0.0.1:
#   etcd -> kube-apiserver -> kube-controller-manager, kube-scheduler, kwok
# Binaries come from hack/build-controlplane.sh (built on first use). State
# lives in .local/ (pki, etcd data, logs, pids, kubeconfig). Idempotent: if
# the cluster is already up and healthy it returns at once; if it is half up
# it is stopped (data kept) and started again.
#
# Env overrides: see hack/cluster-env.sh (HYBRIDGPU_*_PORT, HYBRIDGPU_JOB_DURATION_MS).
set -euo pipefail
START_TS=$(date +%s.%N)
# shellcheck source=cluster-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-env.sh"

log() { echo "[cluster-up] $*" >&2; }
elapsed() { awk -v s="$START_TS" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}'; }

if cluster_healthy; then
  log "cluster already up and healthy ($(elapsed)s); KUBECONFIG=$KUBECONFIG_PATH"
  exit 0
fi
take_cluster_lock
# Another caller may have brought it up while we waited for the lock.
if cluster_healthy; then
  log "cluster already up and healthy ($(elapsed)s); KUBECONFIG=$KUBECONFIG_PATH"
  exit 0
fi

# Half up (some component dead, or not ready)? Stop what is left, keep data.
if [[ -n "$(our_pids)" ]]; then
  log "cluster partially up: restarting it"
  "$HACK_DIR/cluster-down.sh"
fi

"$HACK_DIR/build-controlplane.sh" >/dev/null
mkdir -p "$PKI_DIR" "$LOG_DIR" "$PID_DIR" "$LOCAL_DIR/etcd" "$LOCAL_DIR/kwok"
chmod 700 "$LOCAL_DIR" "$PKI_DIR" "$LOCAL_DIR/etcd"

# --- PKI (once) -------------------------------------------------------------
gen_client_cert() { # name CN O
  local name=$1 cn=$2 o=$3
  openssl genrsa -out "$PKI_DIR/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI_DIR/$name.key" -subj "/O=$o/CN=$cn" -out "$PKI_DIR/$name.csr"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$PKI_DIR/$name.ext"
  openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$PKI_DIR/$name.ext" -out "$PKI_DIR/$name.crt" 2>/dev/null
  rm -f "$PKI_DIR/$name.csr" "$PKI_DIR/$name.ext"
}

if [[ ! -f "$PKI_DIR/.complete" ]]; then
  log "generating PKI in $PKI_DIR"
  rm -f "$PKI_DIR"/*
  openssl genrsa -out "$PKI_DIR/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI_DIR/ca.key" -subj "/CN=hybridgpu-local-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI_DIR/ca.crt"
  # kube-apiserver serving certificate
  openssl genrsa -out "$PKI_DIR/apiserver.key" 2048 2>/dev/null
  openssl req -new -key "$PKI_DIR/apiserver.key" -subj "/CN=kube-apiserver" -out "$PKI_DIR/apiserver.csr"
  cat >"$PKI_DIR/apiserver.ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
  openssl x509 -req -in "$PKI_DIR/apiserver.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$PKI_DIR/apiserver.ext" -out "$PKI_DIR/apiserver.crt" 2>/dev/null
  rm -f "$PKI_DIR/apiserver.csr" "$PKI_DIR/apiserver.ext"
  # ServiceAccount token signing key pair
  openssl genrsa -out "$PKI_DIR/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  # Client certificates. RBAC bootstrap policy binds the system:kube-* users.
  gen_client_cert admin kubernetes-admin system:masters
  gen_client_cert kube-controller-manager system:kube-controller-manager system:kube-controller-manager
  gen_client_cert kube-scheduler system:kube-scheduler system:kube-scheduler
  # Front proxy (aggregation layer / delegated authn of controller-manager and
  # scheduler read requestheader-client-ca from the cluster): separate CA.
  openssl genrsa -out "$PKI_DIR/front-proxy-ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI_DIR/front-proxy-ca.key" -subj "/CN=hybridgpu-front-proxy-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI_DIR/front-proxy-ca.crt"
  openssl genrsa -out "$PKI_DIR/front-proxy-client.key" 2048 2>/dev/null
  openssl req -new -key "$PKI_DIR/front-proxy-client.key" -subj "/CN=front-proxy-client" -out "$PKI_DIR/fp.csr"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$PKI_DIR/fp.ext"
  openssl x509 -req -in "$PKI_DIR/fp.csr" -CA "$PKI_DIR/front-proxy-ca.crt" -CAkey "$PKI_DIR/front-proxy-ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$PKI_DIR/fp.ext" -out "$PKI_DIR/front-proxy-client.crt" 2>/dev/null
  rm -f "$PKI_DIR/fp.csr" "$PKI_DIR/fp.ext"
  # kwok plays the kubelet of every fake node: it patches Node/Pod status and
  # Leases cluster-wide, so it gets an admin identity of its own.
  gen_client_cert kwok hybridgpu:kwok system:masters
  chmod 600 "$PKI_DIR"/*.key
  touch "$PKI_DIR/.complete"
fi

write_kubeconfig() { # file cert-name
  local file=$1 name=$2
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hybridgpu
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI_DIR/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 <"$PKI_DIR/$name.crt")
    client-key-data: $(base64 -w0 <"$PKI_DIR/$name.key")
contexts:
- name: hybridgpu
  context:
    cluster: hybridgpu
    user: $name
current-context: hybridgpu
EOF
  chmod 600 "$file.tmp"
  mv -f "$file.tmp" "$file"
}
write_kubeconfig "$KUBECONFIG_PATH" admin
for c in kube-controller-manager kube-scheduler kwok; do
  write_kubeconfig "$PKI_DIR/$c.kubeconfig" "$c"
done

# --- processes --------------------------------------------------------------
start() { # name args...
  local name=$1
  shift
  log "starting $name"
  # setsid: own session, so a Ctrl-C in the caller's terminal or the end of a
  # test runner's process group does not take the cluster down with it.
  # 9>&-: the daemons must not inherit (and so hold) the cluster lock.
  setsid "$BIN_DIR/$name" "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$PID_DIR/$name.pid"
}

wait_for() { # what timeout-seconds command...
  local what=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for $what; last log lines:"
      tail -n 30 "$LOG_DIR"/*.log >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

K() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=5s "$@"; }

start etcd \
  --name=hybridgpu \
  --data-dir="$LOCAL_DIR/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="hybridgpu=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync=true \
  --log-level=warn
wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

start kube-apiserver \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$APISERVER_PORT" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --tls-cert-file="$PKI_DIR/apiserver.crt" \
  --tls-private-key-file="$PKI_DIR/apiserver.key" \
  --client-ca-file="$PKI_DIR/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI_DIR/sa.pub" \
  --service-account-signing-key-file="$PKI_DIR/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --endpoint-reconciler-type=none \
  --requestheader-client-ca-file="$PKI_DIR/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI_DIR/front-proxy-client.crt" \
  --proxy-client-key-file="$PKI_DIR/front-proxy-client.key" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true \
  --profiling="${HYBRIDGPU_APISERVER_PROFILING:-false}"
wait_for kube-apiserver 90 K get --raw /readyz

start kube-controller-manager \
  --kubeconfig="$PKI_DIR/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$PKI_DIR/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$PKI_DIR/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$KCM_PORT" \
  --leader-elect=false \
  --controllers='*' \
  --use-service-account-credentials=true \
  --root-ca-file="$PKI_DIR/ca.crt" \
  --service-account-private-key-file="$PKI_DIR/sa.key" \
  --cluster-signing-cert-file="$PKI_DIR/ca.crt" \
  --cluster-signing-key-file="$PKI_DIR/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --cluster-name=hybridgpu \
  --profiling=false

start kube-scheduler \
  --kubeconfig="$PKI_DIR/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$PKI_DIR/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$PKI_DIR/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$SCHEDULER_PORT" \
  --leader-elect=false \
  --profiling=false

# kwok: one config file = KwokConfiguration + our Stage copies, with the Job
# run time substituted into pod-complete's default delay.
{
  for f in kwok node-initialize node-heartbeat-with-lease pod-ready pod-complete pod-delete; do
    echo "---"
    sed "s/durationMilliseconds: 3000\$/durationMilliseconds: $JOB_DURATION_MS/" "$HACK_DIR/kwok-stages/$f.yaml"
  done
} >"$LOCAL_DIR/kwok/kwok.yaml"
# kwok's lease holder identity is random per process: Leases left by a previous
# kwok would keep the new one from managing those nodes until they expire (and
# Pods bound meanwhile can stay Pending). No real kubelet runs in this cluster,
# so every node Lease is kwok's: drop them and let the new kwok recreate them.
K -n kube-node-lease delete leases --all --ignore-not-found >/dev/null
start kwok \
  --kubeconfig="$PKI_DIR/kwok.kubeconfig" \
  --config="$LOCAL_DIR/kwok/kwok.yaml" \
  --server-address="127.0.0.1:$KWOK_PORT"

wait_for "kube-controller-manager /healthz" 60 curl -kfsS "https://127.0.0.1:$KCM_PORT/healthz"
wait_for "kube-scheduler /healthz" 60 curl -kfsS "https://127.0.0.1:$SCHEDULER_PORT/healthz"
wait_for "kwok /healthz" 60 curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz"
wait_for "ServiceAccount default/default" 60 K -n default get serviceaccount default
kwok_leases_held() {
  local nodes leases
  nodes=$(K get nodes -l type=kwok -o name | wc -l)
  leases=$(K -n kube-node-lease get leases -o name | wc -l)
  ((leases >= nodes))
}
wait_for "kwok to hold the Leases of existing fake nodes" 60 kwok_leases_held

if ! cluster_healthy; then
  log "cluster did not come up healthy; see $LOG_DIR"
  exit 1
fi
log "cluster up in $(elapsed)s: https://127.0.0.1:$APISERVER_PORT"
log "export KUBECONFIG=$KUBECONFIG_PATH   # kubectl: $KUBECTL"

#!/usr/bin/env bash
# End-to-end on kind: build both images, load them into a kind cluster, install the chart with a
# WalletPool, run three escrows to Ready, and check the pool's NetworkPolicy (a pod that is not the
# operator cannot reach wallet-rpc; a pod with the operator's labels in its namespace can).
#
#   hack/kind-e2e.sh                  create the cluster, run, delete the cluster
#   KEEP_CLUSTER=1 hack/kind-e2e.sh   leave the cluster running (kind delete cluster --name ...)
#
# Needs a Docker engine (`docker info` must work); exits 3 with "Docker engine not available"
# otherwise. helm and kind come from hack/build-tools.sh, kubectl from hack/build-controlplane.sh.
#
# CNI: kind's default kindnet. Since kind v0.24 kindnetd enforces NetworkPolicy (it embeds
# kube-network-policies; its ClusterRole lists and watches networkpolicies), so no Calico is
# installed. The check below proves enforcement both ways, so a CNI that ignores policies fails
# the run instead of passing it.
#
# Storage: kind's local-path provisioner only does ReadWriteOnce and a WalletPool needs
# ReadWriteMany, so the single-node cluster gets a hostPath PersistentVolume (ReadWriteMany, a
# directory owned by 10001 on the node) and the pool uses it through storage.claimName.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-xmr-escrow-e2e}"
OPERATOR_IMAGE=xmr-escrow/operator:0.1.0
WALLET_IMAGE=xmr-escrow/wallet-rpc:0.18.4.0
SYSTEM_NS=xmr-escrow-system
NS=escrows
TIMEOUT="${E2E_TIMEOUT:-600s}"

log() { printf '[kind-e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if ! docker info >/dev/null 2>&1; then
  echo "Docker engine not available (docker info failed)" >&2
  exit 3
fi

TOOLS="$("$HERE/build-tools.sh")"
KUBECTL="$("$HERE/build-controlplane.sh")/kubectl"
KIND="$TOOLS/kind"
HELM="$TOOLS/helm"
WORK="$(mktemp -d)"
export KUBECONFIG="$WORK/kubeconfig"
k() { "$KUBECTL" "$@"; }

cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    log "failed ($rc); state of the cluster:"
    k get pods -A -o wide >&2 || true
    k -n "$NS" get wpool,esc -o wide >&2 || true
    k -n "$SYSTEM_NS" logs deploy/xmr-escrow-operator --tail=200 >&2 || true
  fi
  if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
    "$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  else
    log "cluster $CLUSTER kept; KUBECONFIG=$KUBECONFIG"
  fi
  [[ "${KEEP_CLUSTER:-0}" == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT

log "building $OPERATOR_IMAGE and $WALLET_IMAGE"
docker build -q -f "$ROOT/images/operator.Dockerfile" -t "$OPERATOR_IMAGE" "$ROOT" >/dev/null
docker build -q -f "$ROOT/images/wallet-rpc.Dockerfile" -t "$WALLET_IMAGE" "$ROOT" >/dev/null

log "creating kind cluster $CLUSTER"
"$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
"$KIND" create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s
"$KIND" load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$WALLET_IMAGE"

log "namespaces (restricted Pod Security) and the ReadWriteMany wallet volume"
for ns in "$SYSTEM_NS" "$NS"; do
  k create namespace "$ns"
  k label namespace "$ns" pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted
done
docker exec "$CLUSTER-control-plane" sh -c \
  'mkdir -p /var/lib/xmr-escrow/wallets && chown 10001:10001 /var/lib/xmr-escrow/wallets && chmod 0770 /var/lib/xmr-escrow/wallets'
k apply -f - <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: xmr-escrow-wallets}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: xmr-escrow-wallets
  hostPath: {path: /var/lib/xmr-escrow/wallets, type: Directory}
  claimRef: {namespace: $NS, name: wallets}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: wallets, namespace: $NS}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: xmr-escrow-wallets
  volumeName: xmr-escrow-wallets
  resources: {requests: {storage: 1Gi}}
EOF

log "installing the chart"
"$HELM" install xmr-escrow-operator "$ROOT/charts/xmr-escrow-operator" --namespace "$SYSTEM_NS" \
  --set image.pullPolicy=Never \
  --set walletPool.enabled=true --set walletPool.name=wallets --set walletPool.namespace="$NS" \
  --set walletPool.replicas=3 --set walletPool.storage.claimName=wallets --set walletPool.storage.size= \
  --wait --timeout 5m
k -n "$SYSTEM_NS" rollout status deploy/xmr-escrow-operator --timeout=180s
k -n "$NS" wait --for=create statefulset/wallets --timeout=120s
k -n "$NS" rollout status statefulset/wallets --timeout="$TIMEOUT"

log "three escrows"
for order in 1 2 3; do
  k -n "$NS" apply -f - <<EOF
apiVersion: xmrescrow.dev/v1alpha1
kind: Escrow
metadata: {name: order-$order}
spec: {poolRef: wallets}
EOF
done
k -n "$NS" wait --for=condition=Ready esc --all --timeout="$TIMEOUT"
k -n "$NS" get esc
for order in 1 2 3; do
  address=$(k -n "$NS" get esc "order-$order" -o jsonpath='{.status.address}')
  [[ ${#address} -eq 95 ]] || { echo "order-$order has no multisig address: '$address'" >&2; exit 1; }
done

log "NetworkPolicy: only the operator reaches wallet-rpc"
POD_IP=$(k -n "$NS" get pod wallets-0 -o jsonpath='{.status.podIP}')
# A restricted-compliant pod of the operator image that tries one TCP connection to wallet-rpc.
probe() { # namespace name labels-json -> exit status of the connection attempt
  local overrides
  overrides=$(cat <<EOF
{"apiVersion": "v1", "metadata": {"labels": $3},
 "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
          "containers": [{"name": "$2", "image": "$OPERATOR_IMAGE", "imagePullPolicy": "Never",
                          "command": ["/opt/escrow-operator/bin/python", "-c",
                                      "import socket,sys; socket.create_connection(('$POD_IP', 18083), 5); print('connected')"],
                          "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                              "capabilities": {"drop": ["ALL"]}}}]}}
EOF
)
  k -n "$1" run "$2" --image="$OPERATOR_IMAGE" --restart=Never --overrides="$overrides" >/dev/null
  local phase i
  for i in $(seq 90); do
    phase=$(k -n "$1" get pod "$2" -o jsonpath='{.status.phase}')
    case "$phase" in
      Succeeded) return 0 ;;
      Failed) return 1 ;;
    esac
    sleep 1  # polling a pod's phase; the connection attempt itself times out after 5 s
  done
  echo "probe pod $1/$2 did not finish" >&2
  exit 1
}
OPERATOR_LABELS='{"app.kubernetes.io/name": "xmr-escrow-operator", "app.kubernetes.io/component": "operator"}'
probe "$SYSTEM_NS" np-operator-labels "$OPERATOR_LABELS" \
  || { echo "a pod with the operator's labels in $SYSTEM_NS could not reach wallet-rpc" >&2; exit 1; }
if probe "$NS" np-other-pod '{"app": "intruder"}'; then
  echo "a pod in $NS without the operator's labels reached wallet-rpc: NetworkPolicy not enforced" >&2; exit 1
fi
if probe "$SYSTEM_NS" np-unlabelled '{"app": "intruder"}'; then
  echo "an unlabelled pod in $SYSTEM_NS reached wallet-rpc: NetworkPolicy not enforced" >&2; exit 1
fi
k -n "$NS" delete pod np-other-pod --wait=false >/dev/null
k -n "$SYSTEM_NS" delete pod np-operator-labels np-unlabelled --wait=false >/dev/null

log "passed"

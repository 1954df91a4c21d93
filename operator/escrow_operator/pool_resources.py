"""The Kubernetes objects a WalletPool is made of, built from its spec (pure functions, no I/O).

Every pod runs two containers over the shared wallet claim:

* ``wallet-rpc``: Debian's monero-wallet-rpc bound to the pod's own IP, digest auth from the pool
  Secret, SSL autodetection off (traffic stays in the cluster; it cuts ``open_wallet`` from ~2.5 s
  to ~0.85 s), its own HOME and ring database in an emptyDir;
* ``walletfs``: the file sidecar (``escrow-operator walletfs``), whose ``/readyz`` is a real
  ``get_version`` call to wallet-rpc, so a pod is Ready only when wallet-rpc answers.
"""

from __future__ import annotations

from typing import Any

from .api import Network, WalletPoolSpec, owner_reference
from .settings import COMPONENT_LABEL, OPERATOR_NAME, POOL_LABEL, RPC_PORT, WALLETFS_PORT

WALLET_DIR = "/wallets"
HOME_DIR = "/home/wallet"
RPC_CONFIG_DIR = "/etc/wallet-rpc"
#: The Secret key holding wallet-rpc's config file (``rpc-login=user:password``): a login passed on
#: the command line would show in every process listing.
RPC_CONFIG_KEY = "wallet-rpc.conf"
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def labels(pool: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "wallet-rpc", "app.kubernetes.io/managed-by": OPERATOR_NAME, POOL_LABEL: pool}


def selector(pool: str) -> dict[str, str]:
    return {POOL_LABEL: pool}


def selector_string(pool: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(pool).items())


def rpc_secret_name(pool: str) -> str:
    return f"{pool}-rpc"


def claim_name(pool: str, spec: WalletPoolSpec) -> str:
    return spec.storage.claim_name or f"{pool}-wallets"


def _meta(body: dict[str, Any], name: str) -> dict[str, Any]:
    pool = body["metadata"]["name"]
    return {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": labels(pool),
        "ownerReferences": [owner_reference(body, "WalletPool")],
    }


def rpc_secret(body: dict[str, Any], username: str, password: str, walletfs_token: str) -> dict[str, Any]:
    """The pool Secret's object (``escrow_operator.pool_secret`` owns its content and life)."""
    pool = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(body, rpc_secret_name(pool)),
        "type": "Opaque",
        "stringData": {
            "username": username,
            "password": password,
            "login": f"{username}:{password}",
            "walletfs-token": walletfs_token,
        },
    }


def claim(body: dict[str, Any], spec: WalletPoolSpec) -> dict[str, Any] | None:
    """The shared ReadWriteMany claim, unless the pool names an existing one."""
    if spec.storage.claim_name:
        return None
    pool = body["metadata"]["name"]
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class_name:
        claim_spec["storageClassName"] = spec.storage.storage_class_name
    meta = _meta(body, claim_name(pool, spec))
    # Wallet files may hold funds: the claim is not garbage-collected with the pool.
    meta.pop("ownerReferences")
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": claim_spec}


def _wallet_rpc_args(spec: WalletPoolSpec) -> list[str]:
    args = [
        "--rpc-bind-ip=$(POD_IP)",
        f"--rpc-bind-port={RPC_PORT}",
        f"--config-file={RPC_CONFIG_DIR}/{RPC_CONFIG_KEY}",
        "--confirm-external-bind",
        "--non-interactive",
        f"--wallet-dir={WALLET_DIR}",
        f"--shared-ringdb-dir={HOME_DIR}/ringdb",
        f"--log-file={HOME_DIR}/wallet-rpc.log",
        "--max-log-files=2",
        "--rpc-ssl=disabled",
        "--daemon-ssl=disabled",
        # Only the operator reaches wallet-rpc (NetworkPolicy); a ban after a cancelled request
        # would lock the operator out of its own pool.
        "--disable-rpc-ban",
    ]
    if spec.network is Network.REGTEST:
        # A regtest chain has every hard fork at height 1, which wallet-rpc since 0.18.1.1 refuses as an
        # outdated daemon unless told otherwise (monero#8600); its wallets are mainnet wallets.
        args.append("--allow-mismatched-daemon-version")
    elif spec.network is not Network.MAINNET:
        args.append(f"--{spec.network.value}")
    if spec.offline:
        args.append("--offline")
    else:
        args.append(f"--daemon-address={spec.daemon}")
    return args


#: On the pods' template: the uid of the pool Secret the pods read their credentials from. A Secret
#: written anew (a pool deleted and created again after the old Secret was collected) rolls the pods.
SECRET_UID_ANNOTATION = "xmrescrow.dev/rpc-secret-uid"


def statefulset(body: dict[str, Any], spec: WalletPoolSpec, secret_uid: str | None = None) -> dict[str, Any]:
    pool = body["metadata"]["name"]
    secret = rpc_secret_name(pool)
    pod_ip = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    login = {"name": "RPC_LOGIN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "login"}}}
    resources = spec.resources.to_api() if spec.resources else {}
    wallet_rpc = {
        "name": "wallet-rpc",
        "image": spec.image,
        "args": _wallet_rpc_args(spec),
        "env": [pod_ip],
        "ports": [{"name": "rpc", "containerPort": RPC_PORT}],
        "readinessProbe": {"tcpSocket": {"port": "rpc"}, "periodSeconds": 2, "failureThreshold": 3},
        # A wallet-rpc that exits leaves its last output as the termination message, which the pool's
        # status and Events quote (pool_status.pod_problem): why it exits, without reading pod logs.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "wallets", "mountPath": WALLET_DIR},
            {"name": "home", "mountPath": HOME_DIR},
            {"name": "rpc-config", "mountPath": RPC_CONFIG_DIR, "readOnly": True},
        ],
        "securityContext": RESTRICTED_CONTAINER,
        **({"resources": resources} if resources else {}),
    }
    walletfs = {
        "name": "walletfs",
        "image": spec.operator_image,
        "args": ["walletfs"],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": [
            pod_ip,
            login,
            {"name": "WALLETFS_DIR", "value": WALLET_DIR},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},  # owner of its temp files
            {"name": "WALLETFS_BIND", "value": "$(POD_IP)"},
            {"name": "WALLETFS_PORT", "value": str(WALLETFS_PORT)},
            {"name": "WALLETFS_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "walletfs-token"}}},
            {"name": "WALLETFS_RPC_URL", "value": f"http://$(POD_IP):{RPC_PORT}/json_rpc"},
            {"name": "WALLETFS_RPC_LOGIN", "value": "$(RPC_LOGIN)"},
        ],
        "ports": [{"name": "walletfs", "containerPort": WALLETFS_PORT}],
        # Ready = wallet-rpc answers get_version. Generous timeout: a busy wallet-rpc answers late.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "walletfs"},
            "periodSeconds": 2,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "walletfs"}, "periodSeconds": 10},
        "volumeMounts": [{"name": "wallets", "mountPath": WALLET_DIR}],
        "securityContext": RESTRICTED_CONTAINER,
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(body, pool),
        "spec": {
            "replicas": spec.replicas,
            "serviceName": pool,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector(pool)},
            "template": {
                "metadata": {
                    "labels": labels(pool),
                    **({"annotations": {SECRET_UID_ANNOTATION: secret_uid}} if secret_uid else {}),
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [wallet_rpc, walletfs],
                    "volumes": [
                        {"name": "wallets", "persistentVolumeClaim": {"claimName": claim_name(pool, spec)}},
                        {"name": "home", "emptyDir": {}},
                        {
                            "name": "rpc-config",
                            "secret": {
                                "secretName": secret,
                                "items": [{"key": RPC_CONFIG_KEY, "path": RPC_CONFIG_KEY}],
                                "defaultMode": 0o440,
                            },
                        },
                    ],
                },
            },
        },
    }


def service(body: dict[str, Any]) -> dict[str, Any]:
    pool = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(body, pool),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": selector(pool),
            "ports": [
                {"name": "rpc", "port": RPC_PORT, "targetPort": "rpc"},
                {"name": "walletfs", "port": WALLETFS_PORT, "targetPort": "walletfs"},
            ],
        },
    }


def disruption_budget(body: dict[str, Any]) -> dict[str, Any]:
    pool = body["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(body, pool),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(pool)}},
    }


def network_policy(body: dict[str, Any], operator_namespace: str) -> dict[str, Any]:
    """Only the operator's pods reach wallet-rpc and walletfs; nothing else gets in."""
    pool = body["metadata"]["name"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(body, pool),
        "spec": {
            "podSelector": {"matchLabels": selector(pool)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}},
                            "podSelector": {
                                "matchLabels": {"app.kubernetes.io/name": OPERATOR_NAME, COMPONENT_LABEL: "operator"}
                            },
                        }
                    ],
                    "ports": [{"port": RPC_PORT, "protocol": "TCP"}, {"port": WALLETFS_PORT, "protocol": "TCP"}],
                }
            ],
        },
    }

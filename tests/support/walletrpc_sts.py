"""A plain monero-wallet-rpc StatefulSet, defined by the tests, to prove the test ground itself."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from kubernetes import client

from escrow_operator.api import DEFAULT_IMAGE

from .kube import wait_for

RPC_PORT = 18083


@dataclass
class WalletRpcSet:
    namespace: str
    name: str
    username: str
    password: str

    @property
    def selector(self) -> str:
        return f"app={self.name}"


def create_wallet_rpc_statefulset(
    api: client.ApiClient, namespace: str, replicas: int, name: str = "wallet-rpc"
) -> WalletRpcSet:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    creds = WalletRpcSet(namespace, name, "rpc", secrets.token_urlsafe(18))
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=f"{name}-rpc"),
            string_data={"login": f"{creds.username}:{creds.password}"},
        ),
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {  # type: ignore[arg-type]  # the client sends a dict body as it is
            "metadata": {"name": f"{name}-wallets"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    container = {
        "name": "wallet-rpc",
        "image": DEFAULT_IMAGE,
        "args": [
            "--rpc-bind-ip=$(POD_IP)",
            f"--rpc-bind-port={RPC_PORT}",
            "--rpc-login=$(RPC_LOGIN)",
            "--confirm-external-bind",
            "--non-interactive",
            "--offline",
            "--daemon-ssl=disabled",
            "--rpc-ssl=disabled",
            "--disable-rpc-ban",
            "--wallet-dir=/wallets",
            "--shared-ringdb-dir=/home/wallet/ringdb",
            "--log-file=/home/wallet/wallet-rpc.log",
        ],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "RPC_LOGIN", "valueFrom": {"secretKeyRef": {"name": f"{name}-rpc", "key": "login"}}},
        ],
        "ports": [{"name": "rpc", "containerPort": RPC_PORT}],
        "readinessProbe": {"tcpSocket": {"port": "rpc"}, "periodSeconds": 1, "failureThreshold": 1},
        "volumeMounts": [{"name": "wallets", "mountPath": "/wallets"}, {"name": "home", "mountPath": "/home/wallet"}],
    }
    apps.create_namespaced_stateful_set(
        namespace,
        {  # type: ignore[arg-type]  # a dict body, as above
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "terminationGracePeriodSeconds": 5,
                        "containers": [container],
                        "volumes": [
                            {"name": "wallets", "persistentVolumeClaim": {"claimName": f"{name}-wallets"}},
                            {"name": "home", "emptyDir": {}},
                        ],
                    },
                },
            },
        },
    )
    wait_for(
        apps.list_namespaced_stateful_set,
        lambda s: (s.status.ready_replicas or 0) == replicas,
        namespace,
        field_selector=f"metadata.name={name}",
        timeout=120,
        what=f"{replicas}/{replicas} ready replicas of {namespace}/{name}",
    )
    return creds

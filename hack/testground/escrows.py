"""Escrows and WalletPools on the test ground: create, wait, read back."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from kubernetes import client

from escrow_operator.api import ESCROW_PLURAL, GROUP, VERSION, WALLETPOOL_PLURAL
from escrow_operator.kube import json_object

from .kube import custom_objects, wait_for, wait_gone


def escrow_body(name: str, pool: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Escrow",
        "metadata": {"name": name},
        "spec": {"poolRef": pool, **spec},
    }


def create_escrow(api: client.ApiClient, namespace: str, name: str, pool: str, **spec: Any) -> dict[str, Any]:
    return json_object(
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, ESCROW_PLURAL, escrow_body(name, pool, **spec)
        )
    )


def get_escrow(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return json_object(
        client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL, name)
    )


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return c
    return None


def wait_escrow(
    api: client.ApiClient, namespace: str, name: str, phase: str = "Ready", timeout: float = 240
) -> dict[str, Any]:
    def done(obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        if phase != "Failed" and status.get("phase") == "Failed":
            raise AssertionError(f"escrow {name} failed: {status.get('message')}")
        return status.get("phase") == phase

    return wait_for(
        custom_objects(api, namespace, ESCROW_PLURAL),
        done,
        field_selector=f"metadata.name={name}",
        timeout=timeout,
        what=f"escrow {namespace}/{name} {phase}",
    )


def wait_escrow_gone(api: client.ApiClient, namespace: str, name: str, timeout: float = 60) -> None:
    wait_gone(
        custom_objects(api, namespace, ESCROW_PLURAL),
        field_selector=f"metadata.name={name}",
        timeout=timeout,
        what=f"escrow {name} deleted",
    )


def pool_body(name: str, replicas: int, **spec: Any) -> dict[str, Any]:
    """A WalletPool manifest: a new 1Gi claim unless ``spec`` says otherwise (``storage=...``, ``image=...``)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WalletPool",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "storage": {"size": "1Gi"}, **spec},
    }


def payout_body(name: str, escrow: str, signers: list[str], **spec: Any) -> dict[str, Any]:
    """An EscrowPayout manifest (``destinations=[...]`` or ``sweepTo=...`` in ``spec``)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EscrowPayout",
        "metadata": {"name": name},
        "spec": {"escrowRef": escrow, "signers": signers, **spec},
    }


def create_pool(
    api: client.ApiClient, namespace: str, name: str, replicas: int, wait: bool = True, **spec: Any
) -> dict[str, Any]:
    objects = client.CustomObjectsApi(api)
    body = pool_body(name, replicas, **spec)
    created = json_object(objects.create_namespaced_custom_object(GROUP, VERSION, namespace, WALLETPOOL_PLURAL, body))
    if wait:
        wait_for(
            client.AppsV1Api(api).list_namespaced_stateful_set,
            lambda s: (s.status.ready_replicas or 0) == replicas,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout=180,
            what=f"{replicas} ready pods of pool {name}",
        )
    return created


def escrow_secret(api: client.ApiClient, namespace: str, uid: str) -> dict[str, str]:
    secret = client.CoreV1Api(api).read_namespaced_secret(f"escrow-{uid}", namespace)
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def pool_directory(api: client.ApiClient, namespace: str, pool: str) -> Path:
    core = client.CoreV1Api(api)
    pvc = core.read_namespaced_persistent_volume_claim(f"{pool}-wallets", namespace)
    assert pvc.spec and pvc.spec.volume_name, f"claim {pool}-wallets is not bound"
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.spec and pv.spec.host_path, f"volume {pvc.spec.volume_name} is not a hostPath volume"
    return Path(pv.spec.host_path.path)


def assert_no_secrets(api: client.ApiClient, namespace: str, uid: str, logs: list[str]) -> int:
    """No password or round message of the escrow appears in its status, the namespace's events, or
    the given logs (operator, sidecars). Returns how many secret values were looked for."""
    secret = escrow_secret(api, namespace, uid)
    values = [v for k, v in secret.items() if k.startswith(("password.", "message."))]
    assert values, "the Secret holds no passwords or messages to look for"
    objects = json_object(
        client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL)
    )["items"]
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    haystacks = [str(o.get("status")) for o in objects] + [f"{e.reason} {e.message}" for e in events] + logs
    for value in values:
        for hay in haystacks:
            assert value not in hay, "a wallet password or round message leaked"
    return len(values)


def reconcile_pool(
    api: client.ApiClient, namespace: str, name: str, replicas: int, kubeconfig: Path, log: Path
) -> None:
    """Create a pool and wait for its pods with an operator that stops afterwards (for modules
    that start their own operators, with faults)."""
    from .operator import OperatorProcess

    op = OperatorProcess(kubeconfig, log).start()
    try:
        create_pool(api, namespace, name, replicas=replicas)
    finally:
        op.stop()

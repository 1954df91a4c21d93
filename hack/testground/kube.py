"""Waiting on the real apiserver: by watch events, never by sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client.exceptions import ApiException


class Timeout(AssertionError):
    pass


def wait_for(
    list_fn: Callable[..., Any],
    predicate: Callable[[Any], bool],
    *args: Any,
    timeout: float = 60,
    what: str = "condition",
    **kwargs: Any,
) -> Any:
    """Watch ``list_fn(*args, **kwargs)`` until an object satisfies ``predicate``; return that object.

    The current state is checked first (a list), then every change (a watch from the list's
    resourceVersion), so nothing between the two is missed.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        listing = list_fn(*args, **kwargs)
        for obj in _items(listing):
            last = obj
            if predicate(obj):
                return obj
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {_brief(last)}")
        w = watch.Watch()
        try:
            for event in w.stream(
                list_fn,
                *args,
                resource_version=_resource_version(listing),
                timeout_seconds=max(1, int(remaining)),
                **kwargs,
            ):
                obj = event["object"]
                last = obj
                if event["type"] != "DELETED" and predicate(obj):
                    w.stop()
                    return obj
        except ApiException as exc:
            if exc.status != 410:  # expired resourceVersion: list again
                raise
        if time.monotonic() >= deadline:
            raise Timeout(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {_brief(last)}")


def wait_gone(
    list_fn: Callable[..., Any], *args: Any, timeout: float = 60, what: str = "deletion", **kwargs: Any
) -> None:
    """Watch until the listing is empty."""
    deadline = time.monotonic() + timeout
    while True:
        listing = list_fn(*args, **kwargs)
        if not _items(listing):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            names = [_uid(o) for o in _items(listing)]
            raise Timeout(f"timed out after {timeout:.0f} s waiting for {what}; still there: {names}")
        w = watch.Watch()
        left = {_uid(o) for o in _items(listing)}
        try:
            for event in w.stream(
                list_fn,
                *args,
                resource_version=_resource_version(listing),
                timeout_seconds=max(1, int(remaining)),
                **kwargs,
            ):
                uid = _uid(event["object"])
                if event["type"] == "DELETED":
                    left.discard(uid)
                else:
                    left.add(uid)
                if not left:
                    w.stop()
                    return
        except ApiException as exc:
            if exc.status != 410:
                raise


def _items(listing: Any) -> list[Any]:
    return listing["items"] if isinstance(listing, dict) else listing.items


def _resource_version(listing: Any) -> str:
    return listing["metadata"]["resourceVersion"] if isinstance(listing, dict) else listing.metadata.resource_version


def _uid(obj: Any) -> str:
    return obj["metadata"]["uid"] if isinstance(obj, dict) else obj.metadata.uid


def custom_objects(
    api: Any, namespace: str, plural: str, group: str = "xmrescrow.dev", version: str = "v1alpha1"
) -> Callable[..., Any]:
    """A list function over custom objects (dicts) that :func:`wait_for` and :func:`wait_gone` can watch."""
    from kubernetes import client

    objects = client.CustomObjectsApi(api)

    def list_objects(**kwargs: Any) -> Any:
        return objects.list_namespaced_custom_object(group, version, namespace, plural, **kwargs)

    return list_objects


def pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def container_pid(pod: Any, container: str) -> int:
    """The host pid of a container of ``pod`` run by the process kubelet (its ``process://PID`` id)."""
    status = next(c for c in pod.status.container_statuses if c.name == container)
    return int(status.container_id.removeprefix("process://"))


def _brief(obj: Any) -> str:
    if obj is None:
        return "nothing"
    if isinstance(obj, dict):
        return f"{obj['metadata']['name']} status={str(obj.get('status'))[:600]}"
    meta = getattr(obj, "metadata", None)
    status = getattr(obj, "status", None)
    return f"{getattr(meta, 'name', '?')} status={str(status)[:600]}"


def namespace_user(
    admin: Any, cluster: Any, namespace: str, name: str, rules: list[dict[str, Any]], path: Any = None
) -> Any:
    """An API client that acts as a user of ``namespace`` with exactly ``rules`` (a ServiceAccount, a
    Role and its binding, a bound token): what a namespace user with those rights can and cannot do.
    ``admin`` is the admin's ApiClient, ``cluster`` the DevCluster that mints the token."""
    from kubernetes import client, config

    account: Any = {"metadata": {"name": name}}
    client.CoreV1Api(admin).create_namespaced_service_account(namespace, account)
    rbac = client.RbacAuthorizationV1Api(admin)
    role: Any = {"metadata": {"name": name}, "rules": rules}
    binding: Any = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    rbac.create_namespaced_role(namespace, role)
    rbac.create_namespaced_role_binding(namespace, binding)
    return config.new_client_from_config(str(cluster.mint_kubeconfig(namespace, name, path)))

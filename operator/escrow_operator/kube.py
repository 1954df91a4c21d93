"""Blocking Kubernetes API calls, run in a thread pool so the event loop never waits on them."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .api import GROUP, VERSION
from .settings import FIELD_MANAGER

T = TypeVar("T")
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"


class _Object(Protocol):
    @property
    def metadata(self) -> client.V1ObjectMeta | None: ...


def metadata(obj: _Object) -> client.V1ObjectMeta:
    """An object's metadata: the apiserver always sends it, the client's models declare it optional."""
    if obj.metadata is None:
        raise ValueError(f"the apiserver sent a {type(obj).__name__} without metadata")
    return obj.metadata


def json_object(value: object) -> dict[str, Any]:
    """A custom objects API answer: a JSON object, which the client declares as ``object``."""
    if not isinstance(value, dict):
        raise TypeError(f"the apiserver sent {type(value).__name__} where a JSON object belongs")
    return value


def load_api_client() -> client.ApiClient:
    """In a pod: the ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class Kube:
    def __init__(self, api: client.ApiClient, threads: int = 16) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.networking = client.NetworkingV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="kube")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- custom resources ---------------------------------------------------------------------
    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = await self.call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return json_object(found)

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], uid: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch an object's status; with ``uid``, only that object (409 if the name now has another)."""
        body: dict[str, Any] = {"status": status}
        if uid is not None:
            body["metadata"] = {"uid": uid}
        patched = await self.call(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            body,
            _content_type=MERGE,
        )
        return json_object(patched)

    # --- server-side apply ----------------------------------------------------------------------
    async def apply(self, obj: dict[str, Any]) -> Any:
        """Server-side apply of a core, apps, policy or networking object this operator owns."""
        kind, ns, name = obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]
        fn = {
            "StatefulSet": self.apps.patch_namespaced_stateful_set,
            "Service": self.core.patch_namespaced_service,
            "PersistentVolumeClaim": self.core.patch_namespaced_persistent_volume_claim,
            "PodDisruptionBudget": self.policy.patch_namespaced_pod_disruption_budget,
            "NetworkPolicy": self.networking.patch_namespaced_network_policy,
            "Secret": self.core.patch_namespaced_secret,
        }[kind]
        return await self.call(fn, name, ns, obj, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY)


def api_refusal(exc: ApiException) -> str:
    """The apiserver's own message of a refused request (never the request body)."""
    if exc.body is None:
        return str(exc.reason)
    try:
        return str(json.loads(exc.body).get("message", exc.reason))
    except (TypeError, ValueError):
        return str(exc.reason)


def is_gone(exc: ApiException) -> bool:
    """A write that named an object's uid found it deleted (404), or another object in its place (409
    with a failed uid precondition, :meth:`Kube.patch_status`)."""
    return exc.status == 404 or (exc.status == 409 and "Precondition failed" in (exc.body or ""))


def is_transient(exc: ApiException) -> bool:
    """An apiserver answer worth retrying: overloaded, unavailable, timed out, conflict."""
    return exc.status in (409, 429) or not exc.status or exc.status >= 500

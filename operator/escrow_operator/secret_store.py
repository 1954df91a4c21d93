"""A Secret the operator records results in, key by key: the Escrow's and each payout's.

Writes use optimistic concurrency (resourceVersion) and never touch another key, so writers finishing
at once cannot overwrite each other. Values are read as the client gives them (base64) and decoded on
access; nothing here logs a value.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from .kube import MERGE, Kube, metadata


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


class RecordSecret:
    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self._data: dict[str, str | bytes] = {}  # base64 values, as the client reads them
        self._version: str | None = None
        self._lock = asyncio.Lock()

    def _get(self, key: str) -> str | None:
        raw = self._data.get(key)
        return base64.b64decode(raw).decode() if raw is not None else None

    def keys(self) -> set[str]:
        return set(self._data)

    async def load(self) -> None:
        """Read the Secret as it is (raises the API's 404 if it does not exist)."""
        found = await self.kube.call(self.kube.core.read_namespaced_secret, self.name, self.namespace)
        self._data = dict(found.data or {})
        self._version = metadata(found).resource_version

    async def load_if_present(self) -> bool:
        """Read the Secret if it exists; False (and nothing known of it) if it does not."""
        try:
            await self.load()
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._data, self._version = {}, None
            return False
        return True

    async def create_or_load(
        self,
        *,
        labels: dict[str, str],
        annotations: dict[str, str],
        owner: dict[str, Any] | None,
        data: dict[str, str],
    ) -> bool:
        """Load the Secret, creating it with ``data`` first if it does not exist (owned by ``owner``, or by
        nothing); True if this call created it."""
        try:
            found = await self.kube.call(self.kube.core.read_namespaced_secret, self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            found = None
        created = False
        if found is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": labels,
                    "annotations": annotations,
                    "ownerReferences": [owner] if owner is not None else [],
                },
                "data": {k: _b64(v) for k, v in data.items()},
            }
            try:
                found = await self.kube.call(self.kube.core.create_namespaced_secret, self.namespace, body)
                created = True
            except ApiException as exc:
                if exc.status != 409:
                    raise
                found = await self.kube.call(self.kube.core.read_namespaced_secret, self.name, self.namespace)
        self._data = dict(found.data or {})
        self._version = metadata(found).resource_version
        return created

    async def _write(self, values: Mapping[str, str | None]) -> None:
        """Set these keys (a None value removes the key), leaving every other key as it is."""
        async with self._lock:
            while True:
                patch = {
                    "metadata": {"resourceVersion": self._version},
                    "data": {k: None if v is None else _b64(v) for k, v in values.items()},
                }
                try:
                    updated = await self.kube.call(
                        self.kube.core.patch_namespaced_secret, self.name, self.namespace, patch, _content_type=MERGE
                    )
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    fresh = await self.kube.call(self.kube.core.read_namespaced_secret, self.name, self.namespace)
                    self._data, self._version = dict(fresh.data or {}), metadata(fresh).resource_version
                    continue
                self._data, self._version = dict(updated.data or {}), metadata(updated).resource_version
                return

    async def delete(self) -> None:
        try:
            await self.kube.call(self.kube.core.delete_namespaced_secret, self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

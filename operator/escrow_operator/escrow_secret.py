"""The Secret of one Escrow: per-participant wallet passwords, every round's messages, final addresses.

Named ``escrow-{uid}`` (an Escrow's name can be reused, its uid never) and owned by the Escrow, so
it goes with it; with ``walletRetention: Retain`` the operator releases it before the Escrow goes,
so kept wallets stay usable. Writes use optimistic concurrency (resourceVersion) and never touch
another key, so participants finishing at once cannot overwrite each other.

A step's message is recorded *before* its output wallet is published. A step whose output exists is
never run again, so a published step's message never changes; an unpublished step that is re-run
(after a crash) replaces its message with the one that matches the wallet it then publishes.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from .api import GROUP, VERSION
from .kube import MERGE, Kube, metadata
from .settings import ESCROW_LABEL, OPERATOR_NAME


def secret_name(uid: str) -> str:
    return f"escrow-{uid}"


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


class EscrowSecret:
    def __init__(self, kube: Kube, namespace: str, escrow: str, uid: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.escrow = escrow
        self.uid = uid
        self.name = secret_name(uid)
        self._data: dict[str, str | bytes] = {}  # base64 values, as the client reads them
        self._version: str | None = None
        self._lock = asyncio.Lock()

    # --- reading --------------------------------------------------------------------------------
    def _get(self, key: str) -> str | None:
        raw = self._data.get(key)
        return base64.b64decode(raw).decode() if raw is not None else None

    def password(self, role: str) -> SecretStr:
        value = self._get(f"password.{role}")
        if value is None:
            raise KeyError(f"no wallet password for {role!r} in Secret {self.namespace}/{self.name}")
        return SecretStr(value)

    def message(self, role: str, step: int) -> SecretStr | None:
        value = self._get(f"message.{role}.{step}")
        return SecretStr(value) if value is not None else None

    def address(self, role: str) -> str | None:
        return self._get(f"address.{role}")

    # --- lifecycle ------------------------------------------------------------------------------
    async def load(self) -> None:
        """Read the Secret as it is (raises the API's 404 if it does not exist)."""
        found = await self.kube.call(self.kube.core.read_namespaced_secret, self.name, self.namespace)
        self._data = dict(found.data or {})
        self._version = metadata(found).resource_version

    async def ensure(self, roles: list[str], owner: dict[str, Any]) -> None:
        """Load the Secret, creating it (random passwords) on first use."""
        try:
            found = await self.kube.call(self.kube.core.read_namespaced_secret, self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            found = None
        if found is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": {ESCROW_LABEL: self.escrow, "app.kubernetes.io/managed-by": OPERATOR_NAME},
                    "annotations": {f"{GROUP}/escrow-uid": self.uid},
                    "ownerReferences": [owner],
                },
                "data": {f"password.{role}": _b64(secrets.token_urlsafe(32)) for role in roles},
            }
            try:
                found = await self.kube.call(self.kube.core.create_namespaced_secret, self.namespace, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                found = await self.kube.call(self.kube.core.read_namespaced_secret, self.name, self.namespace)
        self._data = dict(found.data or {})
        self._version = metadata(found).resource_version
        missing = [role for role in roles if f"password.{role}" not in self._data]
        if missing:
            await self._write({f"password.{role}": secrets.token_urlsafe(32) for role in missing})

    async def record(self, role: str, step: int, message: SecretStr | None = None, address: str | None = None) -> None:
        values: dict[str, str] = {}
        if message is not None:
            values[f"message.{role}.{step}"] = message.get_secret_value()
        if address is not None:
            values[f"address.{role}"] = address
        if values:
            await self._write(values)

    async def _write(self, values: dict[str, str]) -> None:
        async with self._lock:
            while True:
                patch = {
                    "metadata": {"resourceVersion": self._version},
                    "data": {k: _b64(v) for k, v in values.items()},
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

    async def release(self) -> None:
        """Drop the Escrow's ownership so the Secret outlives it (walletRetention: Retain)."""
        patch = {
            "metadata": {
                "ownerReferences": None,
                "labels": {f"{GROUP}/retained": "true"},
            }
        }
        try:
            await self.kube.call(
                self.kube.core.patch_namespaced_secret, self.name, self.namespace, patch, _content_type=MERGE
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete(self) -> None:
        try:
            await self.kube.call(self.kube.core.delete_namespaced_secret, self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise


def escrow_owner(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Escrow",
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }

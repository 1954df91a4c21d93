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

import secrets
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from .api import ESCROW_KIND, GROUP, owner_reference
from .kube import MERGE, Kube
from .secret_store import RecordSecret
from .settings import ESCROW_LABEL, OPERATOR_NAME


def secret_name(uid: str) -> str:
    return f"escrow-{uid}"


class EscrowSecret(RecordSecret):
    def __init__(self, kube: Kube, namespace: str, escrow: str, uid: str) -> None:
        super().__init__(kube, namespace, secret_name(uid))
        self.escrow = escrow
        self.uid = uid

    # --- reading --------------------------------------------------------------------------------
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
    async def ensure(self, roles: list[str], owner: dict[str, Any]) -> None:
        """Load the Secret, creating it (random passwords) on first use."""
        await self.create_or_load(
            labels={ESCROW_LABEL: self.escrow, "app.kubernetes.io/managed-by": OPERATOR_NAME},
            annotations={f"{GROUP}/escrow-uid": self.uid},
            owner=owner,
            data={f"password.{role}": secrets.token_urlsafe(32) for role in roles},
        )
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


def escrow_owner(body: dict[str, Any]) -> dict[str, Any]:
    return owner_reference(body, ESCROW_KIND)

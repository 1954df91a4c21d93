"""The pool Secret ``<pool>-rpc``: wallet-rpc's login and walletfs's token, in one place.

Written once per WalletPool object with random credentials, never rotated behind running escrows'
backs; parsed into :class:`PoolCredentials`; upgraded in place from older releases (wallet-rpc's
config file added). A Secret of an earlier WalletPool object of the same name (deleted and created
again, as GitOps tools do) is adopted by the new object, so pods that still run with it and the new
pods agree on one login.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from .api import owner_reference
from .kube import MERGE, Kube, metadata
from .pool_resources import RPC_CONFIG_KEY, rpc_secret, rpc_secret_name

#: The keys of a pool Secret the operator reads.
CREDENTIAL_KEYS = ("username", "password", "walletfs-token")
USERNAME = "escrow-operator"


class PoolSecretInvalid(Exception):
    """The pool's Secret lacks a key or holds a value that is not base64 text."""


class PoolSecretBusy(Exception):
    """The Secret of an earlier object of the same name is being deleted: try again shortly."""


@dataclass(frozen=True)
class PoolCredentials:
    username: str
    password: SecretStr
    walletfs_token: SecretStr

    @classmethod
    def from_secret(cls, data: Mapping[str, str | bytes]) -> PoolCredentials:
        missing = [key for key in CREDENTIAL_KEYS if not data.get(key)]
        if missing:
            raise PoolSecretInvalid(
                f"the pool Secret lacks {', '.join(missing)}; delete the Secret and the operator writes a new one"
            )

        def value(key: str) -> str:
            return base64.b64decode(data[key], validate=True).decode()

        try:
            return cls(value("username"), SecretStr(value("password")), SecretStr(value("walletfs-token")))
        except (ValueError, UnicodeDecodeError):
            raise PoolSecretInvalid(
                "the pool Secret holds a value that is not base64 text; delete the Secret and the operator writes a new one"
            ) from None


def rpc_config(username: str, password: str) -> str:
    """wallet-rpc's config file: the login, so it never shows in a process listing."""
    return f"rpc-login={username}:{password}\n"


async def ensure(kube: Kube, pool: dict[str, Any]) -> str:
    """Create, upgrade or adopt the pool's Secret; return its uid (the pods' template carries it, so
    pods restart with the credentials of a Secret written anew).

    Raises :class:`PoolSecretInvalid` for a damaged Secret and :class:`PoolSecretBusy` while an
    earlier object's Secret is being deleted.
    """
    namespace, name, uid = pool["metadata"]["namespace"], pool["metadata"]["name"], pool["metadata"]["uid"]
    secret_name = rpc_secret_name(name)
    try:
        existing = await kube.call(kube.core.read_namespaced_secret, secret_name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        body = rpc_secret(pool, USERNAME, secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        body["stringData"][RPC_CONFIG_KEY] = rpc_config(USERNAME, body["stringData"]["password"])
        try:
            created = await kube.call(kube.core.create_namespaced_secret, namespace, body)
        except ApiException as exc2:
            if exc2.status != 409:
                raise
            raise PoolSecretBusy(f"Secret {secret_name} appeared while being created; reconciling again") from None
        return str(metadata(created).uid)
    meta = metadata(existing)
    if meta.deletion_timestamp:
        raise PoolSecretBusy(f"Secret {secret_name} of an earlier WalletPool {name!r} is being deleted")
    data = existing.data or {}
    creds = PoolCredentials.from_secret(data)
    patch: dict[str, Any] = {}
    owners = meta.owner_references or []
    if not any(o.uid == uid for o in owners):
        # Left by an earlier WalletPool of this name (or orphaned): adopt it, so running pods keep their
        # login. Should the garbage collector still delete it, the next reconcile writes a new one, and
        # its new uid on the pods' template replaces the pods.
        patch["metadata"] = {
            "ownerReferences": [owner_reference(pool, "WalletPool")],
            "resourceVersion": meta.resource_version,
        }
    if RPC_CONFIG_KEY not in data:  # a Secret of an older release: add wallet-rpc's config file
        patch["stringData"] = {RPC_CONFIG_KEY: rpc_config(creds.username, creds.password.get_secret_value())}
    if patch:
        try:
            await kube.call(kube.core.patch_namespaced_secret, secret_name, namespace, patch, _content_type=MERGE)
        except ApiException as exc:
            if exc.status in (404, 409):
                raise PoolSecretBusy(f"Secret {secret_name} changed while being adopted; reconciling again") from None
            raise
    return str(meta.uid)

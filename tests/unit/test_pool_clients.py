"""A leased pod's clients carry the pool's current credentials, not those a step read before its lease."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from kubernetes.client import V1ObjectMeta, V1Secret

from escrow_operator.pool_secret import PoolCredentials
from escrow_operator.pools import PoolRuntime
from escrow_operator.scheduler import PodState
from escrow_operator.settings import OperatorSettings


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def secret(uid: str, token: str) -> V1Secret:
    data = {"username": b64("escrow-operator"), "password": b64(f"pw-{token}"), "walletfs-token": b64(token)}
    return V1Secret(metadata=V1ObjectMeta(name="p-rpc", uid=uid), data=data)


class FakeCore:
    def __init__(self) -> None:
        self.secret = secret("s1", "old")

    def read_namespaced_secret(self, name: str, namespace: str) -> V1Secret:
        return self.secret


class FakeKube:
    def __init__(self) -> None:
        self.core = FakeCore()

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


def bearer(fs: Any) -> str:
    return str(fs._http.headers["Authorization"])


def test_a_secret_written_anew_while_a_step_waited_is_read_again() -> None:
    async def run() -> None:
        kube = FakeKube()
        pool = PoolRuntime("ns", "p", kube, OperatorSettings())  # type: ignore[arg-type]
        held = await pool.credentials()  # read by a step before it waits for its lease
        assert held is not None and held.walletfs_token.get_secret_value() == "old"
        # The pool is created again: its reconcile writes a new Secret and the new pods carry its uid.
        kube.core.secret = secret("s2", "new")
        pool.secret_written("s2")
        pod = PodState(
            name="p-0", uid="u", ip="127.0.0.9", ready=True, terminating=False, incarnation="", secret_uid="s2"
        )
        rpc, fs = await pool.clients(pod, held)
        assert bearer(fs) == "Bearer new"
        assert pool.scheduler.secret_uid == "s2"
        assert await pool.clients(pod, held) == (rpc, fs)  # one client per pod, reused
        assert await pool.walletfs(pod, held) is fs
        await pool.close()

    asyncio.run(run())


def test_the_held_credentials_serve_when_the_secret_cannot_be_read() -> None:
    async def run() -> None:
        kube = FakeKube()
        pool = PoolRuntime("ns", "p", kube, OperatorSettings())  # type: ignore[arg-type]
        held = PoolCredentials.from_secret(secret("s1", "held").data)
        kube.core.secret = secret("s1", "held")
        kube.core.secret.data = {}  # damaged: nothing readable
        pod = PodState(
            name="p-0", uid="u", ip="127.0.0.9", ready=True, terminating=False, incarnation="", secret_uid="s1"
        )
        _, fs = await pool.clients(pod, held)
        assert bearer(fs) == "Bearer held"
        await pool.close()

    asyncio.run(run())

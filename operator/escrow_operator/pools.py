"""Runtime state of every WalletPool: its scheduler, credentials, clients per pod, status writer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from .api import WALLETPOOL_PLURAL
from .kube import Kube
from .pool_resources import rpc_secret_name, selector_string
from .scheduler import PodState, Scheduler
from .settings import RPC_PORT, WALLETFS_PORT, OperatorSettings
from .walletfs.client import WalletfsClient
from .walletrpc import WalletRpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolCredentials:
    username: str
    password: SecretStr
    walletfs_token: SecretStr

    @classmethod
    def from_secret(cls, data: dict[str, str]) -> "PoolCredentials":
        value = lambda k: base64.b64decode(data[k]).decode()  # noqa: E731
        return cls(value("username"), SecretStr(value("password")), SecretStr(value("walletfs-token")))


class PoolRuntime:
    """One pool as the operator sees it. Created on first mention (a pod, an escrow, the pool)."""

    def __init__(self, namespace: str, name: str, kube: Kube, settings: OperatorSettings) -> None:
        self.namespace = namespace
        self.name = name
        self.kube = kube
        self.settings = settings
        self.scheduler = Scheduler(f"{namespace}/{name}", on_change=self._changed)
        self.scheduler.keep_history = settings.record_step_history
        self.exists = asyncio.Event()  # the WalletPool object exists
        self.generation: int | None = None
        self.version: Any = None  # wallet-rpc's get_version, read once per pool
        self._credentials: PoolCredentials | None = None
        self._rpc: dict[str, WalletRpc] = {}
        self._fs: dict[str, WalletfsClient] = {}
        self._dirty = asyncio.Event()
        self._membership = asyncio.Event()  # pods came, went or changed readiness: write at once
        self._status_task: asyncio.Task | None = None
        self._written: dict[str, Any] = {}

    # --- pods ---------------------------------------------------------------------------------
    def on_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        state = PodState.from_pod(pod)
        if event_type == "DELETED":
            self.scheduler.remove_pod(state.name)
        else:
            self.scheduler.update_pod(state)
        self._drop_clients(keep={s.ip for s in self._pod_states() if s.ip})
        self._membership.set()  # replicas and readyReplicas may have changed
        self._changed()

    def _pod_states(self) -> list[PodState]:
        return [slot.state for slot in self.scheduler._slots.values()]  # noqa: SLF001 - same package

    def _drop_clients(self, keep: set[str]) -> None:
        for cache in (self._rpc, self._fs):
            for ip in [ip for ip in cache if ip not in keep]:
                client = cache.pop(ip)
                asyncio.get_running_loop().create_task(client.aclose())

    # --- credentials and clients ---------------------------------------------------------------
    async def credentials(self) -> PoolCredentials | None:
        """The pool's RPC credentials, read once (the operator never rotates them)."""
        if self._credentials is None:
            try:
                secret = await self.kube.call(self.kube.core.read_namespaced_secret, rpc_secret_name(self.name), self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            self._credentials = PoolCredentials.from_secret(secret.data or {})
        return self._credentials

    def rpc(self, pod: PodState, creds: PoolCredentials) -> WalletRpc:
        assert pod.ip
        client = self._rpc.get(pod.ip)
        if client is None:
            host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
            client = WalletRpc(
                f"http://{host}:{RPC_PORT}/json_rpc", creds.username, creds.password, timeout=self.settings.rpc_timeout
            )
            self._rpc[pod.ip] = client
        return client

    def fs(self, pod: PodState, creds: PoolCredentials) -> WalletfsClient:
        assert pod.ip
        client = self._fs.get(pod.ip)
        if client is None:
            client = WalletfsClient(pod.ip, creds.walletfs_token, port=WALLETFS_PORT, timeout=self.settings.walletfs_timeout)
            self._fs[pod.ip] = client
        return client

    # --- status ---------------------------------------------------------------------------------
    def _changed(self) -> None:
        self._dirty.set()

    def start_status_writer(self) -> None:
        if self._status_task is None or self._status_task.done():
            self._status_task = asyncio.get_running_loop().create_task(self._write_status_loop())

    async def _write_status_loop(self) -> None:
        """Write replicas, ready, busy and queued counts when they change, coalesced.

        Pod changes (replicas, readyReplicas: what the scale subresource shows) are written at once;
        busy and queued counts, which change with every step, at most every ``pool_status_interval``
        seconds (the metrics show them live).
        """
        last_write = float("-inf")
        while True:
            await self._dirty.wait()
            await self.exists.wait()
            delay = last_write + self.settings.pool_status_interval - time.monotonic()
            if delay > 0 and not self._membership.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._membership.wait(), delay)
            self._dirty.clear()
            self._membership.clear()
            s = self.scheduler
            status = {
                "replicas": s.pods,
                "readyReplicas": s.ready,
                "selector": selector_string(self.name),
                "busyPods": s.busy,
                "queuedSteps": s.queued,
            }
            if status == self._written:
                continue
            try:
                await self.kube.patch_status(WALLETPOOL_PLURAL, self.namespace, self.name, status)
                self._written = status
                last_write = time.monotonic()
            except ApiException as exc:
                if exc.status == 404:
                    self.exists.clear()
                else:  # written with the next change
                    log.warning("status of pool %s/%s not written: %s", self.namespace, self.name, exc.reason)

    async def close(self) -> None:
        if self._status_task:
            self._status_task.cancel()
        for client in [*self._rpc.values(), *self._fs.values()]:
            await client.aclose()


class Pools:
    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self._pools: dict[tuple[str, str], PoolRuntime] = {}

    def get(self, namespace: str, name: str) -> PoolRuntime:
        key = (namespace, name)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = PoolRuntime(namespace, name, self.kube, self.settings)
            pool.start_status_writer()
        return pool

    def all(self) -> list[PoolRuntime]:
        return list(self._pools.values())

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()

"""Runtime state of every WalletPool: its scheduler, credentials, clients per pod, status writer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from kubernetes.client import V1DeleteOptions, V1Preconditions
from kubernetes.client.exceptions import ApiException

from .api import WALLETPOOL_PLURAL, Condition, WalletPoolStatus
from .kube import Kube, metadata
from .pool_resources import rpc_secret_name, selector_string
from .pool_secret import PoolCredentials, PoolSecretInvalid
from .pool_status import Applied, Pods, compute, problems_message, status_patch
from .scheduler import PodState, Scheduler
from .settings import RPC_PORT, WALLETFS_PORT, OperatorSettings
from .walletfs.client import WalletfsClient
from .walletrpc import Version, WalletRpc

log = logging.getLogger(__name__)


class PoolRuntime:
    """One pool as the operator sees it. Created on first mention (a pod, an escrow, the pool).

    It belongs to one WalletPool *object*: when a pool of the same name is created again (a new uid),
    :meth:`adopt` drops the credentials, clients and wallet-rpc version of the old object, so nothing
    of it is used for the new one.
    """

    def __init__(self, namespace: str, name: str, kube: Kube, settings: OperatorSettings) -> None:
        self.namespace = namespace
        self.name = name
        self.kube = kube
        self.settings = settings
        self.scheduler = Scheduler(f"{namespace}/{name}", on_change=self._changed)
        self.scheduler.keep_history = settings.record_step_history
        self.exists = asyncio.Event()  # the WalletPool object exists
        self.uid: str | None = None
        self.applied: Applied | None = None  # the last reconcile's outcome; None until the first
        self._version: Version | None = None  # wallet-rpc's get_version, read once per pool object
        self._credentials: PoolCredentials | None = None
        self._rpc: dict[str, WalletRpc] = {}
        self._fs: dict[str, WalletfsClient] = {}
        self._dirty = asyncio.Event()
        self._membership = asyncio.Event()  # pods came, went or changed readiness: write at once
        self._status_task: asyncio.Task[None] | None = None
        self._written: dict[str, Any] = {}
        self._conditions: list[Condition] = []
        self._pods_version = 0
        self._pods_moved = asyncio.Event()  # set (and replaced) at every pod change
        self.daemon: str | None = None  # spec.daemon of the pool object; None: offline (or not known yet)
        self.network = "mainnet"  # spec.network of the pool object
        self._daemon_moved = asyncio.Event()
        self._replacing: set[str] = set()  # uids of stale pods being deleted
        self._template_secret_uid: str | None = None  # the Secret the StatefulSet's pod template carries
        self._problems_told: set[str] = set()  # pod problems told in an Event since the pool was last ready
        #: its last reconcile refused its spec (it runs nothing and uses no claim); set under the
        #: namespace's claim lock (Pools.claims), so two pools never both take one claim
        self.refused = False

    # --- identity -------------------------------------------------------------------------------
    def adopt(self, uid: str | None) -> None:
        """This runtime now stands for the WalletPool object ``uid``; a new object starts fresh."""
        if uid is not None and self.uid is not None and uid != self.uid:
            log.info(
                "pool %s/%s was created again (uid %s); its credentials and clients start fresh",
                self.namespace,
                self.name,
                uid,
            )
            self._forget_credentials()
            self._template_secret_uid = None
            self.applied = None
            self._conditions = []
            self._written = {}
        self.uid = uid or self.uid

    def set_daemon(self, daemon: str | None, network: str = "mainnet") -> None:
        """The pool's monerod address (``None``: offline) and network; wakes whatever waits for a change."""
        self.network = network
        if daemon != self.daemon:
            self.daemon = daemon
            moved, self._daemon_moved = self._daemon_moved, asyncio.Event()
            moved.set()

    async def daemon_changed(self) -> None:
        await self._daemon_moved.wait()

    def deleted(self, uid: str | None) -> None:
        """The WalletPool object ``uid`` is gone: escrows on it wait, nothing of it is reused."""
        if uid is None or self.uid in (None, uid):
            self.exists.clear()
            self._forget_credentials()

    def set_applied(self, applied: Applied, conditions: list[Condition]) -> None:
        """Record a reconcile's outcome; the status writer publishes it at once."""
        if self.applied is None and not self._conditions:
            self._conditions = list(conditions)
        self.applied = applied
        self._membership.set()
        self._changed()

    # --- pods ---------------------------------------------------------------------------------
    def on_pod(self, event_type: str, pod: Mapping[str, Any]) -> list[str]:
        """A pod of the pool changed. Returns the problems of its pods not told yet (each is told once
        in an Event until the pool is ready again)."""
        state = PodState.from_pod(pod)
        if event_type == "DELETED":
            self.scheduler.remove_pod(state.name, state.uid)
        else:
            self.scheduler.update_pod(state)
            self._replace_stale()
        self._drop_clients(keep={s.ip for s in self.scheduler.pod_states() if s.ip})
        self._membership.set()  # replicas and readyReplicas may have changed
        self._changed()
        self._pods_version += 1
        moved, self._pods_moved = self._pods_moved, asyncio.Event()
        moved.set()
        return self._untold_problems()

    def problems(self) -> tuple[str, ...]:
        """Why pods of the pool do not run, one entry per pod that has a problem."""
        return tuple(p.problem for p in self.scheduler.pod_states() if p.problem)

    def _untold_problems(self) -> list[str]:
        problems = set(self.problems())
        if not problems and self.applied is not None and self.scheduler.ready >= self.applied.replicas:
            self._problems_told.clear()  # ready again: a problem that comes back is told again
        if self.uid is None:
            return []  # nothing to tell it on yet
        untold = sorted(problems - self._problems_told)
        self._problems_told |= problems
        return untold

    @property
    def pods_version(self) -> int:
        """Counts pod changes; :meth:`pods_changed` waits for it to move on."""
        return self._pods_version

    async def pods_changed(self, seen: int) -> None:
        """Return once a pod changed after ``seen`` (a :attr:`pods_version`)."""
        while self._pods_version == seen:
            await self._pods_moved.wait()

    def waiting_message(self) -> str:
        """Why steps of this pool wait, for an escrow's status."""
        s = self.scheduler
        if not self.exists.is_set():
            return f"waiting for WalletPool {self.name!r}: it does not exist (deleted?); create it again"
        want = self.applied.replicas if self.applied is not None else None
        if want == 0:
            return f"waiting for pods: WalletPool {self.name!r} is scaled to 0 replicas; scale it up (kubectl scale wpool {self.name} --replicas=N)"
        message = f"waiting for a ready pod of WalletPool {self.name!r}: {s.ready} of {want if want is not None else s.pods} pods ready"
        problems = self.problems()
        return f"{message}; {problems_message(problems)}" if problems else message

    def _drop_clients(self, keep: set[str]) -> None:
        for cache in (self._rpc, self._fs):
            for ip in [ip for ip in cache if ip not in keep]:
                client = cache.pop(ip)
                asyncio.get_running_loop().create_task(client.aclose())

    # --- credentials and clients ---------------------------------------------------------------
    async def credentials(self) -> PoolCredentials | None:
        """The pool's RPC credentials, read once per pool object (and again after :meth:`refresh_credentials`)."""
        if self._credentials is None:
            self._credentials = await self._read_credentials()
        return self._credentials

    async def _read_credentials(self) -> PoolCredentials | None:
        try:
            secret = await self.kube.call(
                self.kube.core.read_namespaced_secret, rpc_secret_name(self.name), self.namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        self.secret_written(metadata(secret).uid)
        try:
            return PoolCredentials.from_secret(secret.data or {})
        except PoolSecretInvalid as exc:
            log.warning("pool %s/%s: %s", self.namespace, self.name, exc)
            return None

    def secret_written(self, uid: str | None) -> None:
        """The pool's Secret, as last read or written, is the object ``uid``: credentials of another
        are forgotten, and pods started with another get no step and are replaced."""
        if uid is None or uid == self.scheduler.secret_uid:
            return
        if self.scheduler.secret_uid is not None:
            self._forget_credentials()
        self.scheduler.set_secret_uid(uid)
        self._replace_stale()

    # --- pods started with a replaced Secret ------------------------------------------------------
    def workload_applied(self, secret_uid: str) -> None:
        """The pool's StatefulSet was applied with a pod template for the Secret ``secret_uid``."""
        self._template_secret_uid = secret_uid
        self.secret_written(secret_uid)
        self._replace_stale()

    def _replace_stale(self) -> None:
        """Delete the pods that run with a replaced Secret's credentials (their StatefulSet starts them
        anew with the current one): nothing can use them, and a rollout may be held up behind them.
        Only once the StatefulSet's template carries the current Secret, so a new pod is current."""
        if self._template_secret_uid is None or self._template_secret_uid != self.scheduler.secret_uid:
            return
        for state in self.scheduler.stale_pods():
            if state.uid not in self._replacing:
                self._replacing.add(state.uid)
                asyncio.get_running_loop().create_task(self._replace(state))

    async def _replace(self, state: PodState) -> None:
        try:
            secret = await self.kube.call(
                self.kube.core.read_namespaced_secret, rpc_secret_name(self.name), self.namespace
            )
            if metadata(secret).uid in (state.secret_uid, None) or metadata(secret).uid != self._template_secret_uid:
                return  # the pod is current after all, or the template is not: the next reconcile decides
            log.info(
                "pool %s/%s: deleting pod %s, started with the credentials of a replaced Secret; "
                "its StatefulSet starts it again with the current ones",
                self.namespace,
                self.name,
                state.name,
            )
            await self.kube.call(
                self.kube.core.delete_namespaced_pod,
                state.name,
                self.namespace,
                body=V1DeleteOptions(preconditions=V1Preconditions(uid=state.uid)),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone already, or another pod of that name now
                log.warning(
                    "pool %s/%s: pod %s, started with a replaced Secret, not deleted: %s",
                    self.namespace,
                    self.name,
                    state.name,
                    exc.reason,
                )
        finally:
            self._replacing.discard(state.uid)

    async def refresh_credentials(self) -> bool:
        """Read the Secret again after a refusal; True (and fresh clients) when the credentials changed."""
        fresh = await self._read_credentials()
        if fresh == self._credentials:
            return False
        self._forget_credentials()
        self._credentials = fresh
        return True

    def _forget_credentials(self) -> None:
        self._credentials = None
        self._version = None
        try:
            self._drop_clients(keep=set())
        except RuntimeError:  # no running loop (tests)
            self._rpc.clear()
            self._fs.clear()

    async def rpc_version(self, rpc: WalletRpc) -> Version:
        """wallet-rpc's version, asked once per pool object (every pod runs the pool's one image)."""
        if self._version is None:
            self._version = await rpc.get_version()
        return self._version

    async def clients(self, pod: PodState, creds: PoolCredentials) -> tuple[WalletRpc, WalletfsClient]:
        """Clients of a leased pod's wallet-rpc and walletfs sidecar, with the pool's current credentials.

        ``creds`` were read by the step before it waited for its lease; a Secret written anew in the
        meantime (a pool re-created) made the pool forget them, and the pod the step now holds was
        started with the new Secret: so the credentials are asked for again here, and ``creds`` serve
        only when none can be read (the Secret gone; the pod then refuses and the step retries).
        """
        current = await self.credentials() or creds
        return self._rpc_client(pod, current), self._fs_client(pod, current)

    async def walletfs(self, pod: PodState, creds: PoolCredentials) -> WalletfsClient:
        """The walletfs client alone, for a step that only touches files (as :meth:`clients`)."""
        return self._fs_client(pod, await self.credentials() or creds)

    def _rpc_client(self, pod: PodState, creds: PoolCredentials) -> WalletRpc:
        assert pod.ip
        rpc = self._rpc.get(pod.ip)
        if rpc is None:
            host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
            rpc = WalletRpc(
                f"http://{host}:{RPC_PORT}/json_rpc", creds.username, creds.password, timeout=self.settings.rpc_timeout
            )
            self._rpc[pod.ip] = rpc
        return rpc

    def _fs_client(self, pod: PodState, creds: PoolCredentials) -> WalletfsClient:
        assert pod.ip
        fs = self._fs.get(pod.ip)
        if fs is None:
            fs = WalletfsClient(
                pod.ip, creds.walletfs_token, port=WALLETFS_PORT, timeout=self.settings.walletfs_timeout
            )
            self._fs[pod.ip] = fs
        return fs

    # --- status ---------------------------------------------------------------------------------
    def _changed(self) -> None:
        self._dirty.set()

    def start_status_writer(self) -> None:
        if self._status_task is None or self._status_task.done():
            self._status_task = asyncio.get_running_loop().create_task(self._write_status_loop())

    def computed_status(self) -> WalletPoolStatus | None:
        """The status as it should be now (:func:`escrow_operator.pool_status.compute`)."""
        if self.applied is None:
            return None
        s = self.scheduler
        pods = Pods(existing=s.pods, ready=s.ready, busy=s.busy, queued=s.queued, problems=self.problems())
        return compute(self.applied, pods, selector_string(self.name), self._conditions)

    async def _write_status_loop(self) -> None:
        """Write the pool's status when it changes, coalesced; the one writer of a pool's status.

        Reconciles and pod changes (replicas, readyReplicas, conditions) are written at once; busy and
        queued counts, which change with every step, at most every ``pool_status_interval`` seconds
        (the metrics show them live).
        """
        last_write = float("-inf")
        while True:
            await self._dirty.wait()
            delay = last_write + self.settings.pool_status_interval - time.monotonic()
            if delay > 0 and not self._membership.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._membership.wait(), delay)
            self._dirty.clear()
            self._membership.clear()
            computed = self.computed_status()
            if computed is None or self.uid is None:
                continue
            status = status_patch(computed)
            if status == self._written:
                continue
            try:
                await self.kube.patch_status(WALLETPOOL_PLURAL, self.namespace, self.name, status, uid=self.uid)
                self._written = status
                self._conditions = computed.conditions
                last_write = time.monotonic()
            except ApiException as exc:
                if exc.status in (404, 409):  # gone, or another object of that name now: nothing to write
                    continue
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
        self._claims: dict[str, asyncio.Lock] = {}

    def claims(self, namespace: str) -> asyncio.Lock:
        """Held while a pool of ``namespace`` checks its claim against the others and records the outcome."""
        return self._claims.setdefault(namespace, asyncio.Lock())

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

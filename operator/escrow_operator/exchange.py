"""The multisig key exchange of one Escrow (DESIGN.md section 3), driven round by round.

Each step (one participant, one round) leases one pool pod exclusively and

1. has walletfs copy its input wallet to a fresh work name (the input is never opened),
2. opens the work copy in wallet-rpc and runs the round with the previous round's messages,
3. records the resulting message in the Escrow's Secret, closes the wallet (stored),
4. has walletfs publish the work copy under the next round's name (atomic, ``.keys`` last).

A step whose output exists is done. Any crash leaves every input intact, so a step is simply run
again; a pod lost mid-step costs a retry on another pod. When all participants hold their final
wallet and report one address, the intermediate files are deleted and the Escrow turns Ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from . import metrics
from .api import (
    DEGRADED,
    ESCROW_PLURAL,
    PROGRESSING,
    READY,
    EscrowPhase,
    EscrowSpec,
    EscrowStatus,
    ParticipantStatus,
    set_condition,
    utcnow,
)
from .escrow_secret import EscrowSecret, escrow_owner
from .faults import NONE as NO_FAULTS
from .faults import Faults
from .kube import Kube
from .naming import WalletNames, final_step
from .pools import PoolRuntime, Pools
from .scheduler import Lease, PodLost
from .settings import OperatorSettings
from .walletfs.client import WalletfsClient, WalletfsError, WalletfsUnavailable
from .walletrpc import (
    MultisigMismatch,
    Stage,
    WalletRpc,
    WalletRpcError,
    WalletRpcUnavailable,
    check_multisig,
    messages_for,
)

log = logging.getLogger(__name__)

#: Infrastructure failures (a pod lost, unreachable) are retried on another pod this many times.
MAX_POD_LOSSES = 50

EmitEvent = Callable[[str, str, str], None]  # (type, reason, message)


class StepFailed(Exception):
    """A step failed in a way that retrying will not mend; the Escrow turns Failed."""

    def __init__(self, role: str, step: int, reason: str, message: str) -> None:
        super().__init__(f"{role} step {step}: {message}")
        self.role, self.step, self.reason, self.message = role, step, reason, message


@dataclass
class Context:
    kube: Kube
    pools: Pools
    settings: OperatorSettings
    faults: Faults = NO_FAULTS


class StepTimer:
    """Seconds one step spent waiting on wallet-rpc and on walletfs (the rest is the operator's)."""

    def __init__(self) -> None:
        self.rpc = 0.0
        self.fs = 0.0

    def wrap_fs(self, fs: WalletfsClient) -> WalletfsClient:
        return _TimedFs(fs, self)  # type: ignore[return-value]


class _TimedFs:
    """A walletfs client whose calls add their wall time to a :class:`StepTimer`."""

    def __init__(self, fs: WalletfsClient, timer: StepTimer) -> None:
        self._fs, self._timer = fs, timer

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._fs, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return await method(*args, **kwargs)
            finally:
                self._timer.fs += time.monotonic() - started

        return timed


class EscrowExchange:
    def __init__(self, ctx: Context, body: dict[str, Any], emit: EmitEvent, retry: str | None = None) -> None:
        meta = body["metadata"]
        self.retry = retry  # a new value of the retry annotation: run a Failed escrow again
        self.ctx = ctx
        self.body = body
        self.emit = emit
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.generation: int | None = meta.get("generation")
        self.spec = EscrowSpec.model_validate(body["spec"])
        self.status = EscrowStatus.model_validate(body.get("status") or {})
        self.roles = list(self.spec.participants)
        self.total = len(self.roles)
        self.threshold = self.spec.threshold
        self.final = final_step(self.total, self.threshold)
        self.names = {role: WalletNames(role, self.uid, self.final) for role in self.roles}
        # First come, first served across escrows: the earliest-created escrow's steps go first.
        self.priority = (meta.get("creationTimestamp") or "", self.uid)
        self.secret = EscrowSecret(ctx.kube, self.namespace, self.name, self.uid)
        self.pool: PoolRuntime = ctx.pools.get(self.namespace, self.spec.pool_ref)
        self._done: dict[str, int] = {p.role: p.round for p in self.status.participants}
        self.log = logging.LoggerAdapter(log, {"escrow": f"{self.namespace}/{self.name}"})

    # --- the whole exchange ---------------------------------------------------------------------
    async def run(self) -> EscrowStatus:
        """Run the exchange from wherever it stands; returns the final status (Ready or Failed)."""
        if self.status.phase == EscrowPhase.FAILED and self.retry and self.retry != self.status.last_retry:
            self.status.last_retry = self.retry
            self.status.phase = EscrowPhase.KEY_EXCHANGE
            set_condition(self.status.conditions, DEGRADED, False, "Retrying", f"retry {self.retry!r} requested", self.generation)
            self._progressing("Retrying", f"retry {self.retry!r} requested: running the remaining rounds again")
            await self._save()
            self.emit("Normal", "Retrying", f"retry {self.retry!r} requested; wallet files are reused")
        if self.status.phase in (EscrowPhase.READY, EscrowPhase.FAILED):
            return self.status  # nothing to do: no RPC, no write
        await self._wait_for_pool()
        await self.secret.ensure(self.roles, escrow_owner(self.body))
        self.status.secret_name = self.secret.name
        if self.status.phase != EscrowPhase.KEY_EXCHANGE:
            self.status.phase = EscrowPhase.KEY_EXCHANGE
            self.status.started_at = self.status.started_at or utcnow()
            self._progressing(f"Round{self._round()}", self._round_message())
            await self._save()
            self.emit("Normal", "KeyExchangeStarted", f"{self.total} participants, threshold {self.threshold}, pool {self.spec.pool_ref}")
        try:
            for step in range(self._round(), self.final + 1):
                await self._run_round(step)
            address = self._agreed_address()
            await self._clean_up()
        except StepFailed as failure:
            await self._fail(failure)
            return self.status
        finally:  # wallets still open in pods need not wait for this escrow any more
            self.pool.scheduler.unreserve({self._wallet_key(role) for role in self.roles})
        self.status.phase = EscrowPhase.READY
        self.status.address = address
        self.status.ready_at = utcnow()
        self.status.message = "multisig address ready"
        gen = self.generation
        set_condition(self.status.conditions, READY, True, "MultisigReady", f"{self.threshold}-of-{self.total} multisig address is ready", gen)
        set_condition(self.status.conditions, PROGRESSING, False, "Complete", "key exchange complete", gen)
        set_condition(self.status.conditions, DEGRADED, False, "AsExpected", "", gen)
        await self._save()
        metrics.ESCROWS_READY.inc()
        self.emit("Normal", "Ready", f"{self.threshold}-of-{self.total} multisig address {address[:12]}... is ready")
        self.log.info("escrow %s/%s ready: %s", self.namespace, self.name, address)
        return self.status

    async def _wait_for_pool(self) -> None:
        if self.pool.exists.is_set() and await self.pool.credentials() is not None:
            return
        self.status.phase = self.status.phase or EscrowPhase.PENDING
        message = f"WalletPool {self.spec.pool_ref!r} not found in namespace {self.namespace!r}; create it"
        set_condition(self.status.conditions, READY, False, "PoolNotFound", message, self.generation)
        self._progressing("PoolNotFound", message, status=False)
        self.status.message = message
        await self._save()
        self.emit("Warning", "PoolNotFound", message)
        while True:
            await self.pool.exists.wait()
            if await self.pool.credentials() is not None:
                return
            self.pool.exists.clear()  # the pool's Secret is not there yet: wait for the next reconcile

    async def _run_round(self, step: int) -> None:
        todo = [role for role in self.roles if self._done.get(role, 0) <= step]
        if todo:
            if self.pool.scheduler.ready == 0:
                message = f"waiting for a ready pod of WalletPool {self.spec.pool_ref!r} (none is ready)"
                if self._progressing("WaitingForPods", message):
                    await self._save()
            started = time.monotonic()
            try:
                async with asyncio.TaskGroup() as group:
                    for role in todo:
                        group.create_task(self._step(role, step))
            except BaseExceptionGroup as group:  # one participant failed: its siblings were cancelled
                failed = [e for e in group.exceptions if isinstance(e, StepFailed)]
                if failed:
                    raise failed[0] from None
                raise
            metrics.ROUND_SECONDS.observe(time.monotonic() - started)
        for role in self.roles:
            self._done[role] = max(self._done.get(role, 0), step + 1)
        self._progressing(f"Round{self._round()}", self._round_message())
        set_condition(self.status.conditions, READY, False, "KeyExchangeInProgress", self._round_message(), self.generation)
        await self.ctx.faults.check("round.before_status", step)
        await self._save()
        await self.ctx.faults.check("round.after_status", step)
        self.emit("Normal", "RoundComplete", f"round {step} of {self.final} complete for all {self.total} participants")

    # --- one step -------------------------------------------------------------------------------
    async def _step(self, role: str, step: int) -> None:
        errors = losses = 0
        while True:
            try:
                await self._attempt(role, step)
                return
            except (PodLost, WalletRpcUnavailable, WalletfsUnavailable) as exc:
                losses += 1
                metrics.STEP_RETRIES.labels(kind="pod").inc()
                self.log.warning("%s step %d: pod unavailable (%s); retrying on another pod", role, step, type(exc).__name__)
                if losses >= MAX_POD_LOSSES:
                    raise StepFailed(role, step, "PodsUnavailable", f"{losses} pods were lost or unreachable in a row") from exc
            except (WalletRpcError, WalletfsError, MultisigMismatch) as exc:
                errors += 1
                metrics.STEP_RETRIES.labels(kind="error").inc()
                reason = "MultisigMismatch" if isinstance(exc, MultisigMismatch) else "StepError"
                message = f"{role} round {step}: {exc}"
                self.log.warning("%s (attempt %d of %d)", message, errors, self.ctx.settings.step_attempts)
                if errors >= self.ctx.settings.step_attempts:
                    raise StepFailed(role, step, reason, message) from exc
                set_condition(self.status.conditions, DEGRADED, True, "StepRetried", message, self.generation)
                self.emit("Warning", "StepRetried", message)

    async def _attempt(self, role: str, step: int) -> None:
        names = self.names[role]
        output = names.output_of(step)
        creds = await self.pool.credentials()
        assert creds is not None
        wallet = self._wallet_key(role)
        async with self.pool.scheduler.lease(self.priority, label=f"{self.name}/{role}/{step}", wallet=wallet) as lease:
            timer = StepTimer()
            fs = timer.wrap_fs(self.pool.fs(lease.pod, creds))
            rpc = self.pool.rpc(lease.pod, creds)
            started = time.time()
            try:
                await self._run_on_pod(role, step, names, output, fs, rpc, lease, timer)
            except (WalletRpcUnavailable, WalletfsUnavailable):
                lease.mark_failed()
                raise
            self.log.info(
                "Step done: escrow=%s/%s role=%s round=%d pod=%s start=%.6f end=%.6f rpc=%.6f fs=%.6f warm=%d",
                self.namespace, self.name, role, step, lease.pod.name, started, time.time(),
                timer.rpc, timer.fs, lease.warm is not None,
            )

    async def _run_on_pod(
        self,
        role: str,
        step: int,
        names: WalletNames,
        output: str,
        fs: WalletfsClient,
        rpc: WalletRpc,
        lease: Lease,
        timer: "StepTimer",
    ) -> None:
        pod = lease.pod.name

        async def check(point: str, step: int) -> None:
            await self.ctx.faults.check(point, step, pod)

        await check("step.start", step)
        if (await fs.stat(output)).exists:
            if step < self.final and self.secret.message(role, step) is None:
                raise StepFailed(role, step, "MessageMissing", f"{output} exists but its round message is not recorded")
            return  # done before (a crash after publishing)
        started = time.monotonic()
        password = self.secret.password(role)
        call = self._caller(rpc, step, pod, timer)
        # Wallet affinity: a pod that still holds this wallet from its previous step needs no copy and no
        # open_wallet. Otherwise whatever an interrupted or other step left open is dropped unsaved.
        warm = lease.warm
        if warm is None:
            await call("close_wallet", autosave=False, point="drop_stale")
        else:
            self.log.info("%s round %d runs on its wallet kept open on %s", role, step, pod)
        work = warm.work if warm is not None else names.work(step)
        source = names.input_of(step)
        address: str | None = None
        if step == 0:
            await call("create_wallet", work, password)
            message = (await call("prepare_multisig", True)).multisig_info
        else:
            assert source is not None
            if warm is None:
                await fs.copy(source, work)
                await check("step.after_copy", step)
                await call("open_wallet", work, password)
            version = await self._version(rpc)
            previous = self._messages(step - 1)
            if step == 1:
                await call("prepare_multisig", True)  # enables multisig in this process
                reply = await call("make_multisig", messages_for(role, previous, version, Stage.MAKE), self.threshold, password)
                check_multisig(await call("is_multisig"), self.threshold, self.total, ready=False)
            else:
                reply = await call("exchange_multisig_keys", messages_for(role, previous, version, Stage.EXCHANGE), password)
                if step == self.final:
                    check_multisig(await call("is_multisig"), self.threshold, self.total, ready=True)
                    address = reply.address or await call("get_address")
            message = reply.multisig_info
        await self.secret.record(role, step, message=message if step < self.final else None, address=address)
        await check("step.after_record", step)
        if self.ctx.settings.wallet_affinity and step < self.final:
            # Keep the wallet open for its next round: store it, publish a copy (the work file stays).
            await call("store")
            await check("step.before_publish", step)
            published = await fs.publish(work, output, keep_source=True)
            await check("step.after_publish", step)
            if published.already_published:
                await call("close_wallet", autosave=False, point="drop_stale")
                await fs.delete(work)
            else:
                lease.keep(work)
        else:
            await call("close_wallet", autosave=True)
            await check("step.before_publish", step)
            published = await fs.publish(work, output)
            await check("step.after_publish", step)
            if published.already_published:
                await fs.delete(work)
        metrics.STEP_SECONDS.observe(time.monotonic() - started)
        if step == 0:
            self.log.info("Created %s", output)
        else:
            self.log.info("Copied %s -> %s%s", source, output, " (FINAL)" if step == self.final else "")

    def _wallet_key(self, role: str) -> str:
        """What the scheduler knows a participant's wallet by (for wallet affinity)."""
        return f"{self.uid}/{role}"

    def _caller(self, rpc: WalletRpc, step: int, pod: str, timer: "StepTimer") -> Callable[..., Any]:
        """wallet-rpc calls of one step: timed for the metrics, with fault points around each."""

        async def call(method: str, *args: Any, point: str | None = None, **kwargs: Any) -> Any:
            point = point or method
            await self.ctx.faults.check(f"rpc.before.{point}", step, pod)
            started = time.monotonic()
            try:
                result = await getattr(rpc, method)(*args, **kwargs)
            finally:
                elapsed = time.monotonic() - started
                timer.rpc += elapsed
                metrics.RPC_SECONDS.labels(method=method).observe(elapsed)
            await self.ctx.faults.check(f"rpc.after.{point}", step, pod)
            return result

        return call

    async def _version(self, rpc: WalletRpc) -> Any:
        if self.pool.version is None:
            self.pool.version = await rpc.get_version()
        return self.pool.version

    def _messages(self, step: int) -> dict[str, SecretStr]:
        found = {role: self.secret.message(role, step) for role in self.roles}
        missing = [role for role, msg in found.items() if msg is None]
        if missing:
            raise StepFailed(missing[0], step, "MessageMissing", f"round {step} messages of {missing} are not recorded")
        return {role: msg for role, msg in found.items() if msg is not None}

    # --- the end ----------------------------------------------------------------------------------
    def _agreed_address(self) -> str:
        addresses = {role: self.secret.address(role) for role in self.roles}
        distinct = set(addresses.values())
        if None in distinct or len(distinct) != 1:
            raise StepFailed(
                self.roles[0],
                self.final,
                "AddressMismatch",
                "participants' final wallets report different addresses; files are kept for inspection",
            )
        return next(iter(distinct))  # type: ignore[return-value]

    async def _clean_up(self) -> None:
        """Delete every file of this escrow but the final wallets (intermediates, stale work copies)."""
        creds = await self.pool.credentials()
        assert creds is not None
        finals = {names.final_wallet for names in self.names.values()}
        while True:
            try:
                async with self.pool.scheduler.lease(self.priority, label=f"{self.name}/cleanup", rpc=False) as lease:
                    fs = self.pool.fs(lease.pod, creds)
                    try:
                        for entry in await fs.list(self.uid):
                            if entry.name not in finals:
                                await fs.delete(entry.name)
                                self.log.info("Deleted intermediate file: %s", entry.name)
                                await self.ctx.faults.check("cleanup.after_delete")
                    except WalletfsUnavailable:
                        lease.mark_failed()
                        raise
                self.log.info("Intermediate files cleaned up")
                await self.ctx.faults.check("cleanup.before_ready")
                return
            except (PodLost, WalletfsUnavailable):
                continue

    async def _fail(self, failure: StepFailed) -> None:
        metrics.ESCROWS_FAILED.labels(reason=failure.reason).inc()
        self.status.phase = EscrowPhase.FAILED
        self.status.message = failure.message[:1024]
        gen = self.generation
        set_condition(self.status.conditions, READY, False, failure.reason, failure.message, gen)
        set_condition(self.status.conditions, PROGRESSING, False, "Failed", "key exchange stopped; wallet files are kept", gen)
        set_condition(self.status.conditions, DEGRADED, True, failure.reason, failure.message, gen)
        await self._save()
        self.emit("Warning", "Failed", failure.message)
        self.log.error("escrow %s/%s failed: %s", self.namespace, self.name, failure.message)

    # --- status -------------------------------------------------------------------------------------
    def _round(self) -> int:
        return min((self._done.get(role, 0) for role in self.roles), default=0)

    def _round_message(self) -> str:
        done = self._round()
        if done > self.final:
            return "all rounds complete"
        return f"round {done} of {self.final} ({['create', 'make_multisig'][done] if done < 2 else 'exchange_multisig_keys'})"

    def _progressing(self, reason: str, message: str, status: bool = True) -> bool:
        self.status.message = message
        return set_condition(self.status.conditions, PROGRESSING, status, reason, message, self.generation)

    async def _save(self) -> None:
        self.status.round = self._round()
        self.status.rounds = self.final + 1
        self.status.participants = [
            ParticipantStatus(
                role=role,
                round=self._done.get(role, 0),
                wallet=self.names[role].output_of(self._done[role] - 1) if self._done.get(role, 0) else None,
            )
            for role in self.roles
        ]
        self.status.observed_generation = self.generation
        await self.ctx.kube.patch_status(ESCROW_PLURAL, self.namespace, self.name, self.status.to_api())

"""The multisig key exchange of one Escrow, driven round by round (docs/design.md, Steps and files).

Each step (one participant, one round) leases one pool pod exclusively and

1. has walletfs copy its input wallet to a fresh work name (the input is never opened), unless the
   pod still holds the participant's wallet open from its previous step (wallet affinity),
2. opens the work copy in wallet-rpc and runs the round with the previous round's messages,
3. records the resulting message in the Escrow's Secret,
4. stores the wallet and has walletfs publish a copy under the next round's name (the last step
   closes the wallet and publishes the work file itself); atomic, ``.keys`` last, never replacing.

A step whose output exists is done. Any crash leaves every input intact, so a step is simply run
again; a pod lost mid-step costs a retry on another pod. When all participants hold their final
wallet, the address is read from the wallets themselves (never taken from a store a user can edit),
the intermediate files are deleted and the Escrow turns Ready.

Status transitions are the pure functions of :mod:`escrow_operator.escrow_status`; this module only
orchestrates. A stop (the Escrow deleted, the operator shutting down) cancels the steps; a call in
flight is let finish first, so nothing of the escrow is written after its daemon returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from . import escrow_status, metrics, multisig, wallet_step
from .api import ESCROW_PLURAL, EscrowPhase, EscrowSpec, EscrowStatus
from .context import Context
from .escrow_files import PoolUnusable, delete_files, is_work_copy
from .escrow_secret import EscrowSecret, escrow_owner
from .faults import Point
from .kube import api_refusal, is_gone, is_transient
from .multisig import MultisigMismatch, check_multisig
from .naming import WalletNames, final_step
from .pools import PoolRuntime
from .recovery_secret import RecoverySecret
from .scheduler import PodLost, Priority
from .settings import RETRY_ANNOTATION
from .wallet_step import StepCalls
from .walletfs.client import WalletfsAuthError, WalletfsError, WalletfsUnavailable
from .walletrpc import WalletRpc, WalletRpcAuthError, WalletRpcError, WalletRpcUnavailable

log = logging.getLogger(__name__)

#: Infrastructure failures (a pod lost, unreachable) are retried on another pod this many times.
MAX_POD_LOSSES = 50
#: The ``Step done`` log line, one per step; the benchmark parses it (hack/benchlib/steplog.py).
STEP_DONE_FORMAT = "Step done: escrow=%s/%s role=%s round=%d pod=%s start=%.6f end=%.6f rpc=%.6f fs=%.6f warm=%d"
#: The warning logged for each step attempt that is run again; the benchmark counts these.
STEP_RETRY_PREFIX = "Step retried:"

EmitEvent = Callable[[str, str, str], None]  # (type, reason, message)


class EscrowGone(Exception):
    """The Escrow object this exchange runs for was deleted (its name may already have a new object)."""


class StepFailed(Exception):
    """A step failed in a way that retrying will not mend; the Escrow turns Failed."""

    def __init__(self, role: str, step: int, reason: str, message: str) -> None:
        super().__init__(f"{role} step {step}: {message}")
        self.role, self.step, self.reason, self.message = role, step, reason, message


class EscrowExchange:
    def __init__(
        self,
        ctx: Context,
        body: dict[str, Any],
        emit: EmitEvent,
        retry: str | None = None,
        annotations: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        meta = body["metadata"]
        #: The Escrow's annotations as they are now (the body is a snapshot taken when the run began).
        self.annotations = annotations or (lambda: meta.get("annotations") or {})
        self.retry = retry  # a new value of the retry annotation: run a Failed escrow again
        self.ctx = ctx
        self.body = body
        self.emit = emit
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.generation: int | None = meta.get("generation")
        self.spec = EscrowSpec.model_validate(body["spec"])
        self.status = escrow_status.without_legacy(EscrowStatus.model_validate(body.get("status") or {}))
        self.roles = list(self.spec.participants)
        self.total = len(self.roles)
        self.threshold = self.spec.threshold
        self.final = final_step(self.total, self.threshold)
        self.shape = multisig.Shape(self.threshold, self.total)
        self.names = {role: WalletNames(role, self.uid, self.final) for role in self.roles}
        # First come, first served across escrows: the earliest-created escrow's steps go first.
        self.priority = Priority.of(meta)
        self.secret = EscrowSecret(ctx.kube, self.namespace, self.name, self.uid)
        self.recovery = RecoverySecret(ctx.kube, ctx.settings.operator_namespace, self.uid)
        self.pool: PoolRuntime = ctx.pools.get(self.namespace, self.spec.pool_ref)
        self._done: dict[str, int] = {p.role: p.round for p in self.status.participants}
        self._addresses: dict[str, str] = {}  # read from wallet-rpc in this run
        self._failing: set[str] = set()  # roles whose current step has failed at least once
        self.log = logging.LoggerAdapter(log, {"escrow": f"{self.namespace}/{self.name}"})

    # --- the whole exchange ---------------------------------------------------------------------
    async def run(self) -> EscrowStatus:
        """Run the exchange from wherever it stands; returns the final status (Ready or Failed)."""
        if self.status.phase == EscrowPhase.FAILED:
            if self.retry is None:  # handlers._retry_requested decides; None: wait for a new value
                return self.status
            self.status = escrow_status.retrying(self.status, self.generation, self.retry)
            await self._save()
            self.emit("Normal", "Retrying", f"retry {self.retry!r} requested; wallet files are reused")
        elif self.status.phase == EscrowPhase.READY:
            await self._check_ready()
            return self.status
        try:
            await self._exchange()
        except StepFailed as failure:
            await self._fail(failure)
        except ApiException as exc:
            if exc.status == 404 or is_transient(exc):
                raise  # gone (the daemon ends), or the apiserver is unwell: run again
            await self._fail(
                StepFailed("-", self._round(), "ApiRefused", f"the apiserver refused a write: {api_refusal(exc)}")
            )
        except (EscrowGone, asyncio.CancelledError):
            raise
        except Exception as exc:  # a defect: say so in status instead of restarting forever
            self.log.exception("escrow %s/%s: unexpected error", self.namespace, self.name)
            await self._fail(
                StepFailed(
                    "-",
                    self._round(),
                    "InternalError",
                    f"unexpected {type(exc).__name__} (see the operator's log); retry once fixed",
                )
            )
        finally:  # wallets still open in pods need not wait for this escrow any more
            self.pool.scheduler.unreserve({self._wallet_key(role) for role in self.roles})
        return self.status

    async def _exchange(self) -> None:
        if self.status.phase is None:
            self.status = escrow_status.pending(self.status, self.generation, "accepted; waiting for its WalletPool")
            await self._save()
        await self._wait_for_pool()
        await self.secret.ensure(self.roles, escrow_owner(self.body))
        await self._keep_recovery_copy()  # before the first wallet: a wallet never exists without it
        self.status.secret_name = self.secret.name
        if self._round() == 0 and self.status.restore_height is None and self.pool.daemon is not None:
            await self._record_chain_height(self.pool.daemon)
        if self.status.phase != EscrowPhase.KEY_EXCHANGE:
            self.status = escrow_status.started(self.status, self.generation, self._round(), self.final)
            await self._save()
            self.emit(
                "Normal",
                "KeyExchangeStarted",
                f"{self.total} participants, threshold {self.threshold}, pool {self.spec.pool_ref}",
            )
        for step in range(self._round(), self.final + 1):
            await self._run_round(step)
        address = await self._wallet_address()
        await self._clean_up({names.final_wallet for names in self.names.values()}.__contains__, "intermediate")
        await self.ctx.faults.check(Point.CLEANUP_BEFORE_READY)
        self.status = escrow_status.ready(self.status, self.generation, address, self.threshold, self.total)
        await self._save()
        metrics.ESCROWS_READY.inc()
        self.emit("Normal", "Ready", f"{self.threshold}-of-{self.total} multisig address {address[:12]}... is ready")
        self.log.info("escrow %s/%s ready: %s", self.namespace, self.name, address)

    async def _wait_for_pool(self) -> None:
        if self.pool.exists.is_set() and await self.pool.credentials() is not None:
            return
        message = f"WalletPool {self.spec.pool_ref!r} not found in namespace {self.namespace!r}; create it"
        self.status = escrow_status.pool_not_found(self.status, self.generation, message)
        await self._save()
        self.emit("Warning", "PoolNotFound", message)
        while True:
            await self.pool.exists.wait()
            if await self.pool.credentials() is not None:
                return
            self.pool.exists.clear()  # the pool's Secret is not there yet: wait for the next reconcile

    async def _record_chain_height(self, daemon: str) -> None:
        """Record the chain height before any wallet is made (a wallet made later cannot hold funds sent
        below it). The block watch's last tip is at most one poll old, so never above the chain's height.
        While monerod has not answered, say so and wait for it."""
        watch = self.ctx.chains.watch(daemon)
        reported = False
        while watch.tip is None:
            if watch.error is not None and not reported:
                message = (
                    f"waiting for monerod {daemon} (spec.daemon of WalletPool {self.spec.pool_ref}) to answer: "
                    f"{watch.error}"
                )
                self.status = escrow_status.waiting_for_daemon(self.status, self.generation, message)
                await self._save()
                self.emit("Warning", "DaemonUnavailable", message)
                reported = True
            await watch.changed()
        height = watch.tip.height
        self.status = escrow_status.chain_height_recorded(self.status, self.generation, height)
        await self._save()
        self.log.info("escrow %s/%s: wallets are made at chain height %d", self.namespace, self.name, height)

    async def _run_round(self, step: int) -> None:
        todo = [role for role in self.roles if self._done.get(role, 0) <= step]
        if todo:
            started = time.monotonic()
            watcher = asyncio.create_task(self._report_waiting_for_pods(step))
            try:
                async with asyncio.TaskGroup() as group:
                    for role in todo:
                        group.create_task(self._step(role, step))
            except BaseExceptionGroup as group:  # one participant failed: its siblings were cancelled
                failed = [e for e in group.exceptions if isinstance(e, StepFailed)]
                if failed:
                    raise failed[0] from None
                refused = [e for e in group.exceptions if isinstance(e, ApiException)]
                if refused:
                    raise refused[0] from None
                raise
            finally:
                watcher.cancel()
            metrics.ROUND_SECONDS.observe(time.monotonic() - started)
        for role in self.roles:
            self._done[role] = max(self._done.get(role, 0), step + 1)
        self.status = escrow_status.round_done(self.status, self.generation, self._round(), self.final)
        await self.ctx.faults.check(Point.ROUND_BEFORE_STATUS, step)
        await self._save()
        await self.ctx.faults.check(Point.ROUND_AFTER_STATUS, step)
        self.emit("Normal", "RoundComplete", f"round {step} of {self.final} complete for all {self.total} participants")

    async def _report_waiting_for_pods(self, step: int) -> None:
        """While this round's steps wait with no ready pod in the pool, say so in status (and why the
        pool's pods do not run, as that changes)."""
        said: str | None = None  # the waiting message in status; None: not waiting
        while True:
            seen = self.pool.pods_version
            blocked = self.pool.scheduler.ready == 0
            message = self.pool.waiting_message() if blocked else None
            if message != said:
                said = message
                if message is not None:
                    self.status = escrow_status.waiting_for_pods(self.status, self.generation, message)
                else:
                    self.status = escrow_status.round_done(self.status, self.generation, self._round(), self.final)
                await self._save()
            await self.pool.pods_changed(seen)

    # --- one step -------------------------------------------------------------------------------
    async def _step(self, role: str, step: int) -> None:
        errors = losses = 0
        while True:
            try:
                await self._attempt(role, step)
                if errors and role in self._failing:
                    self._failing.discard(role)
                    if not self._failing:
                        self.status = escrow_status.recovered(
                            self.status, self.generation, f"{role} round {step} succeeded on attempt {errors + 1}"
                        )
                        await self._save()
                return
            except (WalletRpcAuthError, WalletfsAuthError) as exc:
                # The pod runs with other credentials than the client has: the pool Secret was written
                # anew (a pool re-created) and this pod has not been replaced yet, or the client is stale.
                losses += 1
                changed = await self.pool.refresh_credentials()
                metrics.STEP_RETRIES.labels(kind="pod").inc()
                self.log.warning(
                    "%s %s step %d: a pod refused the pool's credentials (%s); retrying on another pod",
                    STEP_RETRY_PREFIX,
                    role,
                    step,
                    "re-read them" if changed else "they are current",
                )
                if losses >= MAX_POD_LOSSES:
                    raise StepFailed(role, step, "CredentialsRefused", str(exc)) from exc
            except (PodLost, WalletRpcUnavailable, WalletfsUnavailable) as exc:
                losses += 1
                metrics.STEP_RETRIES.labels(kind="pod").inc()
                self.log.warning(
                    "%s %s step %d: pod unavailable (%s); retrying on another pod",
                    STEP_RETRY_PREFIX,
                    role,
                    step,
                    type(exc).__name__,
                )
                if losses >= MAX_POD_LOSSES:
                    raise StepFailed(
                        role, step, "PodsUnavailable", f"{losses} pods were lost or unreachable in a row"
                    ) from exc
            except WalletfsError as exc:
                errors = await self._step_error(role, step, errors, "StepError", f"{role} round {step}: {exc}", exc)
            except (WalletRpcError, MultisigMismatch) as exc:
                reason = "MultisigMismatch" if isinstance(exc, MultisigMismatch) else "StepError"
                errors = await self._step_error(role, step, errors, reason, f"{role} round {step}: {exc}", exc)

    async def _step_error(self, role: str, step: int, errors: int, reason: str, message: str, exc: Exception) -> int:
        errors += 1
        metrics.STEP_RETRIES.labels(kind="error").inc()
        self.log.warning(
            "%s %s (attempt %d of %d)", STEP_RETRY_PREFIX, message, errors, self.ctx.settings.step_attempts
        )
        if errors >= self.ctx.settings.step_attempts:
            raise StepFailed(role, step, reason, message) from exc
        self._failing.add(role)
        self.status = escrow_status.step_retried(self.status, self.generation, message)
        await self._save()
        self.emit("Warning", "StepRetried", message)
        return errors

    async def _attempt(self, role: str, step: int) -> None:
        creds = await self.pool.credentials()
        while creds is None:  # the pool (or its Secret) is gone: wait for it, say so in status
            await self._wait_for_pool()
            creds = await self.pool.credentials()
        names = self.names[role]
        plan = wallet_step.Plan(
            step=step,
            password=self.secret.password(role),
            input=names.input_of(step),
            output=names.output_of(step),
            work=names.work(step),
            keep_open=self.ctx.settings.wallet_affinity and step < self.final,
        )

        async def operation(calls: StepCalls, rpc: WalletRpc, work: str) -> multisig.StepResult:
            if step == 0:
                return await multisig.create(calls, rpc, work, plan.password)
            version = await self.pool.rpc_version(rpc)
            try:
                return await multisig.exchange(
                    calls, rpc, step, self.shape, role, plan.password, self._messages(step - 1), version
                )
            except multisig.RoundMessagesInvalid as exc:
                raise StepFailed(
                    role, step, "MessageInvalid", f"round {step - 1} messages in Secret {self.secret.name}: {exc}"
                ) from None

        async def record(result: multisig.StepResult) -> None:
            await self._record(role, step, result.message if step < self.final else None, result.address)

        def on_done() -> None:  # the output exists: a crash after publishing
            if step < self.final and self.secret.message(role, step) is None:
                raise StepFailed(
                    role,
                    step,
                    "MessageMissing",
                    f"{plan.output} exists but its round message is not recorded in Secret {self.secret.name}",
                )

        async with self.pool.scheduler.lease(
            self.priority, label=f"{self.name}/{role}/{step}", wallet=self._wallet_key(role)
        ) as lease:
            calls = StepCalls(self.ctx, step, lease)
            started = time.time()
            if lease.warm is not None:
                self.log.info("%s round %d runs on its wallet kept open on %s", role, step, lease.pod.name)
            try:
                rpc, fs = await self.pool.clients(lease.pod, creds)
                outcome = await wallet_step.run(
                    calls,
                    rpc,
                    fs,
                    plan,
                    operation,
                    record,
                    on_done,
                )
            except (WalletRpcUnavailable, WalletfsUnavailable):
                lease.mark_failed()
                raise
            if outcome.result is None:
                return  # done before
            if outcome.result.address is not None and outcome.published:
                self._addresses[role] = outcome.result.address  # this very wallet is the published final one
            if step == 0:
                self.log.info("Created %s", plan.output)
            else:
                self.log.info("Copied %s -> %s%s", plan.input, plan.output, " (FINAL)" if step == self.final else "")
            self.log.info(
                STEP_DONE_FORMAT,
                self.namespace,
                self.name,
                role,
                step,
                lease.pod.name,
                started,
                time.time(),
                calls.rpc_seconds,
                calls.fs_seconds,
                outcome.warm,
            )

    async def _record(self, role: str, step: int, message: SecretStr | None, address: str | None) -> None:
        """Record a step's result in the Secret; a refusal by the apiserver ends the escrow with its reason."""
        try:
            await self.secret.record(role, step, message=message, address=address)
        except ApiException as exc:
            if is_transient(exc):
                raise
            raise StepFailed(
                role,
                step,
                "SecretWriteRefused",
                f"the apiserver refused to record round {step} of {role} in Secret {self.secret.name}: {api_refusal(exc)}",
            ) from None

    def _wallet_key(self, role: str) -> str:
        """What the scheduler knows a participant's wallet by (for wallet affinity)."""
        return f"{self.uid}/{role}"

    def _messages(self, step: int) -> dict[str, SecretStr]:
        found = {role: self.secret.message(role, step) for role in self.roles}
        missing = [role for role, msg in found.items() if msg is None]
        if missing:
            raise StepFailed(
                missing[0],
                step,
                "MessageMissing",
                f"round {step} messages of {missing} are not recorded in Secret {self.secret.name}",
            )
        return {role: msg for role, msg in found.items() if msg is not None}

    # --- the address: a fact of the wallets -------------------------------------------------------
    async def _wallet_address(self) -> str:
        """The address every final wallet reports, read from wallet-rpc; a disagreeing Secret is corrected.

        Participants whose final step ran in this run reported it from the wallet they published; the
        others (a resumed or retried escrow) are opened from a copy of their final wallet.
        """
        for role in self.roles:
            if role not in self._addresses:
                self._addresses[role] = await self._read_final_address(role)
        distinct = set(self._addresses.values())
        if len(distinct) != 1:
            raise StepFailed(
                self.roles[0],
                self.final,
                "AddressMismatch",
                f"the participants' final wallets report {len(distinct)} different addresses; files are kept for inspection",
            )
        address = next(iter(distinct))
        wrong = sorted(role for role in self.roles if self.secret.address(role) != address)
        if any(self.secret.address(role) is not None for role in wrong):
            message = (
                f"the address recorded for {', '.join(wrong)} in Secret {self.secret.name} differs from the wallets'; "
                "corrected from the wallets (check who can edit Secrets in this namespace)"
            )
            self.status = escrow_status.address_corrected(self.status, self.generation, message)
            self.emit("Warning", "AddressCorrected", message)
            self.log.warning("escrow %s/%s: %s", self.namespace, self.name, message)
        for role in wrong:
            await self._record(role, self.final, None, address)
        return address

    async def _read_final_address(self, role: str) -> str:
        """Open a copy of ``role``'s final wallet and ask wallet-rpc for its address (and that it is ready)."""
        names = self.names[role]
        losses = 0
        while True:
            creds = await self.pool.credentials()
            if creds is None:  # the pool (or its Secret) is gone: wait for it
                await self._wait_for_pool()
                continue
            try:
                async with self.pool.scheduler.lease(
                    self.priority, label=f"{self.name}/{role}/address", wallet=None
                ) as lease:
                    calls = StepCalls(self.ctx, self.final, lease)
                    rpc, fs = await self.pool.clients(lease.pod, creds)
                    work = names.work(self.final)
                    try:  # the copy is a work copy: the cleanup that follows deletes it
                        await calls.rpc("close_wallet", rpc.close_wallet(autosave=False), point="drop_stale")
                        await calls.fs(fs.copy(names.final_wallet, work))
                        await calls.rpc("open_wallet", rpc.open_wallet(work, self.secret.password(role)))
                        check_multisig(
                            await calls.rpc("is_multisig", rpc.is_multisig()), self.threshold, self.total, ready=True
                        )
                        address = await calls.rpc("get_address", rpc.get_address())
                        await calls.rpc("close_wallet", rpc.close_wallet(autosave=False), point="drop_stale")
                    except (WalletRpcUnavailable, WalletfsUnavailable):
                        lease.mark_failed()
                        raise
                    return address
            except (PodLost, WalletRpcUnavailable, WalletfsUnavailable) as exc:
                losses += 1
                if losses >= MAX_POD_LOSSES:
                    raise StepFailed(
                        role, self.final, "PodsUnavailable", f"{losses} pods were lost or unreachable in a row"
                    ) from exc
            except (WalletRpcError, WalletfsError, MultisigMismatch) as exc:
                raise StepFailed(
                    role,
                    self.final,
                    "FinalWalletUnreadable",
                    f"{role}'s final wallet {names.final_wallet} cannot be read: {exc}",
                ) from exc

    async def _keep_recovery_copy(self) -> None:
        """Copy the passwords (from the loaded Secret) to the operator's namespace (recovery_secret)."""
        await self.recovery.ensure(
            escrow=(self.namespace, self.name),
            pool=self.spec.pool_ref,
            network=self.pool.network,
            passwords={role: self.secret.password(role) for role in self.roles},
            wallets={role: self.names[role].final_wallet for role in self.roles},
        )

    async def _check_ready(self) -> None:
        """A Ready escrow resumed: its Secret must agree with status.address; if not, the wallets decide."""
        try:
            await self.secret.load()
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.log.warning(
                "escrow %s/%s is Ready but its Secret %s is missing", self.namespace, self.name, self.secret.name
            )
            return
        await self._keep_recovery_copy()  # escrows made before recovery copies existed get one
        recorded = {role: self.secret.address(role) for role in self.roles}
        if all(value == self.status.address for value in recorded.values()):
            return
        self.log.warning(
            "escrow %s/%s: recorded addresses disagree with status; reading the wallets", self.namespace, self.name
        )
        try:
            address = await self._wallet_address()
            await self._clean_up(lambda name: not is_work_copy(name), "work copy")
        except StepFailed as failure:
            await self._fail(failure)
            return
        if address != self.status.address:
            message = "status.address differed from the wallets' address; corrected from the wallets"
            self.status = escrow_status.address_corrected(self.status, self.generation, message)
            self.status.address = address
            self.emit("Warning", "AddressCorrected", message)
        await self._save()

    # --- the end ----------------------------------------------------------------------------------
    async def _clean_up(self, keep: Callable[[str], bool], what: str) -> None:
        """Delete this escrow's files but those ``keep`` names (intermediates, stale work copies)."""
        while True:
            try:
                deleted = await delete_files(
                    self.pool, self.uid, self.priority, f"{self.name}/cleanup", keep, self.ctx.faults, what
                )
                break
            except PoolUnusable:  # the pool (or its Secret) is gone: wait for it
                await self._wait_for_pool()
        self.log.info("%s files cleaned up (%d)", what.capitalize(), len(deleted))

    async def _fail(self, failure: StepFailed) -> None:
        """Failed: work copies are deleted first (every published wallet stays for a retry), then the
        status says why, so a Failed escrow never has work copies left behind."""
        if self.pool.scheduler.ready:
            try:
                await asyncio.wait_for(
                    self._clean_up(lambda name: not is_work_copy(name), "work copy"), self.ctx.settings.walletfs_timeout
                )
            except (TimeoutError, PoolUnusable) as exc:
                self.log.warning(
                    "work copies of escrow %s/%s not deleted now (%s); they go at the next retry or deletion",
                    self.namespace,
                    self.name,
                    type(exc).__name__,
                )
        metrics.ESCROWS_FAILED.labels(reason=failure.reason).inc()
        self.status = escrow_status.failed(self.status, self.generation, failure.reason, failure.message)
        self.status.last_retry = self._retry_annotation() or self.status.last_retry
        await self._save()
        self.emit("Warning", "Failed", failure.message)
        self.log.error("escrow %s/%s failed: %s", self.namespace, self.name, failure.message)

    def _retry_annotation(self) -> str | None:
        return self.annotations().get(RETRY_ANNOTATION)

    # --- status -------------------------------------------------------------------------------------
    def _round(self) -> int:
        return min((self._done.get(role, 0) for role in self.roles), default=0)

    async def _save(self) -> None:
        """Write the status to this Escrow object (never to a newer one of the same name)."""
        self.status = escrow_status.progress(self.status, self.generation, self._done, self.names, self.final)
        try:
            await self.ctx.kube.patch_status(
                ESCROW_PLURAL, self.namespace, self.name, self.status.to_api(), uid=self.uid
            )
        except ApiException as exc:
            if is_gone(exc):
                raise EscrowGone(f"escrow {self.namespace}/{self.name} (uid {self.uid}) no longer exists") from None
            raise

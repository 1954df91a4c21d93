"""One EscrowPayout, from Pending to Confirmed (docs/design.md, Signing).

For an M-of-N escrow and the M ``spec.signers`` (the first builds, the others sign in order), an
*attempt* ``n`` is, each step a :mod:`escrow_operator.wallet_step` on a leased pool pod and on a copy:

1. sync, every signer: the final wallet -> ``..._pay_{id}_{n}_synced``: refresh, export its multisig
   info, record it (``n.info.ROLE``), publish;
2. merge, every signer: ``synced`` -> ``merged``: refresh, import the other signers' infos, publish;
3. build, the first signer, on a copy of ``merged``: check the unlocked balance, mark ``n.begun``,
   ``transfer`` or ``sweep_all``, record the set (``n.txset.1``) and its amount and fee;
4. sign, each other signer in order, on a copy of ``merged``: mark ``n.begun``, ``sign_multisig``,
   record the set with one more signature (the last also records the transaction hashes);
5. the hashes are written to ``status.txHashes`` (fault point ``payout.before_submit``); from then on
   no transaction is ever built again for this payout;
6. submit, on a copy of the last signer's ``merged`` (only while the daemon knows none of the hashes),
   then follow the daemon block by block until ``spec.confirmations``; a transaction the daemon forgot
   (a reorganisation, a flushed pool) is submitted again as recorded, the same transaction.

A build or sign that began and recorded nothing (a crash, a lost pod) may have used the signer's
nonces; the attempt is then never resumed: a new attempt exports fresh infos. So is one that fails in
a known way (stale infos, import needed, no transaction possible), up to :data:`MAX_ATTEMPTS`.

One payout of an escrow is in flight at a time: a payout waits while an earlier one (by creation
time, then name) of the same escrow is neither Confirmed nor Failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from . import funding_status, payout_check, payout_status, signing, wallet_step
from .api import (
    ESCROW_PLURAL,
    GROUP,
    PAYOUT_PLURAL,
    VERSION,
    EscrowPayoutSpec,
    EscrowPayoutStatus,
    EscrowPhase,
    EscrowSpec,
    EscrowStatus,
    PayoutPhase,
)
from .context import Context
from .escrow_files import delete_files
from .escrow_secret import EscrowSecret
from .faults import Point
from .kube import is_gone, json_object
from .monerod import MonerodUnavailable, TxLookup
from .naming import PayoutNames, WalletNames, final_step, payout_tag
from .payout_secret import PayoutSecret
from .pools import PoolRuntime
from .scheduler import PodLost, Priority
from .viewkeys import Transaction
from .wallet_step import StepCalls
from .walletfs.client import WalletfsAuthError, WalletfsClient, WalletfsError, WalletfsUnavailable
from .walletrpc import (
    Destination,
    SignedSet,
    UnsignedSet,
    WalletRpc,
    WalletRpcAuthError,
    WalletRpcError,
    WalletRpcUnavailable,
)
from .watch_secret import WatchSecret

log = logging.getLogger(__name__)
T = TypeVar("T")

EmitEvent = Callable[[str, str, str], None]  # (type, reason, message)

TERMINAL = (PayoutPhase.CONFIRMED, PayoutPhase.FAILED)
#: Signing attempts of one payout before it fails.
MAX_ATTEMPTS = 5
#: Pods lost in a row before a step is put off until the next poll.
MAX_POD_LOSSES = 20


class PayoutGone(Exception):
    """The EscrowPayout object was deleted (or replaced by one of the same name)."""


class PayoutFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class Waiting(Exception):
    """Not possible yet: say why in status, look again after ``block_poll_interval`` (``next_block``:
    when the daemon's tip moves)."""

    def __init__(self, reason: str, message: str, next_block: bool = False) -> None:
        super().__init__(message)
        self.reason, self.message, self.next_block = reason, message, next_block


class NewAttempt(Exception):
    """This attempt cannot go on (its nonces may be used, or its infos are stale): start another."""


@dataclass
class EscrowView:
    """What a payout needs of its Escrow."""

    uid: str
    spec: EscrowSpec
    status: EscrowStatus
    pool: PoolRuntime
    daemon: str
    secret: EscrowSecret
    watch: WatchSecret  # the chain watch's record of the escrow (operator's namespace)

    def wallet(self, role: str) -> WalletNames:
        return WalletNames(role, self.uid, final_step(len(self.spec.participants), self.spec.threshold))


class PayoutRun:
    def __init__(self, ctx: Context, body: dict[str, Any], emit: EmitEvent) -> None:
        meta = body["metadata"]
        self.ctx, self.emit = ctx, emit
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.generation: int | None = meta.get("generation")
        self.created: str = meta.get("creationTimestamp") or ""
        self.priority = Priority.of(meta)
        self.spec = EscrowPayoutSpec.model_validate(body["spec"])
        self.status = EscrowPayoutStatus.model_validate(body.get("status") or {})
        self.secret = PayoutSecret(ctx.kube, ctx.settings.operator_namespace, (self.namespace, self.name), self.uid)
        self.signers = list(self.spec.signers)
        self._abandoned = 0  # an attempt this run found it cannot go on with

    # --- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Drive the payout until it is Confirmed or Failed; raises :class:`PayoutGone` if it is deleted.

        Where it stands is read from its record in the operator's namespace, never from its status."""
        recorded = await self.secret.load_if_present()
        if not recorded and self.status.phase in TERMINAL and await self._finished_by_an_earlier_release():
            return
        await self.secret.ensure()
        outcome = self.secret.outcome()
        if outcome is not None:
            await self._restore(*outcome)
            return
        self.status = payout_status.as_recorded(
            self.status, self.secret.attempt, self.secret.final_hashes(len(self.signers))
        )
        while True:
            escrow: EscrowView | None = None
            try:
                escrow = await self._escrow()
                hashes = self.secret.final_hashes(len(self.signers))
                if hashes:
                    await self._follow(escrow, hashes)
                    return
                await self._my_turn()
                await self._sign(escrow)
            except Waiting as wait:
                await self._wait(wait, escrow)
            except NewAttempt as exc:
                self._abandoned = max(self._abandoned, self.secret.attempt)
                log.warning("payout %s/%s: %s; starting a new attempt", self.namespace, self.name, exc)
            except PayoutFailed as failure:
                if escrow is not None:  # before the terminal status: a restart then finds nothing to do
                    await self._clean_up(escrow)
                await self.secret.record_outcome(PayoutPhase.FAILED, failure.reason, failure.message)
                await self._save(payout_status.failed(self.status, self.generation, failure.reason, failure.message))
                self.emit("Warning", failure.reason, failure.message[:1000])
                log.warning("payout %s/%s failed: %s", self.namespace, self.name, failure.message)
                return

    async def _ended(self, name: str, uid: str, phase: str | None, created: str) -> bool:
        """Whether another payout ended, as its record says (its status may say anything)."""
        record = PayoutSecret(self.ctx.kube, self.ctx.settings.operator_namespace, (self.namespace, name), uid)
        if await record.load_if_present():
            return record.outcome() is not None
        return phase in TERMINAL and await self._has_legacy_record(uid, created)

    async def _finished_by_an_earlier_release(self) -> bool:
        return await self._has_legacy_record(self.uid, self.created)

    async def _has_legacy_record(self, uid: str, created: str) -> bool:
        """A payout that ended before payouts were recorded in the operator's namespace: created before
        this release first ran (no later payout can be), with its record, the Secret ``payout-<uid>`` of
        its own namespace, which that release made."""
        if not self.ctx.records_since or not created or created >= self.ctx.records_since:
            return False
        try:
            await self.ctx.kube.call(self.ctx.kube.core.read_namespaced_secret, f"payout-{uid}", self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _restore(self, phase: str, reason: str, message: str, height: int | None) -> None:
        """The payout ended as its record says; a status that says otherwise is written again."""
        if self.status.phase == phase:
            return
        hashes = self.secret.final_hashes(len(self.signers))
        status = payout_status.as_recorded(self.status, self.secret.attempt, hashes)
        if phase == PayoutPhase.CONFIRMED:
            needed = self.spec.confirmations
            new = payout_status.confirming(
                status, self.generation, height, max(needed, status.confirmations or 0), needed
            )
        else:
            new = payout_status.failed(status, self.generation, reason, message)
        log.warning(
            "payout %s/%s: its status said %s, its record %s; written again",
            self.namespace,
            self.name,
            self.status.phase,
            phase,
        )
        await self._save(new)

    async def _wait(self, wait: Waiting, escrow: EscrowView | None) -> None:
        new = payout_status.waiting(self.status, self.generation, wait.reason, wait.message)
        if new.message != self.status.message:
            log.info("payout %s/%s waits: %s", self.namespace, self.name, wait.message)
            self.emit("Normal", wait.reason, wait.message[:1000])
        await self._save(new)
        if escrow is not None and wait.next_block:
            await self.ctx.chains.watch(escrow.daemon).changed()  # a new tip, or the daemon's reachability changed
        else:
            await asyncio.sleep(self.ctx.settings.block_poll_interval)

    # --- the escrow -----------------------------------------------------------------------------
    async def _escrow(self) -> EscrowView:
        ref = self.spec.escrow_ref
        obj = await self.ctx.kube.get_custom(ESCROW_PLURAL, self.namespace, ref)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            raise Waiting("EscrowNotFound", f"escrow {ref} does not exist in namespace {self.namespace}")
        uid = obj["metadata"]["uid"]
        if self.status.escrow_uid is not None and self.status.escrow_uid != uid:
            raise PayoutFailed(
                "EscrowReplaced",
                f"escrow {ref} was deleted and created again (uid {uid}, this payout began on "
                f"{self.status.escrow_uid}); delete this payout",
            )
        spec = EscrowSpec.model_validate(obj["spec"])
        status = EscrowStatus.model_validate(obj.get("status") or {})
        if status.phase != EscrowPhase.READY:
            raise Waiting("EscrowNotReady", f"escrow {ref} is {status.phase or 'new'}, not Ready")
        unknown = [role for role in self.signers if role not in spec.participants]
        if unknown:
            raise PayoutFailed(
                "SignerUnknown",
                f"signer(s) {', '.join(unknown)} are not participants of escrow {ref} "
                f"({', '.join(spec.participants)}); delete this payout and create one with known signers",
            )
        if len(self.signers) != spec.threshold:
            raise PayoutFailed(
                "SignerCount",
                f"escrow {ref} is {spec.threshold}-of-{len(spec.participants)}: a payout needs exactly "
                f"{spec.threshold} signers, this one names {len(self.signers)}; delete it and create one with "
                f"{spec.threshold}",
            )
        if spec.threshold < 2:
            raise PayoutFailed("SignerCount", f"escrow {ref} has threshold 1: there is nothing to co-sign")
        self._check_payable(spec)
        pool = self.ctx.pools.get(self.namespace, spec.pool_ref)
        if pool.daemon is None:
            raise Waiting(
                "NoDaemon", f"pool {spec.pool_ref} has no daemon (spec.daemon): a payout needs one to sign and submit"
            )
        secret = EscrowSecret(self.ctx.kube, self.namespace, ref, uid)
        await secret.load()
        watch = WatchSecret(self.ctx.kube, self.ctx.settings.operator_namespace, (self.namespace, ref), uid)
        await watch.load_if_present()
        return EscrowView(uid, spec, status, pool, pool.daemon, secret, watch)

    async def _my_turn(self) -> None:
        """Wait while an earlier payout of the same escrow is in flight."""
        listing = json_object(
            await self.ctx.kube.call(
                self.ctx.kube.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PAYOUT_PLURAL
            )
        )
        mine = (self.created, self.name)
        for item in listing.get("items") or []:
            meta, spec = item.get("metadata") or {}, item.get("spec") or {}
            if spec.get("escrowRef") != self.spec.escrow_ref or meta.get("uid") == self.uid:
                continue
            if (meta.get("creationTimestamp") or "", meta.get("name") or "") >= mine:
                continue
            phase = (item.get("status") or {}).get("phase")
            created = str(meta.get("creationTimestamp") or "")
            if not await self._ended(str(meta.get("name")), str(meta.get("uid")), phase, created):
                raise Waiting(
                    "EarlierPayout",
                    f"payout {meta.get('name')} of escrow {self.spec.escrow_ref} is {phase or 'new'}; "
                    "one payout of an escrow is in flight at a time",
                )

    # --- signing --------------------------------------------------------------------------------
    async def _sign(self, escrow: EscrowView) -> None:
        self._check_funds(escrow)
        attempt = await self._attempt(escrow)
        names = {role: PayoutNames(escrow.wallet(role), self.uid, attempt) for role in self.signers}
        # Every signer: a sync whose info was recorded but whose copy was not published (a crash in
        # between) exports again and records the new info; one that was published is skipped.
        await asyncio.gather(*(self._sync(escrow, names[role], attempt) for role in self.signers))
        await asyncio.gather(*(self._merge(escrow, names[role], attempt) for role in self.signers))
        if self.secret.signatures(attempt) == 0:
            await self._build(escrow, names[self.signers[0]], attempt)
        amount, fee = self.secret.built(attempt)
        needed = len(self.signers)
        if self.status.phase == PayoutPhase.SYNCING:
            what = "sweep" if amount is None else f"{funding_status.xmr(amount)} XMR"
            self.emit(
                "Normal", "Signing", f"built by {self.signers[0]}: {what}, fee {funding_status.xmr(fee or 0)} XMR"
            )
        for index in range(1, needed):
            done = self.secret.signatures(attempt)
            if done > index:
                continue
            await self._save(payout_status.signing(self.status, self.generation, done, needed, amount, fee))
            await self._cosign(escrow, names[self.signers[index]], attempt, index)
        hashes = self.secret.hashes(attempt)
        if not hashes:
            raise NewAttempt(f"attempt {attempt} holds a signed set without its transaction hashes")
        signed = payout_status.signing(self.status, self.generation, needed, needed, amount, fee)
        await self._save(payout_status.hashes_recorded(signed, self.generation, hashes))
        log.info("payout %s/%s: %d transaction(s) signed, hashes recorded", self.namespace, self.name, len(hashes))

    def _check_payable(self, escrow: EscrowSpec) -> None:
        """An escrow that records its payout addresses may pay only those (spec.payoutAddresses)."""
        payable = escrow.payable()
        if payable is None:
            return
        asked = [d.address for d in self.spec.destinations or []] or [self.spec.sweep_to or ""]
        strangers = sorted({a for a in asked if a not in payable})
        if strangers:
            listed = ", ".join(f"{role} {address}" for address, role in sorted(payable.items(), key=lambda i: i[1]))
            raise PayoutFailed(
                "AddressNotAllowed",
                f"this payout pays {', '.join(strangers)}, which escrow {self.spec.escrow_ref} does not list in its "
                f"spec.payoutAddresses ({listed}). Nothing was signed: delete it and create one that pays those",
            )

    def _expected(self, escrow: EscrowView, own_address: str) -> payout_check.Expected:
        """What every signer checks the transaction set against (``own_address``: the signer's wallet's)."""
        destinations = (
            None
            if self.spec.destinations is None
            else payout_check.summed([(d.address, d.amount) for d in self.spec.destinations])
        )
        payable = escrow.spec.payable()
        return payout_check.Expected(
            destinations=destinations,
            sweep_to=self.spec.sweep_to,
            own_address=own_address,
            allowed=None if payable is None else frozenset(payable),
        )

    async def _verify(self, escrow: EscrowView, calls: StepCalls, rpc: WalletRpc, txset: SecretStr, role: str) -> None:
        """``describe_transfer`` in ``role``'s wallet, then refuse the set unless it pays what the payout asks."""
        own = await calls.rpc("get_address", rpc.get_address())  # the escrow's address, from its own wallet
        described = await calls.rpc("describe_transfer", rpc.describe_transfer(txset))
        why = payout_check.refusal(described.desc, self._expected(escrow, own))
        if why is not None:
            raise PayoutFailed(
                "TransactionSetRefused",
                f"{role} refused to sign the transaction set: {why}. Nothing more was signed and nothing was "
                "submitted: delete this payout and create another",
            )

    def _check_funds(self, escrow: EscrowView) -> None:
        """Nothing unlocked yet (by the escrow's funding watch): wait before syncing. Whether the funds
        suffice is decided by the builder's wallet, which alone knows what earlier payouts spent."""
        spent = escrow.watch.spent_out(escrow.daemon)
        if spent is not None:
            raise PayoutFailed(
                "InsufficientFunds",
                f"escrow {self.spec.escrow_ref} received {funding_status.xmr(spent)} XMR and its payouts spent all "
                "of it: it holds nothing. Nothing was signed: delete this payout (a payment made to the escrow "
                "later is not paid out by a payout made before it)",
            )
        funding = escrow.status.funding
        if funding is None or funding.unlocked == 0:
            raise self._no_funds(f"escrow {self.spec.escrow_ref} has no unlocked funds yet")

    def _no_funds(self, message: str, next_block: bool = False) -> Exception:
        """Wait for funds; a payout that has waited longer than ``payout_funds_timeout`` since it was
        created fails instead, so it is never paid out of a much later payment to the escrow."""
        limit = self.ctx.settings.payout_funds_timeout
        try:
            created = datetime.strptime(self.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return Waiting("AwaitingFunds", message, next_block)
        if (datetime.now(UTC) - created).total_seconds() <= limit:
            return Waiting("AwaitingFunds", message, next_block)
        return PayoutFailed(
            "FundsTimeout",
            f"{message}; this payout has waited for funds longer than {limit:g} s since it was created "
            "(ESCROW_PAYOUT_FUNDS_TIMEOUT). Nothing was signed: delete it and create another once the escrow holds "
            "the funds",
        )

    async def _attempt(self, escrow: EscrowView) -> int:
        """The attempt to go on with, starting a new one when the current one cannot be resumed."""
        await self.secret.load()
        attempt = self.secret.attempt
        if attempt <= self._abandoned or self._interrupted(attempt):
            if attempt:
                why = f"signing attempt {attempt} was interrupted or cannot go on; attempt {attempt + 1} exports fresh infos"
                self.emit("Warning", "SigningRestarted", why)
            attempt += 1
            if attempt > MAX_ATTEMPTS:
                raise PayoutFailed(
                    "AttemptsExhausted",
                    f"{MAX_ATTEMPTS} signing attempts did not produce a transaction (see the Events); nothing was "
                    "submitted: delete this payout and create another",
                )
            await self.secret.start_attempt(attempt, escrow.uid, escrow.spec.pool_ref)
        if self.status.attempt != attempt or self.status.phase == PayoutPhase.PENDING:
            started = payout_status.attempt_started(self.status, self.generation, attempt, self.secret.name)
            started.escrow_uid = escrow.uid
            await self._save(started)
            self.emit("Normal", "Syncing", started.message or "exchanging multisig infos")
        return attempt

    def _interrupted(self, attempt: int) -> bool:
        """A build or sign of ``attempt`` began and recorded nothing: its nonces may be spent."""
        done = self.secret.signatures(attempt)
        return any(self.secret.begun(attempt, role) and done <= index for index, role in enumerate(self.signers))

    async def _sync(self, escrow: EscrowView, names: PayoutNames, attempt: int) -> None:
        role = names.wallet.role

        async def operation(calls: StepCalls, rpc: WalletRpc, work: str) -> SecretStr:
            return await signing.export_info(calls, rpc, escrow.status.restore_height)

        async def record(info: SecretStr) -> None:
            await self.secret.record_info(attempt, role, info)

        def on_done() -> None:
            if self.secret.info(attempt, role) is None:
                raise NewAttempt(f"{names.synced} exists but {role}'s multisig info is not recorded")

        plan = self._plan(escrow, role, names.wallet.final_wallet, names.synced, names, attempt)
        await self._step(escrow, role, f"sync {role}", plan, operation, record, on_done)

    async def _merge(self, escrow: EscrowView, names: PayoutNames, attempt: int) -> None:
        role = names.wallet.role
        infos = [self.secret.info(attempt, other) for other in self.signers if other != role]
        if any(info is None for info in infos):
            raise NewAttempt(f"attempt {attempt} lacks a signer's multisig info")

        async def operation(calls: StepCalls, rpc: WalletRpc, work: str) -> int:
            return await signing.import_infos(
                calls, rpc, [i for i in infos if i is not None], escrow.status.restore_height
            )

        async def record(_: int) -> None:
            return None

        plan = self._plan(escrow, role, names.synced, names.merged, names, attempt)
        await self._step(escrow, role, f"merge {role}", plan, operation, record)

    async def _build(self, escrow: EscrowView, names: PayoutNames, attempt: int) -> None:
        role = names.wallet.role
        needed = self.spec.requested

        async def operation(calls: StepCalls, rpc: WalletRpc, work: str) -> UnsignedSet:
            await self._check_addresses(calls, rpc)
            await calls.rpc("refresh", rpc.refresh(escrow.status.restore_height))
            balance = await calls.rpc("get_balance", rpc.get_balance())
            held, unlocked = funding_status.xmr(balance.balance), funding_status.xmr(balance.unlocked_balance)
            if needed is not None and balance.balance < needed:
                raise PayoutFailed(
                    "InsufficientFunds",
                    f"escrow {self.spec.escrow_ref} holds {held} XMR ({unlocked} unlocked); this payout asks for "
                    f"{funding_status.xmr(needed)} XMR plus the fee. Nothing was signed: delete it and create one "
                    "within the balance",
                )
            if balance.unlocked_balance == 0 or (needed is not None and balance.unlocked_balance < needed):
                want = "some" if needed is None else f"{funding_status.xmr(needed)} XMR plus the fee"
                raise self._no_funds(
                    f"escrow {self.spec.escrow_ref} holds {held} XMR, {unlocked} unlocked; the payout needs {want}",
                    next_block=True,
                )
            await self._record_key_images(escrow, calls, rpc)
            await self.secret.mark_begun(attempt, role)
            destinations = (
                None
                if self.spec.destinations is None
                else [Destination(address=d.address, amount=d.amount) for d in self.spec.destinations]
            )
            return await signing.build(calls, rpc, destinations, self.spec.sweep_to, self.spec.priority)

        async def operation_checked(calls: StepCalls, rpc: WalletRpc, work: str) -> UnsignedSet:
            built = await operation(calls, rpc, work)
            await self._verify(escrow, calls, rpc, built.multisig_txset, role)
            return built

        async def record(built: UnsignedSet) -> None:
            amount = built.amount or sum(built.amount_list)
            await self.secret.record_txset(attempt, 1, built.multisig_txset, amount=amount, fee=built.total_fee)

        plan = self._plan(escrow, role, names.merged, None, names, attempt)
        await self._step(escrow, role, f"build {role}", plan, operation_checked, record)
        log.info("payout %s/%s: transaction built by %s", self.namespace, self.name, role)

    async def _record_key_images(self, escrow: EscrowView, calls: StepCalls, rpc: WalletRpc) -> None:
        """The key images of the escrow's outputs (known once the signers' infos are imported), recorded
        before anything is signed so the chain watch sees the payout spend them."""
        outputs = await calls.rpc("incoming_transfers", rpc.incoming_transfers())
        images = {o.key_image: o.pubkey for o in outputs if o.key_image and o.pubkey and set(o.key_image) != {"0"}}
        await escrow.watch.add_key_images(images)
        self.ctx.watches.get(escrow.daemon).learn(f"{self.namespace}/{escrow.uid}", images)

    async def _check_addresses(self, calls: StepCalls, rpc: WalletRpc) -> None:
        """Every address the payout pays must be one of the escrow wallet's network (asked of the open
        wallet itself); otherwise the payout fails before anything is built or signed."""
        addresses = [d.address for d in self.spec.destinations or []] or [self.spec.sweep_to or ""]
        for address in addresses:
            if (await calls.rpc("validate_address", rpc.validate_address(address))).valid:
                continue
            other = await calls.rpc("validate_address", rpc.validate_address(address, any_net_type=True))
            what = (
                f"a {other.nettype} address" if other.valid else "not a Monero address (its checksum or form is wrong)"
            )
            raise PayoutFailed(
                "AddressInvalid",
                f"{address} is {what}, not one of escrow {self.spec.escrow_ref}'s network. Nothing was signed: "
                "delete this payout and create one with an address of that network",
            )

    async def _cosign(self, escrow: EscrowView, names: PayoutNames, attempt: int, index: int) -> None:
        role = names.wallet.role
        txset = self.secret.txset(attempt, index)
        if txset is None:
            raise NewAttempt(f"attempt {attempt} lacks the set with {index} signature(s)")
        last = index + 1 == len(self.signers)

        async def operation(calls: StepCalls, rpc: WalletRpc, work: str) -> SignedSet:
            await self._verify(escrow, calls, rpc, txset, role)  # before this signer's nonces are touched
            await self.secret.mark_begun(attempt, role)
            return await signing.sign(calls, rpc, txset)

        async def record(signed: SignedSet) -> None:
            hashes = signed.tx_hash_list if last else None
            await self.secret.record_txset(attempt, index + 1, signed.tx_data_hex, hashes=hashes)

        plan = self._plan(escrow, role, names.merged, None, names, attempt)
        await self._step(escrow, role, f"sign {role}", plan, operation, record)
        log.info("payout %s/%s: signed by %s (%d of %d)", self.namespace, self.name, role, index + 1, len(self.signers))

    def _plan(
        self, escrow: EscrowView, role: str, input: str, output: str | None, names: PayoutNames, attempt: int
    ) -> wallet_step.Plan:
        return wallet_step.Plan(
            step=attempt,
            password=escrow.secret.password(role),
            input=input,
            output=output,
            work=names.work(),
            keep_open=False,
        )

    async def _step(
        self,
        escrow: EscrowView,
        role: str,
        label: str,
        plan: wallet_step.Plan,
        operation: wallet_step.Operation[T],
        record: Callable[[T], Awaitable[None]],
        on_done: Callable[[], None] = lambda: None,
    ) -> None:
        async def body(calls: StepCalls, rpc: WalletRpc, fs: WalletfsClient) -> None:
            try:
                await wallet_step.run(calls, rpc, fs, plan, operation, record, on_done)
            except signing.SigningError as exc:
                raise NewAttempt(f"{label}: {exc.message}") from None

        await self._leased(escrow, role, label, plan.step, body)

    async def _leased(
        self,
        escrow: EscrowView,
        role: str,
        label: str,
        step: int,
        body: Callable[[StepCalls, WalletRpc, WalletfsClient], Awaitable[T]],
    ) -> T:
        """Run ``body`` with exclusive use of a pool pod; a lost or refusing pod is replaced."""
        pool = escrow.pool
        losses = errors = 0
        while True:
            creds = await pool.credentials()
            if creds is None:
                raise Waiting("PoolUnavailable", f"pool {escrow.spec.pool_ref} or its Secret does not exist")
            try:
                async with pool.scheduler.lease(
                    self.priority,
                    label=f"{self.name}/{label}",
                    wallet=f"{escrow.uid}/{payout_tag(self.uid)}/{role}",
                ) as lease:
                    rpc, fs = await pool.clients(lease.pod, creds)
                    try:
                        return await body(StepCalls(self.ctx, step, lease, label), rpc, fs)
                    except (WalletRpcUnavailable, WalletfsUnavailable):
                        lease.mark_failed()
                        raise
            except (WalletRpcAuthError, WalletfsAuthError):
                await pool.refresh_credentials()
                losses += 1
            except (PodLost, WalletRpcUnavailable, WalletfsUnavailable):
                losses += 1
            except (WalletRpcError, WalletfsError) as exc:
                errors += 1
                log.warning("payout %s/%s: %s: %s (attempt %d)", self.namespace, self.name, label, exc, errors)
                if errors >= self.ctx.settings.step_attempts:
                    raise Waiting("StepError", f"{label}: {exc}") from None
            if losses >= MAX_POD_LOSSES:
                raise Waiting("PodsUnavailable", f"{label}: {losses} pods were lost or unreachable in a row")

    # --- submitting and confirming --------------------------------------------------------------
    async def _follow(self, escrow: EscrowView, hashes: list[str]) -> None:
        """Submit the recorded transactions unless the daemon has them; follow them to the confirmations."""
        watch = self.ctx.chains.watch(escrow.daemon)
        seen: int | None = None
        while True:
            try:
                tip = await watch.next(seen, or_unreachable=True)
            except MonerodUnavailable as exc:
                raise Waiting("DaemonUnavailable", f"monerod {escrow.daemon}: {exc.detail}", next_block=True) from None
            lookup = await self._lookup(escrow, hashes)
            if not all(lookup.known(h) for h in hashes):
                await self._submit(escrow, hashes)
                lookup = await self._lookup(escrow, hashes)
            heights = [lookup.mined(h) for h in hashes]
            height = max(h for h in heights if h is not None) if all(h is not None for h in heights) else None
            confirmations = tip.height - height if height is not None else 0
            new = payout_status.confirming(self.status, self.generation, height, confirmations, self.spec.confirmations)
            if new.phase == PayoutPhase.CONFIRMED:
                await self._check_spends(escrow, hashes)
                await self._clean_up(escrow)  # before the terminal status: a restart then finds nothing to do
                await self.secret.record_outcome(PayoutPhase.CONFIRMED, "Confirmed", new.message or "", new.height)
                await self._save(new)
                self.emit("Normal", "Confirmed", new.message or "confirmed")
                log.info("payout %s/%s: %s", self.namespace, self.name, new.message)
                return
            if self.status.phase != PayoutPhase.SUBMITTED:
                self.emit("Normal", "Submitted", f"{len(hashes)} transaction(s) submitted: {', '.join(hashes)}")
            await self._save(new)
            seen = tip.height

    async def _check_spends(self, escrow: EscrowView, hashes: list[str]) -> None:
        """Confirmed only when the mined transactions spend the escrow's own outputs: each input's key image
        is one the escrow's payouts recorded from its wallet (its watch Secret)."""
        try:
            decoded = await self.ctx.chains.watch(escrow.daemon).client.decoded_transactions(hashes)
        except MonerodUnavailable as exc:
            raise Waiting("DaemonUnavailable", f"monerod {escrow.daemon}: {exc.detail}", next_block=True) from None
        own = set(escrow.watch.key_images())
        for tx in decoded:
            images = Transaction.from_json(tx.tx_hash, tx.as_json).key_images
            if not images or not set(images) <= own:
                raise PayoutFailed(
                    "TransactionNotOurs",
                    f"transaction {tx.tx_hash} does not spend escrow {self.spec.escrow_ref}'s outputs; this payout "
                    "paid nothing. Check the escrow's balance before creating another payout",
                )

    async def _lookup(self, escrow: EscrowView, hashes: Sequence[str]) -> TxLookup:
        try:
            return await self.ctx.chains.watch(escrow.daemon).client.get_transactions(list(hashes))
        except MonerodUnavailable as exc:
            raise Waiting("DaemonUnavailable", f"monerod {escrow.daemon}: {exc.detail}", next_block=True) from None

    async def _submit(self, escrow: EscrowView, hashes: list[str]) -> None:
        """Hand the recorded, fully signed set to the daemon (the daemon knows none of ``hashes``)."""
        await self.secret.load()
        attempt = self.secret.attempt
        txset = self.secret.txset(attempt, len(self.signers))
        if txset is None or self.secret.hashes(attempt) != hashes:
            raise PayoutFailed(
                "TransactionSetMissing",
                f"Secret {self.secret.name} no longer holds the signed set of transactions {', '.join(hashes)}; "
                "they were never seen by the daemon. Check the escrow's balance before creating another payout",
            )
        await self.ctx.faults.check(Point.PAYOUT_BEFORE_SUBMIT, attempt)
        last = self.signers[-1]
        names = PayoutNames(escrow.wallet(last), self.uid, attempt)
        plan = self._plan(escrow, last, names.merged, None, names, attempt)

        async def operation(calls: StepCalls, rpc: WalletRpc, work: str) -> list[str]:
            try:
                return await signing.submit(calls, rpc, txset)
            except signing.Rejected as exc:
                lookup = await self._lookup(escrow, hashes)
                if all(lookup.known(h) for h in hashes):
                    return hashes  # it was there after all (relayed meanwhile)
                raise PayoutFailed(
                    exc.reason,
                    f"the daemon rejected the transactions ({exc.message}); nothing was paid. Check the escrow's "
                    "balance, then delete this payout and create another",
                ) from None

        async def record(submitted: list[str]) -> None:
            if sorted(submitted) != sorted(hashes):
                log.warning("payout %s/%s: the daemon reports other hashes: %s", self.namespace, self.name, submitted)

        async def body(calls: StepCalls, rpc: WalletRpc, fs: WalletfsClient) -> None:
            await wallet_step.run(calls, rpc, fs, plan, operation, record)

        await self._leased(escrow, last, f"submit {last}", attempt, body)
        await self.ctx.faults.check(Point.PAYOUT_AFTER_SUBMIT, attempt)
        log.info("payout %s/%s: submitted %s", self.namespace, self.name, ", ".join(hashes))

    # --- files and status -----------------------------------------------------------------------
    async def _clean_up(self, escrow: EscrowView) -> None:
        """Delete this payout's copies (the final wallets hold every key)."""
        tag = f"_{payout_tag(self.uid)}_"
        try:
            await asyncio.wait_for(
                delete_files(
                    escrow.pool,
                    escrow.uid,
                    self.priority,
                    f"{self.name}/clean-up",
                    lambda n: tag not in n,
                    self.ctx.faults,
                    what="payout copy",
                ),
                timeout=60,
            )
        except Exception as exc:  # noqa: BLE001 - copies left behind lose nothing; say so
            log.warning(
                "payout %s/%s: copies not deleted (%s); they go with the escrow",
                self.namespace,
                self.name,
                str(exc) or type(exc).__name__,
            )

    async def _save(self, new: EscrowPayoutStatus) -> None:
        if new == self.status:
            return
        try:
            await self.ctx.kube.patch_status(PAYOUT_PLURAL, self.namespace, self.name, new.to_api(), uid=self.uid)
        except ApiException as exc:
            if is_gone(exc):
                raise PayoutGone(f"payout {self.namespace}/{self.name} (uid {self.uid}) no longer exists") from None
            raise
        self.status = new

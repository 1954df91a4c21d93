"""The funding watch of one Ready Escrow: after each new block, what its address received.

It runs in the Escrow's daemon once the key exchange is Ready, for as long as the Escrow exists, on
a pool with a daemon (``spec.daemon``); on an offline pool it waits for the pool to get one. It does
nothing while no block arrives (:mod:`escrow_operator.blocks` says when one does). For each new tip:

1. lease a pool pod for the escrow's *watch wallet* (``{role}_escrow_{uid}_watch``, a copy of the
   first participant's final wallet; the final wallets are never opened in place). A pod that still
   holds it open from the last block is taken back warm; otherwise the copy is made afresh from the
   final wallet and opened;
2. ``refresh`` from the escrow's recorded chain height (``status.restoreHeight``), read the incoming
   transfers, the balance and the wallet's height, and leave it open (unreserved: any step may take
   the pod). The copy is never stored: wallet-rpc 0.18.0.0 trims a stored wallet's block-hash chain
   to just below its oldest transfer, and a process that refreshes such a wallet can stop advancing
   (``out_of_hashchain_bounds_error`` on every refresh, measured on regtest after two payments), so
   the copy is only ever scanned from the final wallet's state, in memory;
3. :func:`escrow_operator.funding_status.observe` turns that into ``status.funding``, the ``Funded``
   condition and Events; the status is written only when it changed.

Wallets made on an offline pool have no recorded height: wallet2 put their scan start at a clock
estimate of the mainnet height when they were made. On mainnet that is safe (no payment can predate
the address); on a chain below that height (regtest, a private testnet) they cannot see it, and
``status.funding.message`` says so (docs/operations.md, Funding).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from . import funding_status
from .api import ESCROW_PLURAL, EscrowSpec, EscrowStatus, FundingPayout, get_condition
from .context import Context
from .escrow_secret import EscrowSecret
from .funding_status import Scan
from .kube import is_gone
from .naming import WalletNames, final_step
from .pools import PoolRuntime
from .scheduler import Lease, PodLost, Priority
from .wallet_step import StepCalls
from .walletfs.client import WalletfsAuthError, WalletfsClient, WalletfsError, WalletfsUnavailable
from .walletrpc import WalletRpc, WalletRpcAuthError, WalletRpcError, WalletRpcUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

EmitEvent = Callable[[str, str, str], None]  # (type, reason, message)

#: Pods lost in a row before a scan is given up until the next block.
MAX_POD_LOSSES = 10


class FundingGone(Exception):
    """The Escrow object was deleted (or replaced by one of the same name)."""


class FundingWatch:
    def __init__(
        self,
        ctx: Context,
        body: dict[str, Any],
        emit: EmitEvent,
        payouts: Callable[[], Iterable[FundingPayout]] = list,
    ) -> None:
        meta = body["metadata"]
        self.ctx, self.emit = ctx, emit
        #: The escrow's submitted payouts known now (the operator's payout index).
        self.payouts = payouts
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.generation: int | None = meta.get("generation")
        self.spec = EscrowSpec.model_validate(body["spec"])
        self.status = EscrowStatus.model_validate(body.get("status") or {})
        self.role = self.spec.participants[0]
        self.names = WalletNames(self.role, self.uid, final_step(len(self.spec.participants), self.spec.threshold))
        self.priority = Priority.of(meta, background=True)  # behind every step of any escrow
        self.secret = EscrowSecret(ctx.kube, self.namespace, self.name, self.uid)
        self.pool: PoolRuntime = ctx.pools.get(self.namespace, self.spec.pool_ref)

    async def run(self) -> None:
        """Follow the chain until cancelled; raises :class:`FundingGone` when the Escrow is gone."""
        await self.secret.load()
        seen = self.status.funding.height if self.status.funding is not None else None
        while True:
            daemon = self.pool.daemon
            if daemon is None:
                await self.pool.daemon_changed()
                continue
            watch = self.ctx.chains.watch(daemon)
            tip = await _first(watch.next(seen), self.pool.daemon_changed())
            if tip is None:
                continue  # the pool's daemon changed: follow the new one
            await self.scan(tip.height)
            seen = tip.height

    async def scan(self, height: int) -> None:
        """Read the watch wallet after block ``height`` and publish what changed."""
        if self.status.restore_height is None and self.status.started_at is not None:
            start = funding_status.offline_scan_start(self.pool.network, self.status.started_at)
            if height < start:  # refresh would never return: say why instead of holding a pod
                await self._unreadable(height, f"they start at about block {start:,}, above this chain's height")
                return
        losses = 0
        while True:
            creds = await self.pool.credentials()
            if creds is None:  # the pool (or its Secret) is gone: wait for the next reconcile
                await self.pool.exists.wait()
                if await self.pool.credentials() is None:
                    self.pool.exists.clear()
                continue
            try:
                async with self.pool.scheduler.lease(
                    self.priority, label=f"{self.name}/funding", wallet=f"{self.uid}/watch"
                ) as lease:
                    rpc, fs = self.pool.rpc(lease.pod, creds), self.pool.fs(lease.pod, creds)
                    try:
                        found = await self._read(StepCalls(self.ctx, self.names.final, lease), rpc, fs, lease, height)
                    except (WalletRpcUnavailable, WalletfsUnavailable):
                        lease.mark_failed()
                        raise
                break
            except (WalletRpcAuthError, WalletfsAuthError):
                await self.pool.refresh_credentials()
                losses += 1
            except (PodLost, WalletRpcUnavailable, WalletfsUnavailable):
                losses += 1
            except (WalletRpcError, WalletfsError) as exc:
                await self._unreadable(height, str(exc))
                return
            if losses >= MAX_POD_LOSSES:
                await self._unreadable(height, f"{losses} pods were lost or unreachable in a row")
                return
        new, events = funding_status.observe(self.status, self.spec, self.generation, found, self.payouts())
        funded = get_condition(new.conditions, funding_status.FUNDED)
        log.info(
            "escrow %s/%s funding at height %d (tip %d): %d transfers, %d received, %s",
            self.namespace,
            self.name,
            found.height,
            height,
            len(found.transfers),
            sum(t.amount for t in found.transfers),
            "no amount" if funded is None else f"Funded={funded.status} ({funded.reason})",
        )
        await self._save(new)
        for event in events:
            self.emit(event.type, event.reason, event.message)

    async def _read(self, calls: StepCalls, rpc: WalletRpc, fs: WalletfsClient, lease: Lease, height: int) -> Scan:
        watch, password = self.names.watch, self.secret.password(self.role)
        if lease.warm is None:
            # A stored copy (wallet-rpc saves the open wallet when it stops) is never reused: make it
            # afresh from the final wallet, whose hash chain no store has trimmed since it was published.
            await calls.rpc("close_wallet", rpc.close_wallet(autosave=False), point="drop_stale")
            await calls.fs(fs.delete(watch))
            await calls.fs(fs.copy(self.names.final_wallet, watch))
            await calls.rpc("open_wallet", rpc.open_wallet(watch, password))
        await calls.rpc("refresh", rpc.refresh(self.status.restore_height))
        transfers = await calls.rpc("get_transfers", rpc.get_transfers_in())
        balance = await calls.rpc("get_balance", rpc.get_balance())
        scanned = await calls.rpc("get_height", rpc.get_height())
        lease.keep(watch, reserved=False)
        return Scan(height=max(scanned, height), transfers=transfers.incoming, unlocked=balance.unlocked_balance)

    async def _unreadable(self, height: int, detail: str) -> None:
        if self.status.restore_height is None:
            message = (
                f"the wallets were made on an offline pool, so their scan starts at wallet2's clock estimate of the "
                f"{self.pool.network} height; this chain (height {height}) cannot be scanned: {detail}"
            )
        else:
            message = f"the escrow's wallet could not be read at height {height}: {detail}"
        new = funding_status.unreadable(self.status, message)
        if self.status.funding is None or not self.status.funding.message:
            self.emit("Warning", "FundingUnreadable", message[:1000])
            log.warning("escrow %s/%s: %s", self.namespace, self.name, message)
        await self._save(new)

    async def _save(self, new: EscrowStatus) -> None:
        if new == self.status:
            return
        try:
            await self.ctx.kube.patch_status(ESCROW_PLURAL, self.namespace, self.name, new.to_api(), uid=self.uid)
        except ApiException as exc:
            if is_gone(exc):
                raise FundingGone(f"escrow {self.namespace}/{self.name} (uid {self.uid}) no longer exists") from None
            raise
        self.status = new


async def _first(wanted: Coroutine[Any, Any, T], other: Coroutine[Any, Any, None]) -> T | None:
    """Await ``wanted`` unless ``other`` finishes first (then None); the loser is cancelled."""
    first, second = asyncio.ensure_future(wanted), asyncio.ensure_future(other)
    try:
        done, _ = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (first, second):
            task.cancel()
    if first in done and not first.cancelled():
        result: T = first.result()
        return result
    return None

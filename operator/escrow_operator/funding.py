"""The funding watch of one Ready Escrow: what its address received, after each new block.

It runs once the key exchange is Ready, for as long as the Escrow exists:

1. on a pool with a daemon (``spec.daemon``; an offline pool waits for one, and nothing is read until
   then), the escrow's private view key and address are recorded in its watch Secret in the operator's
   namespace (:class:`escrow_operator.watch_secret.WatchSecret`, where no namespace user can write):
   read once from a copy of a final wallet (``query_key``, the address), checked against each other
   (:class:`escrow_operator.viewkeys.WatchKeys`) on every load and never logged. Nothing else of the
   wallets is needed to watch it, and no wallet-rpc call is made for it after that;
2. the escrow joins the :class:`escrow_operator.chainwatch.ChainWatch` of that daemon, which scans each
   block once for every escrow, from the height the escrow's wallets were made
   (``status.restoreHeight``), and saves what it finds in the same watch Secret (``ledger``);
3. each time the chain watch's figures for it change, :func:`escrow_operator.funding_status.observe`
   turns them into ``status.funding``, the ``Funded`` condition and Events; the status is written only
   when it changed.

Wallets made on an offline pool have no recorded height: wallet2 put their scan start at a clock
estimate of the network's height when they were made, and the watch starts there too; on a chain below
that estimate (regtest, a private testnet) it starts at the genesis block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import funding_status
from .api import ESCROW_PLURAL, EscrowSpec, EscrowStatus, FundingPayout, get_condition
from .chainwatch import Watched, first
from .context import Context
from .escrow_secret import EscrowSecret
from .funding_status import Scan
from .kube import is_gone
from .naming import WalletNames, final_step
from .pools import PoolRuntime
from .scheduler import PodLost, Priority
from .viewkeys import BadKeys, WatchKeys
from .wallet_step import StepCalls
from .walletfs.client import WalletfsAuthError, WalletfsError, WalletfsUnavailable
from .walletrpc import WalletRpcAuthError, WalletRpcError, WalletRpcUnavailable
from .watch_ledger import Ledger
from .watch_secret import WatchSecret

log = logging.getLogger(__name__)

EmitEvent = Callable[[str, str, str], None]  # (type, reason, message)

#: Pods lost in a row before reading the keys is given up for a while.
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
        self.watch = WatchSecret(ctx.kube, ctx.settings.operator_namespace, (self.namespace, self.name), self.uid)
        self.pool: PoolRuntime = ctx.pools.get(self.namespace, self.spec.pool_ref)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.uid}"

    async def run(self) -> None:
        """Follow the chain until cancelled; raises :class:`FundingGone` when the Escrow is gone."""
        await self.secret.load()
        await self.watch.load_if_present()
        keys = self.watch.checked_keys()  # None: not recorded yet, or not holding together: read again
        while True:
            daemon = self.pool.daemon
            if daemon is None:
                await self.pool.daemon_changed()
                continue
            if keys is None:  # once, when the escrow is first watched (Ready on a pool with a daemon)
                keys = await self._record_keys()
                continue
            text, joined = self.watch.ledger(daemon)
            ledger = Ledger.from_json(text)
            ledger.learn(self.watch.key_images())

            async def save(ledger_json: str, joined: bool, daemon: str = daemon) -> None:
                await self.watch.save_ledger(daemon, ledger_json, joined)

            start = await self._start(daemon)
            entry = Watched(self.key, keys, start, ledger, joined, save)
            chain = self.ctx.watches.get(daemon)
            chain.watch(entry)
            try:
                while await first(entry.changed.wait(), self.pool.daemon_changed()):
                    entry.changed.clear()
                    if entry.scan is not None:
                        await self.publish(entry.scan)
            finally:
                chain.unwatch(entry.key)

    async def _start(self, daemon: str) -> int:
        """The first block that can pay the escrow: the height recorded before its wallets were made."""
        if self.status.restore_height is not None:
            return self.status.restore_height
        if self.status.started_at is None:
            return 0
        estimate = funding_status.offline_scan_start(self.pool.network, self.status.started_at)
        tip = await self.ctx.chains.watch(daemon).next(None)
        return estimate if estimate <= tip.height else 0

    async def _record_keys(self) -> WatchKeys | None:
        """Read the view key and address from a copy of the first participant's final wallet, once."""
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
                    self.priority, label=f"{self.name}/watch-keys", wallet=f"{self.uid}/watch"
                ) as lease:
                    rpc, fs = await self.pool.clients(lease.pod, creds)
                    calls, watch = StepCalls(self.ctx, self.names.final, lease), self.names.watch
                    try:
                        await calls.rpc("close_wallet", rpc.close_wallet(autosave=False), point="drop_stale")
                        await calls.fs(fs.delete(watch))
                        await calls.fs(fs.copy(self.names.final_wallet, watch))
                        await calls.rpc("open_wallet", rpc.open_wallet(watch, self.secret.password(self.role)))
                        view = await calls.rpc("query_key", rpc.query_key("view_key"))
                        address = await calls.rpc("get_address", rpc.get_address())
                        await calls.rpc("close_wallet", rpc.close_wallet(autosave=False))
                        await calls.fs(fs.delete(watch))
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
                await self._unreadable(f"its view key could not be read: {exc}")
                await self.pool.daemon_changed()  # try again later, not in a loop
                return None
            if losses >= MAX_POD_LOSSES:
                await self._unreadable(f"its view key could not be read: {losses} pods were lost in a row")
                losses = 0
        if self.status.address is not None and address != self.status.address:
            log.warning(
                "escrow %s/%s: status.address is not its wallet's address; watching the wallet's",
                self.namespace,
                self.name,
            )
        try:
            keys = await self.watch.record_keys(view, address)
        except BadKeys as exc:
            await self._unreadable(f"its wallet's keys do not fit together ({exc})")
            await self.pool.daemon_changed()
            return None
        log.info("escrow %s/%s: view key recorded for the chain watch", self.namespace, self.name)
        return keys

    async def publish(self, found: Scan) -> None:
        """``status.funding`` and the Funded condition from the chain watch's figures."""
        new, events = funding_status.observe(self.status, self.spec, self.generation, found, self.payouts())
        if new == self.status:
            return
        funded = get_condition(new.conditions, funding_status.FUNDED)
        log.info(
            "escrow %s/%s funding at height %d: %d transfers, %d received, %s",
            self.namespace,
            self.name,
            found.height,
            len(found.transfers),
            sum(t.amount for t in found.transfers),
            "no amount" if funded is None else f"Funded={funded.status} ({funded.reason})",
        )
        await self._save(new)
        for event in events:
            self.emit(event.type, event.reason, event.message)

    async def _unreadable(self, detail: str) -> None:
        message = f"the escrow cannot be watched: {detail}"
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

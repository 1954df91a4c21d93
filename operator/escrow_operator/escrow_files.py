"""Deleting an escrow's files from the shared volume: the one place that does it.

Used when an escrow turns Ready (intermediates and stale work copies go, the final wallets stay),
when it fails (work copies go, every published wallet stays for inspection and retry) and when it is
deleted (per its ``walletRetention``). The deletion runs on a leased pod (``rpc=False``: it touches
files only and disturbs no wallet kept open in wallet-rpc).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .faults import NONE as NO_FAULTS
from .faults import Faults, Point
from .naming import WALLET_NAME_RE
from .pools import PoolRuntime
from .scheduler import PodLost
from .walletfs.client import WalletfsAuthError, WalletfsUnavailable

log = logging.getLogger(__name__)


class PoolUnusable(Exception):
    """The pool's Secret is gone (the pool was deleted): its pods cannot be reached."""


def is_work_copy(name: str) -> bool:
    """A copy the operator works on (``..._work_{step}_{random}``, the funding watch's ``..._watch``, a
    payout's ``..._pay_...``): never a published wallet of the key exchange; deleting it loses nothing
    (the final wallets hold every key)."""
    match = WALLET_NAME_RE.fullmatch(name)
    return match is not None and (match["stage"].startswith(("work_", "pay_")) or match["stage"] == "watch")


async def delete_files(
    pool: PoolRuntime,
    uid: str,
    priority: Any,
    label: str,
    keep: Callable[[str], bool],
    faults: Faults = NO_FAULTS,
    what: str = "wallet",
) -> list[str]:
    """Delete every wallet of escrow ``uid`` for which ``keep`` is false; return the names deleted.

    ``what`` names them in the log line of each (``Deleted intermediate file: NAME``).

    Waits for a pod like any step (the caller bounds the wait when it must); a pod lost midway is
    replaced and the listing starts over, so the result is the same whatever fails.
    """
    deleted: list[str] = []
    while True:
        creds = await pool.credentials()
        if creds is None:
            raise PoolUnusable(f"the Secret of WalletPool {pool.namespace}/{pool.name} is missing")
        try:
            async with pool.scheduler.lease(priority, label=label, rpc=False) as lease:
                fs = await pool.walletfs(lease.pod, creds)
                try:
                    for entry in await fs.list(uid):
                        if not keep(entry.name):
                            await fs.delete(entry.name)
                            deleted.append(entry.name)
                            log.info("Deleted %s file: %s", what, entry.name)
                            await faults.check(Point.CLEANUP_AFTER_DELETE, label=label)
                except WalletfsUnavailable:
                    lease.mark_failed()
                    raise
            return deleted
        except WalletfsAuthError:  # a pod with other credentials: re-read the Secret, take another pod
            await pool.refresh_credentials()
        except (PodLost, WalletfsUnavailable):
            continue

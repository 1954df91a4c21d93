"""New blocks of each monerod the pools name: one poll loop per daemon, shared by every waiter.

A waiter says which height it has seen and sleeps on an event until the tip moves past it; nothing
rescans a wallet while no block has arrived. The tip is read with monerod's ``get_info`` every
``block_poll_interval`` seconds (a cheap call to monerod, no wallet work).
"""

from __future__ import annotations

import asyncio
import logging

from .monerod import Info, Monerod, MonerodUnavailable
from .settings import OperatorSettings

log = logging.getLogger(__name__)


class BlockWatch:
    """Follows one monerod's chain tip."""

    def __init__(self, address: str, settings: OperatorSettings) -> None:
        self.address = address
        self.client = Monerod(address, timeout=settings.daemon_timeout)
        self.interval = settings.block_poll_interval
        self.tip: Info | None = None
        #: Why the last poll failed (None: it answered).
        self.error: str | None = None
        self._moved = asyncio.Event()  # set (and replaced) whenever the tip or the error changes
        self._task: asyncio.Task[None] | None = None

    async def next(self, seen: int | None, *, or_unreachable: bool = False) -> Info:
        """The tip once its height is above ``seen`` (``None``: as soon as one is known).

        ``or_unreachable``: raise :class:`MonerodUnavailable` instead of waiting while the daemon does
        not answer (a follower that must say so in its status)."""
        self._start()
        while self.tip is None or (seen is not None and self.tip.height <= seen):
            if or_unreachable and self.error is not None:
                raise MonerodUnavailable(self.address, self.error)
            await self._moved.wait()
        return self.tip

    async def changed(self) -> None:
        """Wait for the next change of the tip or of :attr:`error`."""
        self._start()
        await self._moved.wait()

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name=f"blocks {self.address}")

    def _notify(self) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def _poll(self) -> None:
        while True:
            try:
                tip = await self.client.get_info()
            except MonerodUnavailable as exc:
                if self.error is None:
                    log.warning("monerod %s unreachable: %s", self.address, exc.detail)
                    self.error = exc.detail
                    self._notify()
            else:
                previous = self.tip
                changed = (
                    self.error is not None
                    or previous is None
                    or (tip.height, tip.top_block_hash) != (previous.height, previous.top_block_hash)
                )
                if self.error is not None:
                    log.info("monerod %s answers again at height %d", self.address, tip.height)
                self.error, self.tip = None, tip
                if changed:
                    self._notify()
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.aclose()


class Chains:
    """The block watches of every daemon address in use, created on first mention."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self._watches: dict[str, BlockWatch] = {}

    def watch(self, address: str) -> BlockWatch:
        found = self._watches.get(address)
        if found is None:
            found = self._watches[address] = BlockWatch(address, self.settings)
        return found

    async def close(self) -> None:
        for watch in self._watches.values():
            await watch.close()
        self._watches.clear()

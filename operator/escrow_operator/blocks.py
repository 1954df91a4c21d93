"""New blocks of each monerod the pools name: one follower per daemon, shared by every waiter.

A waiter says which height it has seen and sleeps on an event until the tip moves past it; nothing
rescans a wallet while no block has arrived. The tip is always read with monerod's ``get_info`` (a
cheap call to monerod, no wallet work). When the pool names monerod's ZMQ publisher
(``spec.daemonZmq``), each ``json-minimal-chain_main`` message monerod publishes as it adds blocks
reads it at once, and a slow poll (``zmq_poll_interval``) only covers messages a SUB socket can lose
(while it reconnects); without one, ``get_info`` is polled every ``block_poll_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import zmq
import zmq.asyncio

from .monerod import Info, Monerod, MonerodUnavailable
from .settings import OperatorSettings

log = logging.getLogger(__name__)

#: What monerod publishes on ``--zmq-pub`` when blocks join its main chain.
CHAIN_TOPIC = b"json-minimal-chain_main"


class BlockWatch:
    """Follows one monerod's chain tip."""

    def __init__(self, address: str, settings: OperatorSettings) -> None:
        self.address = address
        self.client = Monerod(address, timeout=settings.daemon_timeout)
        self.settings = settings
        self.zmq: str | None = None  # monerod's publisher host:port, when a pool names one
        self.tip: Info | None = None
        #: Why the last poll failed (None: it answered).
        self.error: str | None = None
        self._moved = asyncio.Event()  # set (and replaced) whenever the tip or the error changes
        self._task: asyncio.Task[None] | None = None
        self._subscriber: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()  # a block was published: read the tip now

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

    @property
    def interval(self) -> float:
        """Seconds between polls: a safety net when blocks are pushed, the only news when not or while
        the daemon does not answer."""
        if self.zmq and self.error is None:
            return self.settings.zmq_poll_interval
        return self.settings.block_poll_interval

    def use_zmq(self, endpoint: str | None) -> None:
        """Follow monerod's ZMQ publisher at ``endpoint`` (host:port; ``None``: poll only)."""
        if endpoint == self.zmq:
            return
        self.zmq = endpoint
        if self._subscriber is not None:
            self._subscriber.cancel()
            self._subscriber = None
        if self._task is not None and not self._task.done():
            self._start_subscriber()
            self._kick.set()  # the poll interval changed

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name=f"blocks {self.address}")
            self._start_subscriber()

    def _start_subscriber(self) -> None:
        if self.zmq is not None and (self._subscriber is None or self._subscriber.done()):
            self._subscriber = asyncio.create_task(self._subscribe(self.zmq), name=f"blocks zmq {self.zmq}")

    async def _subscribe(self, endpoint: str) -> None:
        """Read the tip at each chain message; the socket reconnects by itself when monerod restarts."""
        context = zmq.asyncio.Context.instance()
        socket = context.socket(zmq.SUB)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SUBSCRIBE, CHAIN_TOPIC)
            socket.connect(f"tcp://{endpoint}")
            log.info("monerod %s: following blocks published on %s", self.address, endpoint)
            while True:
                await socket.recv()  # the content is not needed: get_info tells the tip
                self._kick.set()
        except zmq.ZMQError as exc:  # a malformed endpoint: the poll carries on at its ZMQ pace
            log.warning("monerod %s: cannot subscribe to %s: %s", self.address, endpoint, exc)
        finally:
            socket.close()

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.interval)
            self._kick.clear()

    async def close(self) -> None:
        tasks = [t for t in (self._task, self._subscriber) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.aclose()


class Chains:
    """The block watches of every daemon address in use, created on first mention."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self._watches: dict[str, BlockWatch] = {}
        self._named: dict[tuple[str, str], tuple[str | None, str | None]] = {}  # pool -> (daemon, zmq)

    def watch(self, address: str) -> BlockWatch:
        found = self._watches.get(address)
        if found is None:
            found = self._watches[address] = BlockWatch(address, self.settings)
        return found

    def configure(self, pool: tuple[str, str], address: str | None, zmq: str | None) -> None:
        """Pool ``(namespace, name)`` names daemon ``address`` (``None``: offline) and its ZMQ publisher.

        A daemon follows the publisher that any pool naming it gives (the first in name order when
        pools disagree), so a pool that names only the daemon does not turn pushes off for the others."""
        previous = self._named.get(pool, (None, None))[0]
        self._named[pool] = (address, zmq)
        for daemon in {previous, address}:
            if daemon is None:
                continue
            given = sorted((p, z) for p, (a, z) in self._named.items() if a == daemon and z is not None)
            self.watch(daemon).use_zmq(given[0][1] if given else None)

    async def close(self) -> None:
        for watch in self._watches.values():
            await watch.close()
        self._watches.clear()

"""Which ZMQ publisher each daemon follows when pools name daemons and publishers (blocks.Chains)."""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from escrow_operator.blocks import CHAIN_TOPIC, Chains
from escrow_operator.monerod import Info
from escrow_operator.settings import OperatorSettings


def test_a_daemon_follows_the_publisher_a_pool_names_until_no_pool_names_one() -> None:
    async def run() -> None:
        chains = Chains(OperatorSettings(block_poll_interval=5, zmq_poll_interval=60))
        try:
            chains.configure(("shop", "a"), "node:18081", "node:18084")
            chains.configure(("shop", "b"), "node:18081", None)  # names the daemon only
            watch = chains.watch("node:18081")
            assert (watch.zmq, watch.interval) == ("node:18084", 60)
            chains.configure(("shop", "c"), "other:18081", "other:18084")
            assert chains.watch("other:18081").zmq == "other:18084"
            chains.configure(("shop", "a"), "other:18081", "other:18084")  # a moves to the other daemon
            assert (watch.zmq, watch.interval) == (None, 5)
            chains.configure(("shop", "c"), None, None)  # deleted, or offline: a still names the publisher
            assert chains.watch("other:18081").zmq == "other:18084"
            chains.configure(("shop", "a"), None, None)
            assert chains.watch("other:18081").zmq is None
        finally:
            await chains.close()

    asyncio.run(run())


def test_pools_that_disagree_resolve_in_name_order() -> None:
    async def run() -> None:
        chains = Chains(OperatorSettings())
        try:
            chains.configure(("shop", "z"), "node:18081", "node:2")
            chains.configure(("shop", "a"), "node:18081", "node:1")
            assert chains.watch("node:18081").zmq == "node:1"
            chains.configure(("shop", "a"), "node:18081", None)
            assert chains.watch("node:18081").zmq == "node:2"
        finally:
            await chains.close()

    asyncio.run(run())


class FakeDaemon:
    """monerod's get_info, as the watch reads it (the chain itself is out of scope here)."""

    def __init__(self) -> None:
        self.height = 1
        self.calls = 0

    async def get_info(self) -> Info:
        self.calls += 1
        return Info(height=self.height, top_block_hash=f"{self.height:064x}")

    async def aclose(self) -> None:
        pass


def test_a_published_block_is_read_at_once_not_at_the_next_poll() -> None:
    """A real ZMQ publisher in the test: the watch polls every 600 s, so only the push can tell it."""

    async def run() -> None:
        context = zmq.asyncio.Context()
        publisher = context.socket(zmq.PUB)
        port = publisher.bind_to_random_port("tcp://127.0.0.1")
        chains = Chains(OperatorSettings(zmq_poll_interval=600))
        chains.configure(("shop", "a"), "node:18081", f"127.0.0.1:{port}")
        watch = chains.watch("node:18081")
        daemon = FakeDaemon()
        watch.client = daemon  # type: ignore[assignment]
        try:
            assert (await asyncio.wait_for(watch.next(None), 5)).height == 1
            daemon.height = 2
            waiter = asyncio.ensure_future(watch.next(1))
            while not waiter.done():  # a SUB socket drops what is published before it has connected
                await publisher.send(CHAIN_TOPIC + b':{"first_height":2}')
                await asyncio.wait([waiter], timeout=0.2)
            assert waiter.result().height == 2
            assert daemon.calls < 50
        finally:
            await chains.close()
            publisher.close(0)
            context.term()

    asyncio.run(asyncio.wait_for(run(), 30))

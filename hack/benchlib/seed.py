"""The project's prior ("seed") scheduling policy, emulated on the same pool for comparison.

The seed design ran the same 2-of-3 key exchange with:

- a global stagger: escrow i starts 25 s after escrow i-1 (all N are submitted at once, at t0);
- a 10 s pause after every round of an escrow (the last one included) before it goes on;
- round-robin pod choice: every step takes the next pod in turn, and waits for that pod if another
  step holds it, even while other pods are idle;
- one step per pod at a time.

The driver runs the exact file protocol of the operator's round engine (exchange.py) directly against
the pool pods' wallet-rpc and walletfs sidecar, with the operator's own clients: walletfs copies the
input to a work name, wallet-rpc opens it and runs the round, closes it, walletfs publishes it under
the next round's name; round 0 creates the wallet. Messages live in memory (a benchmark keeps no
Secret). The pauses and the stagger are the emulated policy, not waits for a condition.

It never shares a wallet-rpc process with the operator: it is run with the operator stopped, and with
escrow ids of its own (no Escrow objects).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from escrow_operator import multisig
from escrow_operator.api import DEFAULT_PARTICIPANTS, DEFAULT_THRESHOLD
from escrow_operator.naming import WalletNames, final_step
from escrow_operator.pool_secret import PoolCredentials
from escrow_operator.settings import RPC_PORT, WALLETFS_PORT
from escrow_operator.walletfs.client import WalletfsClient
from escrow_operator.walletrpc import Version, WalletRpc

from .harness import Bench, Pool
from .measure import total_cpu_seconds
from .report import common_figures

HOOK = multisig.PassThrough()
STAGGER_S = 25.0
ROUND_PAUSE_S = 10.0


@dataclass
class SeedPod:
    name: str
    rpc: WalletRpc
    fs: WalletfsClient
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    busy: float = 0.0  # seconds spent in steps

    async def aclose(self) -> None:
        await self.rpc.aclose()
        await self.fs.aclose()


@dataclass
class SeedEscrow:
    uid: str
    names: dict[str, WalletNames]
    passwords: dict[str, SecretStr]
    messages: dict[int, dict[str, SecretStr]] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    ready_at: float | None = None


@dataclass
class SeedResult:
    started: float
    ready_at: list[float]
    busy: float  # pod-seconds spent in steps
    steps: int


def seed_pods(pool: Pool, creds: PoolCredentials) -> list[SeedPod]:
    """Clients for every ready pod of the pool, built as the operator builds them (pools.py)."""
    pods = []
    for pod in pool.pods:
        rpc = WalletRpc(f"http://{pod.ip}:{RPC_PORT}/json_rpc", creds.username, creds.password)
        fs = WalletfsClient(pod.ip, creds.walletfs_token, port=WALLETFS_PORT)
        pods.append(SeedPod(pod.name, rpc, fs))
    return pods


class SeedDriver:
    def __init__(
        self,
        pods: list[SeedPod],
        roles: tuple[str, ...] = DEFAULT_PARTICIPANTS,
        threshold: int = DEFAULT_THRESHOLD,
        stagger: float = STAGGER_S,
        pause: float = ROUND_PAUSE_S,
    ) -> None:
        if not pods:
            raise ValueError("the seed policy needs at least one ready pod")
        self.pods = pods
        self.roles = roles
        self.threshold = threshold
        self.final = final_step(len(roles), threshold)
        self.stagger = stagger
        self.pause = pause
        self._turn = itertools.count()
        self._steps = 0
        self.version: Version | None = None

    async def run(self, escrows: int) -> SeedResult:
        self.version = await self.pods[0].rpc.get_version()
        started = time.time()
        jobs = [self._new_escrow() for _ in range(escrows)]
        async with asyncio.TaskGroup() as group:
            for index, escrow in enumerate(jobs):
                group.create_task(self._escrow(escrow, started + index * self.stagger))
        ready = [escrow.ready_at for escrow in jobs if escrow.ready_at is not None]
        return SeedResult(started, ready, sum(pod.busy for pod in self.pods), self._steps)

    def _new_escrow(self) -> SeedEscrow:
        uid = str(uuid.uuid4())
        return SeedEscrow(
            uid=uid,
            names={role: WalletNames(role, uid, self.final) for role in self.roles},
            passwords={role: SecretStr(secrets.token_urlsafe(32)) for role in self.roles},
        )

    async def _escrow(self, escrow: SeedEscrow, start_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at - time.time()))  # the policy's global stagger
        for step in range(self.final + 1):
            async with asyncio.TaskGroup() as group:
                for role in self.roles:
                    group.create_task(self._step(escrow, role, step))
            await asyncio.sleep(self.pause)  # the policy's pause after each round
        if len(set(escrow.addresses.values())) != 1 or len(escrow.addresses) != len(self.roles):
            raise RuntimeError(f"seed escrow {escrow.uid}: participants report different addresses")
        await self._clean_up(escrow)
        escrow.ready_at = time.time()

    def _next_pod(self) -> SeedPod:
        return self.pods[next(self._turn) % len(self.pods)]

    async def _step(self, escrow: SeedEscrow, role: str, step: int) -> None:
        pod = self._next_pod()
        async with pod.lock:  # one step per pod at a time; wait for this pod even if others are free
            started = time.monotonic()
            await self._run_on_pod(pod, escrow, role, step)
            pod.busy += time.monotonic() - started
            self._steps += 1

    async def _run_on_pod(self, pod: SeedPod, escrow: SeedEscrow, role: str, step: int) -> None:
        """One step as the prior design ran it: always a fresh copy, opened and closed (the protocol's
        calls come from escrow_operator.multisig, as the operator's)."""
        names, password = escrow.names[role], escrow.passwords[role]
        rpc = pod.rpc
        work = names.work(step)
        await rpc.close_wallet(autosave=False)  # whatever an earlier step left open is dropped
        if step == 0:
            result = await multisig.create(HOOK, rpc, work, password)
        else:
            source = names.input_of(step)
            assert source is not None and self.version is not None
            await pod.fs.copy(source, work)
            await rpc.open_wallet(work, password)
            previous = {r: escrow.messages[step - 1][r] for r in self.roles}  # in role order, as the operator
            shape = multisig.Shape(self.threshold, len(self.roles))
            result = await multisig.exchange(HOOK, rpc, step, shape, role, password, previous, self.version)
        if result.message is not None:
            escrow.messages.setdefault(step, {})[role] = result.message
        if result.address is not None:
            escrow.addresses[role] = result.address
        await rpc.close_wallet(autosave=True)
        published = await pod.fs.publish(work, names.output_of(step))
        if published.already_published:
            await pod.fs.delete(work)

    async def _clean_up(self, escrow: SeedEscrow) -> None:
        """Delete the escrow's intermediate wallets (any pod's sidecar: the volume is shared)."""
        finals = {names.final_wallet for names in escrow.names.values()}
        fs = self.pods[0].fs
        for entry in await fs.list(escrow.uid):
            if entry.name not in finals:
                await fs.delete(entry.name)


async def run_seed(pool: Pool, creds: PoolCredentials, escrows: int, timeout: float) -> SeedResult:
    pods = seed_pods(pool, creds)
    try:
        async with asyncio.timeout(timeout):
            return await SeedDriver(pods).run(escrows)
    finally:
        for pod in pods:
            await pod.aclose()


def run_seed_policy(bench: Bench, pool: Pool, escrows: int, timeout: float) -> dict[str, Any]:
    """Run ``escrows`` key exchanges on ``pool`` with the seed policy (the operator must be stopped)."""
    if bench.operator is not None:
        raise RuntimeError("the seed policy must not share the pool's wallet-rpc processes with a running operator")
    creds = PoolCredentials.from_secret(bench.pool_secret(pool))
    rpc_pids = bench.wallet_rpc_pids(pool)
    rpc_cpu0 = total_cpu_seconds(rpc_pids)
    result = asyncio.run(run_seed(pool, creds, escrows, timeout))
    rpc_cpu = total_cpu_seconds(rpc_pids) - rpc_cpu0
    wall = max(result.ready_at) - result.started
    to_ready = sorted(t - result.started for t in result.ready_at)
    figures = common_figures("seed", escrows, len(pool.pods), wall, to_ready, rpc_cpu, result.busy)
    figures.update({"stagger_s": STAGGER_S, "round_pause_s": ROUND_PAUSE_S, "steps": result.steps})
    return figures

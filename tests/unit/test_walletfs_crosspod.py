"""Two walletfs processes (the sidecars of two pool pods) on one shared wallet directory.

The guarantees must hold across processes, not just inside one: of two publishes of one target exactly
one wins, with its whole file set; a publish committed by a sidecar that dies is finished by whoever
looks next; and a sidecar starting up removes its own leftovers, never another pod's."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from escrow_operator.naming import WalletNames
from escrow_operator.walletfs.client import PublishResult, WalletfsClient, WalletfsUnavailable
from tests.support.processes import free_port, stop, wait_serving

TOKEN = "crosspod-token-0123456789abcdef"
TARGETS = 100
FOREIGN = "pod-c"  # a pod with no sidecar here: its files are in flight as far as anyone can tell


@dataclass
class Sidecar:
    owner: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> WalletfsClient:
        return WalletfsClient("127.0.0.1", TOKEN, port=self.port, timeout=60)


def launch(wallet_dir: Path, owner: str, **env: str) -> Sidecar:
    """Start ``python -m escrow_operator walletfs`` as pod ``owner`` (it does not wait for it to serve)."""
    port = free_port()
    log = wallet_dir.parent / f"{owner}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "escrow_operator", "walletfs", "--dir", str(wallet_dir), "--bind", "127.0.0.1"]
            + ["--port", str(port)],
            env={**os.environ, "WALLETFS_TOKEN": TOKEN, "WALLETFS_OWNER": owner, "PYTHONUNBUFFERED": "1", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Sidecar(owner, port, proc, log)


def serving(sidecar: Sidecar) -> Sidecar:
    wait_serving(
        sidecar.proc,
        lambda: httpx.get(f"{sidecar.url}/healthz", timeout=2).status_code == 200,
        what=f"walletfs {sidecar.owner}",
        interval=0.05,
        detail=lambda: sidecar.log.read_text(errors="replace")[-3000:],
    )
    return sidecar


def own_files(owner: str) -> list[str]:
    """A temp file and a record file of ``owner`` (as a torn write would leave them)."""
    return [
        f".walletfs-tmp-{owner}-{1:016x}",
        f".walletfs-tmp-{owner}-{2:016x}",
        f".walletfs-rec-{owner}-0badc0de-{3:016x}",
    ]


def walletfs_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.startswith(".walletfs-")}


@dataclass
class Shared:
    wallet_dir: Path
    a: Sidecar
    b: Sidecar


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """Sidecars ``pod-a`` and ``pod-b`` on one directory, which held leftovers of pod-a's last life and
    files of pod-c (another pod, maybe mid-copy) when they started."""
    wallet_dir = tmp_path_factory.mktemp("crosspod") / "wallets"
    wallet_dir.mkdir()
    for name in [*own_files("pod-a"), *own_files(FOREIGN)]:
        (wallet_dir / name).write_bytes(b"torn or in flight")
    sidecars = [launch(wallet_dir, "pod-a"), launch(wallet_dir, "pod-b")]
    try:
        a, b = (serving(s) for s in sidecars)
        yield Shared(wallet_dir, a, b)
    finally:
        for sidecar in sidecars:
            stop(sidecar.proc)


def test_startup_removes_its_own_leftovers_and_no_other_pods(shared: Shared) -> None:
    """pod-a's files of its last life are provably dead (a pod name exists once at a time); pod-c's may
    be another pod's copy in flight (which a startup removing every temp file once broke with a 500)."""
    assert walletfs_files(shared.wallet_dir) == set(own_files(FOREIGN))
    assert "Removed 3 leftover temp file(s) of owner pod-a" in shared.a.log.read_text()
    assert "Removed 0 leftover temp file(s) of owner pod-b" in shared.b.log.read_text()


def source_files(owner: str, i: int) -> dict[str, bytes]:
    """Wallet files that say whose they are, in every file (suffix -> content)."""
    return {
        ".keys": f"{owner} keys of target {i}\n".encode() + os.urandom(64),
        "": f"{owner} cache of target {i}\n".encode() * 1500,
        ".address.txt": f"{owner} address of target {i}".encode(),
    }


def read_wallet(directory: Path, wallet: str) -> dict[str, bytes]:
    paths = {suffix: directory / (wallet + suffix) for suffix in ("", ".keys", ".address.txt")}
    return {suffix: path.read_bytes() for suffix, path in paths.items() if path.exists()}


async def test_racing_publishes_from_two_pods_have_exactly_one_winner(shared: Shared) -> None:
    """Both sidecars publish each of 100 targets at once (even targets move the work wallet, odd ones
    publish a copy): every time exactly one wins, the target is an intact wallet whose every file comes
    from the winner, the loser's work wallet is untouched, and no temp or record file is left."""
    directory = shared.wallet_dir
    races = []
    for i in range(TARGETS):
        names = WalletNames("buyer", f"{i:08x}-0000-4000-8000-00000000c0de", final=3)
        sources = {"pod-a": names.work(1, "0000000a"), "pod-b": names.work(1, "0000000b")}
        contents = {owner: source_files(owner, i) for owner in sources}
        for owner, source in sources.items():
            for suffix, data in contents[owner].items():
                (directory / (source + suffix)).write_bytes(data)
        races.append((names.output_of(1), sources, contents, i % 2 == 1))

    async with shared.a.client() as a, shared.b.client() as b:

        async def race(target: str, sources: dict[str, str], keep: bool) -> tuple[PublishResult, PublishResult]:
            return await asyncio.gather(  # type: ignore[return-value]
                a.publish(sources["pod-a"], target, keep_source=keep),
                b.publish(sources["pod-b"], target, keep_source=keep),
            )

        results = await asyncio.gather(*(race(target, sources, keep) for target, sources, _, keep in races))

    for (target, sources, contents, keep), (result_a, result_b) in zip(races, results, strict=True):
        outcome = {"pod-a": result_a, "pod-b": result_b}
        winners = [owner for owner, result in outcome.items() if not result.already_published]
        assert len(winners) == 1, (target, outcome)
        winner = winners[0]
        loser = "pod-b" if winner == "pod-a" else "pod-a"
        assert read_wallet(directory, target) == contents[winner], (target, winner)  # one source, whole
        assert outcome[winner].files == {target + s: hashlib.sha256(d).hexdigest() for s, d in contents[winner].items()}
        assert outcome[loser].files == {}
        assert read_wallet(directory, sources[loser]) == contents[loser]
        assert read_wallet(directory, sources[winner]) == (contents[winner] if keep else {})
    assert walletfs_files(directory) == set(own_files(FOREIGN))


async def test_a_publish_committed_by_a_dying_sidecar_is_finished_by_another_pod(shared: Shared) -> None:
    """pod-x is SIGKILLed right after its commit and never comes back: the next sidecar that looks at the
    target finishes it, from pod-x's files, and removes them. (pod-x's own next start would have done
    the same: test_walletfs_files.test_startup_finishes_its_own_committed_publishes_only.)"""
    directory = shared.wallet_dir
    names = WalletNames("vendor", "00000000-0000-4000-8000-0000000dead0", final=3)
    target, work = names.output_of(1), names.work(1, "0000000f")
    content = source_files("pod-x", 0)
    for suffix, data in content.items():
        (directory / (work + suffix)).write_bytes(data)

    dying = serving(launch(directory, "pod-x", WALLETFS_MODE="test", WALLETFS_CRASH_AT="publish.after_commit"))
    try:
        async with dying.client() as x:
            with pytest.raises(WalletfsUnavailable):
                await x.publish(work, target)
        assert dying.proc.wait(10) == -signal.SIGKILL
    finally:
        stop(dying.proc)
    assert (directory / target).exists() and not (directory / (target + ".keys")).exists()  # committed only
    assert len(walletfs_files(directory) - set(own_files(FOREIGN))) == 4  # pod-x's 3 staged files and record

    async with shared.b.client() as b:
        stat = await b.stat(target)
        assert stat.exists
        assert (await b.publish(work, target)).already_published  # a retry of the step: nothing to do
    assert read_wallet(directory, target) == content
    assert walletfs_files(directory) == set(own_files(FOREIGN))

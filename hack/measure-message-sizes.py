#!/usr/bin/env python3
"""Measure the multisig key-exchange round messages of real monero-wallet-rpc processes, offline.

    hack/measure-message-sizes.py [--shape 2-of-3 ...] [--json FILE] [--no-model]

For each M-of-N shape (default: 2-of-3, 2-of-4, 3-of-5, 2-of-5) it starts N monero-wallet-rpc
processes (``--offline``, one per participant, so each wallet stays open from round to round as with
the operator's wallet affinity) over a temporary wallet directory, and drives the exchange exactly as
the operator's round engine (``escrow_operator.exchange``) does, with the operator's own client:

- step 0: ``create_wallet`` + ``prepare_multisig``;
- step 1: ``prepare_multisig`` (enables multisig) + ``make_multisig`` with the messages chosen by
  ``multisig.messages_for`` (0.18.0.0, RPC version <= 1.25: only the others' step-0 messages), then
  ``is_multisig`` must report an M-of-N wallet that is not ready;
- steps 2..K-1: ``exchange_multisig_keys`` with the others' previous messages;
- step K = N - M + 2: the last ``exchange_multisig_keys``; every participant must report a ready
  M-of-N wallet and the same address. The operator does not record this step's message.

It prints, per shape and step, the length of every participant's ``multisig_info`` string and, unless
``--no-model``, the length the size model :mod:`escrow_operator.shapes` predicts (flagging any
difference) and the Secret's total by the model. ``--json`` also writes every measured length.
Each ``create_wallet`` costs 1-5 CPU s (an RSA key per wallet, see docs/design.md): the default shapes
take about 90 s of wallet-rpc CPU. A measurement asserts nothing, but exits 1 if a measured length
differs from the model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

import httpx  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from escrow_operator import shapes  # noqa: E402
from escrow_operator.multisig import Stage, check_multisig, messages_for  # noqa: E402
from escrow_operator.naming import final_step  # noqa: E402
from escrow_operator.walletrpc import Version, WalletRpc  # noqa: E402
from hack.testground.processes import free_port, stop, wait_serving  # noqa: E402

DEFAULT_SHAPES = ("2-of-3", "2-of-4", "3-of-5", "2-of-5")
HOST = "127.0.0.1"
RPC_USER = "measure"
TICK = os.sysconf("SC_CLK_TCK")
_SHAPE = re.compile(r"^(?P<m>[0-9]+)-of-(?P<n>[0-9]+)$")


@dataclass
class Process:
    """One monero-wallet-rpc process holding one participant's wallet."""

    proc: subprocess.Popen[bytes]
    rpc: WalletRpc

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class ShapeResult:
    threshold: int
    participants: int
    #: lengths[step][role]: len(multisig_info) of that participant's step.
    lengths: dict[int, dict[str, int]] = field(default_factory=dict)
    address: str = ""
    wall_seconds: float = 0.0
    rpc_cpu_seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.threshold}-of-{self.participants}"

    @property
    def final(self) -> int:
        return final_step(self.participants, self.threshold)


def parse_shape(text: str) -> tuple[int, int]:
    """``"M-of-N"`` as (M, N)."""
    match = _SHAPE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape such as 2-of-3")
    m, n = int(match["m"]), int(match["n"])
    if not 1 <= m <= n or n < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= M <= N and N >= 2")
    return m, n


@contextmanager
def wallet_rpc(wallet_dir: Path, home: Path) -> Iterator[Process]:
    """A monero-wallet-rpc process over ``wallet_dir``, flags as in tests/support/walletrpc_proc.py."""
    binary = shutil.which("monero-wallet-rpc")
    if not binary:
        raise SystemExit("monero-wallet-rpc is not installed (make deps)")
    password = secrets.token_urlsafe(12)
    port = free_port(HOST)
    home.mkdir(parents=True)
    proc = subprocess.Popen(
        [
            binary,
            "--offline",
            f"--wallet-dir={wallet_dir}",
            f"--rpc-bind-ip={HOST}",
            f"--rpc-bind-port={port}",
            f"--rpc-login={RPC_USER}:{password}",
            "--non-interactive",
            "--rpc-ssl=disabled",
            "--daemon-ssl=disabled",
            "--disable-rpc-ban",
            f"--shared-ringdb-dir={home}/ringdb",
            f"--log-file={home}/log",
        ],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        auth = httpx.DigestAuth(RPC_USER, password)
        url = f"http://{HOST}:{port}/json_rpc"
        wait_serving(
            proc,
            lambda: httpx.post(url, json={"jsonrpc": "2.0", "id": "0", "method": "get_version"}, auth=auth).is_success,
            what="monero-wallet-rpc",
            timeout=60,
        )
        yield Process(proc, WalletRpc(url, RPC_USER, password))
    finally:
        stop(proc)


async def run_exchange(processes: dict[str, Process], threshold: int, result: ShapeResult) -> None:
    """Steps 0..K of every participant, round by round (a barrier per round, as in the operator)."""
    roles = list(processes)
    total = len(roles)
    final = final_step(total, threshold)
    passwords = {role: SecretStr(secrets.token_urlsafe(32)) for role in roles}
    messages: dict[int, dict[str, SecretStr]] = {}
    addresses: dict[str, str] = {}
    version: Version = await processes[roles[0]].rpc.get_version()
    for step in range(final + 1):
        messages[step] = {}
        # One participant at a time: the machine is shared, and sizes do not depend on concurrency.
        for role in roles:
            rpc, password = processes[role].rpc, passwords[role]
            if step == 0:
                await rpc.create_wallet(f"{role}_measure", password)
                message = (await rpc.prepare_multisig(True)).multisig_info
            elif step == 1:
                await rpc.prepare_multisig(True)  # enables multisig in this process
                infos = messages_for(role, messages[0], version, Stage.MAKE)
                message = (await rpc.make_multisig(infos, threshold, password)).multisig_info
                check_multisig(await rpc.is_multisig(), threshold, total, ready=False)
            else:
                infos = messages_for(role, messages[step - 1], version, Stage.EXCHANGE)
                exchanged = await rpc.exchange_multisig_keys(infos, password)
                if step == final:
                    check_multisig(await rpc.is_multisig(), threshold, total, ready=True)
                    addresses[role] = exchanged.address or (await rpc.call("get_address"))["address"]
                message = exchanged.multisig_info
            messages[step][role] = message
            result.lengths.setdefault(step, {})[role] = len(message.get_secret_value())
    if len(set(addresses.values())) != 1:
        raise RuntimeError(f"{result.name}: participants report different addresses")
    result.address = next(iter(addresses.values()))


def measure(threshold: int, participants: int) -> ShapeResult:
    """Run one M-of-N exchange on N fresh processes and a fresh wallet directory."""
    result = ShapeResult(threshold, participants)
    roles = [f"p{index}" for index in range(participants)]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="measure-msg-") as tmp, ExitStack() as stack:
        wallet_dir = Path(tmp) / "wallets"
        wallet_dir.mkdir()
        processes = {role: stack.enter_context(wallet_rpc(wallet_dir, Path(tmp) / f"home-{role}")) for role in roles}

        async def exchange() -> None:
            try:
                await run_exchange(processes, threshold, result)
            finally:
                for process in processes.values():
                    await process.rpc.aclose()

        asyncio.run(exchange())
        result.rpc_cpu_seconds = sum(process.cpu_seconds() for process in processes.values())
    result.wall_seconds = time.monotonic() - started
    return result


def report(results: list[ShapeResult], use_model: bool) -> int:
    """Print the table; return how many measured lengths differ from the size model."""
    mismatches = 0
    header = f"{'shape':7} {'step':>4} {'keys':>4} {'lengths (per participant)':28} {'model':>6}"
    print(header)
    print("-" * len(header))
    for result in results:
        n, m = result.participants, result.threshold
        for step, by_role in sorted(result.lengths.items()):
            lengths = sorted(set(by_role.values()))
            shown = ", ".join(str(length) for length in lengths) + f"  (x{len(by_role)})"
            line = f"{result.name:7} {step:>4} {shapes.message_keys(n, m, step):>4} {shown:28}"
            if use_model:
                model = shapes.message_length(n, m, step)
                line += f" {model:>6}"
                if lengths != [model]:
                    line += "  MISMATCH"
                    mismatches += 1
            if step == result.final:
                line += "  (last step: not recorded)"
            print(line)
        summary = f"address {len(result.address)} chars"
        if use_model:
            if len(result.address) != shapes.ADDRESS_LENGTH:
                summary += "  MISMATCH"
                mismatches += 1
            summary += f"; Secret data by the model {shapes.secret_data_bytes(n, m)} bytes"
        print(
            f"{result.name:7} {summary}; {result.wall_seconds:.1f} s wall, {result.rpc_cpu_seconds:.1f} s wallet-rpc CPU"
        )
    return mismatches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/measure-message-sizes.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shape", action="append", type=parse_shape, help=f"M-of-N, repeatable (default: {', '.join(DEFAULT_SHAPES)})"
    )
    parser.add_argument("--json", type=Path, help="also write the measured lengths to this file")
    parser.add_argument("--no-model", action="store_true", help="do not compare with escrow_operator.shapes")
    args = parser.parse_args(argv)
    wanted: list[tuple[int, int]] = args.shape or [parse_shape(text) for text in DEFAULT_SHAPES]
    version = subprocess.run(["monero-wallet-rpc", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"# {version}")
    started = time.monotonic()
    results = []
    for threshold, participants in wanted:
        results.append(measure(threshold, participants))
        print(f"# measured {results[-1].name} in {results[-1].wall_seconds:.1f} s", flush=True)
    mismatches = report(results, not args.no_model)
    print(f"# total {time.monotonic() - started:.1f} s wall")
    if args.json:
        document: dict[str, Any] = {
            "wallet_rpc": version,
            "shapes": [
                {
                    "threshold": r.threshold,
                    "participants": r.participants,
                    "lengths": {str(step): by_role for step, by_role in sorted(r.lengths.items())},
                    "address_length": len(r.address),
                    "wall_seconds": round(r.wall_seconds, 1),
                    "rpc_cpu_seconds": round(r.rpc_cpu_seconds, 1),
                }
                for r in results
            ],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if mismatches:
        print(f"# {mismatches} measured length(s) differ from escrow_operator.shapes", file=sys.stderr)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

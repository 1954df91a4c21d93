"""``hack/bench --watch N[,N...]``: the chain watch's CPU per block for N watched escrows.

No cluster: blocks of realistic size are made here (:data:`TXS` transactions of 2 to 16 outputs, one
transaction public key each, view-tagged outputs, CLSAG/Bulletproof+ amounts) with a few real payments
to watched escrows in each (amounts encrypted and committed as a wallet does), and each block is scanned
for N escrows exactly as :mod:`escrow_operator.chainwatch` scans a block: every output of every
transaction against every escrow's keys (:func:`escrow_operator.viewkeys.scan`), then the findings
recorded in the escrows' ledgers. The figure is the process CPU time per block (the median of the
blocks scanned); the counts run in one process, so their ratios compare.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from typing import Any

import nacl.bindings as sodium

from escrow_operator import viewkeys
from escrow_operator.viewkeys import Output, Transaction, WatchKeys
from escrow_operator.watch_ledger import Ledger, Received

#: Transactions per block and their output counts (mainnet blocks of 2026 hold about 40).
TXS = 40
OUTPUTS = (2, 16)
#: Payments to watched escrows planted in each block.
PAYMENTS = 3
#: What the wallet-rpc way costs per escrow per block (hack/bench --funding on this machine, docs/performance.md).
WALLET_RPC_CPU_PER_ESCROW = (2.6, 2.9)


def _scalar(rng: random.Random) -> bytes:
    return sodium.crypto_core_ed25519_scalar_reduce(rng.randbytes(64))


def _point(rng: random.Random) -> bytes:
    return sodium.crypto_scalarmult_ed25519_base_noclamp(_scalar(rng))


def escrows(count: int, rng: random.Random) -> list[WatchKeys]:
    return [WatchKeys(_scalar(rng), _point(rng)) for _ in range(count)]


def _paid_output(r: bytes, index: int, keys: WatchKeys, amount: int) -> tuple[Output, bytes, bytes]:
    """An output to ``keys`` from transaction key r, its encrypted amount and commitment (a sender's side)."""
    view_public = sodium.crypto_scalarmult_ed25519_base_noclamp(keys.view_secret)
    eight_r = sodium.crypto_core_ed25519_scalar_mul(r, (8).to_bytes(32, "little"))
    suffix = sodium.crypto_scalarmult_ed25519_noclamp(eight_r, view_public) + viewkeys.varint(index)
    s = viewkeys.hash_to_scalar(suffix)
    key = sodium.crypto_core_ed25519_add(sodium.crypto_scalarmult_ed25519_base_noclamp(s), keys.spend_public)
    tag = viewkeys.keccak256(b"view_tag" + suffix)[0]
    pad = viewkeys.keccak256(b"amount" + s)[:8]
    ecdh = bytes(x ^ y for x, y in zip(amount.to_bytes(8, "little"), pad, strict=True))
    commitment = viewkeys.commitment(viewkeys.hash_to_scalar(b"commitment_mask" + s), amount)
    assert commitment is not None
    return Output(index, key, tag, 0), ecdh, commitment


def block(watched: list[WatchKeys], rng: random.Random, number: int) -> tuple[list[Transaction], int]:
    """A block of :data:`TXS` transactions with :data:`PAYMENTS` payments to ``watched``; and their total."""
    planted = {rng.randrange(TXS): rng.choice(watched) for _ in range(PAYMENTS)}
    txs, paid = [], 0
    for n in range(TXS):
        r = _scalar(rng)
        outputs, ecdh, commitments = [], [], []
        for index in range(rng.randint(*OUTPUTS)):
            if index == 0 and n in planted:
                amount = rng.randrange(1, 10**12)
                out, amount_bytes, commitment = _paid_output(r, index, planted[n], amount)
                paid += amount
            else:
                out, amount_bytes, commitment = (
                    Output(index, _point(rng), rng.randrange(256), 0),
                    rng.randbytes(8),
                    _point(rng),
                )
            outputs.append(out)
            ecdh.append(amount_bytes)
            commitments.append(commitment)
        pubkey = sodium.crypto_scalarmult_ed25519_base_noclamp(r)
        txs.append(
            Transaction(
                f"b{number}t{n}", 0, False, 6, outputs, [pubkey], [], ecdh, commitments, [rng.randbytes(32).hex()]
            )
        )
    return txs, paid


def scan_block(txs: list[Transaction], watched: list[WatchKeys], ledgers: list[Ledger], height: int) -> int:
    """What the chain watch does with one block (chainwatch._record); returns the amount found."""
    found = 0
    for keys, ledger in zip(watched, ledgers, strict=True):
        outs = [
            Received(f.tx_hash, f.index, f.key, f.amount, 0, height, "h") for tx in txs for f in viewkeys.scan(tx, keys)
        ]
        ledger.add(outs)
        found += sum(o.amount for o in outs)
    return found


def run_watch(counts: list[int], blocks: int = 3, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    results = []
    for count in counts:
        watched = escrows(count, rng)
        ledgers = [Ledger() for _ in watched]
        per_block, outputs = [], 0
        for number in range(blocks if count < 10_000 else 1):
            txs, paid = block(watched, rng, number)
            outputs += sum(len(tx.outputs) for tx in txs)
            before = time.process_time()
            found = scan_block(txs, watched, ledgers, number)
            per_block.append(time.process_time() - before)
            assert found == paid, f"scanned {found}, paid {paid}: the watch missed or invented a payment"
        cpu = statistics.median(per_block)
        # The part of it that is libsodium's scalar multiplication (one derivation per escrow and transaction).
        sample = min(count, 100)
        before = time.process_time()
        for tx in txs:
            for keys in watched[:sample]:
                viewkeys.derivation(keys.view_secret, tx.eight(tx.pubkeys[0]))
        derivations = (time.process_time() - before) * count / sample
        results.append(
            {
                "escrows": count,
                "blocks": len(per_block),
                "outputs_per_block": outputs // len(per_block),
                "cpu_seconds_per_block": round(cpu, 3),
                "microseconds_per_escrow_and_transaction": round(cpu / (count * TXS) * 1e6, 1),
                "derivation_share": round(derivations / cpu, 2),
                "wallet_rpc_cpu_seconds_per_block": [round(x * count) for x in WALLET_RPC_CPU_PER_ESCROW],
            }
        )
    return {"transactions_per_block": TXS, "cpus": os.cpu_count(), "counts": results}


def summary(figures: dict[str, Any]) -> list[str]:
    lines = [
        f"chain watch: blocks of {figures['transactions_per_block']} transactions (2 to 16 outputs), CPU per block"
    ]
    for row in figures["counts"]:
        low, high = row["wallet_rpc_cpu_seconds_per_block"]
        lines.append(
            f"  {row['escrows']:>6} escrows: {row['cpu_seconds_per_block']:>8.3f} CPU s per block "
            f"({row['microseconds_per_escrow_and_transaction']} us per escrow and transaction, "
            f"{round(100 * row['derivation_share'])}% of it derivations; "
            f"the wallet-rpc way: {low}-{high} CPU s)"
        )
    return lines

"""Finding outputs with a view key: transactions of a real regtest chain (tests/unit/data), read with a
wallet's view key, give exactly the outputs and amounts wallet-rpc reported for that wallet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import pytest

from escrow_operator import viewkeys
from escrow_operator.viewkeys import BadKeys, Transaction, WatchKeys, scan

DATA = json.loads((Path(__file__).parent / "data" / "regtest_payments.json").read_text())
#: The point of order 2, (0, -1): added to a public key it changes R but not 8·R.
ORDER_TWO = bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")


def keys() -> WatchKeys:
    return WatchKeys.from_wallet(DATA["view_key"], DATA["address"])


def transactions() -> dict[str, dict[str, Any]]:
    return {**DATA["transactions"], DATA["miner_tx_hash"]: DATA["miner_tx"]}


@pytest.mark.parametrize("tx_hash", sorted(DATA["expected"]))
def test_each_payment_is_found_with_the_amount_the_wallet_saw(tx_hash: str) -> None:
    tx = Transaction.from_json(tx_hash, transactions()[tx_hash])
    found = [(f.index, f.amount) for f in scan(tx, keys())]
    assert found == [tuple(x) for x in DATA["expected"][tx_hash]]


def _one_time(r: bytes, index: int, view_public: bytes, spend_public: bytes) -> tuple[str, str]:
    """A sender's output key and view tag for (r, index): from 8·(r·A), as wallet2's sender side does."""
    d = sodium.crypto_scalarmult_ed25519_noclamp(
        sodium.crypto_core_ed25519_scalar_mul(r, (8).to_bytes(32, "little")), view_public
    )
    suffix = d + viewkeys.varint(index)
    key = sodium.crypto_core_ed25519_add(
        sodium.crypto_scalarmult_ed25519_base_noclamp(viewkeys.hash_to_scalar(suffix)), spend_public
    )
    return key.hex(), f"{viewkeys.keccak256(b'view_tag' + suffix)[0]:02x}"


def test_an_output_derived_from_its_additional_key_is_found() -> None:
    """wallet2 derives outputs to subaddresses from per-output keys; an output to the address made that way counts."""
    spend, view = viewkeys.address_keys(DATA["address"])
    main, extra_r = (sodium.crypto_core_ed25519_scalar_reduce(bytes([n]) * 64) for n in (3, 5))
    outputs, additional = [], []
    for index in range(3):
        r = sodium.crypto_core_ed25519_scalar_reduce(bytes([9 + index]) * 64) if index != 1 else extra_r
        key, tag = _one_time(r, index, view if index == 1 else sodium.crypto_scalarmult_ed25519_base_noclamp(r), spend)
        outputs.append({"amount": 1000 + index, "target": {"tagged_key": {"key": key, "view_tag": tag}}})
        additional.append(sodium.crypto_scalarmult_ed25519_base_noclamp(r))
    extra = b"\x01" + sodium.crypto_scalarmult_ed25519_base_noclamp(main) + b"\x04\x03" + b"".join(additional)
    doc = {"version": 2, "unlock_time": 0, "vin": [{"gen": {"height": 1}}], "vout": outputs, "extra": list(extra)}
    assert [(f.index, f.amount) for f in scan(Transaction.from_json("t", doc), keys())] == [(1, 1001)]
    doc["extra"] = list(extra[:33])  # without the additional keys the output cannot be found
    assert scan(Transaction.from_json("t", doc), keys()) == []


def test_an_amount_its_commitment_does_not_open_to_is_not_counted() -> None:
    tx_hash = "90ea2822f0a8cced2fdc33a627fd59607e92d5cf690d220025eb6dec784b7844"
    doc = json.loads(json.dumps(transactions()[tx_hash]))
    ecdh = doc["rct_signatures"]["ecdhInfo"][1]
    forged = (int.from_bytes(bytes.fromhex(ecdh["amount"]), "little") ^ 1).to_bytes(8, "little")
    ecdh["amount"] = forged.hex()
    assert scan(Transaction.from_json(tx_hash, doc), keys()) == []


def test_another_wallets_view_key_finds_nothing() -> None:
    other = sodium.crypto_core_ed25519_scalar_reduce(bytes(range(64)))
    stranger = WatchKeys(other, keys().spend_public)
    for tx_hash, doc in transactions().items():
        assert scan(Transaction.from_json(tx_hash, doc), stranger) == []


def test_the_cofactor_is_applied_after_the_view_key() -> None:
    """8·(a·(R+T)) = 8·(a·R) for T of small order: the derivation of a key with a torsion component."""
    a = keys().view_secret
    tx = Transaction.from_json("x", DATA["miner_tx"])
    r = tx.pubkeys[0]
    twisted = sodium.crypto_core_ed25519_add(r, ORDER_TWO)
    assert twisted != r
    assert viewkeys.derivation(a, viewkeys._times_eight(twisted)) == viewkeys.derivation(a, viewkeys._times_eight(r))
    eight_a = sodium.crypto_core_ed25519_scalar_mul(a, (8).to_bytes(32, "little"))
    assert viewkeys.derivation(a, viewkeys._times_eight(r)) == sodium.crypto_scalarmult_ed25519_noclamp(eight_a, r)


def test_keys_that_do_not_belong_to_the_address_are_refused() -> None:
    with pytest.raises(BadKeys, match="does not belong"):
        WatchKeys.from_wallet(sodium.crypto_core_ed25519_scalar_reduce(bytes(64 * [7])).hex(), DATA["address"])
    with pytest.raises(BadKeys, match="checksum"):
        WatchKeys.from_wallet(DATA["view_key"], DATA["address"][:-1] + ("A" if DATA["address"][-1] != "A" else "B"))
    with pytest.raises(BadKeys, match="reduced"):
        WatchKeys.from_wallet("ff" * 32, DATA["address"])


def test_extra_fields_are_read_like_wallet2() -> None:
    key = bytes(range(32))
    extra = b"\x02\x03abc" + b"\x01" + key + b"\x04\x01" + bytes(32) + b"\x01" + key
    assert viewkeys.parse_extra(extra) == ([key], [bytes(32)])
    assert viewkeys.parse_extra(b"\x01" + key[:10]) == ([], [])  # truncated: nothing made up
    assert viewkeys.parse_extra(b"\x01" + key + b"\x99junk") == ([key], [])  # unknown field: what came before


def test_key_images_of_the_inputs() -> None:
    tx_hash = "2a66aa181c72568cdb4a3828852974915f164250f2d1b4ccf9c6226e4cb33700"
    tx = Transaction.from_json(tx_hash, transactions()[tx_hash])
    assert len(tx.key_images) == 2 and all(len(k) == 64 for k in tx.key_images)
    assert Transaction.from_json("m", DATA["miner_tx"]).key_images == []

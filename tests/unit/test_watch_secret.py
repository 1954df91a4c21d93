"""The chain watch's record of an escrow (watch_secret.WatchSecret), read without a cluster."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import nacl.bindings as sodium

from escrow_operator.watch_ledger import Ledger, Received, Spend
from escrow_operator.watch_secret import WatchSecret

DATA = json.loads((Path(__file__).parent / "data" / "regtest_payments.json").read_text())
DAEMON = "monerod:18081"


def record(**values: str) -> WatchSecret:
    secret = WatchSecret(kube=None, namespace="escrow-system", escrow=("shop", "order-1"), uid="u1")  # type: ignore[arg-type]
    secret._data = {k: base64.b64encode(v.encode()) for k, v in values.items()}
    return secret


def test_the_keys_are_checked_against_the_recorded_address_on_every_load() -> None:
    good = record(viewkey=DATA["view_key"], address=DATA["address"])
    keys = good.checked_keys()
    assert keys is not None and keys.view_secret.hex() == DATA["view_key"]
    another = sodium.crypto_core_ed25519_scalar_reduce(bytes(64 * [7])).hex()  # another wallet's view key
    assert record(viewkey=another, address=DATA["address"]).checked_keys() is None
    assert record(viewkey=DATA["view_key"]).checked_keys() is None  # not recorded whole: read again


def ledger(*outputs: tuple[str, int, bool]) -> dict[str, Any]:
    found = Ledger()
    found.add([Received(tx, 0, f"{tx}-key", amount, 0, 5, "b5") for tx, amount, _ in outputs])
    for tx, _, spent in outputs:
        if spent:
            found.spends[f"{tx}-key"] = Spend("pay", 9, "b9")
    return {"ledger": found.to_json(), "daemon": DAEMON, "joined": "true"}


def test_an_escrow_whose_every_output_its_payouts_spent_holds_nothing() -> None:
    assert record(**ledger(("a", 3, True), ("b", 2, True))).spent_out(DAEMON) == 5
    assert record(**ledger(("a", 3, True), ("pay", 1, True))).spent_out(DAEMON) == 3  # change of its payout
    assert record(**ledger(("a", 3, True), ("change", 1, False))).spent_out(DAEMON) is None
    assert record(**ledger()).spent_out(DAEMON) is None  # nothing received yet: a payout may wait for it
    assert record(**ledger(("a", 3, True))).spent_out("another:18081") is None  # another chain's findings
    assert record(**ledger(("a", 3, True))).received_anything()
    assert not record().received_anything()

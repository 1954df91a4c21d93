"""An escrow's ledger of outputs found on chain, and the figures wallet2 would report from it."""

from __future__ import annotations

from escrow_operator.watch_ledger import Ledger, Received, Spend, is_unlocked, scan_of

XMR = 10**12


def out(tx: str, index: int, amount: int, height: int = 0, block: str = "", unlock: int = 0) -> Received:
    return Received(tx, index, f"key-{tx}-{index}", amount, unlock, height, block)


def test_a_block_scanned_twice_counts_once() -> None:
    ledger = Ledger()
    found = [out("a", 0, XMR, 100, "h100"), out("a", 1, 2 * XMR, 100, "h100")]
    assert ledger.add(found)
    assert not ledger.add(found)
    figures = scan_of(ledger, 101)
    assert [(t.txid, t.amount, t.height, t.confirmations) for t in figures.transfers] == [("a", 3 * XMR, 100, 1)]


def test_confirmations_and_the_ten_block_lock_are_wallet2s() -> None:
    ledger = Ledger()
    ledger.add([out("a", 0, XMR, 100, "h100")])
    assert scan_of(ledger, 109).unlocked == 0
    assert scan_of(ledger, 110).unlocked == XMR
    assert scan_of(ledger, 110).transfers[0].confirmations == 10


def test_a_coinbase_unlocks_at_its_unlock_height_and_a_time_lock_at_its_time() -> None:
    coinbase = out("c", 0, XMR, 100, "h100", unlock=160)
    assert not is_unlocked(coinbase, 159, 0)
    assert is_unlocked(coinbase, 160, 0)
    timed = out("t", 0, XMR, 100, "h100", unlock=1_800_000_000)
    assert not is_unlocked(timed, 200, 1_800_000_000 - 121)
    assert is_unlocked(timed, 200, 1_800_000_000 - 120)


def test_a_reorganisation_takes_back_what_the_replaced_blocks_found() -> None:
    ledger = Ledger(key_images={"ki": "key-a-0"})
    ledger.add([out("a", 0, XMR, 100, "h100"), out("b", 0, XMR, 105, "h105")])
    assert ledger.spend("ki", Spend("s", 106, "h106"))
    assert ledger.undo_from(105)
    assert list(ledger.outputs) == [("a", 0)] and ledger.spends == {}
    assert not ledger.undo_from(105)


def test_spent_outputs_are_not_unlocked_and_a_spend_in_the_pool_counts() -> None:
    ledger = Ledger(key_images={"ki": "key-a-0"})
    ledger.add([out("a", 0, XMR, 100, "h100"), out("b", 0, 2 * XMR, 100, "h100")])
    ledger.set_pool([], {"key-a-0": Spend("s")})
    assert scan_of(ledger, 120).unlocked == 2 * XMR
    ledger.set_pool([], {})
    assert scan_of(ledger, 120).unlocked == 3 * XMR
    assert not ledger.spend("unknown image", Spend("s", 121, "h121"))


def test_pool_outputs_are_unconfirmed_transfers_until_a_block_has_them() -> None:
    ledger = Ledger()
    assert ledger.set_pool([out("p", 0, XMR)], {})
    figures = scan_of(ledger, 120)
    assert [(t.txid, t.height, t.confirmations) for t in figures.transfers] == [("p", 0, 0)]
    assert figures.unlocked == 0
    ledger.add([out("p", 0, XMR, 120, "h120")])
    ledger.set_pool([out("p", 0, XMR)], {})  # still listed by the pool a moment: counted once
    assert [(t.txid, t.height) for t in scan_of(ledger, 121).transfers] == [("p", 120)]


def test_the_ledger_survives_a_round_trip_without_what_the_cursor_had_not_passed() -> None:
    ledger = Ledger(key_images={"ki": "key-a-0"})
    ledger.add([out("a", 0, XMR, 100, "h100", unlock=7), out("b", 1, 5, 130, "h130")])
    ledger.spend("ki", Spend("s", 131, "h131"))
    again = Ledger.from_json(ledger.to_json())
    assert (again.outputs, again.spends) == (ledger.outputs, ledger.spends)
    below = Ledger.from_json(ledger.to_json(), below=130)
    assert list(below.outputs) == [("a", 0)] and below.spends == {}


def test_the_change_of_the_escrows_own_spend_is_no_incoming_transfer_but_unlocks() -> None:
    ledger = Ledger(key_images={"ki": "key-a-0"})
    ledger.add([out("a", 0, 5 * XMR, 100, "h100")])
    ledger.spend("ki", Spend("pay", 120, "h120"))
    ledger.add([out("pay", 1, 2 * XMR, 120, "h120")])
    assert [t.txid for t in scan_of(ledger, 125).transfers] == ["a"]
    assert scan_of(ledger, 125).unlocked == 0
    assert scan_of(ledger, 130).unlocked == 2 * XMR


def test_without_key_images_the_figures_say_spends_are_unknown() -> None:
    ledger = Ledger()
    ledger.add([out("a", 0, XMR, 100, "h100")])
    assert not scan_of(ledger, 120).spends_known
    ledger.learn({"ki": "key-a-0"})
    assert scan_of(ledger, 120).spends_known

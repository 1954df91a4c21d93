"""hack/bench --watch keeps working: its blocks hold the payments it planted, and the scan finds them."""

from __future__ import annotations

import random

from hack.benchlib import watch


def test_the_watch_benchmark_finds_every_planted_payment_and_reports_per_count() -> None:
    figures = watch.run_watch([1, 4], blocks=2)
    assert [row["escrows"] for row in figures["counts"]] == [1, 4]
    assert all(row["cpu_seconds_per_block"] > 0 and row["blocks"] == 2 for row in figures["counts"])
    assert "4 escrows" in "\n".join(watch.summary(figures))


def test_a_planted_payment_is_found_only_by_its_escrow() -> None:
    rng = random.Random(7)
    watched = watch.escrows(3, rng)
    txs, paid = watch.block(watched, rng, 0)
    assert paid > 0
    found = [watch.scan_block(txs, [keys], [watch.Ledger()], 0) for keys in watched]
    assert sum(found) == paid

"""Escrows and WalletPools on the test ground: moved to :mod:`hack.testground.escrows`."""

from hack.testground.escrows import (
    assert_no_secrets,
    condition,
    create_escrow,
    create_pool,
    escrow_body,
    escrow_secret,
    get_escrow,
    pool_body,
    pool_directory,
    reconcile_pool,
    wait_escrow,
    wait_escrow_gone,
)

__all__ = [
    "assert_no_secrets",
    "condition",
    "create_escrow",
    "create_pool",
    "escrow_body",
    "escrow_secret",
    "get_escrow",
    "pool_body",
    "pool_directory",
    "reconcile_pool",
    "wait_escrow",
    "wait_escrow_gone",
]

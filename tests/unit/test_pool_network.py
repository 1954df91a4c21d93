"""The pool's network decides wallet-rpc's network flags (and regtest its hard-fork leniency)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from escrow_operator.api import WalletPoolSpec
from escrow_operator.funding_status import offline_scan_start
from escrow_operator.pool_resources import statefulset

POOL = {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}}


def wallet_rpc_args(network: str) -> list[str]:
    spec = WalletPoolSpec.model_validate({"storage": {"size": "1Gi"}, "network": network, "daemon": "monerod:18081"})
    [container] = [
        c for c in statefulset(POOL, spec)["spec"]["template"]["spec"]["containers"] if c["name"] == "wallet-rpc"
    ]
    return list(container["args"])


@pytest.mark.parametrize(
    ("network", "flags"),
    [
        ("mainnet", []),
        ("stagenet", ["--stagenet"]),
        ("testnet", ["--testnet"]),
        ("regtest", ["--allow-mismatched-daemon-version"]),
    ],
)
def test_network_flags(network: str, flags: list[str]) -> None:
    known = {"--stagenet", "--testnet", "--allow-mismatched-daemon-version"}
    args = wallet_rpc_args(network)
    assert [a for a in args if a in known] == flags
    assert "--daemon-address=monerod:18081" in args


def test_regtest_wallets_are_mainnet_wallets_for_the_scan_estimate() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    assert offline_scan_start("regtest", at) == offline_scan_start("mainnet", at)

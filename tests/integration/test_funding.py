"""Funding on a real regtest chain: an Escrow on a pool with a daemon records the chain height its
wallets were made at, and after each new block reports what its address received (status.funding),
and whether it is paid (the Funded condition), with Events.

One monerod pod (hack/testground/chain.py), one miner wallet of the test's own and one 2-pod pool for
the module; each test makes its own escrows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from escrow_operator.api import ESCROW_PLURAL, GROUP, VERSION, WALLETPOOL_PLURAL
from escrow_operator.kube import json_object
from hack.devcluster import DevCluster
from hack.testground.chain import Chain, Miner, miner, start_chain
from hack.testground.escrows import condition, create_escrow, pool_body, wait_escrow
from hack.testground.kube import custom_objects, wait_for
from tests.integration.conftest import start_operator
from tests.support.operator import OperatorProcess

XMR = 10**12


@pytest.fixture(scope="module")
def chain(kube: client.ApiClient, module_namespace: str) -> Chain:
    return start_chain(kube, module_namespace)


@pytest.fixture(scope="module")
def wallet(chain: Chain) -> Iterator[Miner]:
    with miner(chain) as m:
        yield m


@pytest.fixture(scope="module")
def funding_operator(
    cluster: DevCluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("funding-operator") / "operator.log"
    proc = start_operator(cluster, log, ESCROW_BLOCK_POLL_INTERVAL="0.5")
    try:
        yield proc
    finally:
        proc.stop()


def _create_pool(kube: client.ApiClient, namespace: str, name: str, replicas: int, **spec: Any) -> None:
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, WALLETPOOL_PLURAL, pool_body(name, replicas, **spec)
    )


@pytest.fixture(scope="module")
def pool(kube: client.ApiClient, module_namespace: str, chain: Chain, funding_operator: OperatorProcess) -> str:
    _create_pool(kube, module_namespace, "chainpool", 2, daemon=chain.address)
    return "chainpool"


def wait_funding(
    kube: client.ApiClient, namespace: str, name: str, done: Any, what: str, timeout: float = 120
) -> dict[str, Any]:
    return json_object(
        wait_for(
            custom_objects(kube, namespace, ESCROW_PLURAL),
            lambda obj: done(json_object(obj)),
            field_selector=f"metadata.name={name}",
            timeout=timeout,
            what=what,
        )
    )


def funding(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("status") or {}).get("funding") or {})


def events(kube: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str]]:
    found = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [(e.reason, e.message) for e in found.items]


def test_escrow_reports_payments_and_turns_funded(
    kube: client.ApiClient, module_namespace: str, chain: Chain, wallet: Miner, pool: str
) -> None:
    before = chain.height()
    create_escrow(kube, module_namespace, "paid", pool, amount=3 * XMR, confirmations=2)
    ready = wait_escrow(kube, module_namespace, "paid", timeout=300)
    status = ready["status"]
    assert before <= status["restoreHeight"] <= chain.height()
    address = status["address"]

    height = wallet.confirm(wallet.pay(address, 1 * XMR))
    obj = wait_funding(kube, module_namespace, "paid", lambda o: funding(o).get("received") == 1 * XMR, "1 XMR seen")
    seen = funding(obj)
    assert (seen["receivedXmr"], seen["transfers"], seen["confirmations"]) == ("1", 1, 1)
    assert seen["height"] == height
    funded = condition(obj, "Funded")
    assert funded is not None and (funded["status"], funded["reason"]) == ("False", "UnderPaid"), funded
    assert "received 1 of 3 XMR (2 XMR short)" in funded["message"]

    wallet.confirm(wallet.pay(address, 2 * XMR), confirmations=2)
    obj = wait_funding(
        kube, module_namespace, "paid", lambda o: (condition(o, "Funded") or {}).get("status") == "True", "Funded"
    )
    seen = funding(obj)
    assert (seen["received"], seen["receivedXmr"], seen["transfers"], seen["confirmations"]) == (3 * XMR, "3", 2, 2)
    funded = condition(obj, "Funded")
    assert funded is not None and funded["reason"] == "Funded", funded
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    reasons = [reason for reason, _ in events(kube, module_namespace, "paid")]
    assert reasons.count("FundsReceived") == 2, reasons
    assert "UnderPaid" in reasons and "Funded" in reasons, reasons


def test_overpayment_is_reported_and_an_escrow_without_amount_has_no_funded_condition(
    kube: client.ApiClient, module_namespace: str, chain: Chain, wallet: Miner, pool: str
) -> None:
    create_escrow(kube, module_namespace, "over", pool, amount=1 * XMR, confirmations=1)
    create_escrow(kube, module_namespace, "open", pool)
    over = wait_escrow(kube, module_namespace, "over", timeout=300)["status"]["address"]
    open_ = wait_escrow(kube, module_namespace, "open", timeout=300)["status"]["address"]
    first = wallet.pay(over, 2 * XMR + 1)
    wallet.confirm(first)
    wallet.confirm(wallet.pay(open_, XMR // 2))

    obj = wait_funding(
        kube, module_namespace, "over", lambda o: (condition(o, "Funded") or {}).get("status") == "True", "Funded"
    )
    funded = condition(obj, "Funded")
    assert funded is not None and funded["reason"] == "OverPaid", funded
    assert "received 2.000000000001 XMR, 1.000000000001 XMR more than 1 XMR" in funded["message"]
    assert funding(obj)["received"] == 2 * XMR + 1

    obj = wait_funding(kube, module_namespace, "open", lambda o: funding(o).get("received") == XMR // 2, "0.5 XMR seen")
    assert funding(obj)["receivedXmr"] == "0.5"
    assert condition(obj, "Funded") is None


def test_escrow_made_on_an_offline_pool_says_what_it_cannot_see(
    kube: client.ApiClient, module_namespace: str, chain: Chain, wallet: Miner, funding_operator: OperatorProcess
) -> None:
    """Wallets made offline scan from wallet2's clock estimate of the mainnet height (~3.8 million),
    far above a regtest chain: once the pool gets a daemon the escrow says why it cannot read them."""
    _create_pool(kube, module_namespace, "offlinepool", 1)
    create_escrow(kube, module_namespace, "early", "offlinepool", amount=1 * XMR, confirmations=1)
    ready = wait_escrow(kube, module_namespace, "early", timeout=300)
    assert "restoreHeight" not in ready["status"]
    assert "funding" not in ready["status"]
    wallet.confirm(wallet.pay(ready["status"]["address"], 1 * XMR))

    client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        GROUP, VERSION, module_namespace, WALLETPOOL_PLURAL, "offlinepool", {"spec": {"daemon": chain.address}}
    )
    obj = wait_funding(
        kube, module_namespace, "early", lambda o: bool(funding(o).get("message")), "a funding message", timeout=300
    )
    assert "made on an offline pool" in funding(obj)["message"], funding(obj)
    assert funding(obj).get("received", 0) == 0
    assert "FundingUnreadable" in [r for r, _ in events(kube, module_namespace, "early")]

"""Funding on a real regtest chain: an Escrow on a pool with a daemon records the chain height its
wallets were made at, and after each new block reports what its address received (status.funding),
and whether it is paid (the Funded condition), with Events.

One monerod pod (hack/testground/chain.py), one miner wallet of the test's own and one 2-pod pool for
the module; each test makes its own escrows.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from escrow_operator import signing
from escrow_operator.api import ESCROW_PLURAL, GROUP, PAYOUT_PLURAL, VERSION, WALLETPOOL_PLURAL
from escrow_operator.kube import json_object
from escrow_operator.multisig import PassThrough
from escrow_operator.naming import WalletNames, wallet_files
from escrow_operator.viewkeys import WatchKeys
from escrow_operator.walletrpc import Destination, WalletRpc
from escrow_operator.watch_ledger import Ledger, Received
from hack.devcluster import DevCluster
from hack.testground.chain import Chain, Miner
from hack.testground.escrows import (
    condition,
    create_escrow,
    escrow_secret,
    payout_body,
    pool_body,
    pool_directory,
    wait_escrow,
)
from hack.testground.kube import custom_objects, namespace_user, wait_for
from hack.testground.processes import free_port
from tests.integration.conftest import start_operator
from tests.support.operator import OperatorProcess
from tests.support.walletrpc_proc import standalone_wallet_rpc

XMR = 10**12


@pytest.fixture(scope="module")
def funding_operator(
    cluster: DevCluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("funding-operator") / "operator.log"
    # The module's pool names monerod's ZMQ publisher; its poll (600 s) never comes within a test, so
    # every figure here follows a block monerod pushed. A pool naming the daemon only polls (0.5 s).
    proc = start_operator(
        cluster,
        log,
        ESCROW_BLOCK_POLL_INTERVAL="0.5",
        ESCROW_ZMQ_POLL_INTERVAL="600",
        ESCROW_METRICS_PORT=str(free_port()),
    )
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
    _create_pool(kube, module_namespace, "chainpool", 2, network="regtest", daemon=chain.address, daemonZmq=chain.zmq)
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


def wallet_rpc_calls(op: OperatorProcess) -> dict[str, float]:
    """How many wallet-rpc calls of each method the operator made (its metrics)."""
    reply = httpx.get(f"http://127.0.0.1:{op.env['ESCROW_METRICS_PORT']}/metrics", timeout=10)
    reply.raise_for_status()
    return {
        s.labels["method"]: s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
        if s.name == "xmrescrow_rpc_duration_seconds_count"
    }


#: Where the test operators run (no POD_NAMESPACE): their chain cursors and watch Secrets live here.
OPERATOR_NAMESPACE = "default"


def wait_watch_keys(kube: client.ApiClient, namespace: str, uid: str) -> dict[str, str]:
    """The escrow's watch Secret (operator's namespace) once its view key is recorded for the chain watch."""
    secret = wait_for(
        client.CoreV1Api(kube).list_namespaced_secret,
        lambda secret: {"viewkey", "address"} <= set(secret.data or {}),
        OPERATOR_NAMESPACE,
        field_selector=f"metadata.name=escrow-{uid}-watch",
        timeout=120,
        what="the escrow's view key in its watch Secret",
    )
    assert (
        secret.metadata.annotations["xmrescrow.dev/escrow"]
        == f"{namespace}/{secret.metadata.labels['xmrescrow.dev/escrow']}"
    )
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def funding(obj: dict[str, Any]) -> dict[str, Any]:
    return dict((obj.get("status") or {}).get("funding") or {})


def events(kube: client.ApiClient, namespace: str, name: str) -> list[tuple[str, str]]:
    found = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [(e.reason, e.message) for e in found.items]


def wait_event(kube: client.ApiClient, namespace: str, name: str, reason: str) -> None:
    wait_for(
        client.CoreV1Api(kube).list_namespaced_event,
        lambda e: e.reason == reason,
        namespace,
        field_selector=f"involvedObject.name={name}",
        timeout=60,
        what=f"a {reason} Event of {name}",
    )


def test_escrow_reports_payments_and_turns_funded(
    kube: client.ApiClient,
    module_namespace: str,
    chain: Chain,
    wallet: Miner,
    pool: str,
    funding_operator: OperatorProcess,
) -> None:
    before = chain.height()
    created = create_escrow(kube, module_namespace, "paid", pool, amount=3 * XMR, confirmations=2)
    ready = wait_escrow(kube, module_namespace, "paid", timeout=300)
    status = ready["status"]
    assert before <= status["restoreHeight"] <= chain.height()
    address = status["address"]
    secret = wait_watch_keys(kube, module_namespace, created["metadata"]["uid"])
    assert secret["address"] == address
    WatchKeys.from_wallet(secret["viewkey"], address)  # the view key is the address's
    assert not [k for k in escrow_secret(kube, module_namespace, created["metadata"]["uid"]) if k.startswith("watch")]
    calls = wallet_rpc_calls(funding_operator)

    height = wallet.confirm(wallet.pay(address, 1 * XMR))
    obj = wait_funding(
        kube, module_namespace, "paid", lambda o: funding(o).get("height") == height, "the scan after the block"
    )
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
    wait_event(kube, module_namespace, "paid", "Funded")  # Events are posted after the status write
    reasons = [reason for reason, _ in events(kube, module_namespace, "paid")]
    assert reasons.count("FundsReceived") == 2, reasons
    assert "UnderPaid" in reasons, reasons
    assert f"following blocks published on {chain.zmq}" in funding_operator.log
    # The chain watch found both payments with the view key: no wallet-rpc call since the key was read.
    assert wallet_rpc_calls(funding_operator) == calls
    assert secret["viewkey"] not in funding_operator.log


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


def test_escrow_made_on_an_offline_pool_is_watched_from_the_start_of_a_short_chain(
    kube: client.ApiClient, module_namespace: str, chain: Chain, wallet: Miner, funding_operator: OperatorProcess
) -> None:
    """Wallets made offline have no recorded height: the watch starts at wallet2's clock estimate of the
    mainnet height (~3.8 million), or at the genesis block on a chain below it. A payment made while the
    pool had no daemon is found once it gets one."""
    _create_pool(kube, module_namespace, "offlinepool", 1, network="regtest")
    create_escrow(kube, module_namespace, "early", "offlinepool", amount=1 * XMR, confirmations=1)
    ready = wait_escrow(kube, module_namespace, "early", timeout=300)
    assert "restoreHeight" not in ready["status"]
    assert "funding" not in ready["status"]
    # A payout of an escrow on an offline pool waits, saying why (nothing can be signed or submitted).
    payouts = client.CustomObjectsApi(kube)
    payouts.create_namespaced_custom_object(
        GROUP,
        VERSION,
        module_namespace,
        PAYOUT_PLURAL,
        payout_body("early-pay", "early", ["buyer", "vendor"], sweepTo=ready["status"]["address"]),
    )
    held = wait_for(
        custom_objects(kube, module_namespace, PAYOUT_PLURAL),
        lambda p: (condition(json_object(p), "Ready") or {}).get("reason") == "NoDaemon",
        field_selector="metadata.name=early-pay",
        what="the payout of an escrow on an offline pool to wait for a daemon",
    )
    assert "has no daemon" in condition(json_object(held), "Ready")["message"]
    assert not (json_object(held).get("status") or {}).get("txHashes")
    payouts.delete_namespaced_custom_object(GROUP, VERSION, module_namespace, PAYOUT_PLURAL, "early-pay")
    height = wallet.confirm(wallet.pay(ready["status"]["address"], 1 * XMR))

    client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        GROUP, VERSION, module_namespace, WALLETPOOL_PLURAL, "offlinepool", {"spec": {"daemon": chain.address}}
    )
    obj = wait_funding(
        kube, module_namespace, "early", lambda o: funding(o).get("received") == XMR, "the early payment", timeout=300
    )
    assert (funding(obj)["transfers"], funding(obj).get("message")) == (1, None), funding(obj)
    assert funding(obj)["height"] >= height
    funded = condition(obj, "Funded")
    assert funded is not None and (funded["status"], funded["reason"]) == ("True", "Funded"), funded


def test_signing_protocol_pays_out_from_copies_of_the_final_wallets(
    kube: client.ApiClient,
    module_namespace: str,
    chain: Chain,
    wallet: Miner,
    pool: str,
    tmp_path: Path,
) -> None:
    """escrow_operator.signing on real wallets: a release (buyer + vendor) and then a refund (buyer +
    arbiter) spending the change, from copies of the final wallets the operator built, with the
    transaction hashes known from the signed set before it is submitted."""
    created = create_escrow(kube, module_namespace, "signed", pool)
    address = wait_escrow(kube, module_namespace, "signed", timeout=300)["status"]["address"]
    wallet.confirm(wallet.pay(address, 5 * XMR), confirmations=10)  # transfers unlock after 10 blocks
    uid = created["metadata"]["uid"]
    passwords = escrow_secret(kube, module_namespace, uid)
    source = pool_directory(kube, module_namespace, pool)
    for role in ("buyer", "vendor", "arbiter"):
        final = WalletNames(role, uid, 3).final_wallet
        for name in wallet_files(final):
            if (source / name).exists():
                shutil.copy(source / name, tmp_path / name.replace(final, role))

    with standalone_wallet_rpc(tmp_path, daemon=chain.address) as inspector:
        inspector.call("create_wallet", filename="recipient", password="", language="English")
        recipient = inspector.call("get_address")["address"]
        inspector.call("close_wallet")

        async def pay(signers: tuple[str, str], amount: int) -> tuple[list[str], int]:
            rpc = WalletRpc(inspector.url, inspector.user, inspector.password)
            hook = PassThrough()
            try:
                infos = {}
                for role in signers:
                    await rpc.open_wallet(role, passwords[f"password.{role}"])
                    infos[role] = await signing.export_info(hook, rpc)
                    await rpc.close_wallet()
                for role in signers:
                    await rpc.open_wallet(role, passwords[f"password.{role}"])
                    assert await signing.import_infos(hook, rpc, [infos[o] for o in signers if o != role]) > 0
                    await rpc.close_wallet()  # stores the imported infos
                builder, cosigner = signers
                await rpc.open_wallet(builder, passwords[f"password.{builder}"])
                unsigned = await signing.build(hook, rpc, [Destination(address=recipient, amount=amount)], None)
                await rpc.close_wallet()
                await rpc.open_wallet(cosigner, passwords[f"password.{cosigner}"])
                signed = await signing.sign(hook, rpc, unsigned.multisig_txset)
                assert signed.tx_hash_list  # known before submission
                submitted = await signing.submit(hook, rpc, signed.tx_data_hex)
                await rpc.close_wallet()
                return submitted, unsigned.total_fee
            finally:
                await rpc.aclose()

        first, fee = asyncio.run(pay(("vendor", "buyer"), 2 * XMR))
        assert len(first) == 1 and fee > 0
        wallet.confirm(first[0], confirmations=10)  # the change unlocks after 10 blocks
        second, _ = asyncio.run(pay(("buyer", "arbiter"), XMR))
        wallet.confirm(second[0])
        inspector.call("open_wallet", filename="recipient", password="")
        inspector.call("refresh")
        received = inspector.call("get_balance")["balance"]
        inspector.call("close_wallet")
    assert received == 3 * XMR  # exactly the two amounts


def test_a_namespace_user_who_edits_every_secret_cannot_make_an_escrow_funded(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    chain: Chain,
    wallet: Miner,
    pool: str,
    funding_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """A user who may edit every Secret of the namespace (and read Escrows) writes a found output into
    the escrow's Secret, swaps in another wallet's keys (the miner's, which receives every coinbase)
    and plants a look-alike watch Secret, then the operator restarts and blocks come: the escrow stays
    unpaid. What the chain watch knows lives in the operator's namespace, which the user cannot read
    or write."""
    ns = module_namespace
    user = namespace_user(
        kube,
        cluster,
        ns,
        "secret-editor",
        [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]},
            {"apiGroups": [GROUP], "resources": ["escrows"], "verbs": ["get", "list", "watch"]},
        ],
        tmp_path / "user.kubeconfig",
    )
    created = create_escrow(kube, ns, "unpaid", pool, amount=XMR)
    uid = created["metadata"]["uid"]
    wait_escrow(kube, ns, "unpaid", timeout=300)
    wait_watch_keys(kube, ns, uid)
    as_user = client.CoreV1Api(user)
    for attempt in (
        lambda: as_user.read_namespaced_secret(f"escrow-{uid}-watch", OPERATOR_NAMESPACE),
        lambda: as_user.patch_namespaced_secret(f"escrow-{uid}-watch", OPERATOR_NAMESPACE, {"data": {}}),
    ):
        with pytest.raises(client.ApiException) as refused:
            attempt()
        assert refused.value.status == 403
    height = chain.height()
    forged_ledger = Ledger()
    forged_ledger.add([Received("ab" * 32, 0, "cd" * 32, 5 * XMR, 0, height, "ef" * 32)])
    view = str(wallet.call("query_key", key_type="view_key")["key"])
    forged = {
        "watch.ledger": forged_ledger.to_json(),
        "watch.daemon": chain.address,
        "watch.joined": "true",
        "watch.viewkey": view,
        "watch.spendkey": WatchKeys.from_wallet(view, wallet.address).spend_public.hex(),
    }
    b64 = {k: base64.b64encode(v.encode()).decode() for k, v in forged.items()}
    as_user.patch_namespaced_secret(f"escrow-{uid}", ns, {"data": b64})
    as_user.create_namespaced_secret(ns, {"metadata": {"name": f"escrow-{uid}-watch"}, "data": b64})
    funding_operator.stop()
    funding_operator.start()
    mined = wallet.mine(3)  # coinbase outputs to the miner, whose keys were planted
    seen = wait_funding(
        kube, ns, "unpaid", lambda o: funding(o).get("height", 0) >= mined, "the scan of the new blocks", 180
    )
    assert (funding(seen).get("received", 0), funding(seen).get("transfers", 0)) == (0, 0), funding(seen)
    assert (condition(seen, "Funded") or {}).get("status") != "True", seen["status"]
    assert "FundsReceived" not in [reason for reason, _ in events(kube, ns, "unpaid")]
    assert wait_watch_keys(kube, ns, uid)["address"] == seen["status"]["address"]

"""Payouts on a real regtest chain: EscrowPayouts release, refund and sweep an escrow's funds through
the pool's wallet-rpc pods, each recipient paid exactly once, also when the operator is killed while
signing or around the submission.

One monerod pod, one miner wallet and one 2-pod pool (with the daemon) for the module; each test runs
its own operators and escrows.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from escrow_operator.api import ESCROW_PLURAL, GROUP, PAYOUT_PLURAL, VERSION, WALLETPOOL_PLURAL
from escrow_operator.funding_status import xmr
from escrow_operator.kube import json_object
from hack.devcluster import DevCluster
from hack.testground.chain import Chain, Miner
from hack.testground.escrows import (
    assert_no_secrets,
    condition,
    create_escrow,
    payout_body,
    pool_body,
    pool_directory,
    wait_escrow,
    wait_escrow_gone,
)
from hack.testground.kube import Timeout, container_pid, custom_objects, namespace_user, wait_for
from hack.testground.operator import OperatorProcess
from hack.testground.processes import free_port
from hack.testground.walletrpc import local_wallet_rpc
from tests.integration.conftest import start_operator
from tests.support.gitops import verdict
from tests.support.walletrpc_proc import Inspector, standalone_wallet_rpc

XMR = 10**12
POOL = "paypool"
ROLES = ("arbiter", "buyer", "vendor")
FAST_BLOCKS = {"ESCROW_BLOCK_POLL_INTERVAL": "0.5"}


@pytest.fixture(scope="module")
def pool(
    kube: client.ApiClient, module_namespace: str, chain: Chain, cluster: DevCluster, crds: None, tmp_path_factory: Any
) -> str:
    """The pool, reconciled by an operator that stops once its pods are ready (each test runs its own)."""
    op = start_operator(cluster, tmp_path_factory.mktemp("pool-operator") / "operator.log")
    try:
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            GROUP,
            VERSION,
            module_namespace,
            WALLETPOOL_PLURAL,
            pool_body(POOL, 2, network="regtest", daemon=chain.address),
        )
        wait_for(
            client.AppsV1Api(kube).list_namespaced_stateful_set,
            lambda s: (s.status.ready_replicas or 0) == 2,
            module_namespace,
            field_selector=f"metadata.name={POOL}",
            timeout=180,
            what="2 ready pods of the pool",
        )
    finally:
        op.stop()
    return POOL


@pytest.fixture(scope="module")
def payees(chain: Chain, tmp_path_factory: Any) -> Iterator[Inspector]:
    """A wallet-rpc of the test's own holding the recipients' plain wallets."""
    with standalone_wallet_rpc(tmp_path_factory.mktemp("payees"), daemon=chain.address) as rpc:
        yield rpc


def new_payee(payees: Inspector, name: str) -> str:
    payees.call("create_wallet", filename=name, password="", language="English")
    address = str(payees.call("get_address")["address"])
    payees.call("close_wallet")
    return address


def received(payees: Inspector, name: str) -> int:
    payees.call("open_wallet", filename=name, password="")
    try:
        payees.call("refresh")
        return int(payees.call("get_balance")["balance"])
    finally:
        payees.call("close_wallet")


def create_payout(
    kube: client.ApiClient, namespace: str, name: str, escrow: str, signers: list[str], **spec: Any
) -> None:
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PAYOUT_PLURAL, payout_body(name, escrow, signers, **spec)
    )


def get_payout(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return json_object(
        client.CustomObjectsApi(kube).get_namespaced_custom_object(GROUP, VERSION, namespace, PAYOUT_PLURAL, name)
    )


def wait_payout(
    kube: client.ApiClient, namespace: str, name: str, done: Any, what: str, timeout: float = 300
) -> dict[str, Any]:
    return json_object(
        wait_for(
            custom_objects(kube, namespace, PAYOUT_PLURAL),
            lambda obj: done(json_object(obj)),
            field_selector=f"metadata.name={name}",
            timeout=timeout,
            what=what,
        )
    )


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


def funded_escrow(
    kube: client.ApiClient, namespace: str, name: str, wallet: Miner, paid: int, **spec: Any
) -> dict[str, Any]:
    """A Ready 2-of-3 escrow paid ``paid`` by the miner, the payment unlocked (10 blocks)."""
    create_escrow(kube, namespace, name, POOL, **spec)
    escrow = wait_escrow(kube, namespace, name, timeout=300)
    txid = wallet.pay(escrow["status"]["address"], paid)
    wallet.confirm(txid, confirmations=10)
    # In one run the watch wallet still read the payment as locked at 10 confirmations (after the
    # module's first test); a block more is mined then, and each try's figures go in the message.
    tries: list[str] = []
    for _ in range(3):
        try:
            return unlocked_at_least(kube, namespace, name, paid, timeout=60)
        except AssertionError as exc:
            tries.append(f"{exc} (tx in block {wallet.chain.block_of(txid)}, chain height {wallet.chain.height()})")
            wallet.mine(1)
    raise AssertionError("; ".join(tries))


def unlocked_at_least(
    kube: client.ApiClient, namespace: str, name: str, amount: int, timeout: float = 120
) -> dict[str, Any]:
    def funding(e: dict[str, Any]) -> dict[str, Any]:
        return dict((e.get("status") or {}).get("funding") or {})

    try:
        return json_object(
            wait_for(
                custom_objects(kube, namespace, ESCROW_PLURAL),
                lambda e: funding(e).get("unlocked", 0) >= amount,
                field_selector=f"metadata.name={name}",
                timeout=timeout,
                what=f"{amount} unlocked in escrow {name}",
            )
        )
    except Timeout:
        escrow = json_object(
            client.CustomObjectsApi(kube).get_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL, name)
        )
        raise AssertionError(f"escrow {name} funding: {funding(escrow)}") from None


def confirm(wallet: Miner, payout: dict[str, Any], confirmations: int) -> None:
    for tx in payout["status"]["txHashes"]:
        wallet.confirm(tx, confirmations)


#: Where the test operators run (no POD_NAMESPACE): the payouts' records live there.
OPERATOR_NAMESPACE = "default"


def payout_secret(kube: client.ApiClient, namespace: str, payout: dict[str, Any]) -> dict[str, str]:
    """The payout's record, in the operator's namespace (never in the payout's own ``namespace``)."""
    core = client.CoreV1Api(kube)
    secret = core.read_namespaced_secret(f"payout-{payout['metadata']['uid']}", OPERATOR_NAMESPACE)
    assert (secret.metadata.annotations or {}).get(
        "xmrescrow.dev/payout"
    ) == f"{namespace}/{payout['metadata']['name']}"
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def payout_files(kube: client.ApiClient, namespace: str, payout: dict[str, Any]) -> list[str]:
    tag = "_pay_" + payout["metadata"]["uid"].replace("-", "")[:12] + "_"
    return sorted(p.name for p in pool_directory(kube, namespace, POOL).iterdir() if tag in p.name)


def reasons(kube: client.ApiClient, namespace: str, name: str) -> list[str]:
    found = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [e.reason for e in found.items]


def assert_no_payout_secrets(
    kube: client.ApiClient,
    namespace: str,
    payouts: list[dict[str, Any]],
    logs: list[str],
    secrets: list[dict[str, str]] | None = None,
) -> int:
    """No multisig info or transaction set of ``payouts`` (read from their Secrets unless given) in any
    payout's status, the namespace's events or ``logs``; returns how many values were looked for."""
    found = secrets if secrets is not None else [payout_secret(kube, namespace, p) for p in payouts]
    values = [v for s in found for k, v in s.items() if ".info." in k or ".txset." in k]
    listed = client.CustomObjectsApi(kube).list_namespaced_custom_object(GROUP, VERSION, namespace, PAYOUT_PLURAL)
    haystacks = [str(p.get("status")) for p in json_object(listed)["items"]]
    haystacks += [f"{e.reason} {e.message}" for e in client.CoreV1Api(kube).list_namespaced_event(namespace).items]
    haystacks += logs
    # A middle piece of each value as well: a log line may carry a value cut short.
    leaked = [v[:16] for v in values for hay in haystacks if v in hay or v[len(v) // 2 :][:48] in hay]
    assert not leaked, f"multisig infos or transaction sets leaked: {leaked}"
    return len(values)


def test_release_then_refund_pay_each_recipient_exactly_once(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    wallet: Miner,
    pool: str,
    payees: Inspector,
    tmp_path: Path,
) -> None:
    """A release of 2 XMR to the vendor (vendor + buyer sign), a payout of more than is left (refused
    before signing) and a refund of everything left to the buyer (buyer + arbiter, a sweep), created at
    once and run one after the other; then the escrow (walletRetention: Delete, but funded) is deleted
    and its wallets are kept. The escrow records both parties' payout addresses, and every signer checks
    each set against them and the payout (describe_transfer) before it signs."""
    ns = module_namespace
    vendor, buyer = new_payee(payees, "vendor"), new_payee(payees, "buyer")
    op = start_operator(cluster, tmp_path / "operator.log", **FAST_BLOCKS)
    try:
        deal = funded_escrow(
            kube,
            ns,
            "deal",
            wallet,
            5 * XMR,
            amount=5 * XMR,
            walletRetention="Delete",
            payoutAddresses=[{"role": "vendor", "address": vendor}, {"role": "buyer", "address": buyer}],
        )
        create_payout(
            kube,
            ns,
            "a-release",
            "deal",
            ["vendor", "buyer"],
            destinations=[{"address": vendor, "amount": 2 * XMR}],
            confirmations=2,
        )
        create_payout(
            kube, ns, "b-greedy", "deal", ["arbiter", "vendor"], destinations=[{"address": vendor, "amount": 4 * XMR}]
        )
        create_payout(kube, ns, "c-refund", "deal", ["buyer", "arbiter"], sweepTo=buyer, confirmations=1)
        release = wait_payout(kube, ns, "a-release", lambda p: phase(p) == "Submitted", "the release submitted")
        captured = [release]  # real payouts in each state, for the GitOps verdicts below
        for later in ("b-greedy", "c-refund"):
            held = get_payout(kube, ns, later)
            captured.append(held)
            assert phase(held) == "Pending" and condition(held, "Ready")["reason"] == "EarlierPayout", held["status"]
            assert "a-release" in condition(held, "Ready")["message"]
        status = release["status"]
        assert len(status["txHashes"]) == 1 and status["amount"] == 2 * XMR and status["fee"] > 0, status
        assert (condition(release, "Ready")["status"], condition(release, "Reconciling")["status"]) == ("False", "True")
        confirm(wallet, release, 2)
        release = wait_payout(kube, ns, "a-release", lambda p: phase(p) == "Confirmed", "the release confirmed", 120)
        captured.append(release)
        assert condition(release, "Ready")["status"] == "True" and release["status"]["confirmations"] >= 2
        assert release["status"]["txHashes"] == status["txHashes"]  # never another transaction
        # The release spent every unlocked output and its change is locked for 10 blocks: once the
        # escrow's figures show it (at the next block read), the next payout waits for unlocked funds;
        # read before that, it goes on to its builder, which refuses it as below.
        wait_payout(
            kube,
            ns,
            "b-greedy",
            lambda p: phase(p) == "Failed" or (condition(p, "Ready") or {}).get("reason") == "AwaitingFunds",
            "the greedy payout waiting for the change to unlock, or refused",
        )
        wallet.mine(10)  # the release's change unlocks
        # 4 XMR asked of the ~2.99 left: Failed before anything is signed, with both figures.
        greedy = wait_payout(kube, ns, "b-greedy", lambda p: phase(p) == "Failed", "the greedy payout refused")
        captured.append(greedy)
        stalled = condition(greedy, "Stalled")
        assert stalled is not None and stalled["reason"] == "InsufficientFunds", greedy["status"]
        left = xmr(3 * XMR - release["status"]["fee"])
        assert f"holds {left} XMR" in stalled["message"] and "asks for 4 XMR" in stalled["message"], stalled
        assert greedy["status"].get("txHashes", []) == [] and greedy["status"].get("signatures", 0) == 0
        refund = wait_payout(kube, ns, "c-refund", lambda p: phase(p) == "Submitted", "the refund submitted")
        confirm(wallet, refund, 1)
        refund = wait_payout(kube, ns, "c-refund", lambda p: phase(p) == "Confirmed", "the refund confirmed", 120)
        # The escrow's figures leave its own payouts out: the release's change is no payment, and what
        # both spent is not unlocked (the watch wallet alone counts both). The sweep kept no change, so
        # the two paid out the 5 XMR exactly, fees included.
        paid_out = json_object(
            wait_for(
                custom_objects(kube, ns, ESCROW_PLURAL),
                lambda e: ((e.get("status") or {}).get("funding") or {}).get("paidOut") == 5 * XMR,
                field_selector="metadata.name=deal",
                timeout=120,
                what="both payouts in the escrow's funding figures",
            )
        )["status"]["funding"]
        assert (paid_out["received"], paid_out["transfers"], paid_out["unlocked"]) == (5 * XMR, 1, 0), paid_out
        recorded = sorted(h for p in paid_out["payouts"] for h in p["txHashes"])
        assert recorded == sorted(release["status"]["txHashes"] + refund["status"]["txHashes"]), paid_out
        # Everything was paid out: a payout made now fails at once, and no later payment would pay it.
        create_payout(
            kube, ns, "d-late", "deal", ["vendor", "buyer"], destinations=[{"address": vendor, "amount": XMR}]
        )
        late = wait_payout(kube, ns, "d-late", lambda p: phase(p) == "Failed", "the payout of a spent escrow", 120)
        refused = condition(late, "Stalled")
        assert refused is not None and refused["reason"] == "InsufficientFunds", late["status"]
        assert "received 5 XMR and its payouts spent all of it" in refused["message"], refused
        secrets = [payout_secret(kube, ns, p) for p in (release, refund)]  # before the escrow goes
        # walletRetention: Delete, but the escrow received funds: deleting it keeps its wallets.
        client.CustomObjectsApi(kube).delete_namespaced_custom_object(GROUP, VERSION, ns, ESCROW_PLURAL, "deal")
        wait_escrow_gone(kube, ns, "deal", timeout=120)
        log = op.log
    finally:
        op.stop()
    uid = deal["metadata"]["uid"]
    kept = sorted(p.name for p in pool_directory(kube, ns, POOL).iterdir() if uid in p.name)
    assert [n for n in kept if n.endswith("_final.keys")] == [
        f"{role}_escrow_{uid}_round_3_final.keys" for role in ("arbiter", "buyer", "vendor")
    ], kept
    assert not [n for n in kept if "_final" not in n], kept  # work, watch and payout copies are gone
    secret = client.CoreV1Api(kube).read_namespaced_secret(f"escrow-{uid}", ns)
    assert (secret.metadata.labels or {}).get(f"{GROUP}/retained") == "true"
    assert "FundedWalletsRetained" in reasons(kube, ns, "deal")
    assert received(payees, "vendor") == 2 * XMR
    fees = release["status"]["fee"] + refund["status"]["fee"]
    assert received(payees, "buyer") == refund["status"]["amount"] == 3 * XMR - fees
    for payout in (release, refund):
        name = payout["metadata"]["name"]
        assert {"Syncing", "Signing", "Submitted", "Confirmed"} <= set(reasons(kube, ns, name)), reasons(kube, ns, name)
        assert payout_files(kube, ns, payout) == []  # the payout's copies are gone; the final wallets stay
    assert assert_no_payout_secrets(kube, ns, [release, refund], [log], secrets) >= 6
    # kstatus and Argo CD (the health check of docs/install.md) on the payouts as they were: Submitted and
    # held behind an earlier payout in progress, Confirmed healthy, refused degraded; the figures in XMR.
    judged = [(p["status"]["phase"], *verdict(p).pair) for p in captured]
    assert judged == [
        ("Submitted", "InProgress", "Progressing"),
        ("Pending", "InProgress", "Progressing"),
        ("Pending", "InProgress", "Progressing"),
        ("Confirmed", "Current", "Healthy"),
        ("Failed", "Failed", "Degraded"),
    ], judged
    assert f"; {xmr(2 * XMR)} XMR, fee {xmr(status['fee'])} XMR" in verdict(captured[3]).argo_message
    assert (status["amountXmr"], status["feeXmr"]) == (xmr(2 * XMR), xmr(status["fee"]))


def test_a_dispute_split_on_3_of_4_and_a_release_on_2_of_2_pay_each_share(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    wallet: Miner,
    pool: str,
    payees: Inspector,
    tmp_path: Path,
) -> None:
    """Other signer sets: a 3-of-4 escrow's dispute, signed by the arbiter, the buyer and a second
    arbiter, splits the money between vendor and buyer (two destinations of one transaction); a 2-of-2
    escrow's release, signed by both, sweeps everything to the vendor. Both run at once. Then vendor,
    buyer and arbiter, another set, sweep what the 3-of-4 escrow has left."""
    ns = module_namespace
    vendor, buyer, seller, rest = (new_payee(payees, f"{who}-split") for who in ("vendor", "buyer", "seller", "rest"))
    quad = {"threshold": 3, "participants": ["buyer", "vendor", "arbiter", "backup"]}
    duo = {"threshold": 2, "participants": ["buyer", "vendor"]}
    op = start_operator(cluster, tmp_path / "operator.log", **FAST_BLOCKS)
    try:
        funded_escrow(kube, ns, "quad", wallet, 3 * XMR, **quad)
        funded_escrow(kube, ns, "duo", wallet, 2 * XMR, **duo)
        shares = [{"address": vendor, "amount": XMR}, {"address": buyer, "amount": XMR // 2}]
        create_payout(kube, ns, "dispute", "quad", ["arbiter", "buyer", "backup"], destinations=shares, confirmations=1)
        create_payout(kube, ns, "release", "duo", ["vendor", "buyer"], sweepTo=seller, confirmations=1)
        submitted = {
            name: wait_payout(kube, ns, name, lambda p: phase(p) == "Submitted", f"{name} submitted")
            for name in ("dispute", "release")
        }
        for payout in submitted.values():
            confirm(wallet, payout, 1)
        done = {
            name: wait_payout(kube, ns, name, lambda p: phase(p) == "Confirmed", f"{name} confirmed", 120)
            for name in ("dispute", "release")
        }
        # Another signer set of the 3-of-4 escrow (none of the dispute's backup) sweeps what is left.
        wallet.mine(10)  # the dispute's change unlocks
        create_payout(kube, ns, "rest", "quad", ["vendor", "buyer", "arbiter"], sweepTo=rest, confirmations=1)
        confirm(wallet, wait_payout(kube, ns, "rest", lambda p: phase(p) == "Submitted", "rest submitted"), 1)
        swept = wait_payout(kube, ns, "rest", lambda p: phase(p) == "Confirmed", "rest confirmed", 120)["status"]
    finally:
        op.stop()
    dispute, release = done["dispute"]["status"], done["release"]["status"]
    assert len(dispute["txHashes"]) == 1 and dispute["amount"] == XMR + XMR // 2 and dispute["signatures"] == 3
    assert dispute["txHashes"] == submitted["dispute"]["status"]["txHashes"]
    assert (received(payees, "vendor-split"), received(payees, "buyer-split")) == (XMR, XMR // 2)
    assert release["signatures"] == 2 and release["amount"] == 2 * XMR - release["fee"]
    assert received(payees, "seller-split") == release["amount"]
    assert swept["signatures"] == 3 and received(payees, "rest-split") == swept["amount"]
    assert swept["amount"] == 3 * XMR - dispute["amount"] - dispute["fee"] - swept["fee"]


def monerod_pid(kube: client.ApiClient, cluster: DevCluster, chain: Chain) -> int:
    """The monerod process of the chain's pod, from the process kubelet's pid file."""
    uid = client.CoreV1Api(kube).read_namespaced_pod(chain.name, chain.namespace).metadata.uid
    for line in (cluster.kubelet_root / "pids").read_text().splitlines():
        pod_uid, container, pid = line.split()
        if (pod_uid, container) == (uid, "monerod"):
            return int(pid)
    raise AssertionError(f"no monerod process of pod {uid} in the kubelet's pid file")


def test_a_daemon_outage_after_submission_is_degraded_and_the_payout_then_confirms(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    chain: Chain,
    wallet: Miner,
    pool: str,
    payees: Inspector,
    tmp_path: Path,
) -> None:
    """monerod stops answering (SIGSTOP) while a submitted payout waits for its block: the payout says so
    (Degraded, DaemonUnavailable) and stays Submitted with its one transaction; monerod answers again
    (SIGCONT) and the payout confirms, Degraded False, the recipient paid once."""
    ns = module_namespace
    payee = new_payee(payees, "outage")
    op = start_operator(cluster, tmp_path / "operator.log", ESCROW_DAEMON_TIMEOUT="2", **FAST_BLOCKS)
    try:
        funded_escrow(kube, ns, "outage", wallet, 2 * XMR)
        create_payout(
            kube,
            ns,
            "outage",
            "outage",
            ["vendor", "arbiter"],
            destinations=[{"address": payee, "amount": XMR}],
            confirmations=1,
        )
        submitted = wait_payout(kube, ns, "outage", lambda p: phase(p) == "Submitted", "the payout submitted")
        pid = monerod_pid(kube, cluster, chain)
        os.kill(pid, signal.SIGSTOP)
        try:
            degraded = wait_payout(
                kube,
                ns,
                "outage",
                lambda p: (condition(p, "Degraded") or {}).get("status") == "True",
                "the payout Degraded",
                timeout=60,
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        assert condition(degraded, "Degraded")["reason"] == "DaemonUnavailable", degraded["status"]
        assert phase(degraded) == "Submitted" and condition(degraded, "Reconciling")["status"] == "True"
        assert degraded["status"]["txHashes"] == submitted["status"]["txHashes"]
        confirm(wallet, submitted, 1)
        done = wait_payout(kube, ns, "outage", lambda p: phase(p) == "Confirmed", "the payout confirmed", 120)
    finally:
        op.stop()
    assert condition(done, "Degraded")["status"] == "False"
    assert done["status"]["txHashes"] == submitted["status"]["txHashes"]
    assert received(payees, "outage") == XMR


def stagenet_address() -> str:
    """A real address of another network (stagenet), from a wallet-rpc of the test's own."""
    with local_wallet_rpc(None, user="stagenet", stagenet=True) as rpc:
        rpc.call("create_wallet", filename="other", password="", language="English")
        return str(rpc.call("get_address")["address"])


def test_payouts_the_operator_refuses_say_why_and_sign_nothing(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    wallet: Miner,
    pool: str,
    payees: Inspector,
    tmp_path: Path,
) -> None:
    """What admission cannot judge (it knows neither the escrow nor the network): signers that are not
    M roles of the escrow, an address of another network or with a broken checksum fail with their
    reason; a payout of a missing or not-Ready escrow waits, saying so. None of them signs anything."""
    ns, name = module_namespace, "refusals"
    payee = new_payee(payees, name)
    broken = payee[:60] + ("3" if payee[60] != "3" else "4") + payee[61:]  # the form holds, the checksum not
    failing = {
        "three-signers": (["buyer", "vendor", "arbiter"], payee, "SignerCount", "needs exactly 2 signers"),
        "unknown-role": (["buyer", "judge"], payee, "SignerUnknown", "judge are not participants"),
        "stagenet": (["buyer", "vendor"], stagenet_address(), "AddressInvalid", "is a stagenet address"),
        "checksum": (["buyer", "vendor"], broken, "AddressInvalid", "is not a Monero address"),
    }
    # A payout may wait for its escrow's funds only so long (here 20 s from its creation).
    op = start_operator(cluster, tmp_path / "operator.log", ESCROW_PAYOUT_FUNDS_TIMEOUT="20", **FAST_BLOCKS)
    try:
        funded_escrow(kube, ns, name, wallet, XMR)
        create_escrow(kube, ns, "unready", "no-such-pool")
        # An escrow that fixed where its money may go: a payout to anyone else fails before any signing.
        create_escrow(kube, ns, "fixed", POOL, payoutAddresses=[{"role": "vendor", "address": payee}])
        wait_escrow(kube, ns, "fixed", timeout=300)
        stranger = new_payee(payees, f"{name}-stranger")
        create_payout(kube, ns, "to-a-stranger", "fixed", ["buyer", "vendor"], sweepTo=stranger)
        create_payout(kube, ns, "too-early", "fixed", ["buyer", "vendor"], sweepTo=payee)  # "fixed" is never paid
        for case, (signers, address, _, _) in failing.items():
            create_payout(kube, ns, case, name, signers, destinations=[{"address": address, "amount": XMR // 2}])
        create_payout(kube, ns, "no-escrow", "no-such-escrow", ["buyer", "vendor"], sweepTo=payee)
        create_payout(kube, ns, "not-ready", "unready", ["buyer", "vendor"], sweepTo=payee)
        for case, (_, _, reason, words) in failing.items():
            failed = wait_payout(kube, ns, case, lambda p: phase(p) == "Failed", f"payout {case} failed", 180)
            stalled = condition(failed, "Stalled")
            assert stalled["reason"] == reason and words in stalled["message"], (case, failed["status"])
            assert "Nothing was signed" in stalled["message"] or reason.startswith("Signer"), stalled
        failed = wait_payout(kube, ns, "to-a-stranger", lambda p: phase(p) == "Failed", "the stranger refused", 180)
        stalled = condition(failed, "Stalled")
        assert stalled["reason"] == "AddressNotAllowed", failed["status"]
        assert stranger in stalled["message"] and f"vendor {payee}" in stalled["message"], stalled
        waited = wait_payout(kube, ns, "too-early", lambda p: phase(p) == "Failed", "the payout that waited too long")
        expired = condition(waited, "Stalled")
        assert expired["reason"] == "FundsTimeout" and "has no unlocked funds yet" in expired["message"], expired
        assert "AwaitingFunds" in reasons(kube, ns, "too-early")  # it waited first
        for case, reason in (("no-escrow", "EscrowNotFound"), ("not-ready", "EscrowNotReady")):
            waiting = wait_payout(
                kube, ns, case, lambda p, r=reason: (condition(p, "Ready") or {}).get("reason") == r, f"{case} waits"
            )
            assert phase(waiting) in (None, "Pending") and (condition(waiting, "Stalled") or {}).get("status") != "True"
    finally:
        op.stop()
    for case in [*failing, "no-escrow", "not-ready", "to-a-stranger", "too-early"]:
        payout = get_payout(kube, ns, case)
        assert not payout["status"].get("txHashes") and not payout["status"].get("signatures"), payout["status"]
        try:
            recorded = payout_secret(kube, ns, payout)
        except client.ApiException as exc:
            assert exc.status == 404
            recorded = {}
        assert not [k for k in recorded if ".txset." in k or ".begun." in k], (case, sorted(recorded))
        assert payout_files(kube, ns, payout) == []
    assert received(payees, name) == 0 and received(payees, f"{name}-stranger") == 0
    objects = client.CustomObjectsApi(kube)
    for case in ("no-escrow", "not-ready"):  # they would wait on through the module's other tests
        objects.delete_namespaced_custom_object(GROUP, VERSION, ns, PAYOUT_PLURAL, case)
    objects.delete_namespaced_custom_object(GROUP, VERSION, ns, ESCROW_PLURAL, "unready")


def test_a_namespace_user_who_writes_payout_status_and_secrets_cannot_forge_or_stop_a_payout(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    wallet: Miner,
    pool: str,
    payees: Inspector,
    tmp_path: Path,
) -> None:
    """A settlement user who may create payouts, write their status (escrowpayouts/status) and edit every
    Secret of the namespace: with the operator down, it creates a release and writes its status as
    Confirmed with an old coinbase's hash, and another payout's status as Failed; it cannot read or
    write the payouts' records (operator's namespace). Once the operator is back, both payouts are made
    as asked: each pays once, with a transaction the operator built, and ends Confirmed."""
    ns = module_namespace
    vendor, buyer = new_payee(payees, "forge-vendor"), new_payee(payees, "forge-buyer")
    user = namespace_user(
        kube,
        cluster,
        ns,
        "settlement",
        [
            {"apiGroups": [GROUP], "resources": [PAYOUT_PLURAL], "verbs": ["create", "get", "list", "watch"]},
            {"apiGroups": [GROUP], "resources": [f"{PAYOUT_PLURAL}/status"], "verbs": ["get", "patch", "update"]},
            {"apiGroups": [GROUP], "resources": [ESCROW_PLURAL], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]},
        ],
        tmp_path / "settlement.kubeconfig",
    )
    op = start_operator(cluster, tmp_path / "operator.log", **FAST_BLOCKS)
    try:
        funded_escrow(kube, ns, "forgery", wallet, 3 * XMR)
    finally:
        op.stop()
    coinbase = str(wallet.chain.call("get_block", height=2)["miner_tx_hash"])
    for name, signers, pays in (("f-release", ["buyer", "vendor"], vendor), ("g-refund", ["buyer", "arbiter"], buyer)):
        create_payout(
            user, ns, name, "forgery", signers, destinations=[{"address": pays, "amount": XMR}], confirmations=1
        )
    as_user = client.CustomObjectsApi(user)
    forged = {
        "f-release": {"phase": "Confirmed", "txHashes": [coinbase], "attempt": 3, "observedGeneration": 1},
        "g-refund": {"phase": "Failed", "attempt": 5, "observedGeneration": 1},
    }
    for name, status in forged.items():
        as_user.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PAYOUT_PLURAL, name, {"status": status})
        uid = get_payout(kube, ns, name)["metadata"]["uid"]
        # A record where an earlier release kept it, saying the payout ended: not taken for a new payout.
        look_alike = {"attempt": "3", "3.hashes": coinbase, "outcome": status["phase"]}
        client.CoreV1Api(user).create_namespaced_secret(
            ns,
            {"metadata": {"name": f"payout-{uid}"}, "stringData": look_alike},
        )
        with pytest.raises(client.ApiException) as refused:
            client.CoreV1Api(user).read_namespaced_secret(f"payout-{uid}", OPERATOR_NAMESPACE)
        assert refused.value.status == 403
    assert phase(get_payout(kube, ns, "f-release")) == "Confirmed"  # the premise: the forgery is written
    op = start_operator(cluster, tmp_path / "operator-after.log", **FAST_BLOCKS)
    try:
        made = []
        for name in forged:
            submitted = wait_payout(kube, ns, name, lambda p: phase(p) == "Submitted", f"{name} submitted", 300)
            assert coinbase not in submitted["status"]["txHashes"], submitted["status"]
            confirm(wallet, submitted, 1)
            made.append(wait_payout(kube, ns, name, lambda p: phase(p) == "Confirmed", f"{name} confirmed", 120))
            wallet.mine(10)  # the release's change unlocks for the refund
        log = op.log
    finally:
        op.stop()
    for payout in made:
        assert payout["status"]["attempt"] == 1 and len(payout["status"]["txHashes"]) == 1, payout["status"]
        assert payout_secret(kube, ns, payout)["outcome"] == "Confirmed"
    assert (received(payees, "forge-vendor"), received(payees, "forge-buyer")) == (XMR, XMR)
    assert "written again" not in log  # nothing was recorded for them: the forged phases were simply undone


def test_a_wallet_rpc_killed_mid_signature_and_an_apiserver_restart_pay_once(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    wallet: Miner,
    pool: str,
    payees: Inspector,
    tmp_path: Path,
) -> None:
    """The operator holds the payout's signature, its pod leased, just before ``sign_multisig``; the
    apiserver is restarted, then that pod's wallet-rpc is killed. Let go on, the step signs the same
    recorded set on a live pod within the same attempt (a signature of the same set reuses nothing it
    may not); one transaction, the vendor paid once, the operator never restarted."""
    ns, name = module_namespace, "podkill"
    vendor = new_payee(payees, name)
    log = tmp_path / "operator.log"
    op = start_operator(cluster, log, **FAST_BLOCKS)
    try:
        funded_escrow(kube, ns, name, wallet, 2 * XMR)
    finally:
        op.stop()
    op = start_operator(
        cluster, log, ESCROW_MODE="test", ESCROW_FAULTS="pause:rpc.before.sign_multisig/sign", **FAST_BLOCKS
    )
    try:
        create_payout(
            kube,
            ns,
            name,
            name,
            ["buyer", "vendor"],
            destinations=[{"address": vendor, "amount": XMR}],
            confirmations=1,
        )
        victim = op.wait_log(r"paused at rpc.before.sign_multisig \(round 1\) pod=([\w.-]+)")[1]
        cluster.restart_apiserver()
        os.kill(container_pid(client.CoreV1Api(kube).read_namespaced_pod(victim, ns), "wallet-rpc"), signal.SIGKILL)
        op.wait_log(rf"pod {victim} lost mid-step")
        assert op.proc is not None
        os.kill(op.proc.pid, signal.SIGUSR1)
        submitted = wait_payout(kube, ns, name, lambda p: phase(p) == "Submitted", "the payout submitted")
        confirm(wallet, submitted, 1)
        done = wait_payout(kube, ns, name, lambda p: phase(p) == "Confirmed", "the payout confirmed", 120)
        assert op.proc.poll() is None, "the operator survived the apiserver restart"
    finally:
        op.stop()
    assert done["status"]["txHashes"] == submitted["status"]["txHashes"] and len(done["status"]["txHashes"]) == 1
    assert done["status"]["attempt"] == 1 and "SigningRestarted" not in reasons(kube, ns, name)
    assert received(payees, name) == XMR


#: Where the crash matrix kills the operator: each step of a 2-signer payout before and after it
#: records its result and before and after it publishes its copy (a word names the step: sync, merge,
#: build, sign), before and after the submission.
CRASH_MATRIX = (
    "rpc.after.export_multisig_info/sync",  # the info exported, not recorded
    "step.after_record/sync",
    "step.before_publish/sync",
    "step.after_publish/sync",
    "step.start/merge",
    "rpc.after.import_multisig_info/merge",
    "step.before_publish/merge",
    "step.after_publish/merge",
    "rpc.after.transfer/build",  # built, not recorded: the nonces may be used, a new attempt
    "step.after_record/build",
    "rpc.after.sign_multisig/sign",  # signed, not recorded: a new attempt
    "step.after_record/sign",
    "payout.before_submit",  # the hashes in status, nothing submitted
    "rpc.before.submit_multisig/submit",
    "payout.after_submit",  # submitted, the status not yet Submitted
    "watch.after_ledgers",  # the chain watch saved what the payout's block holds, its cursor not yet moved
)


def killed_or_confirmed(
    kube: client.ApiClient, namespace: str, name: str, op: OperatorProcess, wallet: Miner, timeout: float = 300
) -> dict[str, Any] | None:
    """Follow the payout until the operator killed itself (None) or the payout is Confirmed (returned),
    mining its confirmation once it is Submitted. The operator signals nothing but its exit and the
    payout's status, so both are polled."""
    assert op.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if op.proc.poll() is not None:
            assert op.proc.returncode == -signal.SIGKILL, op.log[-3000:]
            return None
        payout = get_payout(kube, namespace, name)
        if phase(payout) == "Confirmed":
            return payout
        if phase(payout) == "Submitted":
            confirm(wallet, payout, 1)
        time.sleep(0.2)
    raise AssertionError(f"payout {name} neither confirmed nor reached a fault point in {timeout} s:\n{op.log[-3000:]}")


def fired(armed: list[str], line: re.Match[str]) -> str:
    """The armed fault a ``SIGKILL at POINT (round N) step=LABEL`` line reports."""
    point, words = line["point"], re.split(r"[\s/]+", line["label"])
    for spec in armed:
        at, _, word = spec.partition("/")
        if at == point and (not word or word in words):
            return spec
    raise AssertionError(f"a kill at {point} in {line['label']!r} matches none of {armed}")


def test_operator_killed_at_every_point_of_a_payout_pays_once_and_the_escrow_pays_again(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    wallet: Miner,
    pool: str,
    payees: Inspector,
    tmp_path: Path,
) -> None:
    """The crash matrix: a dispute split (arbiter and vendor sign; vendor and buyer paid) runs under an operator that SIGKILLs itself at the first armed point
    it reaches; each restart disarms the point that fired, until one run reaches Confirmed. Every point
    fires once; the payout ends with one transaction and each recipient paid once. A refund sweeping the
    rest then confirms (the wallets still sign), and nothing secret reached status, events, logs or
    metrics."""
    ns = module_namespace
    name = "matrix"
    vendor, buyer, refunded = (new_payee(payees, f"matrix-{who}") for who in ("vendor", "buyer", "refund"))
    log = tmp_path / "operator.log"
    op = start_operator(cluster, log, **FAST_BLOCKS)
    try:
        escrow = funded_escrow(kube, ns, name, wallet, 2 * XMR)
    finally:
        op.stop()
    create_payout(
        kube,
        ns,
        name,
        name,
        ["arbiter", "vendor"],
        destinations=[{"address": vendor, "amount": 6 * XMR // 10}, {"address": buyer, "amount": 4 * XMR // 10}],
        confirmations=1,
    )
    armed, kills = list(CRASH_MATRIX), []
    release = None
    for _ in range(len(CRASH_MATRIX) + 1):
        since = len(op.log)
        op = start_operator(
            cluster, log, ESCROW_MODE="test", ESCROW_FAULTS=",".join(f"crash:{p}" for p in armed), **FAST_BLOCKS
        )
        try:
            release = killed_or_confirmed(kube, ns, name, op, wallet)
        finally:
            op.stop()
        if release is not None:
            break
        line = re.search(r"SIGKILL at (?P<point>\S+) \(round \w+\) step=(?P<label>.*)", op.log[since:])
        assert line is not None, op.log[since:][-3000:]
        armed.remove(fired(armed, line))
        kills.append(f"{line['point']} in {line['label']}")
    assert release is not None and armed == [], (armed, kills)
    assert len(kills) == len(CRASH_MATRIX), kills
    status = release["status"]
    assert len(status["txHashes"]) == 1 and status["amount"] == XMR, status
    # Killed between a build or a signature and its record: that attempt was never resumed.
    assert status["attempt"] == 3 and reasons(kube, ns, name).count("SigningRestarted") >= 2, status
    assert (received(payees, "matrix-vendor"), received(payees, "matrix-buyer")) == (6 * XMR // 10, 4 * XMR // 10)
    # The escrow's wallets sign again: a refund of everything left, once the change unlocks.
    wallet.mine(10)
    port = free_port()
    op = start_operator(cluster, log, ESCROW_METRICS_PORT=str(port), **FAST_BLOCKS)
    try:
        create_payout(kube, ns, "matrix-refund", name, ["buyer", "arbiter"], sweepTo=refunded, confirmations=1)
        refund = wait_payout(kube, ns, "matrix-refund", lambda p: phase(p) == "Submitted", "the refund submitted")
        confirm(wallet, refund, 1)
        refund = wait_payout(kube, ns, "matrix-refund", lambda p: phase(p) == "Confirmed", "the refund confirmed")
        # The chain watch (killed once mid-scan above) saw both payouts spend the escrow's outputs: nothing
        # is left unlocked, the one payment is the only transfer, each payout's change counted nowhere.
        height = wallet.chain.height()
        settled = wait_for(
            custom_objects(kube, ns, ESCROW_PLURAL),
            lambda e: int(((json_object(e).get("status") or {}).get("funding") or {}).get("height") or 0) >= height,
            field_selector=f"metadata.name={name}",
            what="the escrow's figures after the refund",
        )
        figures = json_object(settled)["status"]["funding"]
        assert (figures["received"], figures["transfers"], figures["unlocked"]) == (2 * XMR, 1, 0), figures
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        op.stop()
    assert (
        received(payees, "matrix-refund") == refund["status"]["amount"] == XMR - status["fee"] - refund["status"]["fee"]
    )
    uid = escrow["metadata"]["uid"]
    finals = sorted(p.name for p in pool_directory(kube, ns, POOL).iterdir() if uid in p.name and "_final" in p.name)
    assert finals == sorted(f"{r}_escrow_{uid}_round_3_final{x}" for r in ROLES for x in ("", ".keys")), finals
    assert payout_files(kube, ns, release) == payout_files(kube, ns, refund) == []  # every attempt's copies
    sidecars = [p.read_text(errors="replace") for p in cluster.kubelet_root.glob("pods/*/logs/walletfs.log")]
    logs = [op.log, metrics, *sidecars]
    assert_no_secrets(kube, ns, uid, logs)
    assert assert_no_payout_secrets(kube, ns, [release, refund], logs) >= 4

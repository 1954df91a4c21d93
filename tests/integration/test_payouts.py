"""Payouts on a real regtest chain: EscrowPayouts release, refund and sweep an escrow's funds through
the pool's wallet-rpc pods, each recipient paid exactly once, also when the operator is killed while
signing or around the submission.

One monerod pod, one miner wallet and one 2-pod pool (with the daemon) for the module; each test runs
its own operators and escrows.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from escrow_operator.api import ESCROW_PLURAL, GROUP, PAYOUT_PLURAL, VERSION, WALLETPOOL_PLURAL
from escrow_operator.funding_status import xmr
from escrow_operator.kube import json_object
from hack.devcluster import DevCluster
from hack.testground.chain import Chain, Miner
from hack.testground.escrows import (
    condition,
    create_escrow,
    pool_body,
    pool_directory,
    wait_escrow,
    wait_escrow_gone,
)
from hack.testground.kube import Timeout, custom_objects, wait_for
from hack.testground.operator import OperatorProcess
from tests.integration.conftest import start_operator
from tests.support.walletrpc_proc import Inspector, standalone_wallet_rpc

XMR = 10**12
POOL = "paypool"
FAST_BLOCKS = {"ESCROW_BLOCK_POLL_INTERVAL": "0.5"}


@pytest.fixture(scope="module")
def pool(
    kube: client.ApiClient, module_namespace: str, chain: Chain, cluster: DevCluster, crds: None, tmp_path_factory: Any
) -> str:
    """The pool, reconciled by an operator that stops once its pods are ready (each test runs its own)."""
    op = start_operator(cluster, tmp_path_factory.mktemp("pool-operator") / "operator.log")
    try:
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            GROUP, VERSION, module_namespace, WALLETPOOL_PLURAL, pool_body(POOL, 2, daemon=chain.address)
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


def payout_body(name: str, escrow: str, signers: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EscrowPayout",
        "metadata": {"name": name},
        "spec": {"escrowRef": escrow, "signers": signers, **spec},
    }


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


def payout_secret(kube: client.ApiClient, namespace: str, payout: dict[str, Any]) -> dict[str, str]:
    secret = client.CoreV1Api(kube).read_namespaced_secret(f"payout-{payout['metadata']['uid']}", namespace)
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def payout_files(kube: client.ApiClient, namespace: str, payout: dict[str, Any]) -> list[str]:
    tag = "_pay_" + payout["metadata"]["uid"].replace("-", "")[:12] + "_"
    return sorted(p.name for p in pool_directory(kube, namespace, POOL).iterdir() if tag in p.name)


def reasons(kube: client.ApiClient, namespace: str, name: str) -> list[str]:
    found = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [e.reason for e in found.items]


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
    and its wallets are kept."""
    ns = module_namespace
    vendor, buyer = new_payee(payees, "vendor"), new_payee(payees, "buyer")
    op = start_operator(cluster, tmp_path / "operator.log", **FAST_BLOCKS)
    try:
        deal = funded_escrow(kube, ns, "deal", wallet, 5 * XMR, amount=5 * XMR, walletRetention="Delete")
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
        for later in ("b-greedy", "c-refund"):
            held = get_payout(kube, ns, later)
            assert phase(held) == "Pending" and condition(held, "Ready")["reason"] == "EarlierPayout", held["status"]
            assert "a-release" in condition(held, "Ready")["message"]
        status = release["status"]
        assert len(status["txHashes"]) == 1 and status["amount"] == 2 * XMR and status["fee"] > 0, status
        assert (condition(release, "Ready")["status"], condition(release, "Reconciling")["status"]) == ("False", "True")
        confirm(wallet, release, 2)
        release = wait_payout(kube, ns, "a-release", lambda p: phase(p) == "Confirmed", "the release confirmed", 120)
        assert condition(release, "Ready")["status"] == "True" and release["status"]["confirmations"] >= 2
        assert release["status"]["txHashes"] == status["txHashes"]  # never another transaction
        # 4 XMR asked of the ~2.99 left: Failed before anything is signed, with both figures.
        greedy = wait_payout(kube, ns, "b-greedy", lambda p: phase(p) == "Failed", "the greedy payout refused")
        stalled = condition(greedy, "Stalled")
        assert stalled is not None and stalled["reason"] == "InsufficientFunds", greedy["status"]
        left = xmr(3 * XMR - release["status"]["fee"])
        assert f"holds {left} XMR" in stalled["message"] and "asks for 4 XMR" in stalled["message"], stalled
        assert greedy["status"].get("txHashes", []) == [] and greedy["status"].get("signatures", 0) == 0
        wallet.mine(10)  # the release's change unlocks
        refund = wait_payout(kube, ns, "c-refund", lambda p: phase(p) == "Submitted", "the refund submitted")
        confirm(wallet, refund, 1)
        refund = wait_payout(kube, ns, "c-refund", lambda p: phase(p) == "Confirmed", "the refund confirmed", 120)
        secrets = [payout_secret(kube, ns, p) for p in (release, refund)]
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
    # No multisig info or transaction set in status, events or the operator's log.
    values = [v for s in secrets for k, v in s.items() if ".info." in k or ".txset." in k]
    assert len(values) >= 6
    haystacks = [str(get_payout(kube, ns, n)["status"]) for n in ("a-release", "b-greedy", "c-refund")]
    haystacks += [f"{e.reason} {e.message}" for e in client.CoreV1Api(kube).list_namespaced_event(ns).items]
    haystacks.append(log)
    assert not [v[:16] for v in values for hay in haystacks if v in hay]


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
    escrow's release, signed by both, sweeps everything to the vendor. Both run at once."""
    ns = module_namespace
    vendor, buyer, seller = (new_payee(payees, f"{who}-split") for who in ("vendor", "buyer", "seller"))
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
    finally:
        op.stop()
    dispute, release = done["dispute"]["status"], done["release"]["status"]
    assert len(dispute["txHashes"]) == 1 and dispute["amount"] == XMR + XMR // 2 and dispute["signatures"] == 3
    assert dispute["txHashes"] == submitted["dispute"]["status"]["txHashes"]
    assert (received(payees, "vendor-split"), received(payees, "buyer-split")) == (XMR, XMR // 2)
    assert release["signatures"] == 2 and release["amount"] == 2 * XMR - release["fee"]
    assert received(payees, "seller-split") == release["amount"]


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


def run_until_exit(op: OperatorProcess, timeout: float = 300) -> int:
    assert op.proc is not None
    try:
        return op.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        op.stop()
        raise AssertionError(
            f"the operator did not reach its fault point within {timeout} s:\n{op.log[-3000:]}"
        ) from None


@pytest.mark.parametrize(
    "points",
    [
        pytest.param(["rpc.after.sign_multisig", "payout.before_submit"], id="signing-then-before-submit"),
        pytest.param(["payout.after_submit"], id="after-submit"),
    ],
)
def test_operator_killed_while_signing_or_submitting_pays_once(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    wallet: Miner,
    pool: str,
    payees: Inspector,
    tmp_path: Path,
    points: list[str],
) -> None:
    """SIGKILL at each point in turn, a restart after each: one transaction, the recipient paid once.

    Killed after a signature was made but not recorded, the attempt is abandoned (its nonces may be
    used) and a new one exports fresh infos; killed once the hashes are recorded, the restarted
    operator submits that same set, or finds it already submitted."""
    ns = module_namespace
    name = f"crash-{len(points)}"
    payee = new_payee(payees, name)
    log = tmp_path / "operator.log"
    op = start_operator(cluster, log, **FAST_BLOCKS)
    try:
        funded_escrow(kube, ns, name, wallet, 2 * XMR)
    finally:
        op.stop()
    create_payout(
        kube, ns, name, name, ["vendor", "arbiter"], destinations=[{"address": payee, "amount": XMR}], confirmations=1
    )
    for point in points:
        op = start_operator(cluster, log, ESCROW_MODE="test", ESCROW_FAULTS=f"crash:{point}", **FAST_BLOCKS)
        assert run_until_exit(op) == -9, op.log[-3000:]
        assert f"SIGKILL at {point}" in op.log
    recorded = get_payout(kube, ns, name)["status"]
    assert recorded["txHashes"], recorded  # every point above comes after the hashes, or before a new attempt
    op = start_operator(cluster, log, **FAST_BLOCKS)
    try:
        submitted = wait_payout(kube, ns, name, lambda p: phase(p) == "Submitted", "the payout submitted")
        assert submitted["status"]["txHashes"] == recorded["txHashes"]
        confirm(wallet, submitted, 1)
        done = wait_payout(kube, ns, name, lambda p: phase(p) == "Confirmed", "the payout confirmed", 120)
    finally:
        op.stop()
    assert done["status"]["txHashes"] == recorded["txHashes"]
    if points[0] == "rpc.after.sign_multisig":
        assert done["status"]["attempt"] == 2  # the interrupted attempt was not resumed
        assert "SigningRestarted" in reasons(kube, ns, name)
    else:
        assert done["status"]["attempt"] == 1
    assert received(payees, name) == XMR

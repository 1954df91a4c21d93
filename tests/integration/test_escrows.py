"""The product: Escrows reach Ready on a real 6-pod pool of monero-wallet-rpc, through the real apiserver.

The pool, and the escrows several tests read, are module-scoped fixtures that create what they provide and
wait until it is ready; no test changes or deletes an escrow another test reads (a test that deletes one
deletes its own), so each test passes alone and in any order.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client

from escrow_operator.api.walletpool import PREVIOUS_IMAGE
from hack.devcluster import DevCluster, binary
from tests.support.escrows import (
    condition,
    create_escrow,
    create_pool,
    escrow_secret,
    get_escrow,
    pool_directory,
    wait_escrow,
    wait_escrow_gone,
)
from tests.support.kube import custom_objects, wait_for
from tests.support.operator import OperatorProcess
from tests.support.walletrpc_proc import standalone_wallet_rpc

POOL = "wpool"
FORBIDDEN = ("No wallet file", "pubkey recommended", "Failed to lock")
#: Created at once, with their walletRetention (None: the default, Retain); order-3 deletes its files when it goes.
THREE = {"order-1": None, "order-2": None, "order-3": "Delete"}
ROLES = ("buyer", "vendor", "arbiter")
#: A file of a finished escrow: one of its final wallets (cache or keys).
FINAL_WALLET_FILE = re.compile(r"[a-z][a-z0-9]*_escrow_[0-9a-f-]{36}_round_\d+_final(\.keys)?")


@pytest.fixture(scope="module")
def pool(kube: client.ApiClient, module_namespace: str, operator: OperatorProcess) -> str:
    """The 6-pod pool, its pods ready."""
    create_pool(kube, module_namespace, POOL, replicas=6)
    return POOL


def create_and_wait(kube: client.ApiClient, namespace: str, pool: str, retention: dict[str, str | None]) -> list[dict]:
    """2-of-3 escrows (name: walletRetention, None for the default) created at once; returns them once all
    are Ready."""
    for name, kept in retention.items():
        create_escrow(kube, namespace, name, pool, **({"walletRetention": kept} if kept else {}))
    with ThreadPoolExecutor(len(retention)) as ex:
        return list(ex.map(lambda n: wait_escrow(kube, namespace, n), retention))


@pytest.fixture(scope="module")
def three_escrows(kube: client.ApiClient, module_namespace: str, pool: str) -> list[dict]:
    """order-1, order-2 and order-3, created at once and Ready; read-only for the tests."""
    return create_and_wait(kube, module_namespace, pool, THREE)


@pytest.fixture(scope="module")
def escrows_to_delete(kube: client.ApiClient, module_namespace: str, pool: str) -> dict[str, dict]:
    """Two Ready escrows for the deletion tests, one each: to-retain (walletRetention Retain, the default)
    and to-delete (Delete)."""
    done = create_and_wait(kube, module_namespace, pool, {"to-retain": None, "to-delete": "Delete"})
    return {e["metadata"]["name"]: e for e in done}


def check_final_wallets(kube: client.ApiClient, namespace: str, escrow: dict, threshold: int, total: int) -> None:
    uid = escrow["metadata"]["uid"]
    address = escrow["status"]["address"]
    roles = escrow["spec"]["participants"]
    secret = escrow_secret(kube, namespace, uid)
    directory = pool_directory(kube, namespace, POOL)
    final = total - threshold + 2
    with standalone_wallet_rpc(directory) as rpc:
        for role in roles:
            state = rpc.inspect(f"{role}_escrow_{uid}_round_{final}_final", secret[f"password.{role}"])
            assert state["multisig"] and state["ready"], state
            assert (state["threshold"], state["total"]) == (threshold, total)
            assert state["address"] == address


def test_three_escrows_at_once_reach_ready(
    kube: client.ApiClient,
    module_namespace: str,
    pool: str,
    operator: OperatorProcess,
    cluster: DevCluster,
    three_escrows: list[dict],
) -> None:
    ns = module_namespace
    done = three_escrows
    assert [e["metadata"]["name"] for e in done] == list(THREE)
    assert [e["spec"]["walletRetention"] for e in done] == [kept or "Retain" for kept in THREE.values()]
    uids = {e["metadata"]["uid"] for e in done}
    for escrow in done:
        status = escrow["status"]
        assert status["round"] == status["rounds"] == 4
        assert status["address"].startswith("4") and len(status["address"]) == 95
        assert condition(escrow, "Ready")["status"] == "True"
        assert condition(escrow, "Ready")["observedGeneration"] == escrow["metadata"]["generation"]
        assert [p["round"] for p in status["participants"]] == [4, 4, 4]
        check_final_wallets(kube, ns, escrow, 2, 3)

    # Only the final wallet sets of these escrows remain in the shared directory ...
    files = {p.name for p in pool_directory(kube, ns, pool).iterdir()}
    expected = {
        f"{role}_escrow_{uid}_round_3_final{suffix}" for uid in uids for role in ROLES for suffix in ("", ".keys")
    }
    assert expected <= files
    assert {f for f in files if any(uid in f for uid in uids) and not f.endswith(".address.txt")} == expected
    # ... and of the module's other escrows, if any finished before: no exchange runs between tests.
    assert {f for f in files if not f.endswith(".address.txt") and not FINAL_WALLET_FILE.fullmatch(f)} == set()

    log = operator.log
    for uid in uids:
        for role in ROLES:
            base = f"{role}_escrow_{uid}"
            assert f"Copied {base}_round_1 -> {base}_round_2_input" in log
            assert f"Copied {base}_round_2_input -> {base}_round_3_input" in log
            assert f"Copied {base}_round_3_input -> {base}_round_3_final (FINAL)" in log
            for intermediate in ("round_1", "round_2_input", "round_3_input"):
                assert f"Deleted intermediate file: {base}_{intermediate}" in log
    assert log.count("Intermediate files cleaned up") >= 3
    for bad in FORBIDDEN:
        assert bad not in log


def test_kubectl_wait_and_columns(
    kube: client.ApiClient, module_namespace: str, three_escrows: list[dict], cluster: DevCluster
) -> None:
    kubectl = [str(binary("kubectl")), f"--kubeconfig={cluster.kubeconfig}", "-n", module_namespace]
    subprocess.run(
        kubectl + ["wait", "--for=condition=Ready", "esc/order-1", "--timeout=240s"], check=True, capture_output=True
    )
    table = subprocess.run(kubectl + ["get", "esc"], check=True, capture_output=True, text=True).stdout
    header = table.splitlines()[0].split()
    assert header[:4] == ["NAME", "PHASE", "ROUND", "ADDRESS"] and header[-1] == "AGE"
    assert re.search(r"^order-1\s+Ready\s+4\s+4\w{94}\s", table, re.M), table


def test_other_thresholds(kube: client.ApiClient, module_namespace: str, pool: str) -> None:
    cases = {"two-of-two": (2, ["alice", "bob"]), "three-of-four": (3, ["a1", "b2", "c3", "d4"])}
    for name, (threshold, participants) in cases.items():
        create_escrow(kube, module_namespace, name, pool, threshold=threshold, participants=participants)
    for name, (threshold, participants) in cases.items():
        escrow = wait_escrow(kube, module_namespace, name)
        assert escrow["status"]["rounds"] == len(participants) - threshold + 3
        check_final_wallets(kube, module_namespace, escrow, threshold, len(participants))


def test_no_two_steps_shared_a_pod(
    operator: OperatorProcess, module_namespace: str, kube: client.ApiClient, three_escrows: list[dict]
) -> None:
    spans: dict[str, list[tuple[float, float]]] = {}
    for pod, start, end in re.findall(r"Step done: .* pod=(\S+) start=([\d.]+) end=([\d.]+)", operator.log):
        spans.setdefault(pod, []).append((float(start), float(end)))
    assert sum(len(v) for v in spans.values()) >= 3 * 3 * 4  # every step of the three escrows
    assert len(spans) > 1  # the work was spread over the pool
    for pod, intervals in spans.items():
        intervals.sort()
        for (s1, e1), (s2, e2) in itertools.pairwise(intervals):
            assert s2 >= e1, f"two steps overlapped on {pod}: [{s1}, {e1}] and [{s2}, {e2}]"


def test_no_secret_in_status_events_or_log(
    kube: client.ApiClient, module_namespace: str, three_escrows: list[dict], operator: OperatorProcess
) -> None:
    ns = module_namespace
    escrows = client.CustomObjectsApi(kube).list_namespaced_custom_object("xmrescrow.dev", "v1alpha1", ns, "escrows")[
        "items"
    ]
    # Every escrow with a finished exchange (the three, and any other test's that is Ready).
    ready = [e for e in escrows if (e.get("status") or {}).get("phase") == "Ready"]
    assert set(THREE) <= {e["metadata"]["name"] for e in ready}
    secrets: list[str] = []
    for escrow in ready:
        data = escrow_secret(kube, ns, escrow["metadata"]["uid"])
        secrets += [v for k, v in data.items() if k.startswith(("password.", "message."))]
    assert len(secrets) > 20
    events = client.CoreV1Api(kube).list_namespaced_event(ns).items
    haystacks = [str(e["status"]) for e in escrows] + [f"{e.reason} {e.message}" for e in events] + [operator.log]
    assert any(e.reason == "RoundComplete" for e in events)
    for secret in secrets:
        for hay in haystacks:
            assert secret not in hay


def test_delete_retain_keeps_files_and_passwords(
    kube: client.ApiClient, module_namespace: str, pool: str, escrows_to_delete: dict[str, dict]
) -> None:
    ns = module_namespace
    escrow = get_escrow(kube, ns, "to-retain")
    assert escrow["spec"]["walletRetention"] == "Retain"
    uid = escrow["metadata"]["uid"]
    client.CustomObjectsApi(kube).delete_namespaced_custom_object(
        "xmrescrow.dev", "v1alpha1", ns, "escrows", "to-retain"
    )
    wait_escrow_gone(kube, ns, "to-retain")
    files = {p.name for p in pool_directory(kube, ns, pool).iterdir() if uid in p.name}
    assert {f"{r}_escrow_{uid}_round_3_final.keys" for r in ROLES} <= files
    secret = escrow_secret(kube, ns, uid)  # released, not deleted
    assert {"password.buyer", "password.vendor", "password.arbiter"} <= set(secret)
    check_final_wallets(kube, ns, escrow, 2, 3)


def test_delete_with_delete_removes_everything(
    kube: client.ApiClient, module_namespace: str, pool: str, escrows_to_delete: dict[str, dict]
) -> None:
    ns = module_namespace
    escrow = get_escrow(kube, ns, "to-delete")
    assert escrow["spec"]["walletRetention"] == "Delete"
    uid = escrow["metadata"]["uid"]
    assert [p for p in pool_directory(kube, ns, pool).iterdir() if uid in p.name]
    client.CustomObjectsApi(kube).delete_namespaced_custom_object(
        "xmrescrow.dev", "v1alpha1", ns, "escrows", "to-delete"
    )
    wait_escrow_gone(kube, ns, "to-delete")
    assert [p.name for p in pool_directory(kube, ns, pool).iterdir() if uid in p.name] == []
    with pytest.raises(client.ApiException) as missing:
        client.CoreV1Api(kube).read_namespaced_secret(f"escrow-{uid}", ns)
    assert missing.value.status == 404


def test_delete_mid_exchange_stops_cleanly(
    kube: client.ApiClient, module_namespace: str, pool: str, operator: OperatorProcess
) -> None:
    ns = module_namespace
    create_escrow(kube, ns, "abandoned", pool, walletRetention="Delete")
    escrow = wait_for(
        custom_objects(kube, ns, "escrows"),
        lambda e: (e.get("status") or {}).get("round", 0) >= 1,
        field_selector="metadata.name=abandoned",
        what="the escrow to finish its first round",
    )
    uid = escrow["metadata"]["uid"]
    client.CustomObjectsApi(kube).delete_namespaced_custom_object(
        "xmrescrow.dev", "v1alpha1", ns, "escrows", "abandoned"
    )
    wait_escrow_gone(kube, ns, "abandoned")
    assert [p.name for p in pool_directory(kube, ns, pool).iterdir() if uid in p.name] == []
    # The pool is idle again: no lease was left behind by the cancelled exchange.
    idle = wait_for(
        custom_objects(kube, ns, "walletpools"),
        lambda p: (p.get("status") or {}).get("busyPods") == 0 and (p.get("status") or {}).get("queuedSteps") == 0,
        field_selector=f"metadata.name={pool}",
        what="the pool to be idle",
    )
    assert idle["status"]["readyReplicas"] == 6
    assert "Traceback" not in operator.log


def test_escrow_on_a_pool_that_never_gets_ready_waits_idle(
    kube: client.ApiClient, module_namespace: str, pool: str, operator: OperatorProcess
) -> None:
    """A pool whose pods never become Ready: the escrow says why and the operator does not spin."""
    ns = module_namespace
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "xmrescrow.dev",
        "v1alpha1",
        ns,
        "walletpools",
        {
            "apiVersion": "xmrescrow.dev/v1alpha1",
            "kind": "WalletPool",
            "metadata": {"name": "broken"},
            # An image the process kubelet cannot run: its pods never become Ready.
            "spec": {"replicas": 2, "image": "registry.invalid/never:1", "storage": {"size": "1Gi"}},
        },
    )
    create_escrow(kube, ns, "stuck", "broken", walletRetention="Delete")
    # It says why the pods do not run, as the pool does (the kubelet's reason for an image it lacks).
    why = '2 pods: wallet-rpc: ErrImageNeverPull: Container image "registry.invalid/never:1"'
    waiting = wait_for(
        custom_objects(kube, ns, "escrows"),
        lambda e: any(
            c["type"] == "Reconciling" and c["reason"] == "WaitingForPods" and why in c["message"]
            for c in (e.get("status") or {}).get("conditions", [])
        ),
        field_selector="metadata.name=stuck",
        what="the escrow to say it waits for pods, and why they do not run",
    )
    assert "broken" in waiting["status"]["message"]
    assert operator.proc is not None
    before = _cpu_seconds(operator.proc.pid)
    time.sleep(5)  # a measurement window, not coordination
    used = _cpu_seconds(operator.proc.pid) - before
    assert used < 0.5, f"the operator used {used:.2f} CPU s in 5 s while nothing could run"
    client.CustomObjectsApi(kube).delete_namespaced_custom_object("xmrescrow.dev", "v1alpha1", ns, "escrows", "stuck")


def test_a_pool_whose_wallet_rpc_exits_says_why_in_status_events_and_its_escrows(
    kube: client.ApiClient, module_namespace: str, pool: str, operator: OperatorProcess
) -> None:
    """wallet-rpc 0.18.0.0 does not know the flag a regtest pool gives it and exits: the pool's Ready and
    Reconciling conditions, a Warning Event and the waiting escrow say so from its termination message."""
    ns = module_namespace
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "xmrescrow.dev",
        "v1alpha1",
        ns,
        "walletpools",
        {
            "apiVersion": "xmrescrow.dev/v1alpha1",
            "kind": "WalletPool",
            "metadata": {"name": "crashing"},
            "spec": {"replicas": 1, "image": PREVIOUS_IMAGE, "network": "regtest", "storage": {"size": "1Gi"}},
        },
    )
    # wallet-rpc prints the reason, then 8 KiB of usage; the termination message keeps the last 2 KiB.
    said = "wallet-rpc exits with code 1: it printed its usage: it refused its command line"

    def condition(obj: dict, kind: str) -> dict:
        return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {})

    failing = wait_for(
        custom_objects(kube, ns, "walletpools"),
        lambda p: said in condition(p, "Ready").get("message", ""),
        field_selector="metadata.name=crashing",
        timeout=90,
        what="the pool to say why its pods are not ready",
    )
    assert condition(failing, "Ready")["status"] == "False"
    assert said in condition(failing, "Reconciling")["message"]
    assert (
        f"1 pod: {said} (an option this version does not know?) (CrashLoopBackOff)"
        in condition(failing, "Ready")["message"]
    )
    create_escrow(kube, ns, "on-crashing", "crashing", walletRetention="Delete")
    waiting = wait_for(
        custom_objects(kube, ns, "escrows"),
        lambda e: said in condition(e, "Reconciling").get("message", ""),
        field_selector="metadata.name=on-crashing",
        what="the escrow to say why the pool's pods do not run",
    )
    assert condition(waiting, "Reconciling")["reason"] == "WaitingForPods"
    events = client.CoreV1Api(kube).list_namespaced_event(
        ns, field_selector="involvedObject.kind=WalletPool,involvedObject.name=crashing,reason=PodsFailing"
    )
    assert [e.type for e in events.items] == ["Warning"]
    assert said in events.items[0].message
    client.CustomObjectsApi(kube).delete_namespaced_custom_object(
        "xmrescrow.dev", "v1alpha1", ns, "escrows", "on-crashing"
    )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_wallet_rpc_login_is_not_on_its_command_line(
    kube: client.ApiClient, module_namespace: str, pool: str, cluster: DevCluster
) -> None:
    secret = client.CoreV1Api(kube).read_namespaced_secret(f"{pool}-rpc", module_namespace).data
    password = base64.b64decode(secret["password"]).decode()
    pids = [
        int(line.split()[2])
        for line in (cluster.kubelet_root / "pids").read_text().splitlines()
        if line.split()[1] == "wallet-rpc"
    ]
    cmdlines = []
    for pid in pids:
        try:
            cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
        except OSError:
            continue  # a process of an earlier module's pool, gone
    assert any("--config-file=" in c for c in cmdlines), cmdlines
    assert not any(password in c or "--rpc-login" in c for c in cmdlines)

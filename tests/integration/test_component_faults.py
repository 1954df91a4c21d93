"""Component faults while escrows run: a wallet-rpc process killed mid-step, a pool pod deleted
mid-step, walletfs killed mid-copy, the pool scaled down and up, the apiserver restarted.

"Mid-step" is exact, not timed: the operator runs with a ``pause`` fault that holds one step, its
pod leased, at a named point until SIGUSR1; the test breaks that pod, then lets the step go on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from hack.devcluster import DevCluster, binary
from tests.support.escrows import (
    assert_no_secrets,
    create_escrow,
    escrow_secret,
    pool_directory,
    reconcile_pool,
    wait_escrow,
)
from tests.support.kube import container_pid, custom_objects, pod_ready, wait_for
from tests.support.operator import OperatorProcess
from tests.support.processes import free_port, stop, wait_serving
from tests.support.walletrpc_proc import standalone_wallet_rpc

POOL = "faultpool"
ROLES = ("buyer", "vendor", "arbiter")


@pytest.fixture(scope="module")
def pool(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    crds: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    # The pool needs an operator to be reconciled; this one stops before the faults begin.
    reconcile_pool(
        kube, module_namespace, POOL, 3, Path(cluster.kubeconfig), tmp_path_factory.mktemp("op") / "setup.log"
    )
    return POOL


@pytest.fixture
def paused_operator(cluster: DevCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    point = request.param
    op = OperatorProcess(
        Path(cluster.kubeconfig),
        tmp_path / "operator.log",
        env={"ESCROW_MODE": "test", "ESCROW_FAULTS": f"pause:{point}"},
    ).start()
    try:
        yield op
    finally:
        op.stop()


def check_escrow(kube: client.ApiClient, ns: str, escrow: dict, cluster: DevCluster, op: OperatorProcess) -> None:
    """Ready, one address in every final wallet, nothing else left, nothing published twice, no secret
    in status, events or logs."""
    uid, address = escrow["metadata"]["uid"], escrow["status"]["address"]
    directory = pool_directory(kube, ns, POOL)
    left = sorted(p.name for p in directory.iterdir() if uid in p.name and not p.name.endswith(".address.txt"))
    assert left == sorted(f"{r}_escrow_{uid}_round_3_final{s}" for r in ROLES for s in ("", ".keys"))
    assert not [p for p in directory.iterdir() if p.name.startswith(".walletfs-tmp")]
    secret = escrow_secret(kube, ns, uid)
    with standalone_wallet_rpc(directory) as rpc:
        for role in ROLES:
            state = rpc.inspect(f"{role}_escrow_{uid}_round_3_final", secret[f"password.{role}"])
            assert state["ready"] and state["address"] == address
    published: Counter[str] = Counter()
    sidecars = [log.read_text(errors="replace") for log in cluster.kubelet_root.glob("pods/*/logs/walletfs.log")]
    for text in sidecars:
        published.update(re.findall(rf"Published \S+ -> (\S*{uid}\S*)", text))
    assert len(published) == 12 and max(published.values()) == 1, published
    assert_no_secrets(kube, ns, uid, [op.log, *sidecars])


def pod(kube: client.ApiClient, ns: str, name: str) -> client.V1Pod:
    return client.CoreV1Api(kube).read_namespaced_pod(name, ns)


@pytest.mark.parametrize("paused_operator", ["rpc.before.exchange_multisig_keys@2"], indirect=True)
def test_wallet_rpc_killed_mid_step(
    kube: client.ApiClient, module_namespace: str, pool: str, paused_operator: OperatorProcess, cluster: DevCluster
) -> None:
    ns, op = module_namespace, paused_operator
    create_escrow(kube, ns, "rpc-killed", pool)
    victim = op.wait_log(r"paused at rpc.before.exchange_multisig_keys \(round 2\) pod=([\w.-]+)")[1]
    os.kill(container_pid(pod(kube, ns, victim), "wallet-rpc"), signal.SIGKILL)
    op.wait_log(rf"pod {victim} lost mid-step")  # the restart was seen and the step cancelled, unpaused
    os.kill(op.proc.pid, signal.SIGUSR1)
    check_escrow(kube, ns, wait_escrow(kube, ns, "rpc-killed"), cluster, op)


@pytest.mark.parametrize("paused_operator", ["rpc.after.make_multisig@1"], indirect=True)
def test_pool_pod_deleted_mid_step(
    kube: client.ApiClient, module_namespace: str, pool: str, paused_operator: OperatorProcess, cluster: DevCluster
) -> None:
    ns, op = module_namespace, paused_operator
    create_escrow(kube, ns, "pod-deleted", pool)
    victim = op.wait_log(r"paused at rpc.after.make_multisig \(round 1\) pod=([\w.-]+)")[1]
    old_uid = pod(kube, ns, victim).metadata.uid
    client.CoreV1Api(kube).delete_namespaced_pod(victim, ns)
    op.wait_log(rf"pod {victim} lost mid-step")
    os.kill(op.proc.pid, signal.SIGUSR1)
    check_escrow(kube, ns, wait_escrow(kube, ns, "pod-deleted"), cluster, op)
    wait_for(
        client.CoreV1Api(kube).list_namespaced_pod,
        lambda p: p.metadata.uid != old_uid and pod_ready(p),
        ns,
        field_selector=f"metadata.name={victim}",
        what="the StatefulSet to replace the deleted pod",
    )


@pytest.mark.parametrize("paused_operator", ["round.after_status@1"], indirect=True)
def test_apiserver_restart(
    kube: client.ApiClient, module_namespace: str, pool: str, paused_operator: OperatorProcess, cluster: DevCluster
) -> None:
    ns, op = module_namespace, paused_operator
    create_escrow(kube, ns, "api-restart", pool)
    op.wait_log(r"paused at round.after_status \(round 1\)")
    cluster.restart_apiserver()
    os.kill(op.proc.pid, signal.SIGUSR1)
    check_escrow(kube, ns, wait_escrow(kube, ns, "api-restart"), cluster, op)
    assert op.proc.poll() is None, "the operator survived the apiserver restart"


def test_scale_down_and_up(
    kube: client.ApiClient, module_namespace: str, pool: str, cluster: DevCluster, tmp_path: Path
) -> None:
    ns = module_namespace
    kubectl = [str(binary("kubectl")), f"--kubeconfig={cluster.kubeconfig}", "-n", ns]
    op = OperatorProcess(Path(cluster.kubeconfig), tmp_path / "operator.log").start()
    try:
        create_escrow(kube, ns, "scaled", pool)
        op.wait_log(r"Step done: escrow=\S+/scaled")
        subprocess.run(kubectl + ["scale", "wpool", pool, "--replicas=1"], check=True, capture_output=True)
        check_escrow(kube, ns, wait_escrow(kube, ns, "scaled"), cluster, op)
        wait_for(
            custom_objects(kube, ns, "walletpools"),
            lambda p: (p.get("status") or {}).get("replicas") == 1,
            field_selector=f"metadata.name={pool}",
            what="the pool to shrink to one pod",
        )
        # Scaling up: the new pods take steps as soon as they are ready.
        subprocess.run(kubectl + ["scale", "wpool", pool, "--replicas=3"], check=True, capture_output=True)
        wait_for(
            custom_objects(kube, ns, "walletpools"),
            lambda p: (p.get("status") or {}).get("readyReplicas") == 3,
            field_selector=f"metadata.name={pool}",
            what="the pool to grow back to three ready pods",
        )
        create_escrow(kube, ns, "regrown", pool)
        wait_escrow(kube, ns, "regrown")
        pods = set(re.findall(r"Step done: escrow=\S+/regrown role=\S+ round=0 pod=(\S+)", op.log))
        assert pods == {f"{pool}-0", f"{pool}-1", f"{pool}-2"}, pods
        spec = client.CustomObjectsApi(kube).get_namespaced_custom_object(
            "xmrescrow.dev", "v1alpha1", ns, "walletpools", pool
        )
        assert spec["spec"]["replicas"] == 3  # the operator honours the scale subresource, never reverts it
    finally:
        op.stop()


def test_walletfs_killed_mid_copy_publishes_nothing_torn(tmp_path: Path) -> None:
    """walletfs SIGKILLed between writing a temp file and renaming it: nothing half-written is
    published, and the torn temp file is removed when walletfs starts again."""
    uid = "0b5a2c7e-1111-4222-8333-944455556666"
    source, target = f"buyer_escrow_{uid}_round_1", f"buyer_escrow_{uid}_work_1_0a0b0c0d"
    wallets = tmp_path / "wallets"
    wallets.mkdir()
    (wallets / source).write_bytes(os.urandom(4096))
    (wallets / f"{source}.keys").write_bytes(os.urandom(2048))
    token = "t" * 32

    def start(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "escrow_operator",
                "walletfs",
                f"--dir={wallets}",
                "--bind=127.0.0.1",
                f"--port={port}",
            ],
            env={**os.environ, "WALLETFS_TOKEN": token, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        wait_serving(
            proc, lambda: httpx.get(f"{url}/healthz").status_code == 200, what="walletfs", timeout=20, interval=0.05
        )
        return proc, url

    proc, url = start({"WALLETFS_MODE": "test", "WALLETFS_CRASH_AT": "copy.after_temp"})
    with pytest.raises(httpx.HTTPError):
        httpx.post(
            f"{url}/v1/copy", json={"source": source, "target": target}, headers={"Authorization": f"Bearer {token}"}
        )
    assert proc.wait(10) == -signal.SIGKILL
    torn = [p.name for p in wallets.iterdir() if p.name.startswith(".walletfs-tmp")]
    assert torn, "the crash left its temp file"
    assert not (wallets / f"{target}.keys").exists()
    proc, url = start({})
    try:
        assert not [p for p in wallets.iterdir() if p.name.startswith(".walletfs-tmp")]
        assert not (wallets / f"{target}.keys").exists()
    finally:
        stop(proc)

#!/usr/bin/env python3
"""The main job on the embedded dev cluster: a 6-pod WalletPool, the operator, three escrows at once,
and the life of one escrow's money.

Starts (or reuses) the dev cluster, installs the CRDs, runs the operator as a local process, starts a
regtest monerod pod, applies a WalletPool with that daemon and three 2-of-3 Escrows, shows them
reaching Ready and lists the final wallet files. Then a miner wallet of the demo's own pays the first
escrow, which turns Funded, and a release payout (buyer and vendor sign) pays the vendor's wallet;
the demo prints the transaction hash and what the vendor received. Escrows and payouts are watched
while the demo waits (as ``kubectl get -w`` shows them). Safe to run twice. Stop everything with:
make down
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client, config  # noqa: E402

from escrow_operator.api import DEFAULT_IMAGE  # noqa: E402
from hack.devcluster import DevCluster, DevClusterError, binary, podman  # noqa: E402
from hack.devcluster.__main__ import DEFAULT_STATE  # noqa: E402
from hack.testground.chain import RPC_PORT, Chain, miner, start_chain  # noqa: E402
from hack.testground.walletrpc import local_wallet_rpc  # noqa: E402

NAMESPACE = "escrow-demo"
POOL = "wallets"
ESCROWS = ["order-1001", "order-1002", "order-1003"]
XMR = 10**12
PRICE = 2 * XMR  # what the buyer of order-1001 pays (spec.amount)


def sh(kubectl: list[str], *args: str, check: bool = True, quiet: bool = False) -> str:
    done = subprocess.run(kubectl + list(args), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    if not quiet:
        print(done.stdout, end="")
    return done.stdout


@contextmanager
def timed(what: str) -> Iterator[None]:
    """Say what a long step does before it starts and how long it took when it ends."""
    print(f"== {what}", flush=True)
    started = time.monotonic()
    yield
    print(f"== {what}: done in {time.monotonic() - started:.1f} s", flush=True)


def wait_for(kubectl: list[str], obj: str, condition: str, timeout: int, why: str = "Ready") -> None:
    """``kubectl wait`` for ``condition``; on a time-out, say what the object's ``why`` condition says
    (a pool whose pods do not start tells why) and stop."""
    done = subprocess.run([*kubectl, "wait", f"--for={condition}", obj, f"--timeout={timeout}s"], capture_output=True)
    if done.returncode == 0:
        return
    path = f'jsonpath={{.status.conditions[?(@.type=="{why}")].message}}'
    said = sh(kubectl, "get", obj, "-o", path, check=False, quiet=True).strip()
    raise SystemExit(f"{obj} did not reach {condition} in {timeout} s: {said or done.stderr.decode().strip()}")


def ensure_wallet_rpc_image() -> None:
    """The pool's default wallet-rpc image, which the process kubelet runs from its own files: built
    once (``hack/images.sh IMAGE``, Debian's packages), found on later runs."""
    if podman.wallet_rpc_tree(DEFAULT_IMAGE) is not None:
        return
    with timed(f"building the wallet-rpc image the pool runs ({DEFAULT_IMAGE}; once, a few minutes)"):
        subprocess.run([str(ROOT / "hack" / "images.sh"), DEFAULT_IMAGE], check=True)


@contextmanager
def watching(kubectl: list[str], *kinds: str) -> Iterator[None]:
    """Print every change of these kinds while the block runs (``kubectl get -w``, one per kind)."""
    watchers = [subprocess.Popen([*kubectl, "get", kind, "-w", "--no-headers"]) for kind in kinds]
    try:
        yield
    finally:
        for w in watchers:
            w.terminate()
            w.wait()


def chain_of(api: client.ApiClient) -> Chain:
    """The demo's regtest monerod: started, or the one a former run started."""
    try:
        pod = client.CoreV1Api(api).read_namespaced_pod("monerod", NAMESPACE)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        return start_chain(api, NAMESPACE)
    assert pod.status is not None and pod.status.pod_ip, "the monerod pod has no address yet"
    return Chain(NAMESPACE, "monerod", f"{pod.status.pod_ip}:{RPC_PORT}")


def pay_and_release(ns: list[str], chain: Chain, wallets: Path) -> None:
    """Fund order-1001 from a miner, wait for Funded, release to the vendor, show what arrived."""
    order = ESCROWS[0]
    with local_wallet_rpc(wallets, user="vendor", daemon=chain.address) as vendor:
        if (wallets / "vendor.keys").exists():  # made by a former run
            vendor.call("open_wallet", filename="vendor", password="")
        else:
            vendor.call("create_wallet", filename="vendor", password="", language="English")
        vendor_address = str(vendor.call("get_address")["address"])
        address = sh(ns, "get", "esc", order, "-o", "jsonpath={.status.address}", quiet=True)
        funded = sh(
            ns, "get", "esc", order, "-o", 'jsonpath={.status.conditions[?(@.type=="Funded")].status}', quiet=True
        )
        with miner(chain, mature=funded != "True") as wallet:
            if funded != "True":
                print(f"== the buyer pays {PRICE / XMR} XMR to {order} ({address[:12]}...); mining 10 blocks")
                wallet.confirm(wallet.pay(address, PRICE), confirmations=10)
            with timed(f"waiting for {order} to see the payment (Funded)"), watching(ns, "esc"):
                wait_for(ns, f"esc/{order}", "condition=Funded", 300, why="Funded")
            sh(ns, "get", "esc", order)
            release = f"""apiVersion: xmrescrow.dev/v1alpha1
kind: EscrowPayout
metadata: {{name: {order}-release}}
spec:
  escrowRef: {order}
  signers: [buyer, vendor]
  destinations: [{{address: {vendor_address}, amount: {PRICE // 2}}}]
  confirmations: 2
"""
            payout = f"payout/{order}-release"
            phase = sh(ns, "get", payout, "-o", "jsonpath={.status.phase}", check=False, quiet=True)
            if phase == "Confirmed":  # a former run made it: shown, not made or waited for again
                print(f"== the release payout was made by a former run: {payout} is Confirmed")
            else:
                subprocess.run(ns + ["apply", "-f", "-"], input=release, text=True, check=True, capture_output=True)
                what = f"a release payout pays the vendor {PRICE / 2 / XMR} XMR (buyer and vendor sign)"
                with timed(what), watching(ns, "payout"):
                    if phase != "Submitted":
                        wait_for(ns, payout, "jsonpath={.status.phase}=Submitted", 600)
                    tx = sh(ns, "get", payout, "-o", "jsonpath={.status.txHashes[0]}", quiet=True)
                    print("== submitted; mining until it has 2 confirmations")
                    wallet.confirm(tx, confirmations=2)
                    wait_for(ns, payout, "condition=Ready", 300)
            tx = sh(ns, "get", payout, "-o", "jsonpath={.status.txHashes[0]}", quiet=True)
        vendor.call("refresh")
        received = int(vendor.call("get_balance")["balance"])
        vendor.call("close_wallet")
    sh(ns, "get", "esc,payout")
    print(f"== transaction {tx}: the vendor's wallet received {received / XMR} XMR")


def main() -> int:
    begun = time.monotonic()
    ensure_wallet_rpc_image()
    cluster = DevCluster.load(DEFAULT_STATE)
    if cluster is None or not cluster.running_pids():
        print("== starting the dev cluster (etcd, kube-apiserver, kube-controller-manager, process kubelet)")
        try:
            cluster = DevCluster(DEFAULT_STATE).start()
        except DevClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        print(f"== reusing the dev cluster at {cluster.server}")
    kubectl = [str(binary("kubectl")), f"--kubeconfig={cluster.kubeconfig}"]
    sh(kubectl, "apply", "--server-side", "-f", str(ROOT / "crds"))
    sh(
        kubectl,
        "wait",
        "--for=condition=Established",
        "crd/escrows.xmrescrow.dev",
        "crd/walletpools.xmrescrow.dev",
        "crd/escrowpayouts.xmrescrow.dev",
    )

    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), ESCROW_METRICS_PORT="18080")
    pid = cluster.run_process("operator", [sys.executable, "-m", "escrow_operator", "run"], env=env)
    print(f"== operator running (pid {pid}); log: {cluster.logs / 'operator.log'}")

    ns = [*kubectl, "-n", NAMESPACE]
    sh(kubectl, "create", "namespace", NAMESPACE, check=False, quiet=True)
    print("== starting a regtest monerod pod")
    chain = chain_of(config.new_client_from_config(str(cluster.kubeconfig)))
    pool = f"""apiVersion: xmrescrow.dev/v1alpha1
kind: WalletPool
metadata: {{name: {POOL}}}
spec: {{replicas: 6, storage: {{size: 1Gi}}, network: regtest, daemon: "{chain.address}", daemonZmq: "{chain.zmq}"}}
"""
    subprocess.run(ns + ["apply", "-f", "-"], input=pool, text=True, check=True, capture_output=True)
    with timed(f"waiting for WalletPool {POOL}: 6 wallet-rpc pods ready"), watching(ns, "wpool"):
        wait_for(ns, f"wpool/{POOL}", "condition=Ready", 300)
    sh(ns, "get", "pods", "-o", "wide")

    escrows = "".join(
        f"""---
apiVersion: xmrescrow.dev/v1alpha1
kind: Escrow
metadata: {{name: {name}}}
spec: {{poolRef: {POOL}, threshold: 2, participants: [buyer, vendor, arbiter], amount: {PRICE}}}
"""
        for name in ESCROWS
    )
    started = time.monotonic()
    subprocess.run(ns + ["apply", "-f", "-"], input=escrows, text=True, check=True, capture_output=True)
    print(f"== applied {len(ESCROWS)} escrows at once; waiting for Ready")
    with watching(ns, "esc"):
        for name in ESCROWS:
            wait_for(ns, f"esc/{name}", "condition=Ready", 600)
    print(f"== all Ready in {time.monotonic() - started:.1f} s")
    sh(ns, "get", "esc")
    claim = sh(ns, "get", "pvc", f"{POOL}-wallets", "-o", "jsonpath={.spec.volumeName}", quiet=True)
    path = sh(kubectl, "get", "pv", claim, "-o", "jsonpath={.spec.hostPath.path}", quiet=True)
    print(f"== final wallet files in the shared volume ({path})")
    for file in sorted(Path(path).iterdir()):
        print(f"   {file.name}  {file.stat().st_size} bytes")
    wallets = cluster.state_dir / "demo-wallets"
    wallets.mkdir(exist_ok=True)
    pay_and_release(ns, chain, wallets)
    print(f"== the demo took {time.monotonic() - begun:.1f} s")
    print(
        "\nThe dev cluster keeps running: export KUBECONFIG=" + str(cluster.kubeconfig) + "   stop it with: make down"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

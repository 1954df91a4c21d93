#!/usr/bin/env python3
"""The main job on the embedded dev cluster: a 6-pod WalletPool, the operator, three escrows at once.

Starts (or reuses) the dev cluster, installs the CRDs, runs the operator as a local process, applies
a WalletPool and three 2-of-3 Escrows, shows them reaching Ready and lists the final wallet files.
Safe to run twice. Stop everything with: make down
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hack.devcluster import DevCluster, DevClusterError, binary  # noqa: E402
from hack.devcluster.__main__ import DEFAULT_STATE  # noqa: E402

NAMESPACE = "escrow-demo"
POOL = "wallets"
ESCROWS = ["order-1001", "order-1002", "order-1003"]


def sh(kubectl: list[str], *args: str, check: bool = True, quiet: bool = False) -> str:
    done = subprocess.run(kubectl + list(args), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    if not quiet:
        print(done.stdout, end="")
    return done.stdout


def main() -> int:
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
    sh(kubectl, "wait", "--for=condition=Established", "crd/escrows.xmrescrow.dev", "crd/walletpools.xmrescrow.dev")

    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), ESCROW_METRICS_PORT="18080")
    pid = cluster.run_process("operator", [sys.executable, "-m", "escrow_operator", "run"], env=env)
    print(f"== operator running (pid {pid}); log: {cluster.logs / 'operator.log'}")

    ns = [*kubectl, "-n", NAMESPACE]
    sh(kubectl, "create", "namespace", NAMESPACE, check=False, quiet=True)
    pool = f"""apiVersion: xmrescrow.dev/v1alpha1
kind: WalletPool
metadata: {{name: {POOL}}}
spec: {{replicas: 6, storage: {{size: 1Gi}}}}
"""
    subprocess.run(ns + ["apply", "-f", "-"], input=pool, text=True, check=True, capture_output=True)
    print("== waiting for the 6 wallet-rpc pods")
    sh(ns, "wait", "--for=create", f"statefulset/{POOL}", "--timeout=120s", quiet=True)
    sh(ns, "wait", "--for=jsonpath={.status.readyReplicas}=6", f"statefulset/{POOL}", "--timeout=300s", quiet=True)
    sh(ns, "get", "pods", "-o", "wide")

    escrows = "".join(
        f"""---
apiVersion: xmrescrow.dev/v1alpha1
kind: Escrow
metadata: {{name: {name}}}
spec: {{poolRef: {POOL}, threshold: 2, participants: [buyer, vendor, arbiter]}}
"""
        for name in ESCROWS
    )
    started = time.monotonic()
    subprocess.run(ns + ["apply", "-f", "-"], input=escrows, text=True, check=True, capture_output=True)
    print(f"== applied {len(ESCROWS)} escrows at once; waiting for Ready")
    sh(ns, "wait", "--for=condition=Ready", *[f"esc/{n}" for n in ESCROWS], "--timeout=600s", quiet=True)
    print(f"== all Ready in {time.monotonic() - started:.1f} s")
    sh(ns, "get", "esc")
    claim = sh(ns, "get", "pvc", f"{POOL}-wallets", "-o", "jsonpath={.spec.volumeName}", quiet=True)
    path = sh(kubectl, "get", "pv", claim, "-o", "jsonpath={.spec.hostPath.path}", quiet=True)
    print(f"== final wallet files in the shared volume ({path})")
    for file in sorted(Path(path).iterdir()):
        print(f"   {file.name}  {file.stat().st_size} bytes")
    print(
        "\nThe dev cluster keeps running: export KUBECONFIG=" + str(cluster.kubeconfig) + "   stop it with: make down"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

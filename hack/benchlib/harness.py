"""The benchmark's test ground: its own dev cluster, the operator as a process, pools of wallet-rpc pods."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from escrow_operator.api import ESCROW_PLURAL, GROUP, VERSION, WALLETPOOL_PLURAL
from escrow_operator.kube import metadata
from escrow_operator.pool_resources import rpc_secret_name, selector_string
from hack.devcluster import DevCluster, Ports
from hack.testground.escrows import create_pool
from hack.testground.kube import custom_objects, pod_ready, wait_gone
from hack.testground.operator import OperatorProcess, install_crds

from .measure import container_pids


@dataclass(frozen=True)
class PoolPod:
    name: str
    uid: str
    ip: str


@dataclass
class Pool:
    """A WalletPool of the benchmark and its ready pods (read once, after the pool became ready)."""

    namespace: str
    name: str
    pods: list[PoolPod]

    @property
    def uids(self) -> set[str]:
        return {pod.uid for pod in self.pods}


@dataclass
class Bench:
    cluster: DevCluster
    api: client.ApiClient
    workdir: Path
    operator: OperatorProcess | None = None
    operator_runs: int = 0

    # --- the operator ----------------------------------------------------------------------------
    def start_operator(self, env: dict[str, str]) -> OperatorProcess:
        """Start the operator (each start logs to a file of its own)."""
        if self.operator is not None:
            raise RuntimeError("the operator already runs")
        self.operator_runs += 1
        log = self.workdir / f"operator-{self.operator_runs}.log"
        self.operator = OperatorProcess(Path(self.cluster.kubeconfig), log, env=env).start()
        return self.operator

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    # --- namespaces and pools ----------------------------------------------------------------------
    def create_namespace(self, name: str) -> None:
        client.CoreV1Api(self.api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    def retire(self, pool: Pool, timeout: float) -> bool:
        """Delete the pool's Escrows and the WalletPool, and wait until the escrows are gone (the
        operator must run to handle their finalizers) and the pool's pods have stopped. (Not the
        namespace: the dev cluster runs no PVC-protection controller, so a deleted namespace stays
        Terminating and its controller keeps issuing deletes, which later runs would count.)
        Returns False, and warns, after ``timeout``."""
        objects = client.CustomObjectsApi(self.api)
        objects.delete_collection_namespaced_custom_object(GROUP, VERSION, pool.namespace, ESCROW_PLURAL)
        objects.delete_namespaced_custom_object(GROUP, VERSION, pool.namespace, WALLETPOOL_PLURAL, pool.name)
        pods = client.CoreV1Api(self.api).list_namespaced_pod
        try:
            wait_gone(custom_objects(self.api, pool.namespace, ESCROW_PLURAL), timeout=timeout, what="escrows deleted")
            wait_gone(
                pods, pool.namespace, label_selector=selector_string(pool.name), timeout=timeout, what="pods stopped"
            )
        except AssertionError as exc:
            print(f"bench: warning: {exc}", file=sys.stderr)
            return False
        return True

    def new_pool(self, namespace: str, name: str, pods: int, image: str | None = None) -> Pool:
        """Create a WalletPool (the operator must run to reconcile it) and wait for its ready pods;
        ``image``: its wallet-rpc image (default: the CRD's)."""
        spec: dict[str, Any] = {"image": image} if image else {}
        create_pool(self.api, namespace, name, replicas=pods, **spec)
        return self.read_pool(namespace, name)

    def read_pool(self, namespace: str, name: str) -> Pool:
        listing = client.CoreV1Api(self.api).list_namespaced_pod(namespace, label_selector=selector_string(name))
        pods = []
        for p in listing.items:
            meta, ip = metadata(p), p.status and p.status.pod_ip
            if pod_ready(p) and ip and meta.name and meta.uid and not meta.deletion_timestamp:
                pods.append(PoolPod(meta.name, meta.uid, ip))
        return Pool(namespace, name, sorted(pods, key=lambda pod: pod.name))

    def pool_secret(self, pool: Pool) -> dict[str, str | bytes]:
        """The pool's RPC credentials Secret (``data``, base64 as the API returns it)."""
        return dict(
            client.CoreV1Api(self.api).read_namespaced_secret(rpc_secret_name(pool.name), pool.namespace).data or {}
        )

    def wallet_rpc_pids(self, pool: Pool) -> list[int]:
        return container_pids(self.cluster, "wallet-rpc", pool.uids)


@contextmanager
def bench_cluster(keep: bool) -> Iterator[Bench]:
    """A fresh dev cluster with the CRDs installed; everything it started is stopped afterwards.
    With ``keep`` its state directory (logs of the operator, pods and control plane) is left behind."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    cluster = DevCluster(workdir / "cluster", Ports.find_free(), tie_to_parent=True)
    bench: Bench | None = None
    try:
        cluster.start()
        api = config.new_client_from_config(str(cluster.kubeconfig))
        install_crds(api)
        bench = Bench(cluster, api, workdir)
        yield bench
    finally:
        if bench is not None:
            bench.stop_operator()
        cluster.stop()
        if keep:
            print(f"bench: logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

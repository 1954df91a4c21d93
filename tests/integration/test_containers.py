"""The chart as users install it: the images built by ``make images``, run as containers.

The dev cluster's kubelet runs the pods of a namespace labelled ``devcluster.xmrescrow.dev/runtime=
podman`` from their images under podman (container mode), with the pod's command, args, env,
volumes, securityContext and address. So here, as in a cluster:

* ``helm install`` of the chart with its default image (``xmr-escrow/operator:<appVersion>``, found
  among the locally built images as a user's runtime finds it in a registry): the operator runs as its
  Deployment's pod, from its image, with in-cluster config and the chart's ServiceAccount (the
  Role of ``watchNamespace``); the chart's WalletPool runs the wallet-rpc image with the walletfs
  sidecar from the operator image (``walletPool.image``: the previous, still supported wallet-rpc
  0.18.0.0); three Escrows reach Ready and their final wallets are on the
  shared volume, written by the containers' user (10001);
* ``helm upgrade`` with a changed value rolls the operator (Recreate: the old pod is gone before
  the new one runs) and leaves the escrows as they were;
* ``helm uninstall`` removes the chart's objects and keeps the CRDs, the Escrows, the claim and the
  wallet files;
* the kustomize base (with an overlay a user would write: its namespace, one namespace watched, free
  ports) runs the operator the same way, and a WalletPool of the CRD's default wallet-rpc image
  (0.18.4.0) serves an Escrow to Ready.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from escrow_operator.api import ESCROW_PLURAL, GROUP
from hack.devcluster import DevCluster, binary
from hack.devcluster import podman as podman_mode
from hack.devcluster.kubelet import RUNTIME_LABEL
from tests.support.commands import checked
from tests.support.escrows import create_escrow, create_pool, get_escrow, pool_directory, wait_escrow
from tests.support.images import OPERATOR, WALLET_RPC_DEFAULT, WALLET_RPC_PREVIOUS, require_images
from tests.support.kube import custom_objects, pod_ready, wait_for, wait_gone
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "xmr-escrow-operator"
MANIFESTS = ROOT / "manifests"
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
RELEASE = "escrow"
POOL = "wallets"


@pytest.fixture(scope="module", autouse=True)
def images() -> None:
    require_images()


@pytest.fixture
def podman_namespace(kube: client.ApiClient) -> Iterator[str]:
    """A namespace whose pods run as containers, under the restricted Pod Security Standard."""
    name = f"c-{secrets.token_hex(4)}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name, "labels": {RUNTIME_LABEL: "podman", **RESTRICTED}}})
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


def run(argv: list[Any], *, env: dict[str, str] | None = None, input: str | None = None) -> str:
    return checked(argv, env=env, input=input, timeout=600).stdout


def operator_pod(kube: client.ApiClient, namespace: str, cluster: DevCluster, timeout: float = 240) -> Any:
    """The operator's one pod, once Ready; its log in the failure message otherwise."""
    core = client.CoreV1Api(kube)

    try:
        return wait_for(
            core.list_namespaced_pod,
            lambda pod: not pod.metadata.deletion_timestamp and pod_ready(pod),
            namespace,
            label_selector="app.kubernetes.io/name=xmr-escrow-operator",
            timeout=timeout,
            what="the operator's pod Ready",
        )
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- pod logs ---\n{pod_logs(cluster)}") from exc


def pod_logs(cluster: DevCluster) -> str:
    """The tail of every container log of the kubelet's pods (for failure messages)."""
    tails = []
    for log in sorted((cluster.kubelet_root / "pods").glob("*/logs/*.log")):
        tails.append(f"{log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    return "\n".join(tails[-6:])


def inspect(pod: Any, container: str) -> dict[str, Any]:
    """podman's view of a pod's container: the kubelet reports its name as podman://NAME."""
    status = next(s for s in pod.status.container_statuses if s.name == container)
    assert status.container_id.startswith("podman://"), status.container_id
    out = podman_mode.control("container", "inspect", status.container_id.removeprefix("podman://"))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def assert_runs_as_the_chart_says(details: dict[str, Any], image: str) -> None:
    config, host = details["Config"], details["HostConfig"]
    assert details["ImageName"].endswith(image), details["ImageName"]
    assert config["User"] == "10001:10001", config["User"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] and "CAP_NET_RAW" in host["CapDrop"] and not host["CapAdd"], host
    assert "no-new-privileges" in " ".join(host["SecurityOpt"] or []), host["SecurityOpt"]


def escrows_of(kube: client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    listing = custom_objects(kube, namespace, ESCROW_PLURAL)()
    return {e["metadata"]["name"]: e for e in listing["items"]}


def test_helm_install_upgrade_and_uninstall_with_the_built_images(
    cluster: DevCluster, kube: client.ApiClient, crds: None, helm_env: dict[str, str], podman_namespace: str
) -> None:
    ns = podman_namespace
    helm = binary("helm")
    values = [
        f"--set=watchNamespace={ns}",
        # the pods share the host's network namespace: ports no other process of the machine holds
        f"--set=metrics.port={free_port()}",
        f"--set=health.port={free_port()}",
        "--set=walletPool.enabled=true",
        f"--set=walletPool.name={POOL}",
        "--set=walletPool.replicas=2",
        f"--set=walletPool.image={WALLET_RPC_PREVIOUS}",
        "--set=walletPool.storage.size=1Gi",
    ]
    kubeconfig = ["--kubeconfig", str(cluster.kubeconfig), "--namespace", ns]
    run([helm, "install", RELEASE, CHART, *kubeconfig, *values, "--wait", "--timeout=5m"], env=helm_env)

    first = operator_pod(kube, ns, cluster)
    assert_runs_as_the_chart_says(inspect(first, "operator"), OPERATOR)
    assert first.spec.service_account_name == "escrow-xmr-escrow-operator"

    # The pool's pods: wallet-rpc from its image, walletfs from the operator's.
    core = client.CoreV1Api(kube)
    pods = wait_for(
        core.list_namespaced_pod,
        pod_ready,
        ns,
        label_selector=f"xmrescrow.dev/pool={POOL}",
        timeout=240,
        what="a ready pool pod",
    )
    assert_runs_as_the_chart_says(inspect(pods, "wallet-rpc"), WALLET_RPC_PREVIOUS)
    assert_runs_as_the_chart_says(inspect(pods, "walletfs"), OPERATOR)

    for name in ("order-1", "order-2", "order-3"):
        create_escrow(kube, ns, name, POOL)
    ready = {name: wait_escrow(kube, ns, name, timeout=600) for name in ("order-1", "order-2", "order-3")}
    directory = pool_directory(kube, ns, POOL)
    for escrow in ready.values():
        uid = escrow["metadata"]["uid"]
        for role in escrow["spec"]["participants"]:
            for suffix in ("", ".keys"):
                wallet = directory / f"{role}_escrow_{uid}_round_3_final{suffix}"
                assert wallet.is_file(), wallet
                assert wallet.stat().st_uid == 10001, f"{wallet} written by uid {wallet.stat().st_uid}"

    # helm upgrade: a changed value rolls the operator; Recreate stops the old pod first.
    run([helm, "upgrade", RELEASE, CHART, *kubeconfig, *values, "--set=operator.verbose=true", "--wait"], env=helm_env)
    second = operator_pod(kube, ns, cluster)
    assert second.metadata.uid != first.metadata.uid
    assert "--verbose" in second.spec.containers[0].args
    pods_now = core.list_namespaced_pod(ns, label_selector="app.kubernetes.io/name=xmr-escrow-operator").items
    assert [p.metadata.uid for p in pods_now] == [second.metadata.uid]
    after = escrows_of(kube, ns)
    for name, escrow in ready.items():
        assert after[name]["status"]["phase"] == "Ready"
        assert after[name]["status"]["address"] == escrow["status"]["address"]
        assert after[name]["metadata"]["uid"] == escrow["metadata"]["uid"]

    # helm uninstall: the chart's objects go; CRDs, Escrows, the claim and the wallets stay.
    run([helm, "uninstall", RELEASE, *kubeconfig, "--wait"], env=helm_env)
    wait_gone(core.list_namespaced_pod, ns, label_selector="app.kubernetes.io/name=xmr-escrow-operator", timeout=120)
    apps = client.AppsV1Api(kube)
    assert not apps.list_namespaced_deployment(ns).items
    ext = client.ApiextensionsV1Api(kube)
    for plural in ("escrows", "walletpools", "escrowpayouts"):
        ext.read_custom_resource_definition(f"{plural}.{GROUP}")
    assert set(escrows_of(kube, ns)) == set(ready)
    core.read_namespaced_persistent_volume_claim(f"{POOL}-wallets", ns)
    for escrow in ready.values():
        uid = escrow["metadata"]["uid"]
        assert any(directory.glob(f"*_escrow_{uid}_round_3_final.keys")), uid
    assert get_escrow(kube, ns, "order-1")["metadata"]["finalizers"], "Escrows keep their finalizer"


def test_kustomize_base_runs_the_operator_from_its_image(
    cluster: DevCluster, kube: client.ApiClient, crds: None, podman_namespace: str, tmp_path: Path
) -> None:
    ns = podman_namespace
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": ns,
        "resources": [os.path.relpath(MANIFESTS, tmp_path)],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    objs = [o for o in yaml.safe_load_all(run([binary("kubectl"), "kustomize", tmp_path])) if o]
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == OPERATOR
    # What a user's overlay would patch here: one namespace watched, ports free on this host (the
    # pods share its network namespace).
    metrics, health = free_port(), free_port()
    container["env"].append({"name": "ESCROW_NAMESPACE", "value": ns})
    for var in container["env"]:
        if var["name"] == "ESCROW_METRICS_PORT":
            var["value"] = str(metrics)
    container["args"] = [a.replace(":8081/", f":{health}/") for a in container["args"]]
    for port in container["ports"]:
        port["containerPort"] = {"metrics": metrics, "health": health}[port["name"]]
    built = yaml.safe_dump_all(objs)
    kubectl = [binary("kubectl"), "--kubeconfig", cluster.kubeconfig]
    run(
        [*kubectl, "apply", "--server-side", "--force-conflicts", "--field-manager=kustomize-test", "-f", "-"],
        input=built,
    )
    try:
        pod = operator_pod(kube, ns, cluster)
        assert_runs_as_the_chart_says(inspect(pod, "operator"), OPERATOR)
        create_pool(kube, ns, POOL, 1)  # the CRD's default images
        pool_pod = client.CoreV1Api(kube).list_namespaced_pod(ns, label_selector=f"xmrescrow.dev/pool={POOL}").items[0]
        assert_runs_as_the_chart_says(inspect(pool_pod, "wallet-rpc"), WALLET_RPC_DEFAULT)
        create_escrow(kube, ns, "order", POOL)
        escrow = wait_escrow(kube, ns, "order", timeout=600)
        assert escrow["status"]["address"]
    finally:
        rbac = client.RbacAuthorizationV1Api(kube)
        for obj in objs:
            if obj["kind"] == "ClusterRole":
                rbac.delete_cluster_role(obj["metadata"]["name"])
            elif obj["kind"] == "ClusterRoleBinding":
                rbac.delete_cluster_role_binding(obj["metadata"]["name"])

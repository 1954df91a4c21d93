"""The test ground itself: a real apiserver, real controllers, real wallet-rpc processes as pods."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from escrow_operator.api import DEFAULT_IMAGE
from hack.devcluster import DevCluster, DevClusterError
from hack.devcluster.podman import HOST_IMAGE, wallet_rpc_tree
from tests.support.kube import pod_ready, wait_for, wait_gone
from tests.support.processes import free_port, stop
from tests.support.walletrpc_sts import RPC_PORT, WalletRpcSet, create_wallet_rpc_statefulset

REPLICAS = 6

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.devcluster.test"},
    "spec": {
        "group": "devcluster.test",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {"size": {"type": "integer", "minimum": 1, "maximum": 10}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


def rpc(ip: str, method: str, creds: WalletRpcSet | None, **params: object) -> httpx.Response:
    auth = httpx.DigestAuth(creds.username, creds.password) if creds else None
    return httpx.post(
        f"http://{ip}:{RPC_PORT}/json_rpc",
        json={"jsonrpc": "2.0", "id": "0", "method": method, "params": params},
        auth=auth,
        timeout=120,
    )


def test_crd_schema_is_enforced_by_the_apiserver(kube: client.ApiClient, namespace: str) -> None:
    ext = client.ApiextensionsV1Api(kube)
    try:
        ext.create_custom_resource_definition(WIDGET_CRD)
    except ApiException as exc:
        if exc.status != 409:
            raise
    wait_for(
        ext.list_custom_resource_definition,
        lambda c: any(x.type == "Established" and x.status == "True" for x in (c.status.conditions or [])),
        field_selector="metadata.name=widgets.devcluster.test",
        what="the Widget CRD to be established",
    )
    objects = client.CustomObjectsApi(kube)

    def body(size: int) -> dict[str, Any]:
        return {
            "apiVersion": "devcluster.test/v1",
            "kind": "Widget",
            "metadata": {"name": f"w{size}"},
            "spec": {"size": size},
        }

    objects.create_namespaced_custom_object("devcluster.test", "v1", namespace, "widgets", body(3))
    with pytest.raises(ApiException) as refused:
        objects.create_namespaced_custom_object("devcluster.test", "v1", namespace, "widgets", body(99))
    assert refused.value.status == 422
    assert "spec.size" in refused.value.body and "less than or equal to 10" in refused.value.body


def flags_of(argv: list[str]) -> dict[str, str]:
    flags = dict(arg.removeprefix("--").partition("=")[::2] for arg in argv[1:])
    assert len(flags) == len(argv) - 1, f"a flag given twice: {argv}"
    return flags


def test_apiserver_argv_adds_and_replaces_flags(cluster: DevCluster) -> None:
    own = flags_of(cluster.apiserver_argv())
    assert own["secure-port"] == str(cluster.ports.apiserver)
    assert own["service-account-issuer"] == cluster.server
    other = flags_of(cluster.apiserver_argv(12345, {"v": 4, "--audit-log-format": "json"}))
    assert other == {**own, "secure-port": "12345", "v": "4", "audit-log-format": "json"}


def test_an_extra_apiserver_serves_the_clusters_store_with_its_own_flags(
    cluster: DevCluster, kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    own = client.CoreV1Api(kube)
    own.create_namespaced_config_map(namespace, {"metadata": {"name": "seen"}, "data": {"a": "b"}})
    port = free_port()
    proc = cluster.start_extra_apiserver(port, tmp_path, {"enable-admission-plugins": "AlwaysPullImages"})
    try:
        cfg = yaml.safe_load(cluster.kubeconfig.read_text())
        cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
        (tmp_path / "extra.kubeconfig").write_text(yaml.safe_dump(cfg))
        extra = client.CoreV1Api(config.new_client_from_config(str(tmp_path / "extra.kubeconfig")))
        assert extra.read_namespaced_config_map("seen", namespace).data == {"a": "b"}
        pod = {
            "metadata": {"name": "probe"},
            "spec": {"containers": [{"name": "c", "image": "probe:1", "imagePullPolicy": "IfNotPresent"}]},
        }
        # Only the extra apiserver runs the admission plugin its flags add.
        policy = [
            api.create_namespaced_pod(namespace, pod, dry_run="All").spec.containers[0].image_pull_policy
            for api in (extra, own)
        ]
        assert policy == ["Always", "IfNotPresent"]
    finally:
        stop(proc, timeout=20)


def test_an_extra_apiserver_that_exits_fails_with_its_log(cluster: DevCluster, tmp_path: Path) -> None:
    with pytest.raises(DevClusterError, match=r"(?s)exited with \d+ during start.*unknown flag: --no-such-flag"):
        cluster.start_extra_apiserver(free_port(), tmp_path, {"no-such-flag": "x"})


@pytest.fixture(scope="module")
def pool(kube: client.ApiClient, module_namespace: str) -> WalletRpcSet:
    return create_wallet_rpc_statefulset(kube, module_namespace, REPLICAS)


def pods_of(kube: client.ApiClient, pool: WalletRpcSet) -> list[client.V1Pod]:
    pods = client.CoreV1Api(kube).list_namespaced_pod(pool.namespace, label_selector=pool.selector).items
    return sorted(pods, key=lambda p: p.metadata.name)


def test_statefulset_pods_serve_wallet_rpc_with_digest_auth(kube: client.ApiClient, pool: WalletRpcSet) -> None:
    pods = pods_of(kube, pool)
    assert len(pods) == REPLICAS and all(pod_ready(p) for p in pods)
    ips = [p.status.pod_ip for p in pods]
    assert len(set(ips)) == REPLICAS and all(ip.startswith("127.") for ip in ips)
    for ip in ips:
        reply = rpc(ip, "get_version", pool)
        assert reply.status_code == 200
        assert reply.json()["result"]["version"] > 0
        assert rpc(ip, "get_version", None).status_code == 401


def test_wallet_directory_is_shared_and_locked(kube: client.ApiClient, pool: WalletRpcSet) -> None:
    first, second = (p.status.pod_ip for p in pods_of(kube, pool)[:2])
    created = rpc(first, "create_wallet", pool, filename="shared_probe", password="pw", language="English").json()
    assert "error" not in created, created
    # The first process holds the wallet: the second cannot open it (wallet2's lock on .keys).
    locked = rpc(second, "open_wallet", pool, filename="shared_probe", password="pw").json()
    assert locked.get("error", {}).get("code") == -1, locked
    assert "result" in rpc(first, "close_wallet", pool).json()
    opened = rpc(second, "open_wallet", pool, filename="shared_probe", password="pw").json()
    assert "error" not in opened, opened
    assert "result" in rpc(second, "close_wallet", pool).json()


def test_sigkill_restarts_the_container(kube: client.ApiClient, pool: WalletRpcSet) -> None:
    core = client.CoreV1Api(kube)
    pod = pods_of(kube, pool)[2]
    status = pod.status.container_statuses[0]
    assert status.restart_count == 0
    pid = int(status.container_id.removeprefix("process://"))
    os.kill(pid, signal.SIGKILL)
    by_name = {"field_selector": f"metadata.name={pod.metadata.name}"}
    wait_for(
        core.list_namespaced_pod, lambda p: not pod_ready(p), pool.namespace, what="NotReady after SIGKILL", **by_name
    )
    back = wait_for(
        core.list_namespaced_pod,
        lambda p: pod_ready(p) and p.status.container_statuses[0].restart_count == 1,
        pool.namespace,
        what="Ready with restartCount 1",
        **by_name,
    )
    assert back.metadata.uid == pod.metadata.uid
    assert rpc(back.status.pod_ip, "get_version", pool).status_code == 200


def test_deleted_pod_is_recreated(kube: client.ApiClient, pool: WalletRpcSet) -> None:
    core = client.CoreV1Api(kube)
    pod = pods_of(kube, pool)[3]
    core.delete_namespaced_pod(pod.metadata.name, pool.namespace)
    again = wait_for(
        core.list_namespaced_pod,
        lambda p: p.metadata.uid != pod.metadata.uid and pod_ready(p),
        pool.namespace,
        field_selector=f"metadata.name={pod.metadata.name}",
        what="the recreated pod to be Ready",
    )
    assert rpc(again.status.pod_ip, "get_version", pool).status_code == 200


def test_deleting_the_statefulset_leaves_no_process(kube: client.ApiClient, pool: WalletRpcSet) -> None:
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    pids = [int(p.status.container_statuses[0].container_id.removeprefix("process://")) for p in pods_of(kube, pool)]
    assert len(pids) == REPLICAS
    apps.delete_namespaced_stateful_set(pool.name, pool.namespace)  # background: the garbage collector deletes the pods
    wait_gone(core.list_namespaced_pod, pool.namespace, label_selector=pool.selector, what="the pods to be deleted")
    alive = [pid for pid in pids if _alive(pid)]
    assert alive == [], f"processes of deleted pods still run: {alive}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- the kubelet's crash-loop back-off, termination messages and images it does not have -----------
def one_pod(image: str, restart_policy: str = "Always", **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "c"},
        "spec": {"restartPolicy": restart_policy, "containers": [{"name": "c", "image": image, **container}]},
    }


def container_of(pod: client.V1Pod) -> client.V1ContainerStatus | None:
    return (pod.status.container_statuses or [None])[0]


def waiting_reason(pod: client.V1Pod) -> str | None:
    c = container_of(pod)
    return c.state.waiting.reason if c and c.state and c.state.waiting else None


def test_a_crashing_container_backs_off_as_a_kubelet_does_and_leaves_its_last_words(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    say = "echo starting; echo 'fatal: no such option --frobnicate' >&2; exit 3"
    core.create_namespaced_pod(
        namespace,
        one_pod(HOST_IMAGE, command=["sh", "-c", say], terminationMessagePolicy="FallbackToLogsOnError"),
    )

    def backing_off(seconds: int, restarts: int) -> Any:
        def predicate(p: client.V1Pod) -> bool:
            c = container_of(p)
            waiting = c and c.state and c.state.waiting
            return bool(
                waiting
                and waiting.reason == "CrashLoopBackOff"
                and f"back-off {seconds}s restarting failed container=c pod=c_{namespace}(" in (waiting.message or "")
                and c.restart_count == restarts
            )

        return predicate

    # The first exit restarts at once; then 10 s, then 20 s (kubelet's 10 s doubling to 5 minutes).
    first = wait_for(core.list_namespaced_pod, backing_off(10, 1), namespace, timeout=30, what="back-off 10s")
    terminated = container_of(first).last_state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert terminated.message == "starting\nfatal: no such option --frobnicate"
    second = wait_for(core.list_namespaced_pod, backing_off(20, 2), namespace, timeout=40, what="back-off 20s")
    assert container_of(second).last_state.terminated.finished_at >= terminated.finished_at


def test_an_image_the_node_does_not_have_waits_and_runs_once_it_is_made(
    cluster: DevCluster, kube: client.ApiClient, namespace: str
) -> None:
    tree = wallet_rpc_tree(DEFAULT_IMAGE)
    assert tree is not None, "make images exports the default wallet-rpc image"
    image = "xmr-escrow/wallet-rpc:0.0.0.1"  # no such image: nothing may stand in for it
    made = tree.parent / "wallet-rpc-0.0.0.1"
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, one_pod(image, "Never", args=["--version"]))
    try:
        waiting = wait_for(
            core.list_namespaced_pod,
            lambda p: waiting_reason(p) == "ErrImageNeverPull",
            namespace,
            timeout=30,
            what="ErrImageNeverPull",
        )
        assert "make images" in container_of(waiting).state.waiting.message
        assert container_of(waiting).restart_count == 0
        made.symlink_to(tree)  # the image is made: the kubelet finds it and runs that image's binary
        done = wait_for(
            core.list_namespaced_pod,
            lambda p: p.status.phase in ("Succeeded", "Failed"),
            namespace,
            timeout=30,
            what="the container ran",
        )
    finally:
        made.unlink(missing_ok=True)
    assert (done.status.phase, container_of(done).state.terminated.exit_code) == ("Succeeded", 0)
    log = cluster.kubelet_root / "pods" / done.metadata.uid / "logs" / "c.log"
    assert "(v0.18.4.0-" in log.read_text()  # the made image's own wallet-rpc, not the host's 0.18.0.0

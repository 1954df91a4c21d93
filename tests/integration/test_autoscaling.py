"""The chart's autoscaler of a WalletPool on the real dev cluster, and the pool scaled through its
scale subresource while escrows wait for pods.

* ``helm lint --strict`` and ``helm template`` with ``autoscaling`` on: an ``autoscaling/v2`` HPA (or a
  KEDA ScaledObject) whose target is the WalletPool; with every value set, the HPA and a WalletPool
  that leaves ``.spec.replicas`` to it pass a server-side dry run.
* The HPA rendered by the chart is created on the apiserver; the dev cluster's kube-controller-manager
  (with the HPA controller) resolves the pool's scale subresource (``AbleToScale=True``,
  ``SucceededGetScale``) and says why it cannot scale on metrics: no adapter serves the External
  metric (``ScalingActive=False``, ``FailedGetExternalMetric``). The HPA controller's built-in role
  may get and update ``walletpools/scale``: the chart needs no RBAC for it.
* Two 2-of-3 escrows queue their steps on a 1-pod pool (the operator's ``xmrescrow_pool_steps_queued``
  gauge and the pool status show the queue); ``kubectl scale wpool --replicas=3`` resizes the pool,
  the StatefulSet follows, and the new pods take steps before the escrows are Ready. Then the HPA
  itself writes the scale subresource (``maxReplicas`` lowered below the pool size) and the operator
  follows without reverting it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from escrow_operator.api import GROUP, VERSION, WALLETPOOL_PLURAL
from hack.devcluster import DevCluster, bin_dir, binary
from tests.support.commands import checked, helm_environment
from tests.support.escrows import create_escrow, create_pool, wait_escrow
from tests.support.kube import custom_objects, pod_ready, wait_for
from tests.support.operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "xmr-escrow-operator"
VALUES_ALL = ROOT / "tests" / "data" / "values-all.yaml"
POOL = "autopool"
HPA_SA = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
STEP_DONE = re.compile(r"Step done: escrow=(\S+)/(\S+) role=(\S+) round=(\d+) pod=(\S+) start=([\d.]+) end=([\d.]+)")


# --- helm --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """helm, with its caches and config under a temporary home."""
    path = bin_dir() / "helm"
    if not os.access(path, os.X_OK):
        pytest.skip("helm is not built: run hack/build-tools.sh")
    return path, helm_environment(tmp_path_factory.mktemp("helm-home"))


def run(
    argv: list[Any], *, input: str | None = None, env: dict[str, str] | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """:func:`checked`, or with ``ok=False`` the command's result whatever its exit status."""
    if ok:
        return checked(argv, input=input, env=env)
    return subprocess.run([str(a) for a in argv], input=input, capture_output=True, text=True, env=env, timeout=300)


def template(
    helm: tuple[Path, dict[str, str]], namespace: str, *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    path, env = helm
    out = run([path, "template", "auto", CHART, "--namespace", namespace, *args], env=env, ok=ok)
    if ok:
        assert out.stderr == "", out.stderr
    return out


def objects(manifest: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(manifest) if d}


def kubectl(cluster: DevCluster, namespace: str) -> list[str]:
    return [str(binary("kubectl")), f"--kubeconfig={cluster.kubeconfig}", "-n", namespace]


# --- the chart ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["--set", "autoscaling.enabled=true"],
        ["--set", "autoscaling.enabled=true,autoscaling.kind=keda,autoscaling.minReplicas=0"],
        ["-f", str(VALUES_ALL), "--set", "autoscaling.enabled=true"],
        ["-f", str(VALUES_ALL), "--set", "autoscaling.enabled=true,autoscaling.kind=hpa"],
    ],
    ids=["hpa", "keda-to-zero", "values-all-keda", "values-all-hpa"],
)
def test_helm_lint_with_autoscaling(helm: tuple[Path, dict[str, str]], args: list[str]) -> None:
    path, env = helm
    out = run([path, "lint", "--strict", CHART, *args], env=env)
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout, out.stdout


def test_chart_renders_an_hpa_on_the_pool_scale_subresource(helm: tuple[Path, dict[str, str]]) -> None:
    assert not [
        k for k in objects(template(helm, "shop").stdout) if k[0] in ("HorizontalPodAutoscaler", "ScaledObject")
    ]

    objs = objects(template(helm, "shop", "--set", "autoscaling.enabled=true").stdout)
    hpa = objs[("HorizontalPodAutoscaler", "wallets")]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["metadata"]["namespace"] == "shop"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WalletPool", "name": "wallets"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 12)
    assert spec["metrics"] == [
        {
            "type": "External",
            "external": {
                "metric": {"name": name, "selector": {"matchLabels": {"pool": "wallets"}}},
                "target": {"type": "AverageValue", "averageValue": "1"},
            },
        }
        for name in ("xmrescrow_pool_steps_queued", "xmrescrow_pool_pods_busy")
    ]
    assert "behavior" not in spec
    # Only the queued steps when busyPodsMetric is empty; the pool's namespace follows watchNamespace.
    objs = objects(
        template(
            helm, "shop", "--set", "autoscaling.enabled=true,autoscaling.hpa.busyPodsMetric=,watchNamespace=escrows"
        ).stdout
    )
    hpa = objs[("HorizontalPodAutoscaler", "wallets")]
    assert hpa["metadata"]["namespace"] == "escrows"
    assert [m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]] == ["xmrescrow_pool_steps_queued"]

    # The chart's own WalletPool leaves .spec.replicas to the autoscaler.
    pool_only = ["--show-only", "templates/walletpool.yaml", "--set", "walletPool.enabled=true"]
    assert objects(template(helm, "shop", *pool_only).stdout)[("WalletPool", "wallets")]["spec"]["replicas"] == 6
    assert (
        "replicas"
        not in objects(template(helm, "shop", *pool_only, "--set", "autoscaling.enabled=true").stdout)[
            ("WalletPool", "wallets")
        ]["spec"]
    )


def test_chart_renders_a_keda_scaledobject_on_the_pool(helm: tuple[Path, dict[str, str]]) -> None:
    objs = objects(
        template(
            helm, "shop", "--set", "autoscaling.enabled=true,autoscaling.kind=keda,autoscaling.minReplicas=0"
        ).stdout
    )
    so = objs[("ScaledObject", "wallets")]
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["metadata"]["namespace"] == "shop"
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WalletPool", "name": "wallets"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["pollingInterval"], spec["cooldownPeriod"]) == (
        0,
        12,
        15,
        300,
    )
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and "authenticationRef" not in trigger
    match = 'namespace="shop",pool="wallets"'
    assert trigger["metadata"] == {
        "serverAddress": "http://prometheus-operated.monitoring.svc:9090",
        "query": f"sum(xmrescrow_pool_steps_queued{{{match}}}) + sum(xmrescrow_pool_pods_busy{{{match}}})",
        "threshold": "1",
        "activationThreshold": "0",
    }

    everything = yaml.safe_load(VALUES_ALL.read_text())["autoscaling"]
    objs = objects(
        template(helm, "shop", "-f", str(VALUES_ALL), "--set", "autoscaling.enabled=true,watchNamespace=escrows").stdout
    )
    spec = objs[("ScaledObject", "escrow-wallets")]["spec"]
    assert objs[("ScaledObject", "escrow-wallets")]["metadata"]["namespace"] == "escrows"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (everything["minReplicas"], everything["maxReplicas"])
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == everything["behavior"]
    (trigger,) = spec["triggers"]
    assert trigger["authenticationRef"] == {"name": everything["keda"]["authenticationRef"]}
    assert trigger["metadata"]["query"] == everything["keda"]["query"]
    assert trigger["metadata"]["threshold"] == str(everything["targetStepsPerPod"])


@pytest.mark.parametrize(
    "bad, message",
    [
        ("autoscaling.minReplicas=0", "needs autoscaling.kind: keda"),
        ("autoscaling.minReplicas=5,autoscaling.maxReplicas=2", "exceeds autoscaling.maxReplicas"),
        ("autoscaling.kind=vpa", "schema"),
        ("autoscaling.targetStepsPerPod=0", "schema"),
        ("autoscaling.hpa.queuedStepsMetric=queued-steps", "schema"),
        ("autoscaling.replicas=3", "schema"),
    ],
)
def test_chart_refuses_bad_autoscaling_values(helm: tuple[Path, dict[str, str]], bad: str, message: str) -> None:
    out = template(helm, "shop", "--set", f"autoscaling.enabled=true,{bad}", ok=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_chart_hpa_with_every_value_applies_cleanly(
    helm: tuple[Path, dict[str, str]], cluster: DevCluster, crds: None, namespace: str
) -> None:
    manifest = template(
        helm,
        namespace,
        "-f",
        str(VALUES_ALL),
        "--set",
        f"autoscaling.enabled=true,autoscaling.kind=hpa,watchNamespace={namespace}",
    ).stdout
    objs = objects(manifest)
    hpa = objs[("HorizontalPodAutoscaler", "escrow-wallets")]
    assert hpa["spec"]["behavior"] == yaml.safe_load(VALUES_ALL.read_text())["autoscaling"]["behavior"]
    assert [m["external"]["target"]["averageValue"] for m in hpa["spec"]["metrics"]] == ["2", "2"]
    assert "replicas" not in objs[("WalletPool", "escrow-wallets")]["spec"]
    out = run(
        kubectl(cluster, namespace)
        + ["apply", "--server-side", "--dry-run=server", "--field-manager=autoscaling-test", "-f", "-"],
        input=manifest,
    )
    assert out.stderr == "", f"warnings from the apiserver:\n{out.stderr}"
    assert out.stdout.count("serverside-applied (server dry run)") == len(objs) == 9, out.stdout
    assert "horizontalpodautoscaler.autoscaling/escrow-wallets serverside-applied (server dry run)" in out.stdout


# --- the HPA on the real apiserver, and scaling under load -------------------------------------
def _condition(hpa: client.V2HorizontalPodAutoscaler, kind: str) -> client.V2HorizontalPodAutoscalerCondition | None:
    return next((c for c in (hpa.status.conditions or []) if c.type == kind), None) if hpa.status else None


def _reason(hpa: client.V2HorizontalPodAutoscaler, kind: str) -> str | None:
    c = _condition(hpa, kind)
    return c.reason if c else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gauges(port: int, namespace: str) -> dict[str, float]:
    """The operator's per-pool gauges of POOL, as Prometheus would scrape them."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = {}
    for name, labels, value in re.findall(r"^(xmrescrow_pool_\w+)\{([^}]*)\} (\S+)$", text, re.M):
        if dict(re.findall(r'(\w+)="([^"]*)"', labels)) == {"namespace": namespace, "pool": POOL}:
            found[name] = float(value)
    return found


def _scale(cluster: DevCluster, namespace: str) -> dict[str, Any]:
    raw = run(
        kubectl(cluster, namespace)
        + ["get", "--raw", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{WALLETPOOL_PLURAL}/{POOL}/scale"]
    ).stdout
    return json.loads(raw)


def _pool(kube: client.ApiClient, namespace: str) -> dict[str, Any]:
    return client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, WALLETPOOL_PLURAL, POOL
    )


def _wait_pool(
    kube: client.ApiClient, namespace: str, predicate: Any, what: str, timeout: float = 120
) -> dict[str, Any]:
    return wait_for(
        custom_objects(kube, namespace, WALLETPOOL_PLURAL),
        predicate,
        field_selector=f"metadata.name={POOL}",
        timeout=timeout,
        what=what,
    )


def _wait_sts(kube: client.ApiClient, namespace: str, replicas: int, what: str) -> client.V1StatefulSet:
    return wait_for(
        client.AppsV1Api(kube).list_namespaced_stateful_set,
        lambda s: (
            s.spec.replicas == replicas
            and (s.status.ready_replicas or 0) == replicas
            and (s.status.replicas or 0) == replicas
        ),
        namespace,
        field_selector=f"metadata.name={POOL}",
        timeout=180,
        what=what,
    )


def _check_scale(cluster: DevCluster, kube: client.ApiClient, namespace: str, replicas: int) -> None:
    """GET walletpools/NAME/scale: an autoscaling/v1 Scale with the pool's replicas and the selector
    of exactly its pods."""
    scale = _scale(cluster, namespace)
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1", scale
    assert scale["spec"]["replicas"] == replicas and scale["status"]["replicas"] == replicas, scale
    selector = scale["status"]["selector"]
    assert selector == _pool(kube, namespace)["status"]["selector"] and f"xmrescrow.dev/pool={POOL}" in selector, scale
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=selector).items
    assert sorted(p.metadata.name for p in pods if not p.metadata.deletion_timestamp) == [
        f"{POOL}-{i}" for i in range(replicas)
    ]


def test_hpa_resolves_the_pool_scale_and_new_pods_take_queued_steps(
    helm: tuple[Path, dict[str, str]],
    cluster: DevCluster,
    kube: client.ApiClient,
    crds: None,
    namespace: str,
    tmp_path: Path,
) -> None:
    ns = namespace
    hpas = client.AutoscalingV2Api(kube)
    port = _free_port()
    op = OperatorProcess(
        Path(cluster.kubeconfig), tmp_path / "operator.log", env={"ESCROW_METRICS_PORT": str(port)}
    ).start()
    try:
        create_pool(kube, ns, POOL, replicas=1)
        _wait_pool(
            kube,
            ns,
            lambda p: (p.get("status") or {}).get("selector") and p["status"].get("readyReplicas") == 1,
            "pool status with a selector",
        )
        _check_scale(cluster, kube, ns, 1)

        # 1. The chart's HPA, created for real (not a dry run), targets the pool.
        manifest = template(
            helm,
            ns,
            "--show-only",
            "templates/autoscaling.yaml",
            "--set",
            f"autoscaling.enabled=true,walletPool.name={POOL},autoscaling.minReplicas=1,autoscaling.maxReplicas=3",
        ).stdout
        (hpa_obj,) = objects(manifest).values()
        assert hpa_obj["kind"] == "HorizontalPodAutoscaler" and hpa_obj["metadata"]["namespace"] == ns
        out = run(kubectl(cluster, ns) + ["create", "-f", "-"], input=manifest)
        assert out.stdout.strip() == f"horizontalpodautoscaler.autoscaling/{POOL} created", out.stdout

        # The HPA controller read the pool's scale subresource; the External metric has no adapter.
        hpa = wait_for(
            hpas.list_namespaced_horizontal_pod_autoscaler,
            lambda h: _reason(h, "AbleToScale") == "SucceededGetScale" and _condition(h, "ScalingActive") is not None,
            ns,
            field_selector=f"metadata.name={POOL}",
            timeout=120,
            what="the HPA controller to resolve the pool's scale",
        )
        able, active = _condition(hpa, "AbleToScale"), _condition(hpa, "ScalingActive")
        print(
            f"\nAbleToScale={able.status} {able.reason}: {able.message}\nScalingActive={active.status} {active.reason}: {active.message}"
        )
        assert able.status == "True"
        assert active.status == "False" and active.reason == "FailedGetExternalMetric", active
        # "... unable to fetch metrics from external metrics API: the server could not find the
        # requested resource (get xmrescrow_pool_steps_queued.external.metrics.k8s.io)"
        assert "xmrescrow_pool_steps_queued" in active.message and "external metrics API" in active.message, (
            active.message
        )
        assert hpa.status.current_replicas == 1 and hpa.status.last_scale_time is None, hpa.status  # read, never scaled

        # The HPA controller's built-in role covers walletpools/scale (and nothing more of the pool).
        authz = client.AuthorizationV1Api(kube)
        for verb, subresource, allowed in (("get", "scale", True), ("update", "scale", True), ("update", "", False)):
            review = authz.create_subject_access_review(
                {
                    "spec": {
                        "user": HPA_SA,
                        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system"],
                        "resourceAttributes": {
                            "group": GROUP,
                            "resource": WALLETPOOL_PLURAL,
                            "subresource": subresource,
                            "verb": verb,
                            "namespace": ns,
                            "name": POOL,
                        },
                    }
                }
            )
            assert review.status.allowed is allowed, (verb, subresource, review.status)
            if allowed:
                assert "system:controller:horizontal-pod-autoscaler" in review.status.reason, review.status.reason

        # 2. Two escrows queue steps on the single pod: the signal the autoscaler scales on.
        names = ["order-1", "order-2"]
        for name in names:
            create_escrow(kube, ns, name, POOL)
        queued = _wait_pool(
            kube,
            ns,
            lambda p: (p.get("status") or {}).get("busyPods") == 1 and p["status"].get("queuedSteps", 0) > 0,
            "one busy pod and queued steps",
        )
        gauges = _gauges(port, ns)
        print(
            f"pool status: busyPods={queued['status']['busyPods']} queuedSteps={queued['status']['queuedSteps']}; gauges: {gauges}"
        )
        assert gauges["xmrescrow_pool_pods_ready"] == 1 and gauges["xmrescrow_pool_steps_queued"] > 0, gauges

        # 3. kubectl scale writes the scale subresource; the pool, its StatefulSet and pods follow.
        out = run(kubectl(cluster, ns) + ["scale", "wpool", POOL, "--replicas=3"])
        assert out.stdout.strip() == f"walletpool.{GROUP}/{POOL} scaled", out.stdout
        assert _pool(kube, ns)["spec"]["replicas"] == 3
        _wait_sts(kube, ns, 3, "the StatefulSet to follow to 3 ready pods")
        _wait_pool(kube, ns, lambda p: (p.get("status") or {}).get("replicas") == 3, "pool status.replicas 3")
        _check_scale(cluster, kube, ns, 3)
        core = client.CoreV1Api(kube)
        ready_at = {}
        for name in (f"{POOL}-1", f"{POOL}-2"):
            pod = core.read_namespaced_pod(name, ns)
            assert pod_ready(pod), name
            ready_at[name] = next(
                c.last_transition_time for c in pod.status.conditions if c.type == "Ready"
            ).timestamp()

        escrows = [wait_escrow(kube, ns, name, timeout=600) for name in names]
        steps = [m for m in STEP_DONE.finditer(op.log) if m[1] == ns]
        assert len(steps) == 2 * 3 * 4, f"{len(steps)} steps logged for 2 escrows of 3 participants x 4 rounds"
        last_step = max(float(m[7]) for m in steps)  # the escrows turned Ready after it
        last_ready = max(
            dt.datetime.fromisoformat(e["status"]["readyAt"].replace("Z", "+00:00")).timestamp() for e in escrows
        )
        per_pod = {pod: [m for m in steps if m[5] == pod] for pod in (f"{POOL}-0", f"{POOL}-1", f"{POOL}-2")}
        print("steps per pod:", {pod: len(ms) for pod, ms in per_pod.items()})
        for pod in ready_at:
            assert per_pod[pod], f"the new pod {pod} took no step"
            first = min(per_pod[pod], key=lambda m: float(m[6]))
            start, end = float(first[6]), float(first[7])
            print(
                f"{pod}: Ready at {ready_at[pod]:.0f}, first step {first[2]} {first[3]} round {first[4]} {start - ready_at[pod]:+.1f} s after,"
                f" done {last_step - end:.1f} s before the last step"
            )
            # At once: while the other escrows' steps still waited, not after they were all done.
            assert end < last_step and start < last_ready, (pod, first[0])
            assert start - ready_at[pod] < 30, f"{pod} idled {start - ready_at[pod]:.1f} s while steps were queued"

        # 4. The HPA itself writes the scale subresource: a maximum below the pool size is applied
        # at its next sync without any metric, and the operator follows without reverting it.
        hpas.patch_namespaced_horizontal_pod_autoscaler(POOL, ns, {"spec": {"maxReplicas": 2}})
        _wait_pool(
            kube, ns, lambda p: p["spec"]["replicas"] == 2, "the HPA to scale the pool to its new maximum", timeout=60
        )
        hpa = wait_for(
            hpas.list_namespaced_horizontal_pod_autoscaler,
            lambda h: _reason(h, "AbleToScale") == "SucceededRescale",
            ns,
            field_selector=f"metadata.name={POOL}",
            timeout=60,
            what="the HPA's rescale",
        )
        print("AbleToScale:", _condition(hpa, "AbleToScale").message)
        # The field's owner is the HPA controller, writing through the scale subresource.
        managers = [
            (f["manager"], f.get("subresource"))
            for f in _pool(kube, ns)["metadata"]["managedFields"]
            if "f:replicas" in (f.get("fieldsV1") or {}).get("f:spec", {})
        ]
        assert managers == [("kube-controller-manager", "scale")], managers
        _wait_sts(kube, ns, 2, "the StatefulSet to follow the HPA to 2 pods")
        _wait_pool(kube, ns, lambda p: (p.get("status") or {}).get("replicas") == 2, "pool status.replicas 2")
        _check_scale(cluster, kube, ns, 2)
        assert _pool(kube, ns)["spec"]["replicas"] == 2
    finally:
        op.stop()

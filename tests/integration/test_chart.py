"""The Helm chart and the kustomize base on the real dev-cluster apiserver, and the chart's RBAC shown
to be exactly what the operator uses.

* ``helm lint``; ``helm template`` (default values, and tests/data/values-all.yaml) and the kustomize
  base applied with ``kubectl apply --server-side --dry-run=server`` in namespaces that enforce the
  ``restricted`` Pod Security Standard: no error, no warning.
* The operator runs with a kubeconfig of the chart's own ServiceAccount (cluster-wide ClusterRole,
  and watchNamespace's Role) against a second kube-apiserver of the dev cluster's etcd that writes
  an audit log and enforces OwnerReferencesPermissionEnforcement (as OpenShift does). A 2-of-3
  Escrow reaches Ready on a 2-pod pool; the audit log shows no request was forbidden and that every
  (group, resource, verb) the chart grants was requested, except those checked on the operator's
  behalf (finalizers by the admission plugin, create by server-side apply of a new object).
* Each verb of each rule is needed: with that one verb removed from the role, the call the operator
  makes (same API, same body shape) is refused with 403, and with it present it succeeds.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from escrow_operator.api import ESCROW_PLURAL, GROUP, PAYOUT_PLURAL, VERSION, WALLETPOOL_PLURAL
from hack.devcluster import DevCluster, bin_dir, binary
from tests.support.commands import checked
from tests.support.escrows import create_escrow, create_pool, pool_body, wait_escrow, wait_escrow_gone
from tests.support.kube import custom_objects, wait_for, wait_gone
from tests.support.operator import OperatorProcess
from tests.support.processes import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "xmr-escrow-operator"
MANIFESTS = ROOT / "manifests"
VALUES_ALL = ROOT / "tests" / "data" / "values-all.yaml"
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"
FIELD_MANAGER = "xmr-escrow-operator"
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}

Triple = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

# Checked by the apiserver on the operator's behalf, never requested as such: the admission plugin
# OwnerReferencesPermissionEnforcement checks "update <owner>/finalizers" when an object gets an
# owner reference with blockOwnerDeletion; server-side apply (a PATCH) of an object that does not
# exist yet checks "create". The drop-one-verb test shows each is needed.
CHECKED_ON_BEHALF: set[Triple] = {
    ("xmrescrow.dev", "escrows/finalizers", "update"),
    ("xmrescrow.dev", "walletpools/finalizers", "update"),
    ("xmrescrow.dev", "escrowpayouts/finalizers", "update"),
    ("", "services", "create"),
    ("apps", "statefulsets", "create"),
    ("policy", "poddisruptionbudgets", "create"),
    ("networking.k8s.io", "networkpolicies", "create"),
}


# --- binaries and commands ---------------------------------------------------------------------
def _tool(name: str) -> Path:
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        pytest.skip(f"{name} is not built: run hack/build-tools.sh")
    return path


@pytest.fixture(scope="module")
def helm() -> Path:
    return _tool("helm")


@pytest.fixture(scope="module")
def kustomize() -> Path:
    return _tool("kustomize")


def helm_template(helm: Path, env: dict[str, str], release: str, namespace: str, *args: str) -> str:
    out = checked([helm, "template", release, CHART, "--namespace", namespace, *args], env=env)
    assert out.stderr == "", out.stderr
    return out.stdout


def objects(manifest: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifest) if d]


def dry_run(cluster: DevCluster, manifest: str) -> str:
    """Server-side apply with a server dry run: admission, schema, CEL and Pod Security all run."""
    out = checked(
        [
            binary("kubectl"),
            "--kubeconfig",
            cluster.kubeconfig,
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=chart-test",
            "-f",
            "-",
        ],
        input=manifest,
    )
    assert out.stderr == "", f"warnings from the apiserver:\n{out.stderr}"
    return out.stdout


def apply(cluster: DevCluster, manifest: str) -> None:
    checked(
        [
            binary("kubectl"),
            "--kubeconfig",
            cluster.kubeconfig,
            "apply",
            "--server-side",
            "--field-manager=chart-test",
            "-f",
            "-",
        ],
        input=manifest,
    )


@contextmanager
def extra_namespace(
    kube: client.ApiClient, prefix: str, labels: dict[str, str] | None = None, name: str | None = None
) -> Iterator[str]:
    name = name or f"{prefix}-{secrets.token_hex(4)}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


def restrict(kube: client.ApiClient, namespace: str) -> None:
    client.CoreV1Api(kube).patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})


def delete_cluster_objects(kube: client.ApiClient, manifest: str) -> None:
    rbac = client.RbacAuthorizationV1Api(kube)
    for obj in objects(manifest):
        delete = {"ClusterRole": rbac.delete_cluster_role, "ClusterRoleBinding": rbac.delete_cluster_role_binding}.get(
            obj["kind"]
        )
        if delete:
            try:
                delete(obj["metadata"]["name"])
            except ApiException as exc:
                if exc.status != 404:
                    raise


def assert_no_wildcards(manifest: str) -> None:
    for obj in objects(manifest):
        if obj["kind"] in ("ClusterRole", "Role"):
            for rule in obj["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert not any("*" in item for item in rule.get(field, [])), (
                        f"{obj['kind']} {obj['metadata']['name']}: {rule}"
                    )
                assert not rule.get("nonResourceURLs") and not rule.get("resourceNames"), rule


def granted(manifest: str) -> set[Triple]:
    out: set[Triple] = set()
    for obj in objects(manifest):
        if obj["kind"] in ("ClusterRole", "Role"):
            for rule in obj["rules"]:
                out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


# --- lint and dry runs -------------------------------------------------------------------------
@pytest.mark.parametrize("values", [None, VALUES_ALL], ids=["defaults", "values-all"])
def test_helm_lint(helm: Path, helm_env: dict[str, str], values: Path | None) -> None:
    out = checked([helm, "lint", "--strict", CHART, *(["-f", values] if values else [])], env=helm_env)
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout, out.stdout


def test_values_schema_refuses_unknown_and_invalid_values(helm: Path, helm_env: dict[str, str]) -> None:
    for bad in (["--set", "replicaCount=2"], ["--set", "walletPool.network=regtest"], ["--set", "image.digest=latest"]):
        out = subprocess.run(
            [str(helm), "template", "x", str(CHART), *bad], capture_output=True, text=True, env=helm_env
        )
        assert out.returncode != 0 and "schema" in out.stderr.lower(), (bad, out.stderr)


def test_chart_with_default_values_applies_cleanly(
    helm: Path, helm_env: dict[str, str], cluster: DevCluster, kube: client.ApiClient, crds: None, namespace: str
) -> None:
    restrict(kube, namespace)
    manifest = helm_template(helm, helm_env, "xmr-escrow-operator", namespace)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects(manifest))
    assert kinds == [
        ("ClusterRole", "xmr-escrow-operator"),
        ("ClusterRoleBinding", "xmr-escrow-operator"),
        ("Deployment", "xmr-escrow-operator"),
        ("ServiceAccount", "xmr-escrow-operator"),
    ]
    assert_no_wildcards(manifest)
    out = dry_run(cluster, manifest)
    assert out.count("serverside-applied (server dry run)") == 4, out


def test_chart_with_every_value_set_applies_cleanly(
    helm: Path, helm_env: dict[str, str], cluster: DevCluster, kube: client.ApiClient, crds: None, namespace: str
) -> None:
    restrict(kube, namespace)
    with extra_namespace(kube, "watched", RESTRICTED) as watched:
        manifest = helm_template(
            helm, helm_env, "all", namespace, "-f", str(VALUES_ALL), "--set", f"watchNamespace={watched}"
        )
        objs = {(o["kind"], o["metadata"]["name"]): o for o in objects(manifest)}
        assert sorted(objs) == [
            ("ClusterRole", "escrow-operator-all-discovery"),
            ("ClusterRoleBinding", "escrow-operator-all-discovery"),
            ("Deployment", "escrow-operator-all"),
            ("Role", "escrow-operator-all"),
            ("Role", "escrow-operator-all-recovery"),
            ("RoleBinding", "escrow-operator-all"),
            ("RoleBinding", "escrow-operator-all-recovery"),
            ("Service", "escrow-operator-all-metrics"),
            ("ServiceAccount", "escrow-operator-sa"),
            ("WalletPool", "escrow-wallets"),
        ]
        assert objs[("Role", "escrow-operator-all")]["metadata"]["namespace"] == watched
        # The recovery copies of the passwords live in the operator's own namespace.
        assert objs[("Role", "escrow-operator-all-recovery")]["metadata"]["namespace"] == namespace
        assert objs[("WalletPool", "escrow-wallets")]["metadata"]["namespace"] == watched
        pod = objs[("Deployment", "escrow-operator-all")]["spec"]["template"]
        # nameOverride renames objects, never the label the pool NetworkPolicy admits.
        assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "xmr-escrow-operator"
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["ESCROW_NAMESPACE"] == watched and env["ESCROW_METRICS_PORT"] == "9090"
        assert_no_wildcards(manifest)
        out = dry_run(cluster, manifest)
        assert out.count("serverside-applied (server dry run)") == 10, out


def test_kustomize_base_is_a_fresh_render_of_the_chart(helm: Path, helm_env: dict[str, str], tmp_path: Path) -> None:
    fresh = tmp_path / "manifests"
    checked([ROOT / "hack" / "render-manifests.sh", fresh], env={**helm_env, "HELM": str(helm)})
    committed = sorted(str(p.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*") if p.is_file()) == committed
    for name in committed:
        assert (fresh / name).read_bytes() == (MANIFESTS / name).read_bytes(), (
            f"manifests/{name} is stale: run hack/render-manifests.sh"
        )


def _without_helm_labels(obj: dict[str, Any]) -> dict[str, Any]:
    obj = json.loads(json.dumps(obj))
    for meta in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata", {})):
        for key in ("helm.sh/chart", "app.kubernetes.io/managed-by"):
            (meta.get("labels") or {}).pop(key, None)
    return obj


def test_kustomize_base_renders_the_chart_objects_and_applies_cleanly(
    helm: Path, helm_env: dict[str, str], cluster: DevCluster, kube: client.ApiClient, crds: None
) -> None:
    built = checked([binary("kubectl"), "kustomize", MANIFESTS]).stdout
    try:
        built_by_kustomize = checked([_tool("kustomize"), "build", MANIFESTS]).stdout
    except pytest.skip.Exception:
        built_by_kustomize = built
    assert built_by_kustomize == built  # kubectl v1.34 embeds kustomize v5.7.1, the one we build
    base = {(o["kind"], o["metadata"]["name"]): o for o in objects(built)}
    chart = {
        (o["kind"], o["metadata"]["name"]): o
        for o in objects(helm_template(helm, helm_env, "xmr-escrow-operator", "xmr-escrow-system"))
    }
    crds = {
        ("CustomResourceDefinition", f"{plural}.xmrescrow.dev")
        for plural in ("escrows", "escrowpayouts", "walletpools")
    }
    assert set(base) == set(chart) | crds | {("Namespace", "xmr-escrow-system")}
    for key, obj in chart.items():
        assert base[key] == _without_helm_labels(obj), key
    # The base creates its namespace; the dry run needs it to exist for the namespaced objects.
    with extra_namespace(kube, "", RESTRICTED, name="xmr-escrow-system"):
        out = dry_run(cluster, built)
    assert out.count("serverside-applied (server dry run)") == len(base), out


# --- a second apiserver that audits and enforces owner-reference permissions ---------------------
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


@dataclass
class AuditedApiserver:
    server: str
    audit_log: Path
    proc: subprocess.Popen

    def requests(self, user: str) -> list[dict[str, Any]]:
        out = []
        for line in self.audit_log.read_text().splitlines():
            event = json.loads(line)
            if event["user"]["username"] == user and event.get("objectRef"):
                out.append(event)
        return out

    def kubeconfig(self, cluster: DevCluster, namespace: str, service_account: str, path: Path) -> Path:
        """A ServiceAccount's kubeconfig (TokenRequest) pointing at this apiserver."""
        cluster.mint_kubeconfig(namespace, service_account, path)
        cfg = yaml.safe_load(path.read_text())
        cfg["clusters"][0]["cluster"]["server"] = self.server
        path.write_text(yaml.safe_dump(cfg))
        return path


@pytest.fixture(scope="module")
def audited(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedApiserver]:
    """kube-apiserver #2 on the dev cluster's etcd (``DevCluster.start_extra_apiserver``): same CA,
    service-account keys and issuer (so tokens minted by #1 are valid here), plus an audit log of every
    ServiceAccount request and the OwnerReferencesPermissionEnforcement admission plugin."""
    state = tmp_path_factory.mktemp("audited-apiserver")
    (state / "policy.yaml").write_text(AUDIT_POLICY)
    audit_log = state / "audit.log"
    port = free_port()
    proc = cluster.start_extra_apiserver(
        port,
        state,
        {
            "enable-admission-plugins": "OwnerReferencesPermissionEnforcement",
            "audit-policy-file": state / "policy.yaml",
            "audit-log-path": audit_log,
            "audit-log-format": "json",
            "audit-log-mode": "blocking",
        },
    )
    try:
        yield AuditedApiserver(f"https://127.0.0.1:{port}", audit_log, proc)
    finally:
        stop(proc, timeout=20)


def used(events: list[dict[str, Any]]) -> set[Triple]:
    out: set[Triple] = set()
    for e in events:
        ref = e["objectRef"]
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.add((ref.get("apiGroup", ""), resource, e["verb"]))
    return out


def forbidden(events: list[dict[str, Any]]) -> list[str]:
    """Requests RBAC refused. (Admission's 403s, such as a create in a namespace that is being
    terminated by another test, are not about the chart's rights.)"""
    return [
        f"{e['verb']} {e['objectRef']} -> {e['responseStatus'].get('message')}"
        for e in events
        if (e.get("responseStatus") or {}).get("code") == 403
        and (e.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
    ]


def evidence_table(title: str, grants: set[Triple], requested: set[Triple], events: list[dict[str, Any]]) -> str:
    counts: dict[Triple, int] = {}
    for e in events:
        key = next(iter(used([e])))
        counts[key] = counts.get(key, 0) + 1
    lines = [title]
    for t in sorted(grants | requested):
        seen = counts.get(t, 0)
        note = "requested" if seen else ("checked on the operator's behalf" if t in CHECKED_ON_BEHALF else "NOT USED")
        lines.append(f"  {t[0] or 'core':20} {t[1]:28} {t[2]:7} {note} ({seen} audit events)")
    return "\n".join(lines)


@dataclass
class RbacEvidence:
    grants: set[Triple]  # what the manifest's roles grant
    requested: set[Triple]  # what the service account asked for (audit log)
    events: list[dict[str, Any]]
    table: str


def rbac_evidence(audited: AuditedApiserver, namespace: str, sa: str, manifest: str, title: str) -> RbacEvidence:
    """What ``sa`` asked the audited apiserver for against what ``manifest`` grants; prints the table
    and fails on any request RBAC refused or any request not granted."""
    events = audited.requests(f"system:serviceaccount:{namespace}:{sa}")
    grants, requested = granted(manifest), used(events)
    table = evidence_table(title, grants, requested, events)
    print("\n" + table)
    assert not forbidden(events), forbidden(events)
    assert requested <= grants, f"requested but not granted: {requested - grants}"
    return RbacEvidence(grants, requested, events, table)


def install_rbac(helm: Path, env: dict[str, str], cluster: DevCluster, release: str, namespace: str, *args: str) -> str:
    manifest = helm_template(
        helm,
        env,
        release,
        namespace,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
        *args,
    )
    apply(cluster, manifest)
    return manifest


def _retained(kube: client.ApiClient, namespace: str, uid: str) -> bool:
    try:
        secret = client.CoreV1Api(kube).read_namespaced_secret(f"escrow-{uid}", namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return (secret.metadata.labels or {}).get(f"{GROUP}/retained") == "true" and not secret.metadata.owner_references


def _recovery_copy(kube: client.ApiClient, namespace: str, uid: str) -> bool:
    try:
        client.CoreV1Api(kube).read_namespaced_secret(f"escrow-{uid}-recovery", namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_operator_with_the_charts_clusterrole_runs_escrows_to_ready(
    helm: Path,
    helm_env: dict[str, str],
    cluster: DevCluster,
    kube: client.ApiClient,
    crds: None,
    audited: AuditedApiserver,
    tmp_path: Path,
) -> None:
    release = "rbac-cw"
    sa = f"{release}-xmr-escrow-operator"
    with extra_namespace(kube, "op") as op_ns, extra_namespace(kube, "esc", RESTRICTED) as ns:
        manifest = install_rbac(helm, helm_env, cluster, release, op_ns)
        try:
            kubeconfig = audited.kubeconfig(cluster, op_ns, sa, tmp_path / "sa.kubeconfig")
            operator = OperatorProcess(kubeconfig, tmp_path / "operator.log", env={"POD_NAMESPACE": op_ns}).start()
            try:
                create_pool(kube, ns, "wallets", replicas=2)
                # A pool naming another pool's claim: the operator reads the claim and refuses it.
                objects_api = client.CustomObjectsApi(kube)
                objects_api.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    ns,
                    WALLETPOOL_PLURAL,
                    pool_body("borrower", 1, storage={"claimName": "wallets-wallets"}),
                )
                wait_for(
                    custom_objects(kube, ns, WALLETPOOL_PLURAL),
                    lambda p: any(
                        c["type"] == "Stalled" and c["reason"] == "ClaimNotAllowed"
                        for c in (p.get("status") or {}).get("conditions", [])
                    ),
                    field_selector="metadata.name=borrower",
                    what="pool borrower refused its claim",
                )
                objects_api.delete_namespaced_custom_object(GROUP, VERSION, ns, WALLETPOOL_PLURAL, "borrower")
                create_escrow(kube, ns, "order-retain", "wallets")
                create_escrow(kube, ns, "order-delete", "wallets", walletRetention="Delete")
                with ThreadPoolExecutor(2) as ex:
                    ready = list(
                        ex.map(lambda n: wait_escrow(kube, ns, n, timeout=420), ["order-retain", "order-delete"])
                    )
                for escrow in ready:
                    assert escrow["status"]["phase"] == "Ready" and len(escrow["status"]["address"]) == 95
                uids = {e["metadata"]["name"]: e["metadata"]["uid"] for e in ready}
                objects_api = client.CustomObjectsApi(kube)
                # The pool Secret written anew: the operator deletes the pods started with the old one.
                client.CoreV1Api(kube).delete_namespaced_secret("wallets-rpc", ns)
                objects_api.patch_namespaced_custom_object(
                    GROUP, VERSION, ns, WALLETPOOL_PLURAL, "wallets", {"metadata": {"annotations": {"touched": "1"}}}
                )
                operator.wait_log("deleting pod wallets-[0-9]+, started with the credentials of a replaced Secret")
                # A payout reads its escrow, writes its status and its owned Secret; this pool has no daemon.
                payout = {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "EscrowPayout",
                    "metadata": {"name": "refund"},
                    "spec": {
                        "escrowRef": "order-retain",
                        "signers": ["buyer", "arbiter"],
                        "sweepTo": ready[0]["status"]["address"],
                    },
                }
                objects_api.create_namespaced_custom_object(GROUP, VERSION, ns, PAYOUT_PLURAL, payout)
                wait_for(
                    custom_objects(kube, ns, PAYOUT_PLURAL),
                    lambda p: any(
                        c["type"] == "Ready" and c["reason"] == "NoDaemon"
                        for c in (p.get("status") or {}).get("conditions", [])
                    ),
                    field_selector="metadata.name=refund",
                    what="the payout waiting for a daemon",
                )
                objects_api.delete_namespaced_custom_object(GROUP, VERSION, ns, PAYOUT_PLURAL, "refund")
                wait_gone(
                    custom_objects(kube, ns, PAYOUT_PLURAL), field_selector="metadata.name=refund", what="payout gone"
                )
                for name in uids:
                    objects_api.delete_namespaced_custom_object(GROUP, VERSION, ns, ESCROW_PLURAL, name)
                for name in uids:
                    wait_escrow_gone(kube, ns, name, timeout=120)
                assert _retained(kube, ns, uids["order-retain"])  # Retain: released, kept
                assert _recovery_copy(kube, op_ns, uids["order-retain"])  # and its passwords outside ns
                assert not _recovery_copy(kube, op_ns, uids["order-delete"])
                with pytest.raises(ApiException) as gone:  # Delete: files and Secret deleted
                    client.CoreV1Api(kube).read_namespaced_secret(f"escrow-{uids['order-delete']}", ns)
                assert gone.value.status == 404
                objects_api.delete_namespaced_custom_object(GROUP, VERSION, ns, WALLETPOOL_PLURAL, "wallets")
            finally:
                operator.stop()
            assert not rbac_denials(operator.log), "\n".join(rbac_denials(operator.log))[-4000:]
        finally:
            delete_cluster_objects(kube, manifest)

        evidence = rbac_evidence(audited, op_ns, sa, manifest, f"cluster-wide ClusterRole {sa}:")
        assert evidence.grants - evidence.requested == CHECKED_ON_BEHALF, evidence.table
        # kopf lists namespaces only when it watches a namespace list, never cluster-wide.
        assert not any(t[1] == "namespaces" for t in evidence.requested)


def test_operator_with_the_charts_role_serves_its_namespace(
    helm: Path,
    helm_env: dict[str, str],
    cluster: DevCluster,
    kube: client.ApiClient,
    crds: None,
    audited: AuditedApiserver,
    tmp_path: Path,
) -> None:
    """watchNamespace: a Role in the watched namespace plus kopf's cluster-scoped reads. A pool of 0
    pods is enough to exercise every namespaced right but the exchange itself."""
    release = "rbac-ns"
    sa = f"{release}-xmr-escrow-operator"
    with extra_namespace(kube, "op") as op_ns, extra_namespace(kube, "esc", RESTRICTED) as ns:
        manifest = install_rbac(helm, helm_env, cluster, release, op_ns, "--set", f"watchNamespace={ns}")
        assert {o["kind"] for o in objects(manifest)} == {
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
        }
        try:
            kubeconfig = audited.kubeconfig(cluster, op_ns, sa, tmp_path / "sa.kubeconfig")
            operator = OperatorProcess(
                kubeconfig, tmp_path / "operator.log", env={"POD_NAMESPACE": op_ns, "ESCROW_NAMESPACE": ns}
            ).start()
            try:
                create_pool(kube, ns, "idle", replicas=0, wait=False)
                create_escrow(kube, ns, "order-ns", "idle")
                escrow = wait_escrow(kube, ns, "order-ns", phase="KeyExchange", timeout=120)
                wait_for(
                    client.AppsV1Api(kube).list_namespaced_stateful_set,
                    lambda s: True,
                    ns,
                    field_selector="metadata.name=idle",
                    what="the pool's StatefulSet",
                )
                client.CustomObjectsApi(kube).delete_namespaced_custom_object(
                    GROUP, VERSION, ns, ESCROW_PLURAL, "order-ns"
                )
                wait_escrow_gone(kube, ns, "order-ns", timeout=60)
                assert _retained(kube, ns, escrow["metadata"]["uid"])
                assert _recovery_copy(kube, op_ns, escrow["metadata"]["uid"])
            finally:
                operator.stop()
            assert not rbac_denials(operator.log), "\n".join(rbac_denials(operator.log))[-4000:]
        finally:
            delete_cluster_objects(kube, manifest)

        evidence = rbac_evidence(audited, op_ns, sa, manifest, f"watchNamespace Role + discovery ClusterRole {sa}:")
        assert {("", "namespaces", "list"), ("", "namespaces", "watch")} <= evidence.requested
        # Every namespaced request stays in the watched namespace, but the recovery copies of the
        # passwords, which are Secrets in the operator's own namespace.
        namespaced = [
            e["objectRef"]
            for e in evidence.events
            if e["objectRef"]["resource"] not in ("namespaces", "customresourcedefinitions")
        ]
        assert {r.get("namespace") for r in namespaced} == {ns, op_ns}
        assert {r["resource"] for r in namespaced if r.get("namespace") == op_ns} == {"secrets"}


# --- each verb of each rule is needed ----------------------------------------------------------
@dataclass
class ProbeCtx:
    api: client.ApiClient  # the probe ServiceAccount, through the audited apiserver
    admin: client.ApiClient
    ns: str
    escrow: dict[str, Any]
    pool: dict[str, Any]
    payout: dict[str, Any]
    role: str = ""

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _watch(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args, watch=True, timeout_seconds=1, _preload_content=False).close()


def _secret(name: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": {"k": "v"}}


def _labels() -> dict[str, str]:
    return {"probe": "rbac"}


def _workload(kind: str, name: str) -> dict[str, Any]:
    meta = {"name": name, "labels": _labels()}
    sel = {"matchLabels": _labels()}
    spec = {
        "Service": {"clusterIP": "None", "selector": _labels(), "ports": [{"name": "rpc", "port": 18083}]},
        "StatefulSet": {
            "replicas": 0,
            "serviceName": name,
            "selector": sel,
            "template": {
                "metadata": {"labels": _labels()},
                "spec": {"containers": [{"name": "c", "image": "probe:0"}]},
            },
        },
        "PodDisruptionBudget": {"maxUnavailable": 1, "selector": sel},
        "NetworkPolicy": {"podSelector": sel, "policyTypes": ["Ingress"]},
    }[kind]
    api_version = {
        "Service": "v1",
        "StatefulSet": "apps/v1",
        "PodDisruptionBudget": "policy/v1",
        "NetworkPolicy": "networking.k8s.io/v1",
    }[kind]
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec}


def _apply_fn(ctx: ProbeCtx, kind: str) -> Callable[..., Any]:
    return {
        "Service": client.CoreV1Api(ctx.api).patch_namespaced_service,
        "StatefulSet": client.AppsV1Api(ctx.api).patch_namespaced_stateful_set,
        "PodDisruptionBudget": client.PolicyV1Api(ctx.api).patch_namespaced_pod_disruption_budget,
        "NetworkPolicy": client.NetworkingV1Api(ctx.api).patch_namespaced_network_policy,
    }[kind]


def _ssa_new(kind: str) -> Callable[[ProbeCtx], None]:
    """Kube.apply of an object that does not exist yet (the pool's first reconcile)."""

    def probe(ctx: ProbeCtx) -> None:
        name = _name(kind.lower()[:8])
        _apply_fn(ctx, kind)(
            name, ctx.ns, _workload(kind, name), field_manager=FIELD_MANAGER, force=True, _content_type=APPLY
        )

    return probe


def _ssa_existing(kind: str) -> Callable[[ProbeCtx], None]:
    """Kube.apply of an object that exists (every later reconcile)."""

    def probe(ctx: ProbeCtx) -> None:
        name = f"existing-{kind.lower()}"
        _apply_fn(ctx, kind)(
            name, ctx.ns, _workload(kind, name), field_manager=FIELD_MANAGER, force=True, _content_type=APPLY
        )

    return probe


def _custom(plural: str, verb: str) -> Callable[[ProbeCtx], None]:
    def probe(ctx: ProbeCtx) -> None:
        obj = {ESCROW_PLURAL: ctx.escrow, WALLETPOOL_PLURAL: ctx.pool, PAYOUT_PLURAL: ctx.payout}[plural]
        name = obj["metadata"]["name"]
        if verb == "get":  # a payout reads its escrow
            ctx.custom.get_namespaced_custom_object(GROUP, VERSION, ctx.ns, plural, name)
        elif verb == "list":  # kopf lists cluster-wide
            ctx.custom.list_cluster_custom_object(GROUP, VERSION, plural, limit=1)
        elif verb == "watch":
            _watch(ctx.custom.list_cluster_custom_object, GROUP, VERSION, plural)
        elif verb == "patch":  # kopf's finalizer and progress annotations
            ctx.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                ctx.ns,
                plural,
                name,
                {"metadata": {"annotations": {"probe": secrets.token_hex(3)}}},
                _content_type=MERGE,
            )
        elif verb == "status":  # Kube.patch_status
            body = {"status": {"queuedSteps": 0}} if plural == WALLETPOOL_PLURAL else {"status": {"message": "probe"}}
            ctx.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ctx.ns, plural, name, body, _content_type=MERGE
            )

    return probe


def _owned_secret(which: str) -> Callable[[ProbeCtx], None]:
    """EscrowSecret.ensure / the pool's Secret: an owner reference with blockOwnerDeletion."""

    def probe(ctx: ProbeCtx) -> None:
        owner = _owner({"escrow": ctx.escrow, "pool": ctx.pool, "payout": ctx.payout}[which])
        ctx.core.create_namespaced_secret(ctx.ns, _secret(_name("owned"), owner))

    return probe


def _delete_secret(ctx: ProbeCtx) -> None:
    name = _name("doomed")
    client.CoreV1Api(ctx.admin).create_namespaced_secret(ctx.ns, _secret(name))
    ctx.core.delete_namespaced_secret(name, ctx.ns)


def _delete_pod(ctx: ProbeCtx) -> None:
    """A pod bound to a node no kubelet serves (nothing runs it), deleted at once."""
    name = _name("stale")
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": "nowhere", "containers": [{"name": "c", "image": "none", "securityContext": restricted}]},
    }
    client.CoreV1Api(ctx.admin).create_namespaced_pod(ctx.ns, pod)
    try:
        ctx.core.delete_namespaced_pod(name, ctx.ns, grace_period_seconds=0)
    except ApiException:  # refused: the admin removes it (no kubelet would finish a graceful delete)
        client.CoreV1Api(ctx.admin).delete_namespaced_pod(name, ctx.ns, grace_period_seconds=0)
        raise


def _event(ctx: ProbeCtx) -> None:
    ref = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Escrow",
        "name": ctx.escrow["metadata"]["name"],
        "namespace": ctx.ns,
        "uid": ctx.escrow["metadata"]["uid"],
    }
    ctx.core.create_namespaced_event(
        ctx.ns,
        {
            "metadata": {"generateName": "kopf-event-"},
            "involvedObject": ref,
            "type": "Normal",
            "reason": "Probe",
            "message": "rbac probe",
            "source": {"component": "kopf"},
        },
    )


def _pvc(ctx: ProbeCtx) -> None:
    ctx.core.create_namespaced_persistent_volume_claim(
        ctx.ns,
        {
            "metadata": {"name": _name("wallets")},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Mi"}},
                "storageClassName": "probe-none",
            },
        },
    )


PROBES: dict[Triple, Callable[[ProbeCtx], None]] = {
    ("xmrescrow.dev", "escrows", "list"): _custom(ESCROW_PLURAL, "list"),
    ("xmrescrow.dev", "escrows", "watch"): _custom(ESCROW_PLURAL, "watch"),
    ("xmrescrow.dev", "escrows", "patch"): _custom(ESCROW_PLURAL, "patch"),
    ("xmrescrow.dev", "walletpools", "list"): _custom(WALLETPOOL_PLURAL, "list"),
    ("xmrescrow.dev", "walletpools", "watch"): _custom(WALLETPOOL_PLURAL, "watch"),
    ("xmrescrow.dev", "walletpools", "patch"): _custom(WALLETPOOL_PLURAL, "patch"),
    ("xmrescrow.dev", "escrows/status", "patch"): _custom(ESCROW_PLURAL, "status"),
    ("xmrescrow.dev", "walletpools/status", "patch"): _custom(WALLETPOOL_PLURAL, "status"),
    ("xmrescrow.dev", "escrows/finalizers", "update"): _owned_secret("escrow"),
    ("xmrescrow.dev", "walletpools/finalizers", "update"): _owned_secret("pool"),
    ("xmrescrow.dev", "escrows", "get"): _custom(ESCROW_PLURAL, "get"),
    ("xmrescrow.dev", "escrowpayouts", "list"): _custom(PAYOUT_PLURAL, "list"),
    ("xmrescrow.dev", "escrowpayouts", "watch"): _custom(PAYOUT_PLURAL, "watch"),
    ("xmrescrow.dev", "escrowpayouts", "patch"): _custom(PAYOUT_PLURAL, "patch"),
    ("xmrescrow.dev", "escrowpayouts/status", "patch"): _custom(PAYOUT_PLURAL, "status"),
    ("xmrescrow.dev", "escrowpayouts/finalizers", "update"): _owned_secret("payout"),
    ("", "pods", "list"): lambda ctx: ctx.core.list_pod_for_all_namespaces(
        limit=1, label_selector="xmrescrow.dev/pool"
    ),
    ("", "pods", "watch"): lambda ctx: _watch(ctx.core.list_pod_for_all_namespaces),
    ("", "pods", "delete"): _delete_pod,
    ("", "secrets", "get"): lambda ctx: ctx.core.read_namespaced_secret("existing-secret", ctx.ns),
    ("", "secrets", "create"): lambda ctx: ctx.core.create_namespaced_secret(ctx.ns, _secret(_name("escrow"))),
    ("", "secrets", "patch"): lambda ctx: ctx.core.patch_namespaced_secret(
        "existing-secret", ctx.ns, {"data": {"message.buyer.1": "cHJvYmU="}}, _content_type=MERGE
    ),
    ("", "secrets", "delete"): _delete_secret,
    ("", "services", "create"): _ssa_new("Service"),
    ("", "services", "patch"): _ssa_existing("Service"),
    ("apps", "statefulsets", "create"): _ssa_new("StatefulSet"),
    ("apps", "statefulsets", "patch"): _ssa_existing("StatefulSet"),
    ("policy", "poddisruptionbudgets", "create"): _ssa_new("PodDisruptionBudget"),
    ("policy", "poddisruptionbudgets", "patch"): _ssa_existing("PodDisruptionBudget"),
    ("networking.k8s.io", "networkpolicies", "create"): _ssa_new("NetworkPolicy"),
    ("networking.k8s.io", "networkpolicies", "patch"): _ssa_existing("NetworkPolicy"),
    ("", "persistentvolumeclaims", "create"): _pvc,
    ("", "persistentvolumeclaims", "get"): lambda ctx: ctx.core.read_namespaced_persistent_volume_claim(
        "existing-claim", ctx.ns
    ),
    ("", "events", "create"): _event,
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): lambda ctx: client.ApiextensionsV1Api(
        ctx.api
    ).list_custom_resource_definition(limit=1),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): lambda ctx: _watch(
        client.ApiextensionsV1Api(ctx.api).list_custom_resource_definition
    ),
    ("", "namespaces", "list"): lambda ctx: client.CoreV1Api(ctx.api).list_namespace(limit=1),
    ("", "namespaces", "watch"): lambda ctx: _watch(client.CoreV1Api(ctx.api).list_namespace),
}


def _all_chart_grants(helm: Path, env: dict[str, str]) -> set[Triple]:
    """Every (group, resource, verb) the chart can grant: cluster-wide, and watchNamespace's."""
    return granted(helm_template(helm, env, "x", "ns", "--show-only", "templates/rbac.yaml")) | granted(
        helm_template(helm, env, "x", "ns", "--show-only", "templates/rbac.yaml", "--set", "watchNamespace=w")
    )


def _rules(grants: set[Triple]) -> list[dict[str, Any]]:
    by_resource: dict[tuple[str, str], list[str]] = {}
    for g, r, v in sorted(grants):
        by_resource.setdefault((g, r), []).append(v)
    return [{"apiGroups": [g], "resources": [r], "verbs": verbs} for (g, r), verbs in by_resource.items()]


@pytest.fixture(scope="module")
def probe(
    helm: Path,
    helm_env: dict[str, str],
    cluster: DevCluster,
    kube: client.ApiClient,
    crds: None,
    audited: AuditedApiserver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProbeCtx, set[Triple]]]:
    grants = _all_chart_grants(helm, helm_env)
    with extra_namespace(kube, "probe") as ns:
        core = client.CoreV1Api(kube)
        core.create_namespaced_service_account(ns, {"metadata": {"name": "probe"}})
        role = f"rbac-probe-{ns}"
        rbac = client.RbacAuthorizationV1Api(kube)
        rbac.create_cluster_role({"metadata": {"name": role}, "rules": _rules(grants)})
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": "probe", "namespace": ns}],
            }
        )
        try:
            objects_api = client.CustomObjectsApi(kube)
            escrow = objects_api.create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                ESCROW_PLURAL,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Escrow",
                    "metadata": {"name": "probe"},
                    "spec": {"poolRef": "probe"},
                },
            )
            pool = objects_api.create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                WALLETPOOL_PLURAL,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "WalletPool",
                    "metadata": {"name": "probe"},
                    "spec": {"replicas": 0, "storage": {"size": "1Gi"}},
                },
            )
            payout = objects_api.create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                PAYOUT_PLURAL,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "EscrowPayout",
                    "metadata": {"name": "probe"},
                    "spec": {"escrowRef": "probe", "signers": ["buyer", "vendor"], "sweepTo": "4" + "A" * 94},
                },
            )
            core.create_namespaced_secret(ns, _secret("existing-secret"))
            core.create_namespaced_persistent_volume_claim(
                ns,
                {
                    "metadata": {"name": "existing-claim"},
                    "spec": {
                        "accessModes": ["ReadWriteMany"],
                        "resources": {"requests": {"storage": "1Mi"}},
                        "storageClassName": "probe-none",
                    },
                },
            )
            admin_ctx = ProbeCtx(kube, kube, ns, escrow, pool, payout)
            for kind in ("Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"):
                _ssa_existing(kind)(admin_ctx)
            kubeconfig = audited.kubeconfig(cluster, ns, "probe", tmp_path_factory.mktemp("probe") / "probe.kubeconfig")
            ctx = ProbeCtx(config.new_client_from_config(str(kubeconfig)), kube, ns, escrow, pool, payout, role)
            yield ctx, grants
        finally:
            rbac.delete_cluster_role_binding(role)
            rbac.delete_cluster_role(role)


def _until(call: Callable[[], None], allowed: bool, timeout: float = 15.0) -> ApiException | None:
    """Repeat ``call`` until the RBAC change reached the authorizer's cache: until it succeeds
    (``allowed``) or is refused with 403. Any other error fails at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            if allowed:
                return None
            last = "it succeeded"
        except ApiException as exc:
            if exc.status != 403:
                raise
            if not allowed:
                return exc
            last = f"403 {exc.body}"
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {'success' if allowed else '403'} within {timeout:.0f} s; last: {last}")
        time.sleep(0.2)  # RBAC changes reach the authorizer through an informer; nothing to watch for


def test_every_chart_grant_has_a_probe(probe: tuple[ProbeCtx, set[Triple]]) -> None:
    _, grants = probe
    assert grants == set(PROBES), (
        f"grants without a probe: {grants - set(PROBES)}; probes without a grant: {set(PROBES) - grants}"
    )


@pytest.mark.parametrize("triple", sorted(PROBES), ids=lambda t: f"{t[1]}-{t[2]}")
def test_each_granted_verb_is_needed(
    probe: tuple[ProbeCtx, set[Triple]], kube: client.ApiClient, triple: Triple
) -> None:
    ctx, grants = probe
    rbac = client.RbacAuthorizationV1Api(kube)
    role = ctx.role
    call = lambda: PROBES[triple](ctx)  # noqa: E731
    rbac.patch_cluster_role(role, {"rules": _rules(grants)})
    _until(call, allowed=True)
    rbac.patch_cluster_role(role, {"rules": _rules(grants - {triple})})
    refused = _until(call, allowed=False)
    assert refused is not None and refused.status == 403
    group, resource, verb = triple
    message = json.loads(refused.body)["message"]
    if resource.endswith("/finalizers"):  # refused by OwnerReferencesPermissionEnforcement
        assert "cannot set blockOwnerDeletion" in message, message
    else:  # refused by RBAC for exactly the dropped verb
        assert f'cannot {verb} resource "{resource}" in API group "{group}"' in message, message
    print(f"\n{resource} {verb} dropped -> 403: {message}")
    rbac.patch_cluster_role(role, {"rules": _rules(grants)})


def rbac_denials(log: str) -> list[str]:
    """Lines where the apiserver refused the operator for want of a permission.

    RBAC refusals name the ServiceAccount (``... is forbidden: User "system:serviceaccount:..." cannot``);
    a namespace that an earlier test left terminating refuses writes too, which is not an RBAC matter.
    """
    return [
        line
        for line in log.splitlines()
        if "Not enough permissions" in line or 'forbidden: User "system:serviceaccount' in line
    ]

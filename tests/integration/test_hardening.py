"""Hardening: tried as an attacker with ordinary namespace rights, and with apiserver refusals.

* The address is a fact of the wallets: a forged Secret and a forged status.address are corrected
  from the final wallets when the operator resumes the escrow.
* WalletPool rights stop at wallet pools: a user who may create WalletPools but not pods cannot run
  another image or mount another pool's claim.
* An apiserver refusal mid-step ends the escrow Failed (Stalled) with the reason, with no daemon
  restart loop and no work copy left.
* The retry annotation is acted on only for a Failed escrow: one set earlier is recorded, not armed.

Each test starts its own operator (some with fault points), so no test depends on another's.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hack.devcluster import DevCluster
from hack.testground.kube import namespace_user
from tests.support.escrows import (
    assert_no_secrets,
    condition,
    create_escrow,
    escrow_secret,
    get_escrow,
    pool_body,
    pool_directory,
    reconcile_pool,
    wait_escrow,
)
from tests.support.kube import custom_objects, wait_for

from .conftest import start_operator

POOL = "hardpool"
GROUP, VERSION = "xmrescrow.dev", "v1alpha1"
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def pool(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    crds: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    reconcile_pool(
        kube, module_namespace, POOL, 2, Path(cluster.kubeconfig), tmp_path_factory.mktemp("op") / "setup.log"
    )
    return POOL


def events(kube: client.ApiClient, ns: str, name: str) -> list[client.CoreV1Event]:
    return [e for e in client.CoreV1Api(kube).list_namespaced_event(ns).items if e.involved_object.name == name]


def fake_address() -> str:
    return "4" + "".join(secrets.choice(BASE58) for _ in range(94))


# --- the address --------------------------------------------------------------------------------
def test_forged_secret_and_status_address_are_corrected_from_the_wallets(
    kube: client.ApiClient, module_namespace: str, pool: str, cluster: DevCluster, tmp_path: Path
) -> None:
    ns = module_namespace
    op = start_operator(cluster, tmp_path / "operator.log")
    try:
        create_escrow(kube, ns, "forged", pool, threshold=2, participants=["buyer", "vendor"])
        ready = wait_escrow(kube, ns, "forged")
    finally:
        op.stop()
    uid, true_address = ready["metadata"]["uid"], ready["status"]["address"]
    forged, also_forged = fake_address(), fake_address()
    # A user who may edit Secrets rewrites every recorded address; an admin rewrites status.address.
    client.CoreV1Api(kube).patch_namespaced_secret(
        f"escrow-{uid}", ns, {"stringData": {"address.buyer": forged, "address.vendor": forged}}
    )
    client.CustomObjectsApi(kube).patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, "escrows", "forged", {"status": {"address": also_forged}}
    )
    op = start_operator(cluster, tmp_path / "operator2.log")
    try:
        corrected = wait_for(
            custom_objects(kube, ns, "escrows"),
            lambda e: (e.get("status") or {}).get("address") == true_address,
            field_selector="metadata.name=forged",
            timeout=180,
            what="status.address corrected from the wallets",
        )
    finally:
        op.stop()
    assert corrected["status"]["phase"] == "Ready"
    degraded = condition(corrected, "Degraded")
    assert degraded is not None and (degraded["status"], degraded["reason"]) == ("True", "AddressCorrected")
    assert condition(corrected, "Ready")["status"] == "True"  # type: ignore[index]
    recorded = escrow_secret(kube, ns, uid)
    assert recorded["address.buyer"] == recorded["address.vendor"] == true_address
    assert any(e.reason == "AddressCorrected" and e.type == "Warning" for e in events(kube, ns, "forged"))
    assert forged not in str(get_escrow(kube, ns, "forged")["status"]) and also_forged not in str(
        get_escrow(kube, ns, "forged")
    )
    # Reading the wallets left no work copy behind.
    files = {p.name for p in pool_directory(kube, ns, pool).iterdir() if uid in p.name}
    assert files and all("_final" in f for f in files), files
    assert_no_secrets(kube, ns, uid, [op.log])


# --- WalletPool rights ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool_editor(
    kube: client.ApiClient, module_namespace: str, cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[client.ApiClient]:
    """A user who may edit Escrows, WalletPools and Secrets of the namespace, but not pods, workloads or claims."""
    ns = module_namespace
    api = namespace_user(
        kube,
        cluster,
        ns,
        "editor",
        [
            {"apiGroups": [GROUP], "resources": ["escrows", "walletpools"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]},
        ],
        tmp_path_factory.mktemp("editor") / "editor.kubeconfig",
    )
    with pytest.raises(ApiException) as refused:  # the premise: this user cannot create pods
        client.CoreV1Api(api).create_namespaced_pod(
            ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        )
    assert refused.value.status == 403
    yield api


def stalled(kube: client.ApiClient, ns: str, name: str) -> dict:
    return wait_for(
        custom_objects(kube, ns, "walletpools"),
        lambda p: any(
            c["type"] == "Stalled" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions", [])
        ),
        field_selector=f"metadata.name={name}",
        timeout=60,
        what=f"pool {name} Stalled",
    )


def test_a_pool_editor_cannot_run_other_images_or_mount_other_claims(
    kube: client.ApiClient,
    module_namespace: str,
    pool: str,
    cluster: DevCluster,
    pool_editor: client.ApiClient,
    tmp_path: Path,
) -> None:
    ns = module_namespace
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    as_editor = client.CustomObjectsApi(pool_editor)
    # An unlabelled claim the admin made, later labelled for one pool.
    core.create_namespaced_persistent_volume_claim(
        ns,
        {
            "metadata": {"name": "loose"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    op = start_operator(cluster, tmp_path / "operator.log")
    try:
        as_editor.create_namespaced_custom_object(
            GROUP, VERSION, ns, "walletpools", pool_body("evil", 1, image="busybox:latest")
        )
        as_editor.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "walletpools",
            pool_body("sidecar", 1, operatorImage="busybox:latest"),
        )
        as_editor.create_namespaced_custom_object(
            GROUP, VERSION, ns, "walletpools", pool_body("thief", 1, storage={"claimName": f"{pool}-wallets"})
        )
        as_editor.create_namespaced_custom_object(
            GROUP, VERSION, ns, "walletpools", pool_body("owner", 1, storage={"claimName": "loose"})
        )
        verdicts = {name: stalled(kube, ns, name) for name in ("evil", "sidecar", "thief", "owner")}
        reasons = {name: condition(p, "Stalled")["reason"] for name, p in verdicts.items()}  # type: ignore[index]
        assert reasons == {
            "evil": "ImageNotAllowed",
            "sidecar": "ImageNotAllowed",
            "thief": "ClaimNotAllowed",
            "owner": "ClaimNotAllowed",
        }
        assert "kubectl label pvc loose" in condition(verdicts["owner"], "Stalled")["message"]  # type: ignore[index]
        # Someone who may edit claims labels "loose" for "owner": the operator re-checks the claim and
        # reconciles owner. Labelled for a second pool, it still serves only owner.
        core.patch_namespaced_persistent_volume_claim(
            "loose", ns, {"metadata": {"labels": {"xmrescrow.dev/pool": "owner"}}}
        )
        wait_for(
            apps.list_namespaced_stateful_set,
            lambda s: True,
            ns,
            field_selector="metadata.name=owner",
            timeout=90,
            what="the StatefulSet of pool owner",
        )
        core.patch_namespaced_persistent_volume_claim(
            "loose", ns, {"metadata": {"labels": {"xmrescrow.dev/pool": "second"}}}
        )
        as_editor.create_namespaced_custom_object(
            GROUP, VERSION, ns, "walletpools", pool_body("second", 1, storage={"claimName": "loose"})
        )
        assert condition(stalled(kube, ns, "second"), "Stalled")["reason"] == "ClaimInUse"  # type: ignore[index]
        # kopf posts events in the background: wait for the last one before the operator stops.
        wait_for(
            core.list_namespaced_event,
            lambda e: e.type == "Warning" and e.reason == "ClaimInUse",
            ns,
            timeout=60,
            what="the ClaimInUse warning event",
        )
    finally:
        op.stop()
    names = {s.metadata.name for s in apps.list_namespaced_stateful_set(ns).items}
    assert not names & {"evil", "sidecar", "thief", "second"}, names
    warnings = {e.reason for e in client.CoreV1Api(kube).list_namespaced_event(ns).items if e.type == "Warning"}
    assert {"ImageNotAllowed", "ClaimNotAllowed", "ClaimInUse"} <= warnings
    for name in ("evil", "sidecar", "thief", "owner", "second"):
        client.CustomObjectsApi(kube).delete_namespaced_custom_object(GROUP, VERSION, ns, "walletpools", name)


def test_a_pool_editor_cannot_take_a_claim_by_its_default_name_nor_block_one_with_a_refused_pool(
    kube: client.ApiClient,
    module_namespace: str,
    pool: str,
    cluster: DevCluster,
    pool_editor: client.ApiClient,
    tmp_path: Path,
) -> None:
    """A pool named so that the claim it would make for storage.size is someone else's claim is refused
    (before, the 409 was ignored and the claim mounted); a pool refused for its image does not count as a
    user of the claim it names, so the pool the claim is labelled for still gets it."""
    ns = module_namespace
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    as_editor = client.CustomObjectsApi(pool_editor)
    for name, labels in (
        ("victim-wallets", {"xmrescrow.dev/pool": "victim-store"}),
        ("kept", {"xmrescrow.dev/pool": "rightful"}),
    ):
        core.create_namespaced_persistent_volume_claim(
            ns,
            {
                "metadata": {"name": name, "labels": labels},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
            },
        )
    op = start_operator(cluster, tmp_path / "operator.log")
    try:
        as_editor.create_namespaced_custom_object(GROUP, VERSION, ns, "walletpools", pool_body("victim", 1))
        squatter = condition(stalled(kube, ns, "victim"), "Stalled")
        assert squatter is not None and squatter["reason"] == "ClaimNotAllowed", squatter
        assert "'victim-wallets', which this pool would make for storage.size, already exists" in squatter["message"]
        as_editor.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "walletpools",
            pool_body("blocker", 1, image="busybox:latest", storage={"claimName": "kept"}),
        )
        assert condition(stalled(kube, ns, "blocker"), "Stalled")["reason"] == "ImageNotAllowed"  # type: ignore[index]
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            GROUP, VERSION, ns, "walletpools", pool_body("rightful", 1, storage={"claimName": "kept"})
        )
        wait_for(
            apps.list_namespaced_stateful_set,
            lambda s: True,
            ns,
            field_selector="metadata.name=rightful",
            timeout=90,
            what="the StatefulSet of pool rightful (the refused pool naming its claim does not block it)",
        )
    finally:
        op.stop()
    names = {s.metadata.name for s in apps.list_namespaced_stateful_set(ns).items}
    assert not names & {"victim", "blocker"}, names
    assert core.read_namespaced_persistent_volume_claim("victim-wallets", ns).metadata.labels == {
        "xmrescrow.dev/pool": "victim-store"
    }
    for name in ("victim", "blocker", "rightful"):
        client.CustomObjectsApi(kube).delete_namespaced_custom_object(GROUP, VERSION, ns, "walletpools", name)


# --- apiserver refusals ----------------------------------------------------------------------------
def test_an_apiserver_refusal_mid_step_ends_failed_without_restarts_or_work_copies(
    kube: client.ApiClient, module_namespace: str, pool: str, cluster: DevCluster, tmp_path: Path
) -> None:
    ns = module_namespace
    reg = client.AdmissionregistrationV1Api(kube)
    policy = f"refuse-round-1-{ns}"
    reg.create_validating_admission_policy(
        {
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["secrets"]}
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.data) || !object.data.exists(k, k.startsWith('message.') && k.endsWith('.1'))",
                        "message": "test policy: round-1 messages are refused",
                    }
                ],
            },
        }
    )
    reg.create_validating_admission_policy_binding(
        {
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
            },
        }
    )
    try:
        wait_for(
            reg.list_validating_admission_policy_binding,
            lambda b: True,
            field_selector=f"metadata.name={policy}",
            what="the policy binding",
        )
        op = start_operator(cluster, tmp_path / "operator.log")
        try:
            create_escrow(kube, ns, "refused", pool, threshold=2, participants=["buyer", "vendor"])
            failed = wait_escrow(kube, ns, "refused", phase="Failed", timeout=180)
            assert "Daemon 'run_escrow' failed" not in op.log
        finally:
            op.stop()
    finally:
        reg.delete_validating_admission_policy_binding(policy)
        reg.delete_validating_admission_policy(policy)
    stalled_condition = condition(failed, "Stalled")
    assert stalled_condition is not None and stalled_condition["status"] == "True"
    assert stalled_condition["reason"] == "SecretWriteRefused"
    assert "round-1 messages are refused" in stalled_condition["message"]
    assert condition(failed, "Reconciling")["status"] == "False"  # type: ignore[index]
    uid = failed["metadata"]["uid"]
    left = sorted(p.name for p in pool_directory(kube, ns, pool).iterdir() if uid in p.name)
    assert left and not [f for f in left if "_work_" in f], left  # published wallets kept, work copies gone


# --- the retry annotation ------------------------------------------------------------------------
def test_a_retry_annotation_set_before_the_failure_is_not_acted_on(
    kube: client.ApiClient, module_namespace: str, pool: str, cluster: DevCluster, tmp_path: Path
) -> None:
    ns = module_namespace
    objects = client.CustomObjectsApi(kube)
    # Hold the escrow after round 0 (once per escrow), then fail its first round-1 step for good.
    faults = "pause:round.before_status@0,fail:step.start@1x1"
    op = start_operator(
        cluster, tmp_path / "operator.log", ESCROW_MODE="test", ESCROW_STEP_ATTEMPTS="1", ESCROW_FAULTS=faults
    )
    try:
        create_escrow(kube, ns, "prearmed", pool, threshold=2, participants=["buyer", "vendor"])
        op.wait_log(r"fault injection: paused at round.before_status")
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "escrows", "prearmed", {"metadata": {"annotations": {"xmrescrow.dev/retry": "early"}}}
        )
        wait_for(
            custom_objects(kube, ns, "escrows"),
            lambda e: (e["metadata"].get("annotations") or {}).get("xmrescrow.dev/retry") == "early",
            field_selector="metadata.name=prearmed",
            what="the annotation stored",
        )
        assert op.proc is not None
        op.proc.send_signal(__import__("signal").SIGUSR1)
        failed = wait_escrow(kube, ns, "prearmed", phase="Failed")
        assert failed["status"]["lastRetry"] == "early"  # recorded at the failure, not acted on
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "escrows", "prearmed", {"metadata": {"annotations": {"xmrescrow.dev/retry": "late"}}}
        )
        wait_for(
            custom_objects(kube, ns, "escrows"),
            lambda e: (e.get("status") or {}).get("lastRetry") == "late",
            field_selector="metadata.name=prearmed",
            what="the new retry acted on",
        )
        ready = wait_escrow(kube, ns, "prearmed")
    finally:
        op.stop()
    assert ready["status"]["lastRetry"] == "late"
    retried = [e.message for e in events(kube, ns, "prearmed") if e.reason == "Retrying"]
    assert len(retried) == 1 and "'late'" in retried[0], retried
    assert condition(ready, "Degraded")["status"] == "False"  # type: ignore[index]
    assert condition(ready, "Stalled")["status"] == "False"  # type: ignore[index]

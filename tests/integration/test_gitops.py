"""GitOps tells the truth: real objects in every state, read by the tools' own status code.

Objects are captured from the live dev cluster (never hand-written) and judged by kstatus's
``status.Compute`` and by the Argo CD health checks of docs/install.md (tests/support/gitops.py):
not ready -> InProgress / Progressing, Ready -> Current / Healthy, Failed -> Failed / Degraded.

Then what GitOps tools do to objects: the same manifests applied again and again with server-side
apply under a controller's field manager, a pool deleted and created again under its name while
escrows run on it, an escrow deleted and created again: everything ends Ready with no 401 and
nothing orphaned. Deleting an escrow mid-step stops its work: nothing of it is written afterwards.

Each test starts its own operator, so no test depends on another's faults or order.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from urllib3.exceptions import ProtocolError, SSLError

from hack.devcluster import DevCluster, binary
from tests.support.escrows import (
    condition,
    create_escrow,
    escrow_body,
    pool_body,
    pool_directory,
    wait_escrow,
    wait_escrow_gone,
)
from tests.support.gitops import verdicts
from tests.support.kube import custom_objects, wait_for, wait_gone
from tests.support.walletrpc_proc import standalone_wallet_rpc

from .conftest import start_operator

GROUP, VERSION = "xmrescrow.dev", "v1alpha1"
NOT_READY = ("InProgress", "Progressing")
READY = ("Current", "Healthy")
FAILED = ("Failed", "Degraded")
DUO = {"threshold": 2, "participants": ["buyer", "vendor"]}


def get(kube: client.ApiClient, ns: str, plural: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(kube).get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)


def verdict(obj: dict[str, Any]) -> tuple[str, str]:
    [v] = verdicts([obj])
    return v.pair


def cond(obj: dict[str, Any], kind: str) -> tuple[str, str] | None:
    c = condition(obj, kind)
    return (c["status"], c["reason"]) if c else None


def pool_ready(replicas: int | None = None) -> Callable[[dict[str, Any]], bool]:
    """A pool's Ready condition is True with all its pods ready (and ``replicas`` of them, when given)."""
    return lambda p: (
        cond(p, "Ready") == ("True", "PodsReady") and (replicas is None or p["status"].get("readyReplicas") == replicas)
    )


def wait_pool(
    kube: client.ApiClient, ns: str, name: str, check: Any, what: str, timeout: float = 120
) -> dict[str, Any]:
    return wait_for(
        custom_objects(kube, ns, "walletpools"),
        check,
        field_selector=f"metadata.name={name}",
        timeout=timeout,
        what=what,
    )


def wait_esc(kube: client.ApiClient, ns: str, name: str, check: Any, what: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for(
        custom_objects(kube, ns, "escrows"), check, field_selector=f"metadata.name={name}", timeout=timeout, what=what
    )


class Recorder:
    """Every version of one Escrow as a watch delivers it, from a background thread.

    ``stop`` ends the watch and raises what failed it while recording."""

    def __init__(self, kube: client.ApiClient, ns: str, name: str) -> None:
        self.versions: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._watch = watch.Watch()
        objects = client.CustomObjectsApi(kube)
        self._thread = threading.Thread(target=self._run, args=(objects, ns, name), daemon=True)
        self._thread.start()

    def _run(self, objects: client.CustomObjectsApi, ns: str, name: str) -> None:
        try:
            for event in self._watch.stream(
                objects.list_namespaced_custom_object,
                GROUP,
                VERSION,
                ns,
                "escrows",
                field_selector=f"metadata.name={name}",
                timeout_seconds=600,
            ):
                self.versions.append(event["object"])
                if self._stop.is_set():
                    return
        except (ProtocolError, SSLError) as exc:
            # Watch.stop shuts the socket down under the blocked read: an error only if not asked for.
            if not self._stop.is_set():
                self._error = exc
        except Exception as exc:  # noqa: BLE001 - stop raises it in the test's thread
            self._error = exc

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + 30
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._watch.stop()  # again while the watch is still connecting (stream() clears the flag)
            self._thread.join(0.2)
        if self._error is not None:
            raise AssertionError("the recorder's watch failed") from self._error
        assert not self._thread.is_alive(), "the recorder's watch did not end within 30 s"


# --- verdicts in every state ----------------------------------------------------------------------
def test_escrow_and_pool_verdicts_through_a_whole_life(
    kube: client.ApiClient, namespace: str, cluster: DevCluster, crds: None, tmp_path: Path
) -> None:
    ns = namespace
    objects = client.CustomObjectsApi(kube)
    seen: dict[str, tuple[str, str]] = {}
    # One retried step (the first exchange_multisig_keys call fails once): Degraded while Reconciling.
    op = start_operator(
        cluster,
        tmp_path / "operator.log",
        ESCROW_MODE="test",
        ESCROW_FAULTS="fail:rpc.before.exchange_multisig_keys@2x1",
    )
    try:
        # Just applied, on a pool that does not exist yet.
        created = create_escrow(kube, ns, "life", "later")
        seen["just applied"] = verdict(get(kube, ns, "escrows", "life"))
        assert created["metadata"]["generation"] == 1
        missing = wait_esc(
            kube, ns, "life", lambda e: cond(e, "Reconciling") == ("True", "PoolNotFound"), "PoolNotFound"
        )
        seen["missing pool"] = verdict(missing)
        recorder = Recorder(kube, ns, "life")
        # The pool, at 0 replicas: Ready at 0 of 0; the escrow waits for pods.
        objects.create_namespaced_custom_object(GROUP, VERSION, ns, "walletpools", pool_body("later", 0))
        at_zero = wait_pool(kube, ns, "later", pool_ready(), "pool at 0 Ready")
        seen["pool at 0"] = verdict(at_zero)
        waiting = wait_esc(
            kube, ns, "life", lambda e: cond(e, "Reconciling") == ("True", "WaitingForPods"), "WaitingForPods"
        )
        assert "scaled to 0" in waiting["status"]["message"]
        seen["waiting for pods"] = verdict(waiting)
        # Scaled up: Reconciling while pods come, then Ready.
        objects.patch_namespaced_custom_object(GROUP, VERSION, ns, "walletpools", "later", {"spec": {"replicas": 2}})
        scaling = wait_pool(
            kube, ns, "later", lambda p: (cond(p, "Reconciling") or ("",))[0] == "True", "pool scaling up"
        )
        seen["pool scaling up"] = verdict(scaling)
        seen["pool ready"] = verdict(
            wait_pool(
                kube,
                ns,
                "later",
                pool_ready(2),
                "pool at 2 ready",
            )
        )
        ready = wait_escrow(kube, ns, "life", timeout=300)
        recorder.stop()
        seen["ready"] = verdict(ready)
        # Scaled down to 1 (the pod goes at once: the state between is too short to catch reliably).
        objects.patch_namespaced_custom_object(GROUP, VERSION, ns, "walletpools", "later", {"spec": {"replicas": 1}})
        down = wait_pool(
            kube,
            ns,
            "later",
            lambda p: p["status"].get("observedGeneration") == p["metadata"]["generation"] and pool_ready()(p),
            "pool at 1 ready",
        )
        assert down["status"]["replicas"] == 1
        seen["pool scaled down"] = verdict(down)
        # A pool whose pods never get ready.
        objects.create_namespaced_custom_object(
            GROUP, VERSION, ns, "walletpools", pool_body("broken", 2, image="registry.invalid/never:1")
        )
        seen["pool not ready"] = verdict(
            wait_pool(
                kube, ns, "broken", lambda p: (p.get("status") or {}).get("replicas") == 2, "broken pool's pods exist"
            )
        )
        # Being deleted (held by a finalizer of the test's, so the state can be seen).
        objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "escrows",
            "life",
            {"metadata": {"finalizers": ["xmrescrow.dev/escrow-wallets", "test.xmrescrow.dev/hold"]}},
        )
        objects.delete_namespaced_custom_object(GROUP, VERSION, ns, "escrows", "life")
        deleting = wait_esc(
            kube, ns, "life", lambda e: bool(e["metadata"].get("deletionTimestamp")), "deletion started"
        )
        [v] = verdicts([deleting])
        assert v.kstatus == "Terminating"
        wait_esc(
            kube,
            ns,
            "life",
            lambda e: e["metadata"].get("finalizers") == ["test.xmrescrow.dev/hold"],
            "operator finalizer released",
        )
        objects.patch_namespaced_custom_object(GROUP, VERSION, ns, "escrows", "life", {"metadata": {"finalizers": []}})
    finally:
        op.stop()
    assert seen == {
        "just applied": NOT_READY,
        "missing pool": NOT_READY,
        "pool at 0": READY,
        "waiting for pods": NOT_READY,
        "pool scaling up": NOT_READY,
        "pool ready": READY,
        "ready": READY,
        "pool scaled down": READY,
        "pool not ready": NOT_READY,
    }
    # Every version the watch delivered before Ready (each step's status, the retried step) reads
    # not ready; the retried step was Degraded while the exchange went on, and Degraded is cleared.
    before_ready = [o for o in recorder.versions if (o.get("status") or {}).get("phase") != "Ready"]
    assert len(before_ready) >= 4, [o.get("status") for o in recorder.versions]
    assert {verdict_pair for verdict_pair in (v.pair for v in verdicts(before_ready))} == {NOT_READY}
    rounds = {(o.get("status") or {}).get("round") for o in before_ready}
    assert {1, 2, 3} <= rounds, rounds
    retried = [o for o in before_ready if cond(o, "Degraded") == ("True", "StepRetried")]
    assert retried, "no version showed the retried step"
    assert all(cond(o, "Reconciling")[0] == "True" for o in retried)  # type: ignore[index]
    assert cond(ready, "Degraded")[0] == "False"  # type: ignore[index]
    for obj in [ready, *before_ready]:
        gen = obj["metadata"]["generation"]
        assert all(c.get("observedGeneration") == gen for c in obj["status"].get("conditions", []))


def test_failed_escrow_reads_failed_and_its_retry_in_progress(
    kube: client.ApiClient, namespace: str, cluster: DevCluster, crds: None, tmp_path: Path
) -> None:
    ns = namespace
    objects = client.CustomObjectsApi(kube)
    objects.create_namespaced_custom_object(GROUP, VERSION, ns, "walletpools", pool_body("small", 1))
    op = start_operator(
        cluster,
        tmp_path / "broken.log",
        ESCROW_MODE="test",
        ESCROW_STEP_ATTEMPTS="1",
        ESCROW_FAULTS="fail:step.start@0x1000",
    )
    try:
        create_escrow(kube, ns, "doomed", "small", walletRetention="Delete", **DUO)
        failed = wait_escrow(kube, ns, "doomed", phase="Failed", timeout=180)
    finally:
        op.stop()
    assert verdict(failed) == FAILED
    assert cond(failed, "Stalled") == ("True", "StepError")
    assert cond(failed, "Reconciling") == ("False", "Failed")
    op = start_operator(cluster, tmp_path / "healthy.log")
    try:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "escrows", "doomed", {"metadata": {"annotations": {"xmrescrow.dev/retry": "1"}}}
        )
        retrying = wait_esc(
            kube, ns, "doomed", lambda e: (e.get("status") or {}).get("lastRetry") == "1", "retry acted on"
        )
        assert cond(retrying, "Stalled") == ("False", "AsExpected")
        assert verdict(retrying) == NOT_READY
        objects.delete_namespaced_custom_object(GROUP, VERSION, ns, "escrows", "doomed")
        wait_escrow_gone(kube, ns, "doomed", timeout=120)
    finally:
        op.stop()


# --- deletion stops work ---------------------------------------------------------------------------
def test_deleting_an_escrow_mid_step_writes_nothing_afterwards(
    kube: client.ApiClient, namespace: str, cluster: DevCluster, crds: None, tmp_path: Path
) -> None:
    ns = namespace
    objects = client.CustomObjectsApi(kube)
    op = start_operator(cluster, tmp_path / "operator.log")
    try:
        objects.create_namespaced_custom_object(GROUP, VERSION, ns, "walletpools", pool_body("gone", 2))
        wait_pool(
            kube,
            ns,
            "gone",
            pool_ready(2),
            "pool ready",
        )
        doomed = create_escrow(kube, ns, "doomed", "gone", walletRetention="Delete")
        kept = create_escrow(kube, ns, "kept", "gone")
        uids = {doomed["metadata"]["uid"]: "Delete", kept["metadata"]["uid"]: "Retain"}
        # Mid-step: the exchange has started, step 0 (create_wallet, seconds long) is running.
        for name in ("doomed", "kept"):
            wait_esc(
                kube, ns, name, lambda e: (e.get("status") or {}).get("phase") == "KeyExchange", f"{name} mid-exchange"
            )
        for name in ("doomed", "kept"):
            objects.delete_namespaced_custom_object(GROUP, VERSION, ns, "escrows", name)
        for name in ("doomed", "kept"):
            wait_escrow_gone(kube, ns, name, timeout=120)
        directory = pool_directory(kube, ns, "gone")
        after_gone = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
        # The pods stay busy with the other escrow's work meanwhile: a late write of either would show.
        create_escrow(kube, ns, "witness", "gone", **DUO)
        wait_escrow(kube, ns, "witness", timeout=300)
    finally:
        op.stop()
    now = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    for uid, retention in uids.items():
        files = sorted(name for name in now if uid in name)
        assert all(now[f] == after_gone.get(f) for f in files), "a file of a deleted escrow changed after it was gone"
        if retention == "Delete":
            assert files == [], files
        else:
            assert not [f for f in files if "_work_" in f], files  # work copies go, published wallets stay
    assert not [n for n in now if n.startswith(".walletfs-tmp")]


def test_a_namespace_with_pools_and_escrows_finishes_terminating(
    kube: client.ApiClient, cluster: DevCluster, crds: None, tmp_path: Path
) -> None:
    core = client.CoreV1Api(kube)
    ns = f"t-gone-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": ns}})
    op = start_operator(cluster, tmp_path / "operator.log")
    try:
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            GROUP, VERSION, ns, "walletpools", pool_body("p", 1)
        )
        create_escrow(kube, ns, "e", "p", walletRetention="Delete", **DUO)
        wait_esc(kube, ns, "e", lambda e: (e.get("status") or {}).get("phase") == "KeyExchange", "mid-exchange")
        core.delete_namespace(ns)
        wait_gone(
            core.list_namespace, field_selector=f"metadata.name={ns}", timeout=180, what=f"namespace {ns} deleted"
        )
    finally:
        op.stop()


def test_a_retained_wallet_opens_after_its_namespace_is_deleted(
    kube: client.ApiClient, cluster: DevCluster, crds: None, tmp_path: Path
) -> None:
    """Deleting a namespace deletes its Secrets at once: the passwords of a Retain escrow are also in
    the operator's namespace (escrow-<uid>-recovery), and open its wallet files on the released volume
    (docs/operations.md, Recovering a retained wallet). A Delete escrow's copy goes with its files."""
    core = client.CoreV1Api(kube)
    ns, op_ns = f"t-shop-{secrets.token_hex(3)}", f"t-op-{secrets.token_hex(3)}"
    for name in (ns, op_ns):
        core.create_namespace({"metadata": {"name": name}})
    op = start_operator(cluster, tmp_path / "operator.log", POD_NAMESPACE=op_ns)
    try:
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            GROUP, VERSION, ns, "walletpools", pool_body("p", 2)
        )
        create_escrow(kube, ns, "kept", "p", **DUO)
        create_escrow(kube, ns, "dropped", "p", walletRetention="Delete", **DUO)
        kept, dropped = (wait_escrow(kube, ns, name, timeout=300) for name in ("kept", "dropped"))
        uid, address = kept["metadata"]["uid"], kept["status"]["address"]
        for escrow in (kept, dropped):
            euid = escrow["metadata"]["uid"]
            copy = core.read_namespaced_secret(f"escrow-{euid}-recovery", op_ns)
            assert copy.metadata.owner_references is None
            passwords = core.read_namespaced_secret(f"escrow-{euid}", ns).data
            assert copy.data == {f"password.{r}": passwords[f"password.{r}"] for r in DUO["participants"]} | {
                f"wallet.{r}": base64.b64encode(f"{r}_escrow_{euid}_round_2_final".encode()).decode()
                for r in DUO["participants"]
            }
        claim = core.read_namespaced_persistent_volume_claim("p-wallets", ns)
        core.delete_namespace(ns)
        wait_gone(
            core.list_namespace, field_selector=f"metadata.name={ns}", timeout=180, what=f"namespace {ns} deleted"
        )
        log = op.log
    finally:
        op.stop()
    try:
        with pytest.raises(client.ApiException) as gone:
            core.read_namespaced_secret(f"escrow-{dropped['metadata']['uid']}-recovery", op_ns)
        assert gone.value.status == 404
        copy = core.read_namespaced_secret(f"escrow-{uid}-recovery", op_ns)
        assert copy.metadata.annotations["xmrescrow.dev/escrow"] == f"{ns}/kept"
        assert copy.metadata.annotations["xmrescrow.dev/pool"] == f"{ns}/p"
        data = {k: base64.b64decode(v).decode() for k, v in copy.data.items()}
        # The claim went with the namespace; its volume (reclaim policy Retain) keeps the files.
        volume = core.read_persistent_volume(claim.spec.volume_name)
        assert volume.status.phase == "Released"
        assert (volume.spec.claim_ref.namespace, volume.spec.claim_ref.name) == (ns, "p-wallets")
        with standalone_wallet_rpc(Path(volume.spec.host_path.path)) as rpc:
            for role in DUO["participants"]:
                state = rpc.inspect(data[f"wallet.{role}"], data[f"password.{role}"])
                assert state["multisig"] and state["ready"] and state["address"] == address, state
    finally:
        core.delete_namespace(op_ns)
    for value in data.values():
        if len(value) == 43:  # a password (token_urlsafe(32)), never in the operator's log
            assert value not in log


# --- GitOps churn ---------------------------------------------------------------------------------
def test_a_pool_secret_written_anew_replaces_the_pods_started_with_the_old_one(
    kube: client.ApiClient, namespace: str, cluster: DevCluster, crds: None, tmp_path: Path
) -> None:
    """The pool Secret is deleted (by hand, or by the garbage collector after a re-created pool adopted
    it): the next reconcile writes a new one; pods started with the old one get no step and are
    deleted, so their StatefulSet starts them with the current credentials; no call is refused."""
    ns, core = namespace, client.CoreV1Api(kube)
    objects = client.CustomObjectsApi(kube)
    selector = "xmrescrow.dev/pool=renew"
    op = start_operator(cluster, tmp_path / "operator.log")
    try:
        objects.create_namespaced_custom_object(GROUP, VERSION, ns, "walletpools", pool_body("renew", 2))
        create_escrow(kube, ns, "before", "renew", **DUO)
        wait_escrow(kube, ns, "before", timeout=300)
        old_secret = core.read_namespaced_secret("renew-rpc", ns).metadata.uid
        old_pods = {p.metadata.uid for p in core.list_namespaced_pod(ns, label_selector=selector).items}
        assert len(old_pods) == 2
        core.delete_namespaced_secret("renew-rpc", ns)
        # Any change of the pool reconciles it; an escrow created at once runs through the change.
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "walletpools", "renew", {"metadata": {"annotations": {"example.com/touched": "1"}}}
        )
        create_escrow(kube, ns, "after", "renew", **DUO)
        after = wait_escrow(kube, ns, "after", timeout=300)
        new_secret = core.read_namespaced_secret("renew-rpc", ns).metadata.uid
        wait_pool(
            kube,
            ns,
            "renew",
            pool_ready(),
            "the pool Ready on new pods",
            timeout=180,
        )
        log = op.log
    finally:
        op.stop()
    assert new_secret != old_secret
    assert after["status"]["phase"] == "Ready" and len(after["status"]["address"]) == 95
    pods = core.list_namespaced_pod(ns, label_selector=selector).items
    assert not {p.metadata.uid for p in pods} & old_pods
    assert {p.metadata.annotations.get("xmrescrow.dev/rpc-secret-uid") for p in pods} == {new_secret}
    assert "started with the credentials of a replaced Secret" in log  # the operator deleted them
    for needle in ("HTTP 401", "refused the pool's credentials", "CredentialsRefused"):
        assert needle not in log, f"{needle!r} in the operator log"


def kubectl_apply(cluster: DevCluster, ns: str, docs: list[dict[str, Any]], manager: str = "argocd-controller") -> None:
    subprocess.run(
        [
            str(binary("kubectl")),
            f"--kubeconfig={cluster.kubeconfig}",
            "-n",
            ns,
            "apply",
            "--server-side",
            f"--field-manager={manager}",
            "-f",
            "-",
        ],
        input=yaml.safe_dump_all(docs),
        text=True,
        check=True,
        capture_output=True,
    )


def test_gitops_churn_ends_ready_with_no_401_and_nothing_orphaned(
    kube: client.ApiClient, namespace: str, cluster: DevCluster, crds: None, tmp_path: Path
) -> None:
    ns = namespace
    objects = client.CustomObjectsApi(kube)
    pool = pool_body("churn", 2)
    escrows = {name: escrow_body(name, "churn", **DUO, walletRetention="Delete") for name in ("a", "b", "c")}
    manifests = [pool, *escrows.values()]
    op = start_operator(cluster, tmp_path / "operator.log")
    try:
        for _ in range(3):
            kubectl_apply(cluster, ns, manifests[:2])
        wait_escrow(kube, ns, "a", timeout=300)
        old_pool_uid = get(kube, ns, "walletpools", "churn")["metadata"]["uid"]
        kubectl_apply(cluster, ns, manifests)
        assert (
            get(kube, ns, "escrows", "a")["metadata"]["generation"] == 1
        )  # a's manifest, applied again, changed nothing
        # b and c are mid-exchange: the pool is deleted and applied again under its name.
        for name in ("b", "c"):
            wait_esc(
                kube, ns, name, lambda e: (e.get("status") or {}).get("phase") == "KeyExchange", f"{name} mid-exchange"
            )
        objects.delete_namespaced_custom_object(GROUP, VERSION, ns, "walletpools", "churn")
        wait_gone(custom_objects(kube, ns, "walletpools"), field_selector="metadata.name=churn", what="pool deleted")
        kubectl_apply(cluster, ns, manifests)
        # c is deleted and applied again under its name (a new object, a new uid).
        old_c_uid = get(kube, ns, "escrows", "c")["metadata"]["uid"]
        objects.delete_namespaced_custom_object(GROUP, VERSION, ns, "escrows", "c")
        wait_escrow_gone(kube, ns, "c", timeout=180)
        kubectl_apply(cluster, ns, manifests)
        done = {name: wait_escrow(kube, ns, name, timeout=600) for name in escrows}
        for _ in range(2):
            kubectl_apply(cluster, ns, manifests)
        # The operator writes the pool's status: wait for the re-created pool's second pod (started once
        # the old pool's pod of that name is gone) while it runs.
        pool_now = wait_pool(
            kube,
            ns,
            "churn",
            pool_ready(),
            "the re-created pool Ready",
            timeout=180,
        )
        log = op.log
    finally:
        op.stop()
    assert get(kube, ns, "walletpools", "churn")["metadata"]["uid"] != old_pool_uid
    assert done["c"]["metadata"]["uid"] != old_c_uid
    assert len({e["status"]["address"] for e in done.values()}) == 3
    for name, escrow in done.items():
        assert verdict(get(kube, ns, "escrows", name)) == READY
        assert escrow["metadata"]["generation"] == 1
    assert verdict(pool_now) == READY, pool_now.get("status")
    for needle in (
        "HTTP 401",
        "bearer token",
        "CredentialsRefused",
        "refused the pool's credentials",
        "refused stale credentials",
    ):
        assert needle not in log, f"{needle!r} in the operator log"
    reasons = {e.reason for e in client.CoreV1Api(kube).list_namespaced_event(ns).items}
    assert "Failed" not in reasons and "StepRetried" not in reasons, reasons
    # Nothing orphaned: one StatefulSet and Secret of the new pool, one Secret per live escrow, and
    # only the live escrows' final wallets (the deleted c's files went with it).
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    pool_uid = get(kube, ns, "walletpools", "churn")["metadata"]["uid"]
    sets = apps.list_namespaced_stateful_set(ns).items
    assert [s.metadata.name for s in sets] == ["churn"]
    assert [o.uid for o in sets[0].metadata.owner_references] == [pool_uid]
    secrets = {s.metadata.name: s for s in core.list_namespaced_secret(ns).items if s.type == "Opaque"}
    live = {e["metadata"]["uid"] for e in done.values()}
    assert set(secrets) == {"churn-rpc", *(f"escrow-{uid}" for uid in live)}, sorted(secrets)
    assert [o.uid for o in secrets["churn-rpc"].metadata.owner_references] == [pool_uid]
    files = {p.name for p in pool_directory(kube, ns, "churn").iterdir()}
    assert not [f for f in files if old_c_uid in f]
    assert all(any(uid in f for uid in live) for f in files if not f.startswith(".")), sorted(files)
    assert all("_final" in f for f in files), sorted(files)

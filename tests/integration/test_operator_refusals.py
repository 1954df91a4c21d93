"""The operator is unaffected by bad input: what the apiserver refuses never reaches it, and an Escrow on a
pool that does not exist says so in its conditions.

One operator runs for the whole module, started before any test. The refused table of test_admission is
submitted again while it runs, between two pairs of control objects (an Escrow and a WalletPool) it must
act on. The controls show that the operator was watching and that its work shows: an Escrow gets an event
naming it, a WalletPool a StatefulSet and a "Creation is processed" line in the operator's log (kopf's
per-object lines do not name the object, so the log is checked by count). None of that appears for any
refused object.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from escrow_operator.api import ESCROW_PLURAL, GROUP, VERSION, WALLETPOOL_PLURAL
from tests.integration.test_admission import REFUSED, create, message_of, obj
from tests.support.escrows import condition, create_pool
from tests.support.kube import custom_objects, wait_for
from tests.support.operator import OperatorProcess


@pytest.fixture(scope="module", autouse=True)
def module_started() -> datetime:
    """Objects created from here on are this module's (creation timestamps have one-second resolution)."""
    return datetime.now(UTC).replace(microsecond=0)


def wait_pool_not_found(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """Wait until the operator has set Ready=False/PoolNotFound on Escrow ``name``."""

    def pool_not_found(escrow: dict[str, Any]) -> bool:
        ready = condition(escrow, "Ready")
        return ready is not None and ready["reason"] == "PoolNotFound"

    return wait_for(
        custom_objects(kube, namespace, ESCROW_PLURAL),
        pool_not_found,
        field_selector=f"metadata.name={name}",
        timeout=45,
        what=f"escrow {name} Ready=False/PoolNotFound",
    )


def control(kube: client.ApiClient, namespace: str, name: str) -> None:
    """An Escrow (on a pool that does not exist) and a WalletPool (of no pods) named ``name``; returns once
    the operator has acted on both: the Escrow's condition is set and the pool's StatefulSet exists."""
    create(kube, namespace, obj("Escrow", {"poolRef": "no-such-pool"}, name=name))
    create_pool(kube, namespace, name, replicas=0)  # waits for the StatefulSet the operator builds
    wait_pool_not_found(kube, namespace, name)


def about_refused(name: str, refused: set[str]) -> bool:
    """Whether an object named ``name`` is a refused one or one built for it (a pool's claim: NAME-wallets)."""
    return name in refused or any(name.startswith(f"{r}-") for r in refused)


#: What kopf logs once per WalletPool it sees created (and handled, or not): none for an Escrow.
CREATION_LINE = " kopf.objects Creation is processed: "


def test_refused_objects_never_reach_the_operator(
    kube: client.ApiClient, namespace: str, operator: OperatorProcess, module_started: datetime
) -> None:
    """Every invalid object of the table is refused while the operator runs, and the operator sees none."""
    log_start = len(operator.log)
    controls = ["control-before", "control-after"]
    control(kube, namespace, controls[0])  # the operator watches both kinds in this namespace

    names: list[str] = []
    for index, case in enumerate(REFUSED):
        body, expected = copy.deepcopy(case.values[0]), case.values[1]
        if body["metadata"]["name"] == "bad":  # a name of its own, to look for (the invalid-name case keeps its)
            body["metadata"]["name"] = f"refused-{index:03d}"
        names.append(body["metadata"]["name"])
        with pytest.raises(ApiException) as refused:
            create(kube, namespace, body)
        assert refused.value.status == 422, (case.id, refused.value.body)
        assert expected in message_of(refused.value), (case.id, refused.value.body)
    refused_names = set(names)
    assert len(refused_names) == len(REFUSED)

    # Submitted after every refused one: once the operator has acted on these, it has seen all it was sent.
    control(kube, namespace, controls[1])
    assert operator.proc is not None and operator.proc.poll() is None, "the operator exited"

    objects = client.CustomObjectsApi(kube)
    for plural in (ESCROW_PLURAL, WALLETPOOL_PLURAL):
        stored = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
        assert sorted(o["metadata"]["name"] for o in stored) == sorted(controls)
    events = client.CoreV1Api(kube).list_namespaced_event(namespace).items
    about = {(e.involved_object.kind, e.involved_object.name) for e in events}
    log = operator.wait_log_count(CREATION_LINE, len(controls), since=log_start)
    # The checks below can fail: the operator's work on the controls shows in events and in its log ...
    assert {("Escrow", name) for name in controls} <= about, about
    assert log.count(CREATION_LINE) == len(controls), log[-4000:]
    # ... and nothing of the table reached it: no event about a refused object (or one built for it), no
    # creation handled but the control pools', no pool built anywhere while this module ran but theirs.
    assert sorted(f"{kind}/{name}" for kind, name in about if about_refused(name, refused_names)) == []
    assert "Traceback" not in log, log[-4000:]
    built = [
        f"{sts.metadata.namespace}/{sts.metadata.name}"
        for sts in client.AppsV1Api(kube).list_stateful_set_for_all_namespaces().items
        if sts.metadata.creation_timestamp >= module_started
    ]
    assert sorted(built) == sorted(f"{namespace}/{name}" for name in controls)


def test_operator_reports_unknown_pool(kube: client.ApiClient, namespace: str, operator: OperatorProcess) -> None:
    """An Escrow on a pool that does not exist is Pending with Ready=False/PoolNotFound."""
    create(kube, namespace, obj("Escrow", {"poolRef": "no-such-pool"}, name="orphan"))
    escrow = wait_pool_not_found(kube, namespace, "orphan")
    ready = condition(escrow, "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    assert "no-such-pool" in ready["message"] and "not found" in ready["message"], ready
    assert escrow["status"]["phase"] == "Pending", escrow["status"]
    assert not escrow["status"].get("address")
    wait_for(
        client.CoreV1Api(kube).list_namespaced_event,
        lambda event: event.reason == "PoolNotFound" and event.type == "Warning",
        namespace,
        field_selector="involvedObject.name=orphan",
        timeout=30,
        what="a PoolNotFound event for escrow orphan",
    )
    assert operator.proc is not None and operator.proc.poll() is None, "the operator exited"
    assert "Traceback" not in operator.log, operator.log[-4000:]

"""A WalletPool's status (pool_status.compute), checked without a cluster."""

from __future__ import annotations

import pytest

from escrow_operator.pool_status import Applied, Pods, compute

OK = Applied(True, "Applied", "applied", 3, 2)


def conds(status) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {c.type: (c.status.value, c.reason) for c in status.conditions}


@pytest.mark.parametrize(
    ("applied", "pods", "ready", "reconciling", "reason"),
    [
        (OK, Pods(0, 0), "False", "True", "ScalingUp"),
        (OK, Pods(2, 1), "False", "True", "PodsNotReady"),
        (OK, Pods(3, 3), "False", "True", "ScalingDown"),
        (OK, Pods(2, 2), "True", "False", "PodsReady"),
        (Applied(True, "Applied", "", 4, 0), Pods(0, 0), "True", "False", "PodsReady"),
    ],
)
def test_ready_and_reconciling_follow_the_pods(
    applied: Applied, pods: Pods, ready: str, reconciling: str, reason: str
) -> None:
    status = compute(applied, pods, "sel", [])
    c = conds(status)
    assert c["Ready"] == (ready, reason)
    assert c["Reconciling"][0] == reconciling
    assert c["Stalled"] == ("False", "AsExpected")
    assert status.observed_generation == applied.generation
    assert all(x.observed_generation == applied.generation for x in status.conditions)
    assert (status.replicas, status.ready_replicas, status.selector) == (pods.existing, pods.ready, "sel")


def test_a_refused_spec_is_stalled_and_not_reconciling() -> None:
    status = compute(Applied(False, "ImageNotAllowed", "spec.image 'x' is not allowed", 2, 2), Pods(0, 0), "sel", [])
    c = conds(status)
    assert c["Stalled"] == ("True", "ImageNotAllowed")
    assert c["Reconciling"][0] == "False"
    assert c["Ready"] == ("False", "ImageNotAllowed")
    assert c["Reconciled"] == ("False", "ImageNotAllowed")

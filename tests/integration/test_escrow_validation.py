"""Invalid Escrows are refused by the apiserver itself (CRD schema and CEL), with a clear message."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from escrow_operator.api import ESCROW_PLURAL, GROUP, VERSION
from tests.support.escrows import escrow_body

CASES: list[tuple[str, dict[str, Any], str]] = [
    ("threshold-zero", {"threshold": 0}, "spec.threshold"),
    ("threshold-above-count", {"threshold": 4}, "threshold must not exceed the number of participants"),
    ("one-participant", {"participants": ["buyer"], "threshold": 1}, "spec.participants"),
    ("duplicate-roles", {"participants": ["buyer", "buyer", "arbiter"]}, "participants must be unique"),
    ("role-with-underscore", {"participants": ["buyer_1", "vendor", "arbiter"]}, "spec.participants[0]"),
    ("role-with-slash", {"participants": ["buyer", "ven/dor", "arbiter"]}, "spec.participants[1]"),
]


@pytest.mark.parametrize(("name", "spec", "expected"), CASES, ids=[c[0] for c in CASES])
def test_invalid_escrow_is_refused(
    kube: client.ApiClient, namespace: str, crds: None, name: str, spec: dict, expected: str
) -> None:
    objects = client.CustomObjectsApi(kube)
    with pytest.raises(ApiException) as refused:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, ESCROW_PLURAL, escrow_body(name, "pool", **spec)
        )
    assert refused.value.status == 422, refused.value.body
    assert expected in refused.value.body, refused.value.body


def test_spec_is_immutable(kube: client.ApiClient, namespace: str, crds: None) -> None:
    objects = client.CustomObjectsApi(kube)
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL, escrow_body("fixed", "pool"))
    for change in (
        {"threshold": 3},
        {"participants": ["buyer", "vendor", "judge"]},
        {"poolRef": "other"},
        {"walletRetention": "Delete"},
    ):
        with pytest.raises(ApiException) as refused:
            objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL, "fixed", {"spec": change})
        assert refused.value.status == 422
        assert "spec is immutable" in refused.value.body, refused.value.body

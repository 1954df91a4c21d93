"""Bad input is refused at every door: the apiserver (CRD schema and CEL), the walletfs sidecar, wallet-rpc.

1. A table of invalid Escrows and WalletPools, each refused by the real apiserver with a message that
   names the field or the rule; unknown fields are pruned (not refused); specs that must not change
   after creation cannot be changed.
2. The operator is unaffected: an Escrow on a pool that does not exist says so in its conditions, and
   the operator logs no Traceback.
3. A real ``escrow-operator walletfs`` process refuses traversal, symlinks, names outside the escrow
   pattern, missing or wrong tokens and oversize bodies, and nothing in its directory (or outside it)
   changes.
4. A real monero-wallet-rpc answers 401 without credentials and with wrong ones.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from escrow_operator.api import ESCROW_PLURAL, GROUP, VERSION, WALLETPOOL_PLURAL
from escrow_operator.walletfs.server import MAX_BODY_BYTES
from tests.support.escrows import condition
from tests.support.kube import custom_objects, wait_for
from tests.support.operator import OperatorProcess
from tests.support.processes import free_port, stop, wait_serving
from tests.support.walletrpc_proc import standalone_wallet_rpc


@pytest.fixture(scope="module", autouse=True)
def module_started() -> datetime:
    """Objects created from here on are this module's (creation timestamps have one-second resolution)."""
    return datetime.now(UTC).replace(microsecond=0)


API_VERSION = f"{GROUP}/{VERSION}"
PLURALS = {"Escrow": ESCROW_PLURAL, "WalletPool": WALLETPOOL_PLURAL}
ROLE_RULE = "should match '^[a-z][a-z0-9]{0,15}$'"
DAEMON_RULE = "spec.daemon in body should match"
ONE_SOURCE = "storage needs exactly one of claimName (an existing ReadWriteMany claim) or size (a new claim)"


def obj(kind: str, spec: Any, name: str = "bad") -> dict[str, Any]:
    """A custom object; ``spec=...`` leaves the spec out."""
    body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}}
    if spec is not ...:
        body["spec"] = spec
    return body


def esc(**spec: Any) -> dict[str, Any]:
    """An Escrow with a valid poolRef unless the case overrides (or, with poolRef=..., drops) it."""
    spec = {"poolRef": "wallets", **spec}
    return obj("Escrow", {k: v for k, v in spec.items() if v is not ...})


def pool(**spec: Any) -> dict[str, Any]:
    """A WalletPool with valid storage unless the case overrides (or, with storage=..., drops) it."""
    spec = {"replicas": 0, "storage": {"size": "1Gi"}, **spec}
    return obj("WalletPool", {k: v for k, v in spec.items() if v is not ...})


def roles(count: int) -> list[str]:
    return [f"party{i}" for i in range(count)]


def create(kube: client.ApiClient, namespace: str, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[body["kind"]], body, **kwargs
    )


def message_of(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.body)


# --------------------------------------------------------------------------------------------- 1. the table


@pytest.fixture
def no_leftovers(kube: client.ApiClient, namespace: str, crds: None) -> Iterator[None]:
    """Delete the Escrows and WalletPools a test created before its namespace goes.

    The operator of part 2 starts after these tests; it must not find valid pools of theirs in namespaces
    that are still terminating (see test_operator_reports_unknown_pool).
    """
    yield
    objects = client.CustomObjectsApi(kube)
    for plural in (ESCROW_PLURAL, WALLETPOOL_PLURAL):
        objects.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        assert objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"] == []


ACCEPTED_BY_CRD = "FINDING: the CRD accepts this although the operator's model refuses it"

REFUSED: list[Any] = [
    # -- Escrow: missing required fields
    pytest.param(obj("Escrow", ...), "spec: Required value", id="escrow-no-spec"),
    pytest.param(esc(poolRef=...), "spec.poolRef: Required value", id="escrow-no-poolRef"),
    pytest.param(obj("Escrow", "wallets"), "spec in body must be of type object", id="escrow-spec-string"),
    # -- Escrow: wrong types
    pytest.param(esc(threshold="two"), "spec.threshold in body must be of type integer", id="threshold-string"),
    pytest.param(esc(threshold=2.5), "spec.threshold in body must be of type integer", id="threshold-float"),
    pytest.param(esc(threshold=True), "spec.threshold in body must be of type integer", id="threshold-bool"),
    pytest.param(
        esc(participants="buyer,vendor,arbiter"),
        "spec.participants in body must be of type array",
        id="participants-string",
    ),
    pytest.param(
        esc(participants=["buyer", 7, "arbiter"]),
        "spec.participants[1] in body must be of type string",
        id="participant-integer",
    ),
    pytest.param(esc(poolRef=["wallets"]), "spec.poolRef in body must be of type string", id="poolRef-list"),
    pytest.param(esc(walletRetention=True), "spec.walletRetention in body must be of type string", id="retention-bool"),
    # -- Escrow: numbers out of range
    pytest.param(
        esc(threshold=-1), "spec.threshold in body should be greater than or equal to 1", id="threshold-negative"
    ),
    pytest.param(esc(threshold=0), "spec.threshold in body should be greater than or equal to 1", id="threshold-zero"),
    pytest.param(
        esc(threshold=10**12), "spec.threshold in body should be less than or equal to 16", id="threshold-1e12"
    ),
    pytest.param(esc(threshold=4), "threshold must not exceed the number of participants", id="threshold-above-count"),
    pytest.param(
        esc(threshold=3, participants=["buyer", "vendor"]),
        "threshold must not exceed the number of participants",
        id="threshold-above-two",
    ),
    # -- Escrow: participant counts
    pytest.param(
        esc(participants=["buyer"], threshold=1),
        "spec.participants in body should have at least 2 items",
        id="one-participant",
    ),
    pytest.param(
        esc(participants=[], threshold=1),
        "spec.participants in body should have at least 2 items",
        id="no-participants",
    ),
    pytest.param(
        esc(participants=roles(17)), "spec.participants: Too many: 17: must have at most 16 items", id="17-participants"
    ),
    pytest.param(esc(participants=["buyer", "buyer", "arbiter"]), "participants must be unique", id="duplicate-roles"),
    pytest.param(
        esc(participants=["buyer", "vendor", "buyer", "vendor"]),
        "participants must be unique",
        id="duplicate-roles-twice",
    ),
    # -- Escrow: poolRef strings
    pytest.param(esc(poolRef="p" * 300), "spec.poolRef: Too long: may not be more than 63", id="poolRef-300-chars"),
    pytest.param(esc(poolRef="p" * 64), "spec.poolRef: Too long: may not be more than 63", id="poolRef-64-chars"),
    pytest.param(esc(poolRef="pööl"), "spec.poolRef in body should match", id="poolRef-non-ascii"),
    pytest.param(esc(poolRef=""), "spec.poolRef in body should be at least 1 chars long", id="poolRef-empty"),
    pytest.param(esc(poolRef="Wallets"), "spec.poolRef in body should match", id="poolRef-uppercase"),
    pytest.param(esc(poolRef="../wallets"), "spec.poolRef in body should match", id="poolRef-traversal"),
    pytest.param(esc(poolRef="wallets.example"), "spec.poolRef in body should match", id="poolRef-dot"),
    pytest.param(esc(poolRef="-wallets"), "spec.poolRef in body should match", id="poolRef-leading-dash"),
    # -- Escrow: role names
    pytest.param(
        esc(participants=["k" * 17, "vendor"]),
        "spec.participants[0]: Too long: may not be more than 16",
        id="role-17-chars",
    ),
    pytest.param(
        esc(participants=["käufer", "vendor"]), f"spec.participants[0] in body {ROLE_RULE}", id="role-non-ascii"
    ),
    pytest.param(
        esc(participants=["buyer", "Vendor"]), f"spec.participants[1] in body {ROLE_RULE}", id="role-uppercase"
    ),
    pytest.param(
        esc(participants=["1buyer", "vendor"]), f"spec.participants[0] in body {ROLE_RULE}", id="role-leading-digit"
    ),
    pytest.param(
        esc(participants=["buyer_1", "vendor"]), f"spec.participants[0] in body {ROLE_RULE}", id="role-underscore"
    ),
    pytest.param(esc(participants=["buyer", "ven/dor"]), f"spec.participants[1] in body {ROLE_RULE}", id="role-slash"),
    pytest.param(esc(participants=["buyer", ".."]), f"spec.participants[1] in body {ROLE_RULE}", id="role-dotdot"),
    pytest.param(esc(participants=["buy.er", "vendor"]), f"spec.participants[0] in body {ROLE_RULE}", id="role-dot"),
    pytest.param(
        esc(participants=["", "vendor"]),
        "spec.participants[0] in body should be at least 1 chars long",
        id="role-empty",
    ),
    pytest.param(
        esc(participants=[" buyer", "vendor"]), f"spec.participants[0] in body {ROLE_RULE}", id="role-leading-space"
    ),
    pytest.param(
        esc(participants=["buy er", "vendor"]), f"spec.participants[0] in body {ROLE_RULE}", id="role-inner-space"
    ),
    pytest.param(
        esc(participants=["buyer\n", "vendor"]), f"spec.participants[0] in body {ROLE_RULE}", id="role-newline"
    ),
    pytest.param(esc(participants=["buyer\x00", "vendor"]), f"spec.participants[0] in body {ROLE_RULE}", id="role-nul"),
    # -- Escrow: enum
    pytest.param(
        esc(walletRetention="Forever"), 'spec.walletRetention: Unsupported value: "Forever"', id="retention-unknown"
    ),
    pytest.param(
        esc(walletRetention="retain"), 'spec.walletRetention: Unsupported value: "retain"', id="retention-lowercase"
    ),
    pytest.param(esc(walletRetention=""), 'spec.walletRetention: Unsupported value: ""', id="retention-empty"),
    # -- Escrow: metadata (the apiserver's own rules)
    pytest.param(
        obj("Escrow", {"poolRef": "wallets"}, name="Order_1"), "metadata.name: Invalid value", id="escrow-name-invalid"
    ),
    # -- WalletPool: missing required fields and wrong types
    pytest.param(obj("WalletPool", ...), "spec: Required value", id="pool-no-spec"),
    pytest.param(pool(storage=...), "spec.storage: Required value", id="pool-no-storage"),
    pytest.param(pool(storage=[{"size": "1Gi"}]), "spec.storage in body must be of type object", id="storage-list"),
    pytest.param(pool(storage="1Gi"), "spec.storage in body must be of type object", id="storage-string"),
    pytest.param(pool(replicas="six"), "spec.replicas in body must be of type integer", id="replicas-string"),
    pytest.param(pool(replicas=1.5), "spec.replicas in body must be of type integer", id="replicas-float"),
    pytest.param(pool(resources="lots"), "spec.resources in body must be of type object", id="resources-string"),
    pytest.param(
        pool(storage={"size": 10}), "spec.storage.size in body must be of type string", id="storage-size-integer"
    ),
    # -- WalletPool: numbers
    pytest.param(
        pool(replicas=-1), "spec.replicas in body should be greater than or equal to 0", id="replicas-negative"
    ),
    pytest.param(
        pool(replicas=100000), "spec.replicas in body should be less than or equal to 256", id="replicas-100000"
    ),
    pytest.param(pool(replicas=257), "spec.replicas in body should be less than or equal to 256", id="replicas-257"),
    pytest.param(pool(replicas=2**64), "spec.replicas in body must be of type integer", id="replicas-2e64"),
    # -- WalletPool: long strings
    pytest.param(pool(image="r" * 8192), "spec.image: Too long: may not be more than 512", id="image-8KiB"),
    pytest.param(pool(image="r" * 513), "spec.image: Too long: may not be more than 512", id="image-513-chars"),
    pytest.param(pool(image=""), "spec.image in body should be at least 1 chars long", id="image-empty"),
    pytest.param(
        pool(operatorImage="o" * 4096),
        "spec.operatorImage: Too long: may not be more than 512",
        id="operator-image-4KiB",
    ),
    pytest.param(
        pool(storage={"size": "1Gi", "storageClassName": "s" * 254}),
        "spec.storage.storageClassName: Too long",
        id="storage-class-254",
    ),
    # -- WalletPool: enums and addresses
    pytest.param(pool(network="regtest"), 'spec.network: Unsupported value: "regtest"', id="network-regtest"),
    pytest.param(pool(network="Mainnet"), 'spec.network: Unsupported value: "Mainnet"', id="network-capitalised"),
    pytest.param(pool(daemon="localhost"), DAEMON_RULE, id="daemon-no-port"),
    pytest.param(pool(daemon="http://node:18081"), DAEMON_RULE, id="daemon-url"),
    pytest.param(pool(daemon="node:70000"), DAEMON_RULE, id="daemon-port-70000"),
    pytest.param(pool(daemon="node:0"), DAEMON_RULE, id="daemon-port-0"),
    pytest.param(pool(daemon=" node:18081"), DAEMON_RULE, id="daemon-space"),
    pytest.param(pool(daemon="node:18081;rm -rf /"), DAEMON_RULE, id="daemon-shell"),
    pytest.param(pool(daemon="--daemon-address=x:1"), DAEMON_RULE, id="daemon-flag-injection"),
    pytest.param(pool(daemon="[zz::1]:18081"), DAEMON_RULE, id="daemon-bad-ipv6"),
    pytest.param(pool(daemon="Offline"), DAEMON_RULE, id="daemon-Offline"),
    # -- WalletPool: storage
    pytest.param(pool(storage={"claimName": "wallets", "size": "1Gi"}), ONE_SOURCE, id="storage-claim-and-size"),
    pytest.param(pool(storage={}), ONE_SOURCE, id="storage-neither"),
    pytest.param(pool(storage={"claimname": "wallets"}), ONE_SOURCE, id="storage-typo-pruned-then-neither"),
    pytest.param(pool(storage={"storageClassName": "fast"}), ONE_SOURCE, id="storage-class-only"),
    pytest.param(
        pool(storage={"claimName": "wallets", "storageClassName": "fast"}),
        "storageClassName applies to a new claim (size); it cannot be combined with claimName",
        id="storage-class-with-claim",
    ),
    pytest.param(
        pool(storage={"claimName": "Bad_Claim"}),
        "spec.storage.claimName in body should match",
        id="storage-claim-invalid",
    ),
    pytest.param(
        pool(storage={"claimName": "../etc"}),
        "spec.storage.claimName in body should match",
        id="storage-claim-traversal",
    ),
    pytest.param(pool(storage={"size": "-1Gi"}), "spec.storage.size in body should match", id="storage-size-negative"),
    pytest.param(pool(storage={"size": "lots"}), "spec.storage.size in body should match", id="storage-size-words"),
    pytest.param(pool(storage={"size": "1 Gi"}), "spec.storage.size in body should match", id="storage-size-space"),
    pytest.param(pool(storage={"size": "0"}), "spec.storage.size in body should match", id="storage-size-zero"),
    pytest.param(pool(storage={"size": "0Gi"}), "spec.storage.size in body should match", id="storage-size-0Gi"),
    pytest.param(
        pool(resources={"limits": {"cpu": "lots"}}),
        "spec.resources.limits.cpu in body should match",
        id="resources-bad-quantity",
    ),
    pytest.param(pool(resources={"limits": {"cpu": [1]}}), "spec.resources.limits.cpu", id="resources-quantity-list"),
]


@pytest.mark.parametrize(("body", "expected"), REFUSED)
def test_invalid_object_is_refused(
    kube: client.ApiClient, module_namespace: str, crds: None, body: dict[str, Any], expected: str
) -> None:
    """One namespace for the whole table: a refused object is never stored, so the cases cannot meet (and a
    fresh namespace per case would double the module's run time). An accepted one is deleted at once."""
    namespace = module_namespace
    try:
        created = create(kube, namespace, body)
    except ApiException as refused:
        message = message_of(refused)
        assert refused.status == 422, refused.body
        assert expected in message, message
        assert f"{body['kind']}.{GROUP}" in message, message  # names the kind, i.e. it is the CRD's refusal
        return
    # Accepted: remove it at once (so no operator ever sees it), then fail the case.
    client.CustomObjectsApi(kube).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[body["kind"]], created["metadata"]["name"]
    )
    pytest.fail(f"the apiserver accepted an invalid {body['kind']}: spec={created.get('spec')}")


ESCROW_URL = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{ESCROW_PLURAL}"
POOL_URL = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{WALLETPOOL_PLURAL}"


@pytest.mark.parametrize(
    ("url", "raw", "expected"),
    [
        pytest.param(ESCROW_URL, b"{not json", "json parse error", id="escrow-not-json"),
        pytest.param(ESCROW_URL, b"[]", "json parse error", id="escrow-array"),
        pytest.param(ESCROW_URL, b'"escrow"', "json parse error", id="escrow-string"),
        pytest.param(
            ESCROW_URL,
            json.dumps(esc()).replace('"poolRef"', '"threshold": 1e400, "poolRef"').encode(),
            "cannot unmarshal number 1e400",
            id="escrow-threshold-1e400",
        ),
        pytest.param(POOL_URL, json.dumps(pool()).encode()[:-7], "unexpected end of JSON input", id="pool-truncated"),
        pytest.param(POOL_URL, b"\xff\xfe{}", "json parse error: invalid character", id="pool-binary"),
    ],
)
def test_malformed_body_is_refused(
    kube: client.ApiClient, module_namespace: str, crds: None, url: str, raw: bytes, expected: str
) -> None:
    namespace = module_namespace
    response = kube.rest_client.pool_manager.request(
        "POST",
        kube.configuration.host + url.format(namespace=namespace),
        body=raw,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    status = json.loads(response.data)
    assert response.status == 400, status
    assert status["reason"] == "BadRequest", status
    assert expected in status["message"], status
    listing = client.CustomObjectsApi(kube).list_namespaced_custom_object(
        GROUP, VERSION, namespace, url.rsplit("/", 1)[1]
    )
    assert listing["items"] == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            esc(participants=["k" * 16, "v" * 16], threshold=2, poolRef="p" * 63, walletRetention="Delete"),
            id="escrow-longest-roles-and-poolRef",
        ),
        pytest.param(esc(participants=roles(16), threshold=16), id="escrow-16-of-16"),
        pytest.param(esc(participants=["a", "b"], threshold=1), id="escrow-1-of-2-one-letter-roles"),
        pytest.param(pool(replicas=256, image="r" * 512, daemon="[::1]:65535", network="testnet"), id="pool-maxima"),
        pytest.param(
            pool(daemon="node-1.example.org:18081", storage={"claimName": "wallets"}), id="pool-claim-and-daemon"
        ),
    ],
)
def test_boundary_values_are_accepted(
    kube: client.ApiClient, namespace: str, crds: None, no_leftovers: None, body: dict[str, Any]
) -> None:
    """The refusals above are exactly at the bounds: the last valid value of each is accepted."""
    created = create(kube, namespace, body)
    for key, value in body["spec"].items():
        assert created["spec"][key] == value


def test_unknown_fields_are_pruned_not_refused(
    kube: client.ApiClient, namespace: str, crds: None, no_leftovers: None
) -> None:
    body = esc(threshold=2, colour="red", participants=["buyer", "vendor", "arbiter"])
    body["spec"]["extra"] = {"nested": ["x"]}
    body["topLevel"] = "dropped"
    created = create(kube, namespace, body)
    stored = client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, ESCROW_PLURAL, created["metadata"]["name"]
    )
    for seen in (created, stored):
        assert "topLevel" not in seen
        assert seen["spec"] == {
            "poolRef": "wallets",
            "threshold": 2,
            "participants": ["buyer", "vendor", "arbiter"],
            "walletRetention": "Retain",
        }

    pool_body = pool(storage={"size": "1Gi", "storageclassname": "typo", "sizeLimit": "2Gi"}, replicaz=9)
    created_pool = create(kube, namespace, pool_body)
    assert created_pool["spec"]["storage"] == {"size": "1Gi"}
    assert "replicaz" not in created_pool["spec"]
    assert created_pool["spec"]["replicas"] == 0


def test_unknown_fields_are_refused_with_strict_field_validation(
    kube: client.ApiClient, namespace: str, crds: None, no_leftovers: None
) -> None:
    with pytest.raises(ApiException) as refused:
        create(kube, namespace, esc(colour="red"), field_validation="Strict")
    assert refused.value.status == 400, refused.value.body
    assert 'unknown field "spec.colour"' in message_of(refused.value)


def test_null_takes_the_default(kube: client.ApiClient, namespace: str, crds: None, no_leftovers: None) -> None:
    created = create(kube, namespace, esc(threshold=None, participants=None, walletRetention=None))
    assert created["spec"] == {
        "poolRef": "wallets",
        "threshold": 2,
        "participants": ["buyer", "vendor", "arbiter"],
        "walletRetention": "Retain",
    }


def test_status_on_create_is_ignored(kube: client.ApiClient, namespace: str, crds: None, no_leftovers: None) -> None:
    """A client cannot create an Escrow that claims to be Ready: status goes through the subresource only."""
    body = esc()
    body["status"] = {"phase": "Ready", "address": "4" + "A" * 94, "round": 4}
    created = create(kube, namespace, body)
    # Only the CRD's defaults: observed for no generation yet, so GitOps tools read it as in progress.
    status = created.get("status") or {}
    assert status.get("observedGeneration") == 0, status
    assert not {"phase", "address"} & set(status) and status.get("round") == 0, status


# --------------------------------------------------------------------------------------------- mutation

ESCROW_SPEC = {"poolRef": "wallets", "threshold": 1, "participants": ["buyer", "vendor"], "walletRetention": "Delete"}
ESCROW_IMMUTABLE = "spec is immutable once the Escrow is created; delete and recreate it"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"threshold": 2}, id="threshold"),
        pytest.param({"participants": ["buyer", "judge"]}, id="participants-renamed"),
        pytest.param({"participants": ["buyer", "vendor", "arbiter"]}, id="participants-added"),
        pytest.param({"participants": ["vendor", "buyer"]}, id="participants-reordered"),
        pytest.param({"participants": None}, id="participants-removed-so-defaulted"),
        pytest.param({"poolRef": "other"}, id="poolRef"),
        pytest.param({"walletRetention": "Retain"}, id="walletRetention"),
        pytest.param({"walletRetention": None}, id="walletRetention-removed-so-defaulted"),
    ],
)
def test_escrow_spec_cannot_change(
    kube: client.ApiClient, namespace: str, crds: None, no_leftovers: None, change: dict[str, Any]
) -> None:
    objects = client.CustomObjectsApi(kube)
    create(kube, namespace, obj("Escrow", dict(ESCROW_SPEC), name="fixed"))
    with pytest.raises(ApiException) as refused:
        objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL, "fixed", {"spec": change})
    assert refused.value.status == 422, refused.value.body
    assert ESCROW_IMMUTABLE in message_of(refused.value)
    assert (
        objects.get_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL, "fixed")["spec"] == ESCROW_SPEC
    )


def test_escrow_spec_cannot_be_replaced_but_metadata_can_change(
    kube: client.ApiClient, namespace: str, crds: None, no_leftovers: None
) -> None:
    objects = client.CustomObjectsApi(kube)
    created = create(kube, namespace, obj("Escrow", dict(ESCROW_SPEC), name="fixed"))
    replacement = {**created, "spec": {**ESCROW_SPEC, "threshold": 2}}
    with pytest.raises(ApiException) as refused:
        objects.replace_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL, "fixed", replacement)
    assert refused.value.status == 422, refused.value.body
    assert ESCROW_IMMUTABLE in message_of(refused.value)
    # The rule guards the spec only: labels and annotations stay editable.
    patched = objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, ESCROW_PLURAL, "fixed", {"metadata": {"labels": {"order": "1001"}}}
    )
    assert patched["metadata"]["labels"] == {"order": "1001"}
    assert patched["spec"] == ESCROW_SPEC


STORAGE_IMMUTABLE = "storage is immutable: the wallet files live on it; create a new WalletPool to use other storage"
NETWORK_IMMUTABLE = (
    "network is immutable: wallet files belong to one network; create a new WalletPool for another network"
)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"storage": {"size": "2Gi"}}, STORAGE_IMMUTABLE, id="storage-size"),
        pytest.param({"storage": {"size": None, "claimName": "other"}}, STORAGE_IMMUTABLE, id="storage-to-claim"),
        pytest.param({"storage": {"storageClassName": "fast"}}, STORAGE_IMMUTABLE, id="storage-class-added"),
        pytest.param({"storage": None}, "spec.storage: Required value", id="storage-removed"),
        pytest.param({"network": "testnet"}, NETWORK_IMMUTABLE, id="network"),
        pytest.param({"network": None}, NETWORK_IMMUTABLE, id="network-removed-so-defaulted"),
        pytest.param(
            {"replicas": -1}, "spec.replicas in body should be greater than or equal to 0", id="replicas-negative"
        ),
        pytest.param({"daemon": "nowhere"}, DAEMON_RULE, id="daemon-invalid"),
    ],
)
def test_walletpool_immutable_fields_cannot_change(
    kube: client.ApiClient, namespace: str, crds: None, no_leftovers: None, change: dict[str, Any], expected: str
) -> None:
    objects = client.CustomObjectsApi(kube)
    created = create(kube, namespace, pool(network="stagenet"))
    name = created["metadata"]["name"]
    with pytest.raises(ApiException) as refused:
        objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, WALLETPOOL_PLURAL, name, {"spec": change})
    assert refused.value.status == 422, refused.value.body
    assert expected in message_of(refused.value)
    assert (
        objects.get_namespaced_custom_object(GROUP, VERSION, namespace, WALLETPOOL_PLURAL, name)["spec"]
        == created["spec"]
    )


def test_walletpool_mutable_fields_change(
    kube: client.ApiClient, namespace: str, crds: None, no_leftovers: None
) -> None:
    """Control for the test above: replicas (also through the scale subresource), image and daemon may change."""
    objects = client.CustomObjectsApi(kube)
    name = create(kube, namespace, pool(network="stagenet"))["metadata"]["name"]
    patched = objects.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        WALLETPOOL_PLURAL,
        name,
        {"spec": {"replicas": 2, "image": "other/wallet-rpc:1", "daemon": "node:38081"}},
    )
    assert (patched["spec"]["replicas"], patched["spec"]["image"], patched["spec"]["daemon"]) == (
        2,
        "other/wallet-rpc:1",
        "node:38081",
    )
    scaled = objects.patch_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, WALLETPOOL_PLURAL, name, {"spec": {"replicas": 3}}
    )
    assert scaled["spec"]["replicas"] == 3
    with pytest.raises(ApiException) as refused:
        objects.patch_namespaced_custom_object_scale(
            GROUP, VERSION, namespace, WALLETPOOL_PLURAL, name, {"spec": {"replicas": 100000}}
        )
    assert refused.value.status == 422, refused.value.body
    assert "spec.replicas in body should be less than or equal to 256" in message_of(refused.value)


# --------------------------------------------------------------------------------------------- 2. the operator


def test_operator_reports_unknown_pool(
    kube: client.ApiClient, namespace: str, operator: OperatorProcess, module_started: datetime
) -> None:
    """After the table: an Escrow on a pool that does not exist is Pending with Ready=False/PoolNotFound."""
    create(kube, namespace, obj("Escrow", {"poolRef": "no-such-pool"}, name="orphan"))

    def pool_not_found(escrow: dict[str, Any]) -> bool:
        ready = condition(escrow, "Ready")
        return ready is not None and ready["reason"] == "PoolNotFound"

    escrow = wait_for(
        custom_objects(kube, namespace, ESCROW_PLURAL),
        pool_not_found,
        field_selector="metadata.name=orphan",
        timeout=45,
        what="escrow orphan Ready=False/PoolNotFound",
    )
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
    # Nothing of the table reached the operator: it built no pool anywhere while this module ran.
    built = [
        f"{sts.metadata.namespace}/{sts.metadata.name}"
        for sts in client.AppsV1Api(kube).list_stateful_set_for_all_namespaces().items
        if sts.metadata.creation_timestamp >= module_started
    ]
    assert built == []


# --------------------------------------------------------------------------------------------- 3. walletfs


@dataclass
class Walletfs:
    host: str
    port: int
    token: str
    root: Path  # holds wallets/ (the served directory), the canary and outside/
    wallet_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]
    uid: str
    http: httpx.Client

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def raw(
        self, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """A request with ``target`` sent exactly as given (no client-side normalization of ``..``)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            all_headers = {"Content-Length": str(len(body or b"")), **(headers or {})}
            for key, value in all_headers.items():
                conn.putheader(key, value)
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``root`` (symlinks not followed): kind, and sha256 of files or the link target."""
    seen: dict[str, tuple[str, str]] = {}
    for directory, dirs, names in os.walk(root, followlinks=False):
        for entry in dirs + names:
            path = Path(directory) / entry
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir", oct(path.stat().st_mode))
            else:
                seen[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest() + oct(path.stat().st_mode))
    return seen


@pytest.fixture(scope="module")
def walletfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walletfs]:
    root = tmp_path_factory.mktemp("walletfs")
    wallet_dir = root / "wallets"
    outside = root / "outside"
    wallet_dir.mkdir()
    outside.mkdir()
    uid = str(uuid.uuid4())
    canary = root / "canary"
    canary.write_bytes(b"canary: must never be read, written, moved or deleted through walletfs\n")
    (outside / f"seller_escrow_{uid}_round_1.keys").write_bytes(secrets.token_bytes(2048))  # a wallet outside
    (outside / f"seller_escrow_{uid}_round_1").write_bytes(secrets.token_bytes(4096))
    valid = f"buyer_escrow_{uid}_round_1"
    (wallet_dir / f"{valid}.keys").write_bytes(secrets.token_bytes(2048))
    (wallet_dir / valid).write_bytes(secrets.token_bytes(4096))
    # Wallet-named symlinks pointing outside the directory (the cache, the keys, both).
    linked = f"vendor_escrow_{uid}_round_1"
    (wallet_dir / f"{linked}.keys").symlink_to(canary)
    (wallet_dir / linked).symlink_to("../canary")
    keys_link = f"arbiter_escrow_{uid}_round_2_input"
    (wallet_dir / f"{keys_link}.keys").symlink_to(outside / f"seller_escrow_{uid}_round_1.keys")
    # A wallet-named directory (not a regular file) and a symlink to a directory.
    (wallet_dir / f"judge_escrow_{uid}_round_1.keys").mkdir()
    (wallet_dir / f"agent_escrow_{uid}_round_1.keys").symlink_to(outside, target_is_directory=True)
    for path in wallet_dir.iterdir():
        if not path.is_symlink() and path.is_file():
            path.chmod(0o600)

    run = tmp_path_factory.mktemp("walletfs-run")  # token and log: outside the snapshot
    token = secrets.token_urlsafe(32)
    token_file = run / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    host = "127.0.0.1"
    port = free_port(host)
    log = run / "walletfs.log"
    binary = Path(sys.executable).parent / "escrow-operator"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                "walletfs",
                "--dir",
                str(wallet_dir),
                "--bind",
                host,
                "--port",
                str(port),
                "--token-file",
                str(token_file),
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Walletfs(host, port, token, root, wallet_dir, log, proc, uid, httpx.Client(timeout=30))
    try:
        wait_serving(
            proc,
            lambda: server.http.get(f"{server.url}/healthz", timeout=2).status_code == 200,
            what="walletfs",
            interval=0.05,
            detail=lambda: log.read_text(errors="replace"),
        )
        yield server
    finally:
        server.http.close()
        stop(proc)


@pytest.fixture(scope="module")
def walletfs_before(walletfs: Walletfs) -> dict[str, tuple[str, str]]:
    before = snapshot(walletfs.root)
    assert f"wallets/buyer_escrow_{walletfs.uid}_round_1.keys" in before
    return before


@pytest.fixture
def unchanged(walletfs: Walletfs, walletfs_before: dict[str, tuple[str, str]]) -> Iterator[Walletfs]:
    """The walletfs server; after the test, nothing under its root (inside the directory or out) changed."""
    assert snapshot(walletfs.root) == walletfs_before
    yield walletfs
    assert snapshot(walletfs.root) == walletfs_before
    assert walletfs.proc.poll() is None, walletfs.log.read_text(errors="replace")


# Names, with U standing for the escrow uid of the fixture's files.
VALID = "buyer_escrow_U_round_1"
WORK = "buyer_escrow_U_work_1_0badcafe"  # a valid name that does not exist
LINKED = "vendor_escrow_U_round_1"  # cache and keys are symlinks out of the directory
KEYS_LINK = "arbiter_escrow_U_round_2_input"  # keys is a symlink to a wallet outside
DIR_KEYS = "judge_escrow_U_round_1"  # keys is a directory
DIR_LINK = "agent_escrow_U_round_1"  # keys is a symlink to a directory outside
OVERLONG = "buyer_escrow_U_round_1" + "x" * 300

BAD_NAMES = [
    pytest.param("../canary", "is a path", id="dotdot-slash"),
    pytest.param("../../../../etc/passwd", "is a path", id="deep-traversal"),
    pytest.param(f"../wallets/{VALID}", "is a path", id="traversal-back-in"),
    pytest.param("../outside/seller_escrow_U_round_1", "is a path", id="traversal-to-outside-wallet"),
    pytest.param("%2e%2e%2fcanary", "is not an escrow wallet name", id="url-encoded-in-json"),
    pytest.param("..", "is a path", id="dotdot"),
    pytest.param(".", "is a path", id="dot"),
    pytest.param("/etc/passwd", "is a path", id="absolute"),
    pytest.param(f"/tmp/{VALID}", "is a path", id="absolute-wallet-name"),
    pytest.param(VALID + "\x00", "must not contain NUL", id="nul-suffix"),
    pytest.param(VALID + "\x00/../../canary", "must not contain NUL", id="nul-traversal"),
    pytest.param(OVERLONG, "must be at most 200 characters", id="overlong"),
    pytest.param("canary", "is not an escrow wallet name", id="not-escrow-pattern"),
    pytest.param(VALID + ".keys", "is not an escrow wallet name", id="with-keys-suffix"),
    pytest.param(".walletfs-tmp-0123456789abcdef", "is not an escrow wallet name", id="temp-file-name"),
    pytest.param("BUYER_escrow_U_round_1", "is not an escrow wallet name", id="uppercase-role"),
    pytest.param("buyer_escrow_U_round_1 ", "is not an escrow wallet name", id="trailing-space"),
    pytest.param("buyer_escrow_U_round_1\n", "is not an escrow wallet name", id="trailing-newline"),
    pytest.param("k\u00e4ufer_escrow_U_round_1", "must be ASCII", id="non-ascii"),
    pytest.param("", "must not be empty", id="empty"),
    pytest.param("buyer_escrow_U_round_0", "is not an escrow wallet name", id="round-0"),
    pytest.param("buyer_escrow_U_round_1_final/..", "is a path", id="wallet-then-dotdot"),
]

UNSAFE_NAMES = [
    pytest.param(LINKED, "is a symlink", id="symlinked-wallet"),
    pytest.param(KEYS_LINK, "is a symlink", id="symlinked-keys"),
    pytest.param(DIR_KEYS, "is not a regular file", id="directory-keys"),
    pytest.param(DIR_LINK, "is a symlink", id="symlink-to-directory"),
]


def real(walletfs: Walletfs, name: str) -> str:
    return name.replace("_U_", f"_{walletfs.uid}_")


def call(walletfs: Walletfs, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request with the right token."""
    headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {walletfs.token}"}
    return walletfs.http.request(method, walletfs.url + path, headers=headers, **kwargs)


def assert_refused(response: httpx.Response | tuple[int, dict[str, str], bytes], status: int, expected: str) -> None:
    if isinstance(response, httpx.Response):
        code, body = response.status_code, response.content
    else:
        code, _, body = response
    assert code == status, (code, body[:500])
    error = json.loads(body)["error"]
    assert expected in error, error


@pytest.mark.parametrize("endpoint", ["copy", "publish"])
@pytest.mark.parametrize("side", ["source", "target"])
@pytest.mark.parametrize(("bad", "expected"), BAD_NAMES + UNSAFE_NAMES)
def test_walletfs_transfer_refuses_bad_names(
    unchanged: Walletfs, endpoint: str, side: str, bad: str, expected: str
) -> None:
    fs = unchanged
    # The other side is always real: the source a real wallet, the target a free valid name, so a missing
    # check would copy or move a real file (onto the canary, out of the directory...) and show in the snapshot.
    names = {"source": real(fs, VALID), "target": real(fs, WORK)}
    names[side] = real(fs, bad)
    response = call(fs, "POST", f"/v1/{endpoint}", json=names)
    assert_refused(response, 400, expected)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize(
    ("bad", "expected"), [p for p in BAD_NAMES if p.id != "empty"] + UNSAFE_NAMES
)  # "" is the list
def test_walletfs_stat_and_delete_refuse_bad_names(unchanged: Walletfs, method: str, bad: str, expected: str) -> None:
    fs = unchanged
    status, headers, body = fs.raw(
        method, f"/v1/wallets/{quote(real(fs, bad), safe='')}", headers={"Authorization": f"Bearer {fs.token}"}
    )
    assert_refused((status, headers, body), 400, expected)


RAW_TARGETS = [
    pytest.param("/v1/wallets/..%2fcanary", id="encoded-slash"),
    pytest.param("/v1/wallets/%2e%2e%2fcanary", id="fully-encoded"),
    pytest.param("/v1/wallets/%2e%2e%2f%2e%2e%2fcanary", id="fully-encoded-twice"),
    pytest.param("/v1/wallets/..%252fcanary", id="double-encoded"),
    pytest.param("/v1/wallets/../../canary", id="literal-dotdot"),
    pytest.param("/v1/wallets/%2e%2e/%2e%2e/canary", id="encoded-dots-literal-slash"),
    pytest.param("/v1/wallets/..\\..\\canary", id="backslashes"),
    pytest.param("/v1/wallets/%2fetc%2fpasswd", id="encoded-absolute"),
    pytest.param("/v1/wallets//etc/passwd", id="double-slash-absolute"),
    pytest.param("/v1/wallets/buyer_escrow_U_round_1%00", id="encoded-nul"),
    pytest.param("/v1/wallets/buyer_escrow_U_round_1%00.keys", id="encoded-nul-suffix"),
    pytest.param("/v1/wallets/buyer_escrow_U_round_1%2f..%2f..%2fcanary", id="wallet-then-traversal"),
    pytest.param("/v1/wallets/" + "b" * 9000, id="9000-char-name"),
    pytest.param("/v1/wallets/vendor_escrow_U_round_1", id="symlinked-wallet"),
    pytest.param("/v1/wallets/buyer_escrow_U_round_1.keys", id="keys-suffix"),
    pytest.param("/v1/wallets/k%C3%A4ufer_escrow_U_round_1", id="non-ascii"),
    pytest.param("/v1/wallets?uid=../..", id="list-uid-traversal"),
    pytest.param("/v1/wallets?uid=%2e%2e%2f", id="list-uid-encoded"),
    pytest.param("/v1/wallets?uid=U%00", id="list-uid-nul"),
    pytest.param("/v1/wallets?uid=U/..", id="list-uid-slash"),
    pytest.param("/v1/wallets?uid=" + "a" * 300, id="list-uid-overlong"),
    pytest.param("/v1/wallets?uid=", id="list-uid-empty"),
    pytest.param("/v1/wallets?uid=*", id="list-uid-glob"),
    pytest.param("/v1/../../canary", id="route-dotdot"),
    pytest.param("/v1/copy/../../canary", id="copy-dotdot"),
]


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST", "PUT"])
@pytest.mark.parametrize("target", RAW_TARGETS)
def test_walletfs_raw_paths_are_refused(unchanged: Walletfs, method: str, target: str) -> None:
    """Request targets sent byte for byte (no client-side normalization): refused, never a 2xx or 5xx."""
    fs = unchanged
    target = target.replace("_U_", f"_{fs.uid}_").replace("uid=U", f"uid={fs.uid}")
    body = (
        json.dumps({"source": real(fs, VALID), "target": real(fs, WORK)}).encode()
        if method in ("POST", "PUT")
        else None
    )
    status, _, payload = fs.raw(
        method, target, body, {"Authorization": f"Bearer {fs.token}", "Content-Type": "application/json"}
    )
    assert 400 <= status < 500, (status, payload[:300])
    assert status != 401, payload  # refused for what it is, not for the token


def test_walletfs_list_skips_symlinks_and_directories(unchanged: Walletfs) -> None:
    fs = unchanged
    response = call(fs, "GET", "/v1/wallets")
    assert response.status_code == 200, response.text
    assert response.json() == {"wallets": [{"name": real(fs, VALID), "complete": True}]}
    response = call(fs, "GET", "/v1/wallets", params={"uid": fs.uid})
    assert response.json() == {"wallets": [{"name": real(fs, VALID), "complete": True}]}
    # Control: the server does work on this directory (so the refusals above are refusals, not misconfiguration).
    response = call(fs, "GET", f"/v1/wallets/{real(fs, VALID)}")
    assert response.status_code == 200, response.text
    on_disk = {
        name: hashlib.sha256((fs.wallet_dir / name).read_bytes()).hexdigest()
        for name in (real(fs, VALID), real(fs, VALID) + ".keys")
    }
    assert {name: info["sha256"] for name, info in response.json()["files"].items()} == on_disk
    assert response.json()["exists"] is True


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(b"{not json", "request body must be JSON", id="not-json"),
        pytest.param(b"", "request body must be JSON", id="empty"),
        pytest.param(b"\xff\xfe\x00", "request body must be JSON", id="binary"),
        pytest.param(b"[]", "request body must be", id="array"),
        pytest.param(b'{"source": "buyer_escrow_U_round_1"}', "request body must be", id="no-target"),
        pytest.param(b'{"source": 1, "target": 2}', "request body must be", id="integers"),
        pytest.param(
            b'{"source": ["../canary"], "target": "buyer_escrow_U_work_1_0badcafe"}',
            "request body must be",
            id="list-name",
        ),
        pytest.param(
            b'{"source": "buyer_escrow_U_round_1", "target": "buyer_escrow_U_work_1_0badcafe", "overwrite": true}',
            "request body must be",
            id="extra-field",
        ),
        pytest.param(
            b'{"source": "buyer_escrow_U_round_1", "target": "buyer_escrow_U_round_1"}',
            "source and target must be different wallets",
            id="same-wallet",
        ),
    ],
)
@pytest.mark.parametrize("endpoint", ["copy", "publish"])
def test_walletfs_malformed_bodies_are_refused(unchanged: Walletfs, endpoint: str, body: bytes, expected: str) -> None:
    fs = unchanged
    body = body.replace(b"_U_", f"_{fs.uid}_".encode())
    response = call(fs, "POST", f"/v1/{endpoint}", content=body, headers={"Content-Type": "application/json"})
    assert_refused(response, 400, expected)


AUTH_HEADERS = [
    pytest.param(None, id="no-header"),
    pytest.param("Bearer wrong-token", id="wrong-token"),
    pytest.param("Bearer", id="bearer-without-token"),
    pytest.param("Bearer ", id="bearer-empty"),
    pytest.param("TOKEN", id="bare-token"),
    pytest.param("Basic TOKEN", id="basic-scheme"),
    pytest.param("Bearer TOKENx", id="token-plus-char"),
    pytest.param("Bearer TOKEN[:-1]", id="token-minus-char"),
    pytest.param("Bearer TOKEN TOKEN", id="token-twice"),
    pytest.param("Bearer \u00e4TOKEN", id="non-ascii-token"),
]


def _endpoints(fs: Walletfs) -> list[tuple[str, str, bytes | None]]:
    pair = json.dumps({"source": real(fs, VALID), "target": real(fs, WORK)}).encode()
    return [
        ("POST", "/v1/copy", pair),
        ("POST", "/v1/publish", pair),
        ("DELETE", f"/v1/wallets/{real(fs, VALID)}", None),
        ("GET", f"/v1/wallets/{real(fs, VALID)}", None),
        ("GET", "/v1/wallets", None),
        ("GET", f"/v1/wallets?uid={fs.uid}", None),
    ]


@pytest.mark.parametrize("authorization", AUTH_HEADERS)
def test_walletfs_requires_the_token(unchanged: Walletfs, authorization: str | None) -> None:
    """Requests that would succeed (copy, publish and delete of a real wallet) are refused without the token."""
    fs = unchanged
    header = None
    if authorization is not None:
        header = authorization.replace("TOKEN[:-1]", fs.token[:-1]).replace("TOKEN", fs.token)
    for method, path, payload in _endpoints(fs):
        headers = {"Content-Type": "application/json"}
        if header is not None:  # sent as is (latin-1 on the wire), even where httpx would refuse it
            headers["Authorization"] = header.encode("utf-8").decode("latin-1")
        status, response_headers, body = fs.raw(method, path, payload, headers)
        assert status == 401, (method, path, status, body[:300])
        assert response_headers.get("www-authenticate") == "Bearer", response_headers
        assert json.loads(body) == {"error": "missing or invalid bearer token"}


def test_walletfs_probes_need_no_token_and_reveal_nothing(unchanged: Walletfs) -> None:
    for probe in ("/healthz", "/readyz"):
        response = unchanged.http.get(unchanged.url + probe)
        assert response.status_code == 200 and response.json() == {"status": "ok"}, response.text


@pytest.mark.parametrize("endpoint", ["copy", "publish"])
@pytest.mark.parametrize(
    ("size", "with_token", "status"),
    [
        pytest.param(MAX_BODY_BYTES + 1, True, 413, id="limit-plus-1"),
        pytest.param(1 << 20, True, 413, id="1MiB"),
        pytest.param(8 << 20, True, 413, id="8MiB"),
        pytest.param(1 << 20, False, 401, id="1MiB-without-token"),
    ],
)
def test_walletfs_refuses_oversize_bodies(
    unchanged: Walletfs, endpoint: str, size: int, with_token: bool, status: int
) -> None:
    """A body over the limit is refused even when it names a real wallet and a free target."""
    fs = unchanged
    pair = {"source": real(fs, VALID), "target": real(fs, WORK)}
    head = json.dumps(pair)[:-1] + ', "pad": "'
    body = (head + "x" * (size - len(head) - 2) + '"}').encode()
    assert len(body) == size
    headers = {"Content-Type": "application/json"}
    if with_token:
        headers["Authorization"] = f"Bearer {fs.token}"
    response = fs.http.post(f"{fs.url}/v1/{endpoint}", content=body, headers=headers)
    assert response.status_code == status, response.text[:300]
    assert "error" in response.json()


def _log_records(log: str) -> list[str]:
    """The log split into records (a record starts with a timestamp; tracebacks are continuation lines)."""
    records: list[str] = []
    for line in log.splitlines():
        if (line[:4].isdigit() and line[4:5] == "-") or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return records


def _parser_refusal(record: str) -> bool:
    """aiohttp's own report of a request line it refused before any walletfs code ran (see the xfail below)."""
    return "ERROR aiohttp.server: Error handling request" in record and "aiohttp.http_exceptions.LineTooLong" in record


def test_walletfs_logged_no_traceback(walletfs: Walletfs, walletfs_before: dict[str, tuple[str, str]]) -> None:
    """Last of the walletfs tests: after all the refusals, no walletfs handler crashed or hit a file error."""
    records = [r for r in _log_records(walletfs.log.read_text(errors="replace")) if not _parser_refusal(r)]
    crashes = [r for r in records if "Traceback" in r or "File operation failed" in r]
    assert not crashes, "\n".join(crashes)[-4000:]
    assert snapshot(walletfs.root) == walletfs_before
    assert walletfs.token not in walletfs.log.read_text(errors="replace")


def test_walletfs_overlong_request_line_logs_no_traceback(unchanged: Walletfs) -> None:
    fs = unchanged
    status, _, _ = fs.raw("GET", "/v1/wallets/" + "b" * 9000)
    assert status == 400
    assert fs.http.get(fs.url + "/healthz").status_code == 200  # the refusal above has been handled and logged
    records = _log_records(fs.log.read_text(errors="replace"))
    assert not any(_parser_refusal(r) or "Traceback" in r for r in records)
    assert any("refused a malformed request: LineTooLong" in r for r in records)


# --------------------------------------------------------------------------------------------- 4. wallet-rpc


@pytest.fixture(scope="module")
def wallet_rpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with standalone_wallet_rpc(tmp_path_factory.mktemp("rpc-wallets"), ip="127.0.0.61") as rpc:
        yield rpc


GET_VERSION = {"jsonrpc": "2.0", "id": "0", "method": "get_version"}


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(None, id="no-credentials"),
        pytest.param(("inspector", "wrong-password"), id="wrong-password"),
        pytest.param(("intruder", "PASSWORD"), id="wrong-user"),
        pytest.param(("inspector", ""), id="empty-password"),
        pytest.param(("", ""), id="empty-user-and-password"),
        pytest.param("basic", id="basic-with-right-credentials"),
    ],
)
def test_wallet_rpc_refuses_bad_credentials(wallet_rpc: Any, auth: Any) -> None:
    right: httpx.DigestAuth = wallet_rpc.auth
    user, password = _digest_credentials(right)
    if auth is None:
        client_auth: httpx.Auth | None = None
    elif auth == "basic":
        client_auth = httpx.BasicAuth(user, password)
    else:
        client_auth = httpx.DigestAuth(auth[0], password if auth[1] == "PASSWORD" else auth[1])
    response = httpx.post(wallet_rpc.url, json=GET_VERSION, auth=client_auth, timeout=10)
    assert response.status_code == 401, response.text[:300]
    assert "result" not in response.text
    # Control: the right digest credentials work on the same process.
    ok = httpx.post(wallet_rpc.url, json=GET_VERSION, auth=right, timeout=10)
    assert ok.status_code == 200 and "version" in ok.json()["result"], ok.text[:300]


@pytest.mark.parametrize("method", ["open_wallet", "create_wallet", "stop_wallet"])
def test_wallet_rpc_refuses_state_changing_calls_without_credentials(wallet_rpc: Any, method: str) -> None:
    response = httpx.post(
        wallet_rpc.url,
        json={
            "jsonrpc": "2.0",
            "id": "0",
            "method": method,
            "params": {"filename": "x", "password": "", "language": "English"},
        },
        timeout=10,
    )
    assert response.status_code == 401, response.text[:300]
    assert httpx.post(wallet_rpc.url, json=GET_VERSION, auth=wallet_rpc.auth, timeout=10).status_code == 200


def _digest_credentials(auth: httpx.DigestAuth) -> tuple[str, str]:
    return auth._username.decode(), auth._password.decode()  # the helper exposes no public accessor

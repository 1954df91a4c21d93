"""Admission: the apiserver alone (CRD schema, CEL rules, pruning, defaults, the status subresource)
decides what Escrows and WalletPools may be stored; no operator runs in this module.

1. A table of invalid Escrows and WalletPools, each refused by the real apiserver with a message that
   names the field or the rule; malformed request bodies are refused; the last valid value of each bound
   is accepted; unknown fields are pruned (or refused with strict field validation); null takes the
   default; a client cannot create an object with a status of its own.
2. Mutation: specs that must not change after creation cannot be changed (patch, replace); the fields
   that may change do.

That the operator never sees a refused object is tested with an operator running, in test_operator_refusals.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from escrow_operator.api import ESCROW_PLURAL, GROUP, PAYOUT_PLURAL, VERSION, WALLETPOOL_PLURAL

API_VERSION = f"{GROUP}/{VERSION}"
PLURALS = {"Escrow": ESCROW_PLURAL, "WalletPool": WALLETPOOL_PLURAL, "EscrowPayout": PAYOUT_PLURAL}
ADDRESS = "4" + "A" * 94
ONE_TARGET = "give either destinations (amounts to addresses) or sweepTo (everything unlocked to one address)"
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


def payout(**spec: Any) -> dict[str, Any]:
    """An EscrowPayout sweeping to a valid address unless the case overrides (or, with sweepTo=..., drops) it."""
    spec = {"escrowRef": "deal", "signers": ["buyer", "vendor"], "sweepTo": ADDRESS, **spec}
    return obj("EscrowPayout", {k: v for k, v in spec.items() if v is not ...})


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

    The operators of later modules watch all namespaces; they must not find valid pools of these tests
    (one asks for 256 replicas) in namespaces that are still terminating.
    """
    yield
    objects = client.CustomObjectsApi(kube)
    for plural in (ESCROW_PLURAL, WALLETPOOL_PLURAL, PAYOUT_PLURAL):
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
    # -- Escrow: payout addresses (fixed when the escrow is made)
    pytest.param(
        esc(payoutAddresses=[{"role": "judge", "address": "4" * 95}]),
        "every payoutAddresses role must be one of the participants",
        id="payout-address-of-a-stranger-role",
    ),
    pytest.param(
        esc(payoutAddresses=[{"role": "buyer", "address": "4" * 95}, {"role": "buyer", "address": "8" * 95}]),
        "spec.payoutAddresses[1]: Duplicate value",
        id="payout-address-role-twice",
    ),
    pytest.param(
        esc(payoutAddresses=[{"role": "buyer", "address": "0" * 95}]),
        "spec.payoutAddresses[0].address in body should match",
        id="payout-address-not-base58",
    ),
    pytest.param(
        esc(payoutAddresses=[]), "spec.payoutAddresses in body should have at least 1 items", id="no-payout-address"
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
    pytest.param(esc(amount=0), "spec.amount in body should be greater than or equal to 1", id="amount-zero"),
    pytest.param(esc(amount=-5), "spec.amount in body should be greater than or equal to 1", id="amount-negative"),
    pytest.param(
        esc(amount=10**18 + 1),
        "spec.amount in body should be less than or equal to 1000000000000000000",
        id="amount-above-a-million-xmr",
    ),
    pytest.param(
        esc(confirmations=0), "spec.confirmations in body should be greater than or equal to 1", id="confirmations-zero"
    ),
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
    pytest.param(pool(network="devnet"), 'spec.network: Unsupported value: "devnet"', id="network-devnet"),
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
    pytest.param(
        pool(daemonZmq="node:18084"), "daemonZmq is the publisher of the pool's daemon", id="zmq-on-offline-pool"
    ),
    pytest.param(
        pool(daemon="node:18081", daemonZmq="tcp://node:18084"),
        "spec.daemonZmq in body should match",
        id="zmq-url-not-host-port",
    ),
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
    # -- EscrowPayout
    pytest.param(payout(sweepTo=...), ONE_TARGET, id="payout-no-target"),
    pytest.param(payout(destinations=[{"address": ADDRESS, "amount": 1}]), ONE_TARGET, id="payout-two-targets"),
    pytest.param(payout(escrowRef=...), "spec.escrowRef: Required value", id="payout-no-escrow"),
    pytest.param(payout(signers=[]), "spec.signers in body should have at least 1 items", id="payout-no-signers"),
    pytest.param(payout(signers=["buyer", "buyer"]), "signers must be unique", id="payout-duplicate-signers"),
    pytest.param(payout(signers=["Buyer"]), ROLE_RULE, id="payout-signer-uppercase"),
    pytest.param(payout(sweepTo="4short"), "spec.sweepTo in body should be at least 95 chars long", id="payout-short"),
    pytest.param(
        payout(sweepTo=..., destinations=[{"address": ADDRESS, "amount": 0}]),
        "spec.destinations[0].amount in body should be greater than or equal to 1",
        id="payout-amount-zero",
    ),
    pytest.param(
        payout(sweepTo=..., destinations=[{"address": ADDRESS, "amount": 10**18 + 1}]),
        "spec.destinations[0].amount in body should be less than or equal to 1000000000000000000",
        id="payout-amount-too-large",
    ),
    pytest.param(
        payout(sweepTo=..., destinations=[{"amount": 5}]),
        "spec.destinations[0].address: Required value",
        id="payout-destination-no-address",
    ),
    pytest.param(payout(priority=5), "spec.priority in body should be less than or equal to 4", id="payout-priority-5"),
    pytest.param(
        payout(confirmations=0),
        "spec.confirmations in body should be greater than or equal to 1",
        id="payout-confirm-0",
    ),
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
        pytest.param(pool(daemon="node:18081", daemonZmq="node:18084"), id="pool-daemon-and-zmq"),
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
            "confirmations": 10,
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
        "confirmations": 10,
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

ESCROW_SPEC = {
    "poolRef": "wallets",
    "threshold": 1,
    "participants": ["buyer", "vendor"],
    "walletRetention": "Delete",
    "confirmations": 10,
}
#: The defaults' retention: a change from Retain to Delete is refused as well as the other way round.
RETAINED_SPEC = {**ESCROW_SPEC, "walletRetention": "Retain"}
ESCROW_IMMUTABLE = "spec is immutable once the Escrow is created; delete and recreate it"


@pytest.mark.parametrize(
    ("spec", "change"),
    [
        pytest.param(ESCROW_SPEC, {"threshold": 2}, id="threshold"),
        pytest.param(ESCROW_SPEC, {"participants": ["buyer", "judge"]}, id="participants-renamed"),
        pytest.param(ESCROW_SPEC, {"participants": ["buyer", "vendor", "arbiter"]}, id="participants-added"),
        pytest.param(ESCROW_SPEC, {"participants": ["vendor", "buyer"]}, id="participants-reordered"),
        pytest.param(ESCROW_SPEC, {"participants": None}, id="participants-removed-so-defaulted"),
        pytest.param(ESCROW_SPEC, {"poolRef": "other"}, id="poolRef"),
        pytest.param(ESCROW_SPEC, {"walletRetention": "Retain"}, id="walletRetention"),
        pytest.param(RETAINED_SPEC, {"walletRetention": "Delete"}, id="walletRetention-retain-to-delete"),
        pytest.param(ESCROW_SPEC, {"walletRetention": None}, id="walletRetention-removed-so-defaulted"),
        pytest.param(ESCROW_SPEC, {"amount": 10**12}, id="amount-added"),
        pytest.param(ESCROW_SPEC, {"confirmations": 3}, id="confirmations"),
        pytest.param(
            ESCROW_SPEC, {"payoutAddresses": [{"role": "buyer", "address": "4" * 95}]}, id="payoutAddresses-added"
        ),
        pytest.param(
            {**ESCROW_SPEC, "payoutAddresses": [{"role": "buyer", "address": "4" * 95}]},
            {"payoutAddresses": [{"role": "buyer", "address": "8" * 95}]},
            id="payoutAddresses-changed",
        ),
    ],
)
def test_escrow_spec_cannot_change(
    kube: client.ApiClient,
    namespace: str,
    crds: None,
    no_leftovers: None,
    spec: dict[str, Any],
    change: dict[str, Any],
) -> None:
    objects = client.CustomObjectsApi(kube)
    create(kube, namespace, obj("Escrow", dict(spec), name="fixed"))
    with pytest.raises(ApiException) as refused:
        objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL, "fixed", {"spec": change})
    assert refused.value.status == 422, refused.value.body
    assert ESCROW_IMMUTABLE in message_of(refused.value)
    assert objects.get_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL, "fixed")["spec"] == spec


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

"""The API models and the CRDs generated from them (escrow_operator.api)."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from escrow_operator import shapes
from escrow_operator.api import (
    GROUP,
    MAX_PARTICIPANTS,
    MIN_PARTICIPANTS,
    VERSION,
    Condition,
    ConditionStatus,
    Escrow,
    EscrowSpec,
    EscrowStatus,
    Network,
    PoolStorage,
    WalletPool,
    WalletPoolSpec,
    WalletPoolStatus,
    WalletRetention,
    crdgen,
    get_condition,
    set_condition,
)
from escrow_operator.api.escrow import MIN_THRESHOLDS, SHAPE_FITS_SECRET, SHAPE_TOO_LARGE, shape_rule

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"
TYPES = {"object", "array", "string", "integer", "number", "boolean"}
JUNCTORS = {"allOf", "anyOf", "oneOf", "not"}


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _crd(plural: str) -> dict[str, Any]:
    return crdgen.crds()[f"{GROUP}_{plural}.yaml"]


# ---------------------------------------------------------------------------------------------------
# Generated files


def test_committed_crds_match_the_models() -> None:
    rendered = crdgen.render_crds()
    assert sorted(rendered) == [
        "xmrescrow.dev_escrowpayouts.yaml",
        "xmrescrow.dev_escrows.yaml",
        "xmrescrow.dev_walletpools.yaml",
    ]
    for name, text in rendered.items():
        path = CRD_DIR / name
        committed = path.read_text(encoding="utf-8") if path.is_file() else None
        assert committed == text, (
            f"{path} differs from the pydantic models: run `python -m escrow_operator.api.crdgen` and commit crds/"
        )


def test_check_mode(tmp_path: Path) -> None:
    assert crdgen.main(["--check", "--output-dir", str(tmp_path)]) == 1
    assert crdgen.main(["--output-dir", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--output-dir", str(tmp_path)]) == 0
    (tmp_path / "xmrescrow.dev_escrows.yaml").write_text("stale\n", encoding="utf-8")
    assert crdgen.main(["--check", "--output-dir", str(tmp_path)]) == 1


def test_yaml_round_trips() -> None:
    for name, text in crdgen.render_crds().items():
        assert yaml.safe_load(text) == crdgen.crds()[name]


# ---------------------------------------------------------------------------------------------------
# Structural schema checker (apiextensions.k8s.io/v1 rules that a unit test can check)


def _check_value(schema: dict[str, Any], value: Any, path: str) -> None:
    """A default must validate against its schema (the API server refuses the CRD otherwise)."""
    kind = schema.get("type")
    expected = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool}
    if kind:
        assert isinstance(value, expected[kind]), f"{path}: default {value!r} is not {kind}"
        if kind == "integer":
            assert not isinstance(value, bool), path
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: default {value!r} not in enum"
    if isinstance(value, str):
        assert len(value) >= schema.get("minLength", 0), path
        assert len(value) <= schema.get("maxLength", len(value)), path
        if "pattern" in schema:
            assert re.search(schema["pattern"], value), f"{path}: default {value!r} does not match pattern"
    if isinstance(value, int) and not isinstance(value, bool):
        assert value >= schema.get("minimum", value), path
        assert value <= schema.get("maximum", value), path
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0), path
        assert len(value) <= schema.get("maxItems", len(value)), path
        for index, item in enumerate(value):
            _check_value(schema["items"], item, f"{path}[{index}]")
    if isinstance(value, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        properties = schema.get("properties", {})
        for key, item in value.items():
            assert key in properties, f"{path}: default has unknown field {key!r} (it would be pruned)"
            _check_value(properties[key], item, f"{path}.{key}")
        for key in schema.get("required", []):
            assert key in value, f"{path}: default lacks required {key!r}"


def _bounded(schema: dict[str, Any], path: str) -> None:
    """Under a CEL rule every list and string needs a bound, or the cost estimator may refuse the rule."""
    kind = schema.get("type")
    assert not schema.get("x-kubernetes-preserve-unknown-fields"), f"{path}: free-form data under a CEL rule"
    if kind == "array":
        assert "maxItems" in schema, f"{path}: list under a CEL rule needs maxItems"
        _bounded(schema["items"], f"{path}[*]")
    elif kind == "string":
        assert "maxLength" in schema or "enum" in schema, f"{path}: string under a CEL rule needs maxLength"
    elif kind == "object":
        for name, child in schema.get("properties", {}).items():
            _bounded(child, f"{path}.{name}")
        if isinstance(schema.get("additionalProperties"), dict):
            _bounded(schema["additionalProperties"], f"{path}.*")


def assert_structural(schema: dict[str, Any], path: str = "") -> None:
    where = path or "<root>"
    for key in ("$ref", "$defs", "title", "uniqueItems", "const", "examples"):
        assert key not in schema, f"{where}: {key} is not allowed"
    assert not JUNCTORS & set(schema), f"{where}: the generated schema should need no anyOf/oneOf/allOf/not"
    assert (
        schema.get("type") in TYPES
        or schema.get("x-kubernetes-preserve-unknown-fields") is True
        or schema.get("x-kubernetes-int-or-string") is True
    ), f"{where}: every node needs a type"
    if schema.get("x-kubernetes-int-or-string"):
        assert "type" not in schema, where
    if "exclusiveMinimum" in schema or "exclusiveMaximum" in schema:
        assert all(isinstance(schema.get(k, True), bool) for k in ("exclusiveMinimum", "exclusiveMaximum")), where
    assert not ("properties" in schema and "additionalProperties" in schema), (
        f"{where}: properties and additionalProperties"
    )
    assert not isinstance(schema.get("additionalProperties"), bool), f"{where}: additionalProperties must be a schema"
    if "nullable" in schema:
        assert schema["nullable"] is True, where

    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        for required in schema.get("required", []):
            assert required in properties, f"{where}: required {required!r} is not a property"
        for name, child in properties.items():
            assert_structural(child, f"{path}.{name}")
        if isinstance(schema.get("additionalProperties"), dict):
            assert_structural(schema["additionalProperties"], f"{path}.*")
    elif kind == "array":
        assert "items" in schema, f"{where}: array without items"
        assert_structural(schema["items"], f"{path}[*]")
        list_type = schema.get("x-kubernetes-list-type")
        assert list_type in (None, "atomic", "set", "map"), where
        if list_type == "map":
            keys = schema["x-kubernetes-list-map-keys"]
            item = schema["items"]
            assert item.get("type") == "object", where
            for key in keys:
                assert key in item.get("required", []) or "default" in item["properties"][key], (
                    f"{where}: map key {key!r} must be required or defaulted"
                )
        else:
            assert "x-kubernetes-list-map-keys" not in schema, where
    else:
        assert "properties" not in schema and "items" not in schema, where

    if "default" in schema:
        _check_value(schema, schema["default"], where)

    rules = schema.get("x-kubernetes-validations", [])
    for rule in rules:
        assert set(rule) == {"rule", "message"}, f"{where}: {rule}"
        assert rule["rule"].strip() and rule["message"].strip(), f"{where}: CEL rule without message: {rule}"
        assert "\n" not in rule["message"], where
    if rules:
        _bounded(schema, where)


@pytest.mark.parametrize("plural", ["escrows", "walletpools"])
def test_crd_is_structural(plural: str) -> None:
    crd = _crd(plural)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.{GROUP}"
    assert crd["spec"]["scope"] == "Namespaced"
    [version] = crd["spec"]["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    schema = _schema(crd)
    assert_structural(schema)
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["required"] == ["spec"]
    # Transition rules (oldSelf) must not sit under a list: the API server cannot correlate old and new.
    _no_transition_rules_under_lists(schema)
    # Printer columns point at fields that exist.
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        if column["jsonPath"] == '.status.conditions[?(@.type=="Funded")].status':
            assert "conditions" in schema["properties"]["status"]["properties"]
            continue
        node = schema
        for part in column["jsonPath"].lstrip(".").split("."):
            node = node["properties"][part]
        assert node["type"] == column["type"], column


def _no_transition_rules_under_lists(schema: dict[str, Any], under_list: bool = False, path: str = "") -> None:
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            assert not under_list, f"{path}: transition rule under a list"
    for name, child in schema.get("properties", {}).items():
        _no_transition_rules_under_lists(child, under_list, f"{path}.{name}")
    if "items" in schema:
        correlatable = schema.get("x-kubernetes-list-type") == "map"
        _no_transition_rules_under_lists(schema["items"], under_list or not correlatable, f"{path}[*]")


def test_escrow_crd_names_and_columns() -> None:
    crd = _crd("escrows")
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("Escrow", "escrows", ["esc"])
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert [name for name, c in columns.items() if c.get("priority", 0) == 0] == [
        "Phase",
        "Round",
        "Address",
        "Received",
        "Confirmations",
        "Age",
    ]
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Address"]["jsonPath"] == ".status.address"
    spec = _schema(crd)["properties"]["spec"]
    assert {
        "rule": "self == oldSelf",
        "message": "spec is immutable once the Escrow is created; delete and recreate it",
    } in (spec["x-kubernetes-validations"])
    participants = spec["properties"]["participants"]
    assert (participants["minItems"], participants["maxItems"]) == (2, 16)
    assert participants["items"]["pattern"] == "^[a-z][a-z0-9]{0,15}$"
    assert participants["items"]["maxLength"] == 16
    assert participants["x-kubernetes-validations"][0]["message"] == "participants must be unique"
    # kubectl wait --for=condition=Ready reads status.conditions[].type/status.
    conditions = _schema(crd)["properties"]["status"]["properties"]["conditions"]
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_payout_crd_columns_show_xmr() -> None:
    version = _crd("escrowpayouts")["spec"]["versions"][0]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert [name for name, c in columns.items() if c.get("priority", 0) == 0] == [
        "Escrow",
        "Phase",
        "Amount",
        "Confirmations",
        "Age",
    ]
    assert (columns["Amount"]["jsonPath"], columns["Amount"]["type"]) == (".status.amountXmr", "string")
    assert (columns["Fee"]["jsonPath"], columns["Fee"]["priority"]) == (".status.feeXmr", 1)
    status = _schema(_crd("escrowpayouts"))["properties"]["status"]["properties"]
    assert (status["amount"]["type"], status["fee"]["type"]) == ("integer", "integer")


def test_walletpool_crd_scale_and_columns() -> None:
    crd = _crd("walletpools")
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("WalletPool", "walletpools", ["wpool"])
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert columns == ["Replicas", "Ready", "Queued", "Age"]
    spec = _schema(crd)["properties"]["spec"]
    resources = spec["properties"]["resources"]
    assert set(resources["properties"]) == {"limits", "requests"}
    for field in ("limits", "requests"):
        quantity = resources["properties"][field]["additionalProperties"]
        assert quantity["x-kubernetes-int-or-string"] is True and quantity["pattern"].startswith("^(\\+|-)?")
    assert (
        spec["properties"]["storage"]["x-kubernetes-validations"][0]["rule"] == "has(self.claimName) != has(self.size)"
    )


def test_converter_refuses_non_structural_models() -> None:
    class Union(BaseModel):
        value: int | str

    with pytest.raises(crdgen.SchemaError, match="anyOf"):
        crdgen.structural(Union.model_json_schema(), {})

    class Unique(BaseModel):
        value: set[str]

    with pytest.raises(crdgen.SchemaError, match="uniqueItems"):
        crdgen.structural(Unique.model_json_schema(), {})


# ---------------------------------------------------------------------------------------------------
# Defaults: the models' defaults are the CRD's defaults


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """The API server's defaulting, enough for these schemas."""
    if schema.get("type") == "object" and isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = _apply_defaults(child, value[name])
    elif schema.get("type") == "array" and isinstance(value, list):
        value = [_apply_defaults(schema["items"], item) for item in value]
    return value


def test_escrow_defaults_match() -> None:
    spec_schema = _schema(_crd("escrows"))["properties"]["spec"]
    defaulted = _apply_defaults(spec_schema, {"poolRef": "pool"})
    model = EscrowSpec.model_validate({"poolRef": "pool"})
    assert (
        defaulted
        == model.to_api()
        == {
            "poolRef": "pool",
            "threshold": 2,
            "participants": ["buyer", "vendor", "arbiter"],
            "walletRetention": "Retain",
            "confirmations": 10,
        }
    )
    assert model.wallet_retention is WalletRetention.RETAIN
    assert model.steps == 4  # steps 0..3 of the 2-of-3 exchange


def test_walletpool_defaults_match() -> None:
    spec_schema = _schema(_crd("walletpools"))["properties"]["spec"]
    body = {"storage": {"size": "1Gi"}}
    defaulted = _apply_defaults(spec_schema, copy.deepcopy(body))
    model = WalletPoolSpec.model_validate(body)
    assert (
        defaulted
        == model.to_api()
        == {
            "replicas": 6,
            "image": "xmr-escrow/wallet-rpc:0.18.4.0",
            "operatorImage": "xmr-escrow/operator:0.1.0",
            "network": "mainnet",
            "daemon": "offline",
            "storage": {"size": "1Gi"},
        }
    )
    assert model.network is Network.MAINNET and model.offline


def test_every_crd_default_equals_the_model_default() -> None:
    """Walk every model field with a default and compare it with the CRD node."""
    pairs: list[tuple[type[BaseModel], dict[str, Any]]] = []
    for resource, plural in ((Escrow, "escrows"), (WalletPool, "walletpools")):
        schema = _schema(_crd(plural))
        spec_model = resource.model_fields["spec"].annotation
        status_model = resource.model_fields["status"].annotation
        pairs += [(spec_model, schema["properties"]["spec"]), (status_model, schema["properties"]["status"])]
    pairs.append((Condition, _schema(_crd("escrows"))["properties"]["status"]["properties"]["conditions"]["items"]))
    checked = 0
    for model, schema in pairs:
        for name, field in model.model_fields.items():
            node = schema["properties"][field.alias or name]
            if field.is_required() or field.default_factory is not None or field.default is None:
                assert "default" not in node, f"{model.__name__}.{name}"
            else:
                dumped = model.model_validate(_minimal(model))
                assert node["default"] == dumped.to_api()[field.alias or name], f"{model.__name__}.{name}"
                checked += 1
    assert checked >= 12


def _minimal(model: type[BaseModel]) -> dict[str, Any]:
    return {
        EscrowSpec: {"poolRef": "pool"},
        WalletPoolSpec: {"storage": {"claimName": "wallets"}},
        EscrowStatus: {},
        WalletPoolStatus: {},
        Condition: {"type": "Ready", "status": "True", "reason": "Done", "lastTransitionTime": "2024-01-01T00:00:00Z"},
    }[model]


# ---------------------------------------------------------------------------------------------------
# Validation in pydantic mirrors the CRD


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"poolRef": "pool", "threshold": 0}, "greater than or equal to 1"),
        ({"poolRef": "pool", "threshold": 4}, "threshold must not exceed the number of participants"),
        ({"poolRef": "pool", "threshold": 3, "participants": ["buyer", "vendor"]}, "threshold must not exceed"),
        ({"poolRef": "pool", "threshold": 1, "participants": ["buyer"]}, "at least 2 items"),
        ({"poolRef": "pool", "threshold": 2, "participants": [f"p{i}" for i in range(16)]}, SHAPE_TOO_LARGE),
        ({"poolRef": "pool", "threshold": 5, "participants": [f"p{i}" for i in range(12)]}, SHAPE_TOO_LARGE),
        ({"poolRef": "pool", "threshold": 12, "participants": [f"p{i}" for i in range(16)]}, SHAPE_TOO_LARGE),
        ({"poolRef": "pool", "participants": [f"p{i}" for i in range(17)]}, "at most 16 items"),
        ({"poolRef": "pool", "participants": ["buyer", "vendor", "buyer"]}, "participants must be unique"),
        ({"poolRef": "pool", "participants": ["buyer", "ven_dor", "arbiter"]}, "should match pattern"),
        ({"poolRef": "pool", "participants": ["buyer", "ven/dor", "arbiter"]}, "should match pattern"),
        ({"poolRef": "pool", "participants": ["Buyer", "vendor", "arbiter"]}, "should match pattern"),
        ({"poolRef": "pool", "participants": ["1buyer", "vendor", "arbiter"]}, "should match pattern"),
        ({"poolRef": "pool", "participants": ["", "vendor", "arbiter"]}, "at least 1 character"),
        ({"poolRef": "pool", "participants": ["a" * 17, "vendor", "arbiter"]}, "at most 16 characters"),
        ({"poolRef": "pool", "walletRetention": "Keep"}, "'Retain' or 'Delete'"),
        ({"poolRef": "Pool_1"}, "should match pattern"),
        ({"poolRef": "p" * 64}, "at most 63 characters"),
        ({}, "Field required"),
    ],
)
def test_escrow_spec_refuses(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        EscrowSpec.model_validate(spec)


@pytest.mark.parametrize(
    "spec",
    [
        {"poolRef": "pool"},
        {"poolRef": "pool", "threshold": 1, "participants": ["a", "b"]},
        {"poolRef": "pool", "threshold": 2, "participants": ["a", "b"]},
        {
            "poolRef": "pool-1",
            "threshold": 16,
            "participants": [f"p{i}" for i in range(16)],
            "walletRetention": "Delete",
        },
        {"poolRef": "pool", "threshold": 1, "participants": [f"p{i}" for i in range(11)]},
        {"poolRef": "pool", "threshold": 6, "participants": [f"p{i}" for i in range(12)]},
        {"poolRef": "pool", "threshold": 13, "participants": [f"p{i}" for i in range(16)]},
        {"pool_ref": "pool", "wallet_retention": WalletRetention.DELETE},  # Python names work as well
    ],
)
def test_escrow_spec_accepts(spec: dict[str, Any]) -> None:
    EscrowSpec.model_validate(spec)


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ({}, "exactly one of claimName"),
        ({"claimName": "wallets", "size": "1Gi"}, "exactly one of claimName"),
        ({"storageClassName": "nfs"}, "exactly one of claimName"),
        ({"claimName": "wallets", "storageClassName": "nfs"}, "storageClassName applies to a new claim"),
        ({"size": "1GB"}, "should match pattern"),
        ({"size": "-1Gi"}, "should match pattern"),
        ({"size": "0Gi"}, "should match pattern"),
        ({"size": "0"}, "should match pattern"),
        ({"claimName": "Wallets"}, "should match pattern"),
    ],
)
def test_pool_storage_refuses(storage: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        PoolStorage.model_validate(storage)


@pytest.mark.parametrize(
    "storage",
    [{"claimName": "wallets"}, {"size": "10Gi"}, {"size": "1.5Ti", "storageClassName": "nfs"}, {"size": "1e9"}],
)
def test_pool_storage_accepts(storage: dict[str, Any]) -> None:
    assert PoolStorage.model_validate(storage).to_api() == storage


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        ({"replicas": 0}, True),
        ({"replicas": 256}, True),
        ({"replicas": 257}, False),
        ({"replicas": -1}, False),
        ({"network": "regtest"}, True),
        ({"network": "devnet"}, False),
        ({"network": "stagenet"}, True),
        ({"daemon": "offline"}, True),
        ({"daemon": "monerod.monero.svc:18081"}, True),
        ({"daemon": "127.0.0.1:18081"}, True),
        ({"daemon": "[::1]:18081"}, True),
        ({"daemon": "monerod:65536"}, False),
        ({"daemon": "monerod:0"}, False),
        ({"daemon": "monerod"}, False),
        ({"daemon": "http://monerod:18081"}, False),
        ({"daemon": "Offline"}, False),
        ({"image": ""}, False),
        ({"resources": {"limits": {"cpu": "1", "memory": "512Mi"}}}, True),
        ({"resources": {"limits": {"cpu": "lots"}}}, False),
        ({"resources": {"requests": {"cpu": 2, "memory": "1Gi"}}}, True),
    ],
)
def test_walletpool_spec_validation(spec: dict[str, Any], ok: bool) -> None:
    body = {"storage": {"size": "1Gi"}, **spec}
    if ok:
        WalletPoolSpec.model_validate(body)
    else:
        with pytest.raises(ValidationError):
            WalletPoolSpec.model_validate(body)


@pytest.mark.parametrize(
    ("crd_plural", "path", "values"),
    [
        ("walletpools", ("spec", "daemon"), ["offline", "monerod.monero.svc:18081", "[::1]:18081"]),
        ("walletpools", ("spec", "storage", "size"), ["10Gi", "1.5Ti", "1e9", "500M"]),
        ("escrows", ("spec", "poolRef"), ["pool", "pool-1", "1pool"]),
    ],
)
def test_crd_patterns_accept_what_the_models_accept(crd_plural: str, path: tuple[str, ...], values: list[str]) -> None:
    node = _schema(_crd(crd_plural))
    for part in path:
        node = node["properties"][part]
    for value in values:
        assert re.search(node["pattern"], value), value


# ---------------------------------------------------------------------------------------------------
# Shapes whose key-exchange messages fit in the Escrow's Secret (escrow_operator.shapes)

ALL_SHAPES = [(m, n) for n in range(MIN_PARTICIPANTS, MAX_PARTICIPANTS + 1) for m in range(1, n + 1)]


def _crd_shape_rule() -> dict[str, str]:
    spec = _schema(_crd("escrows"))["properties"]["spec"]
    [rule] = [rule for rule in spec["x-kubernetes-validations"] if "self.threshold >= [" in rule["rule"]]
    return rule


def _evaluate_shape_rule(rule: str, threshold: int, participants: int) -> bool:
    """The shape rule's CEL (size(), integer literals and comparisons, a list literal and its index, ||)
    reads the same in Python once the two fields are substituted and || is spelled or."""
    expression = (
        rule.replace("size(self.participants)", str(participants))
        .replace("self.threshold", str(threshold))
        .replace("||", "or")
    )
    assert re.fullmatch(r"[0-9 ()\[\],<>=+-]*(or[0-9 ()\[\],<>=+-]*)*", expression), (
        f"not the expected CEL subset: {rule}"
    )
    return bool(eval(expression, {"__builtins__": {}}))  # digits and operators only (checked above)


def test_crd_shape_rule_is_the_table() -> None:
    rule = _crd_shape_rule()
    assert rule == SHAPE_FITS_SECRET
    assert rule["rule"] == (
        "size(self.participants) <= 11 || self.threshold >= [6, 9, 10, 12, 13][size(self.participants) - 12]"
    )
    for threshold, participants in ALL_SHAPES:
        admitted = _evaluate_shape_rule(rule["rule"], threshold, participants)
        assert admitted == (threshold >= MIN_THRESHOLDS[participants]) == shapes.fits(participants, threshold), (
            threshold,
            participants,
        )


def test_crd_shape_rule_stays_in_its_list_and_costs_a_constant() -> None:
    """The list covers every count from the first restricted one up to maxItems (a larger count fails
    maxItems, which stops CEL evaluation); no macro iterates over participants, so the estimated cost
    is a small constant whatever the list bounds."""
    rule = _crd_shape_rule()["rule"]
    spec = _schema(_crd("escrows"))["properties"]["spec"]
    [listed] = re.findall(r"\[([0-9, ]+)\]", rule)
    first = int(re.search(r"- ([0-9]+)\]?$", rule).group(1))  # type: ignore[union-attr]
    assert first + len(listed.split(",")) - 1 == spec["properties"]["participants"]["maxItems"] == MAX_PARTICIPANTS
    assert not re.search(r"\.(all|exists|exists_one|map|filter)\(", rule)
    assert set(re.findall(r"self\.\w+", rule)) == {"self.threshold", "self.participants"}


def test_crd_shape_rule_message_says_what_to_do() -> None:
    message = _crd_shape_rule()["message"]
    assert message.startswith(SHAPE_TOO_LARGE) and "(1 MiB)" in message
    assert "use at most 11 participants" in message
    assert "a threshold of at least 6 with 12, 9 with 13, 10 with 14, 12 with 15, 13 with 16 participants" in message
    threshold = _schema(_crd("escrows"))["properties"]["spec"]["properties"]["threshold"]
    assert "at least 6 with 12, 9 with 13, 10 with 14, 12 with 15, 13 with 16 participants" in threshold["description"]


@pytest.mark.parametrize(("threshold", "participants"), ALL_SHAPES)
def test_pydantic_refuses_exactly_what_the_crd_rule_refuses(threshold: int, participants: int) -> None:
    spec = {"poolRef": "pool", "threshold": threshold, "participants": [f"p{i}" for i in range(participants)]}
    admitted = _evaluate_shape_rule(_crd_shape_rule()["rule"], threshold, participants)
    if admitted:
        EscrowSpec.model_validate(spec)
    else:
        with pytest.raises(ValidationError, match=re.escape(SHAPE_TOO_LARGE)):
            EscrowSpec.model_validate(spec)


def test_pydantic_shape_refusal_names_the_way_out() -> None:
    spec = {"poolRef": "pool", "threshold": 2, "participants": [f"p{i}" for i in range(16)]}
    with pytest.raises(ValidationError) as refused:
        EscrowSpec.model_validate(spec)
    [error] = refused.value.errors()
    assert error["msg"] == (
        f"Value error, {SHAPE_TOO_LARGE}: threshold 2 of 16 participants would need a Secret of 23,109,744 bytes; "
        "use a threshold of at least 13 with 16 participants, or at most 11 participants with threshold 2"
    )


def test_threshold_above_the_count_is_reported_once() -> None:
    """A threshold above the count is the other rule's: the shape rule does not add a second error."""
    with pytest.raises(ValidationError) as refused:
        EscrowSpec.model_validate({"poolRef": "pool", "threshold": 14, "participants": [f"p{i}" for i in range(12)]})
    assert [e["msg"] for e in refused.value.errors()] == [
        "Value error, threshold must not exceed the number of participants (threshold 14, 12 participants)"
    ]


def test_shape_rule_needs_a_restricted_tail() -> None:
    with pytest.raises(ValueError, match="threshold above 1"):
        shape_rule({n: 1 for n in range(2, 17)})
    with pytest.raises(ValueError, match="threshold above 1"):
        shape_rule({**{n: 1 for n in range(2, 17)}, 12: 6})  # 13..16 would be unrestricted


# ---------------------------------------------------------------------------------------------------
# What the API server returns


def test_model_validate_api_bodies() -> None:
    body = {
        "apiVersion": "xmrescrow.dev/v1alpha1",
        "kind": "Escrow",
        "metadata": {
            "name": "order-1",
            "namespace": "shop",
            "uid": "0b9c5d2e-8f7a-4c1b-9d3e-2a6f1e4b7c80",
            "generation": 1,
        },
        "spec": {
            "poolRef": "pool",
            "threshold": 2,
            "participants": ["buyer", "vendor", "arbiter"],
            "walletRetention": "Retain",
        },
        "status": {
            "phase": "KeyExchange",
            "round": 1,
            "rounds": 4,
            "participants": [{"role": "buyer", "round": 2, "wallet": "buyer_escrow_x_round_2_input"}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "KeyExchange",
                    "message": "round 1 of 4",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2024-05-01T10:00:00Z",
                }
            ],
            "observedGeneration": 1,
            "startedAt": "2024-05-01T10:00:00Z",
            "someFutureField": True,
        },
    }
    escrow = Escrow.model_validate(body)
    assert EscrowSpec.model_validate(body["spec"]) == escrow.spec
    assert escrow.status.participants[0].round == 2
    assert escrow.status.started_at == datetime(2024, 5, 1, 10, tzinfo=UTC)
    status = escrow.status.to_api()
    assert status["startedAt"] == "2024-05-01T10:00:00Z"
    assert status["conditions"][0]["lastTransitionTime"] == "2024-05-01T10:00:00Z"
    assert "someFutureField" not in status and "address" not in status

    pool = WalletPool.model_validate(
        {"metadata": {"name": "pool"}, "spec": {"storage": {"claimName": "wallets"}, "replicas": 3}}
    )
    assert pool.spec.replicas == 3 and pool.status.ready_replicas == 0


# ---------------------------------------------------------------------------------------------------
# Conditions


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    conditions: list[Condition] = []
    assert set_condition(conditions, "Ready", False, "Pending", "waiting", 1, now=t0)
    assert not set_condition(conditions, "Ready", "False", "Pending", "waiting", 1, now=t0 + timedelta(minutes=1))
    assert set_condition(
        conditions, "Ready", ConditionStatus.FALSE, "KeyExchange", "round 1", 1, now=t0 + timedelta(minutes=2)
    )
    ready = get_condition(conditions, "Ready")
    assert ready is not None
    assert ready.reason == "KeyExchange" and ready.message == "round 1"
    assert ready.last_transition_time == t0  # only reason/message changed

    t3 = t0 + timedelta(minutes=3)
    assert set_condition(conditions, "Ready", True, "AddressReady", "ok", 2, now=t3)
    assert set_condition(conditions, "Progressing", False, "Done", now=t3)
    assert [c.type for c in conditions] == ["Ready", "Progressing"]
    ready = get_condition(conditions, "Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.TRUE and ready.last_transition_time == t3 and ready.observed_generation == 2
    assert get_condition(conditions, "Degraded") is None


def test_set_condition_refuses_bad_reason() -> None:
    with pytest.raises(ValidationError):
        set_condition([], "Ready", True, "not a reason", now=datetime(2024, 1, 1, tzinfo=UTC))

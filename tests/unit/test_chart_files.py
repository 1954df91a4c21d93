"""Shipping files that need no cluster and no binaries: the chart's CRD copies, the kustomize base,
the values, the images' names and the RBAC's shape (tests/integration/test_chart.py renders and
applies them)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from escrow_operator.api.walletpool import DEFAULT_IMAGE, DEFAULT_OPERATOR_IMAGE
from escrow_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "xmr-escrow-operator"
MANIFESTS = ROOT / "manifests"
CRDS = sorted((ROOT / "crds").glob("*.yaml"))
VALUES_ALL = ROOT / "tests" / "data" / "values-all.yaml"
SYNC_HINT = "hack/render-manifests.sh (copies crds/ into the chart and re-renders manifests/)"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_there_are_crds() -> None:
    assert [p.name for p in CRDS] == [
        "xmrescrow.dev_escrowpayouts.yaml",
        "xmrescrow.dev_escrows.yaml",
        "xmrescrow.dev_walletpools.yaml",
    ]


@pytest.mark.parametrize("copies", [CHART / "crds", MANIFESTS / "crds"], ids=["chart", "kustomize"])
def test_crd_copies_equal_the_generated_crds_byte_for_byte(copies: Path) -> None:
    assert sorted(p.name for p in copies.glob("*.yaml")) == [p.name for p in CRDS], f"run: {SYNC_HINT}"
    for source in CRDS:
        assert (copies / source.name).read_bytes() == source.read_bytes(), (
            f"{copies / source.name} differs from crds/{source.name}; run: {SYNC_HINT}"
        )


def test_chart_versions_match_the_package_and_the_walletpool_defaults() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "xmr-escrow-operator"
    assert chart["appVersion"] == version
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # An empty tag means appVersion: the image the WalletPool CRD defaults its sidecar to.
    assert (
        f"{values['image']['repository']}:{chart['appVersion']}"
        == DEFAULT_OPERATOR_IMAGE
        == "xmr-escrow/operator:0.1.0"
    )
    assert values["image"]["tag"] == ""
    assert DEFAULT_IMAGE == "xmr-escrow/wallet-rpc:0.18.4.0"


def _keys(tree: Any, prefix: str = "") -> set[str]:
    """Dotted keys of a values tree down to leaves; lists and free-form maps count as leaves."""
    if not isinstance(tree, dict) or not tree:
        return {prefix}
    out: set[str] = set()
    for key, value in tree.items():
        out |= _keys(value, f"{prefix}.{key}" if prefix else key)
    return out


def test_values_all_sets_every_value() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    everything = yaml.safe_load(VALUES_ALL.read_text())
    # Maps that are empty by default (podLabels, resources of the pool, ...) are filled in
    # values-all: compare at the level values.yaml defines.
    missing = {k for k in _keys(defaults) if not _has(everything, k)}
    assert not missing, f"values-all.yaml does not set {sorted(missing)}"
    # Unknown keys: values.schema.json forbids them (helm lint -f values-all.yaml, integration test).


def _has(tree: dict[str, Any], dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_values_schema_names_every_value_and_forbids_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        props = node.get("properties", {})
        for key, value in values.items():
            assert key in props, f"values.schema.json has no {path}{key}"
            if isinstance(value, dict) and value and props[key].get("additionalProperties") is False:
                walk(value, props[key], f"{path}{key}.")

    walk(defaults, schema, "")


def _rules_in(text: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if doc and doc.get("kind") in ("ClusterRole", "Role"):
            rules.extend(doc.get("rules") or [])
    return rules


def test_rendered_rbac_has_no_wildcards_and_no_token_or_escalation_rights() -> None:
    rules = _rules_in((MANIFESTS / "operator.yaml").read_text())
    assert rules, "manifests/operator.yaml has no RBAC rules"
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert not any("*" in item for item in rule.get(field, [])), f"wildcard in {field}: {rule}"
        assert not rule.get("nonResourceURLs"), rule
        assert not set(rule["verbs"]) & {"escalate", "bind", "impersonate", "deletecollection"}, rule
        assert "serviceaccounts/token" not in rule["resources"], rule
        assert not {"clusterroles", "roles", "clusterrolebindings", "rolebindings"} & set(rule["resources"]), rule


def test_chart_templates_have_no_wildcard_rules() -> None:
    text = "\n".join(p.read_text() for p in (CHART / "templates").glob("*"))
    for m in re.finditer(r"(apiGroups|resources|verbs):\s*\[([^\]]*)\]", text):
        assert "*" not in m.group(2), m.group(0)


def test_kustomize_base_lists_its_files() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {str(p.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert kustomization["namespace"] == "xmr-escrow-system"


def test_kustomize_base_operator_pod_matches_the_walletpool_network_policy() -> None:
    """The pool NetworkPolicy admits exactly these labels from the operator's namespace."""
    docs = _docs(MANIFESTS / "operator.yaml")
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "xmr-escrow-operator"
    assert labels["app.kubernetes.io/component"] == "operator"
    spec = deploy["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == DEFAULT_OPERATOR_IMAGE
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["ESCROW_METRICS_PORT"]["value"] == "8080"
    assert "ESCROW_NAMESPACE" not in env  # cluster-wide by default
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert spec["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    # No Helm bookkeeping in the kustomize base.
    assert "helm.sh/chart" not in (MANIFESTS / "operator.yaml").read_text()


def test_dockerfiles_run_as_10001_with_the_expected_entrypoints() -> None:
    operator = (ROOT / "images" / "operator.Dockerfile").read_text()
    wallet = (ROOT / "images" / "wallet-rpc.Dockerfile").read_text()
    for text in (operator, wallet):
        users = re.findall(r"^USER (\S+)$", text, re.M)
        assert users and all(u == "10001:10001" for u in users), users
    # The last stage (docker build's default target) is the distroless one.
    assert re.findall(r"^FROM \S+ AS (\S+)$", operator, re.M)[-1] == "distroless"
    assert 'ENTRYPOINT ["/opt/escrow-operator/bin/escrow-operator"]' in operator
    assert 'ENTRYPOINT ["monero-wallet-rpc"]' in wallet
    assert "FROM ${DEBIAN_IMAGE}" in wallet and "DEBIAN_IMAGE=debian:bookworm-slim" in wallet
    assert 'VOLUME ["/wallets", "/home/wallet"]' in wallet


def test_autoscaling_is_off_by_default_and_scales_the_pool_on_the_operators_gauges() -> None:
    """The chart's HPA/KEDA example: off by default, aimed at the WalletPool's scale subresource, on
    metric names the operator exports (tests/integration/test_autoscaling.py renders and applies it)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())["autoscaling"]
    assert values["enabled"] is False and values["kind"] == "hpa"
    assert 1 <= values["minReplicas"] <= values["maxReplicas"]
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["autoscaling"]
    assert schema["properties"]["kind"]["enum"] == ["hpa", "keda"]
    assert schema["additionalProperties"] is False
    exported = set(
        re.findall(r'GaugeMetricFamily\(\s*"(\w+)"', (ROOT / "operator" / "escrow_operator" / "metrics.py").read_text())
    )
    assert {values["hpa"]["queuedStepsMetric"], values["hpa"]["busyPodsMetric"]} <= exported, exported
    template = (CHART / "templates" / "autoscaling.yaml").read_text()
    for name in ("xmrescrow_pool_steps_queued", "xmrescrow_pool_pods_busy"):
        assert name in template and name in exported  # KEDA's default query
    assert "apiVersion: xmrescrow.dev/v1alpha1\n    kind: WalletPool" in template
    # The target's scale subresource is what an HPA or KEDA reads and writes.
    (pool_crd,) = [
        c for c in (yaml.safe_load(p.read_text()) for p in CRDS) if c["spec"]["names"]["kind"] == "WalletPool"
    ]
    (version,) = [v for v in pool_crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    # No RBAC for autoscalers in the chart: the HPA controller's and KEDA's own roles cover */scale.
    assert "walletpools/scale" not in (CHART / "templates" / "_helpers.tpl").read_text()


def test_every_operator_setting_is_documented() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in OperatorSettings.model_fields if f"`ESCROW_{name.upper()}`" not in operations]
    assert missing == [], f"settings missing from docs/operations.md: {missing}"

"""Generate the CustomResourceDefinitions in ``crds/`` from the pydantic models.

    python -m escrow_operator.api.crdgen            # (re)write crds/*.yaml
    python -m escrow_operator.api.crdgen --check    # exit 1 when crds/*.yaml are out of date

The OpenAPI schema is the models' JSON schema made structural (what apiextensions.k8s.io/v1 demands):
``$ref`` inlined, titles dropped, ``Optional[X]`` (anyOf X | null) turned into a plain optional X,
free-form dicts marked ``x-kubernetes-preserve-unknown-fields``, enum strings given a ``maxLength`` (so
the CEL cost estimator can bound rules that compare them), and the CEL rules taken from the models'
``json_schema_extra``. Defaults come from the models, so the two cannot drift. Any schema keyword the
converter does not know is an error rather than silently passed to the API server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from . import (
    CATEGORY,
    ESCROW_KIND,
    ESCROW_PLURAL,
    ESCROW_SHORT_NAMES,
    ESCROW_SINGULAR,
    GROUP,
    PAYOUT_KIND,
    PAYOUT_PLURAL,
    PAYOUT_SHORT_NAMES,
    PAYOUT_SINGULAR,
    VERSION,
    WALLETPOOL_KIND,
    WALLETPOOL_PLURAL,
    WALLETPOOL_SHORT_NAMES,
    WALLETPOOL_SINGULAR,
    Escrow,
    EscrowPayout,
    WalletPool,
)

Schema = dict[str, Any]

#: Repository root (this file is operator/escrow_operator/api/crdgen.py).
REPO_ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = REPO_ROOT / "crds"
REGENERATE = "python -m escrow_operator.api.crdgen"

HEADER = f"# Generated from operator/escrow_operator/api by `{REGENERATE}`. Do not edit.\n"

#: Schema keywords, in the order they are written. Anything else in a model's schema is an error.
KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "nullable",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "x-kubernetes-validations",
)
_DROPPED = {"title", "$defs", "examples"}


class SchemaError(ValueError):
    """The model's JSON schema uses something a structural CRD schema cannot express."""


def _resolve(node: Schema, defs: dict[str, Schema], path: str) -> Schema:
    """Inline ``$ref`` and collapse ``anyOf [X, null]``; keywords beside them override the target's."""
    while "$ref" in node or "anyOf" in node:
        if "$ref" in node:
            ref = node["$ref"]
            prefix = "#/$defs/"
            if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
                raise SchemaError(f"{path}: cannot resolve $ref {ref!r}")
            target = defs[ref[len(prefix) :]]
            siblings = {k: v for k, v in node.items() if k != "$ref"}
        else:
            options = [option for option in node["anyOf"] if option != {"type": "null"}]
            if len(options) != 1:
                raise SchemaError(f"{path}: anyOf other than Optional[X] is not structural; use a CEL rule")
            target = options[0]
            siblings = {k: v for k, v in node.items() if k != "anyOf"}
            if siblings.get("default", ...) is None:
                del siblings["default"]
        rules = target.get("x-kubernetes-validations", []) + siblings.get("x-kubernetes-validations", [])
        node = {**target, **siblings}
        if rules:
            node["x-kubernetes-validations"] = rules
    return node


def structural(node: Schema, defs: dict[str, Schema], path: str = "") -> Schema:
    """One node of a pydantic JSON schema as a structural OpenAPI v3 schema node."""
    node = _resolve(node, defs, path)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "uniqueItems":
            raise SchemaError(f"{path}: uniqueItems is not allowed in a CRD; use a CEL rule (or a set type)")
        if key not in KEY_ORDER and key != "const":
            raise SchemaError(f"{path or '<root>'}: unsupported schema keyword {key!r}")
        out[key] = value

    if "const" in out:
        out["enum"] = [out.pop("const")]
    if out.get("default", ...) is None:
        del out["default"]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in out and not isinstance(out[bound], bool):  # JSON Schema number -> OpenAPI v3 boolean
            out[plain] = out.pop(bound)
            out[bound] = True

    kind = out.get("type")
    if kind == "object":
        extra = out.pop("additionalProperties", None)
        if "properties" in out:
            out["properties"] = {
                name: structural(child, defs, f"{path}.{name}") for name, child in out["properties"].items()
            }
            if isinstance(extra, dict):
                raise SchemaError(f"{path}: properties and additionalProperties cannot be combined")
        elif isinstance(extra, dict):
            out["additionalProperties"] = structural(extra, defs, f"{path}.*")
        elif extra is not False:  # dict[str, Any] or an empty model: a free-form object
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        if "items" not in out:
            raise SchemaError(f"{path}: an array needs an item type")
        out["items"] = structural(out["items"], defs, f"{path}[*]")
    elif kind == "string":
        if "enum" in out and "maxLength" not in out:
            out["maxLength"] = max(len(str(value)) for value in out["enum"])
    elif kind not in ("integer", "number", "boolean") and not (
        out.get("x-kubernetes-preserve-unknown-fields") or out.get("x-kubernetes-int-or-string")
    ):
        raise SchemaError(f"{path or '<root>'}: no type (is it Any? give it a concrete type)")

    if "x-kubernetes-validations" in out:
        rules = []
        for rule in out["x-kubernetes-validations"]:
            if set(rule) != {"rule", "message"} or not rule["message"]:
                raise SchemaError(f"{path}: every CEL rule needs exactly a rule and a message: {rule!r}")
            rules.append({"rule": rule["rule"], "message": rule["message"]})
        out["x-kubernetes-validations"] = rules
    return {key: out[key] for key in KEY_ORDER if key in out}


def resource_schema(model: type[BaseModel]) -> Schema:
    """The openAPIV3Schema of a resource model with apiVersion, kind, metadata, spec and status."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    properties = dict(raw["properties"])
    if list(properties) != ["apiVersion", "kind", "metadata", "spec", "status"]:
        raise SchemaError(f"{model.__name__}: a resource model has apiVersion, kind, metadata, spec, status")
    properties["apiVersion"] = {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object.",
    }
    properties["kind"] = {
        "type": "string",
        "description": "Kind is a string value representing the REST resource this object represents.",
    }
    schema = structural({**raw, "properties": properties}, defs)
    # metadata is the API server's ObjectMeta: the CRD may only restrict its name, so it stays a bare object.
    schema["properties"]["metadata"] = {"type": "object"}
    # Until the operator's first write, status reads as observed for generation 0: kstatus (Flux, kpt)
    # then sees an object whose generation was not yet observed (InProgress), never one that is Current.
    schema["properties"]["status"]["default"] = {"observedGeneration": 0}
    return schema


def _printer_column(name: str, type: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": type, "jsonPath": path, "description": description}
    if priority:
        column["priority"] = priority
    return column


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: Sequence[str],
    model: type[BaseModel],
    subresources: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": resource_schema(model)},
                }
            ],
        },
    }


def escrow_crd() -> dict[str, Any]:
    return _crd(
        kind=ESCROW_KIND,
        plural=ESCROW_PLURAL,
        singular=ESCROW_SINGULAR,
        short_names=ESCROW_SHORT_NAMES,
        model=Escrow,
        subresources={"status": {}},
        columns=[
            _printer_column("Phase", "string", ".status.phase", "Pending, KeyExchange, Ready or Failed."),
            _printer_column("Round", "integer", ".status.round", "Rounds completed by every participant."),
            _printer_column("Rounds", "integer", ".status.rounds", "Total steps of the key exchange.", priority=1),
            _printer_column("Pool", "string", ".spec.poolRef", "The WalletPool.", priority=1),
            _printer_column("Address", "string", ".status.address", "The multisig address."),
            _printer_column("Received", "string", ".status.funding.receivedXmr", "XMR received (pools with a daemon)."),
            _printer_column(
                "Confirmations", "integer", ".status.funding.confirmations", "Confirmations of the newest payment."
            ),
            _printer_column(
                "Funded",
                "string",
                '.status.conditions[?(@.type=="Funded")].status',
                "Paid in full (spec.amount).",
                priority=1,
            ),
            _printer_column("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
        ],
    )


def payout_crd() -> dict[str, Any]:
    return _crd(
        kind=PAYOUT_KIND,
        plural=PAYOUT_PLURAL,
        singular=PAYOUT_SINGULAR,
        short_names=PAYOUT_SHORT_NAMES,
        model=EscrowPayout,
        subresources={"status": {}},
        columns=[
            _printer_column("Escrow", "string", ".spec.escrowRef", "The Escrow paid out of."),
            _printer_column(
                "Phase", "string", ".status.phase", "Pending, Syncing, Signing, Submitted, Confirmed, Failed."
            ),
            _printer_column(
                "Amount", "string", ".status.amountXmr", "XMR paid, less change (status.amount in atomic units)."
            ),
            _printer_column(
                "Fee", "string", ".status.feeXmr", "The fee in XMR (status.fee in atomic units).", priority=1
            ),
            _printer_column("Confirmations", "integer", ".status.confirmations", "Confirmations of the transactions."),
            _printer_column("Tx", "string", ".status.txHashes[0]", "The (first) transaction hash.", priority=1),
            _printer_column("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
        ],
    )


def walletpool_crd() -> dict[str, Any]:
    return _crd(
        kind=WALLETPOOL_KIND,
        plural=WALLETPOOL_PLURAL,
        singular=WALLETPOOL_SINGULAR,
        short_names=WALLETPOOL_SHORT_NAMES,
        model=WalletPool,
        subresources={
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
        columns=[
            _printer_column("Replicas", "integer", ".spec.replicas", "Desired wallet-rpc pods."),
            _printer_column("Ready", "integer", ".status.readyReplicas", "Pods ready to run steps."),
            _printer_column("Busy", "integer", ".status.busyPods", "Pods running a step.", priority=1),
            _printer_column("Queued", "integer", ".status.queuedSteps", "Steps waiting for a free pod."),
            _printer_column("Network", "string", ".spec.network", "Monero network.", priority=1),
            _printer_column("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
        ],
    )


def crds() -> dict[str, dict[str, Any]]:
    """The CRDs by file name (``{group}_{plural}.yaml``, as controller-gen names them)."""
    return {
        f"{GROUP}_{PAYOUT_PLURAL}.yaml": payout_crd(),
        f"{GROUP}_{ESCROW_PLURAL}.yaml": escrow_crd(),
        f"{GROUP}_{WALLETPOOL_PLURAL}.yaml": walletpool_crd(),
    }


def to_yaml(document: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def render_crds() -> dict[str, str]:
    """{file name: YAML text} of every CRD."""
    return {name: to_yaml(crd) for name, crd in crds().items()}


def stale_files(directory: Path = CRD_DIR) -> list[str]:
    """The CRD files in ``directory`` that are missing or differ from :func:`render_crds`."""
    stale = []
    for name, text in render_crds().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m escrow_operator.api.crdgen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the files differ from the models")
    parser.add_argument("--output-dir", type=Path, default=CRD_DIR, help=f"default: {CRD_DIR}")
    args = parser.parse_args(argv)
    directory: Path = args.output_dir
    if args.check:
        stale = stale_files(directory)
        for name in stale:
            print(f"{directory / name} is out of date; run `{REGENERATE}`", file=sys.stderr)
        return 1 if stale else 0
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render_crds().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Operator settings: environment variables (``ESCROW_*``) and command-line flags, validated once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, Field

from .api.walletpool import DEFAULT_IMAGE, DEFAULT_OPERATOR_IMAGE, PREVIOUS_IMAGE

FINALIZER = "xmrescrow.dev/escrow-wallets"
FIELD_MANAGER = "xmr-escrow-operator"
POOL_LABEL = "xmrescrow.dev/pool"
ESCROW_LABEL = "xmrescrow.dev/escrow"
#: Change this annotation (any new value) to run a Failed Escrow again: `kubectl annotate esc NAME xmrescrow.dev/retry=$(date +%s) --overwrite`
RETRY_ANNOTATION = "xmrescrow.dev/retry"
#: Set to "true" to let deleting a `walletRetention: Delete` Escrow that received funds delete its wallets too
#: (without it such wallets are retained): `kubectl annotate esc NAME xmrescrow.dev/delete-funded-wallets=true`
DELETE_FUNDED_ANNOTATION = "xmrescrow.dev/delete-funded-wallets"
COMPONENT_LABEL = "app.kubernetes.io/component"
OPERATOR_NAME = "xmr-escrow-operator"
RPC_PORT = 18083
WALLETFS_PORT = 8090


class OperatorSettings(BaseModel):
    namespace: str | None = Field(None, description="watch one namespace (default: all)")
    operator_namespace: str = Field("default", description="where the operator runs (for the NetworkPolicy)")
    step_attempts: int = Field(5, ge=1, le=100, description="attempts of a step that fails with a wallet-rpc error")
    rpc_timeout: float = Field(180.0, gt=0, description="seconds one wallet-rpc call may take")
    walletfs_timeout: float = Field(60.0, gt=0, description="seconds one walletfs request may take")
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus metrics and /healthz; 0 disables")
    liveness_port: int = Field(0, ge=0, le=65535, description="kopf's liveness endpoint; 0 disables")
    record_step_history: bool = Field(False, description="keep per-pod step intervals (tests, benchmarks)")
    wallet_affinity: bool = Field(
        True,
        description="keep a participant's wallet open on its pod between rounds when no waiting step needs the pod",
    )
    pool_status_interval: float = Field(
        5.0, ge=0, description="least seconds between pool status writes of busy and queued counts"
    )
    block_poll_interval: float = Field(
        5.0, gt=0, le=300, description="seconds between monerod get_info calls that look for a new block"
    )
    zmq_poll_interval: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="seconds between get_info calls for a daemon whose blocks are pushed over ZMQ (spec.daemonZmq)",
    )
    daemon_timeout: float = Field(30.0, gt=0, description="seconds one monerod RPC call may take")
    payout_funds_timeout: float = Field(
        7 * 86400.0,
        gt=0,
        description="seconds a payout may wait for its escrow's funds, from its creation, before it fails FundsTimeout "
        "(a payout made before the escrow was paid waits; one that waits longer is not paid out of a later payment)",
    )
    api_threads: int = Field(16, ge=1, le=256, description="threads for blocking Kubernetes API calls")
    allowed_images: str = Field(
        f"{DEFAULT_IMAGE},{PREVIOUS_IMAGE},{DEFAULT_OPERATOR_IMAGE}",
        description="comma-separated images a WalletPool may run (wallet-rpc and the walletfs sidecar); an entry "
        "ending in * allows every image that starts with the rest",
    )
    mode: Literal["production", "test"] = Field("production", description="test allows fault injection")
    faults: str | None = Field(None, description="fault injection points (tests only; see faults.py)")

    def image_allowed(self, image: str) -> bool:
        """Whether a WalletPool may run ``image`` (:attr:`allowed_images`)."""
        for entry in filter(None, (e.strip() for e in self.allowed_images.split(","))):
            if image == entry or (entry.endswith("*") and image.startswith(entry[:-1])):
                return True
        return False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for name in cls.model_fields:
            key = f"ESCROW_{name.upper()}"
            if key in env and env[key] != "":
                values[name] = env[key]
        if "operator_namespace" not in values and env.get("POD_NAMESPACE"):
            values["operator_namespace"] = env["POD_NAMESPACE"]
        return cls.model_validate(values)

"""The ``WalletPool`` resource: a pool of monero-wallet-rpc pods sharing one wallet volume (docs/design.md).

As for :mod:`escrow_operator.api.escrow`, the API server enforces these rules through the generated CRD
and the pydantic validators repeat those that do not need the old object.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from .conditions import ApiModel, Condition, cel, conditions_field, validations

DEFAULT_REPLICAS = 6
MAX_REPLICAS = 256
DEFAULT_IMAGE = "xmr-escrow/wallet-rpc:0.18.4.0"
#: The default before it (Debian bookworm's 0.18.0.0): still supported, and what a pool created
#: before the change holds in its spec.image, so it stays allowed by default.
PREVIOUS_IMAGE = "xmr-escrow/wallet-rpc:0.18.0.0"
DEFAULT_OPERATOR_IMAGE = "xmr-escrow/operator:0.1.0"
OFFLINE = "offline"

DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A positive storage size in Kubernetes quantity notation: 10Gi, 500M, 1.5Ti, 1e9.
STORAGE_SIZE_PATTERN = r"^([0-9]*[1-9][0-9]*(\.[0-9]*)?|[0-9]*\.[0-9]*[1-9][0-9]*)([KMGTPE]i|[kMGTPE]|[eE][0-9]+)?$"
#: core/v1 resource.Quantity, as the Kubernetes API validates it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_HOST = r"([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
#: ``offline`` or a monerod RPC address ``host:port`` (an IPv6 host in brackets).
DAEMON_PATTERN = rf"^({OFFLINE}|{_HOST}:{_PORT})$"
#: monerod's ZMQ publisher ``host:port`` (``monerod --zmq-pub tcp://IP:PORT``).
HOST_PORT_PATTERN = rf"^{_HOST}:{_PORT}$"

STORAGE_ONE_SOURCE = cel(
    "has(self.claimName) != has(self.size)",
    "storage needs exactly one of claimName (an existing ReadWriteMany claim) or size (a new claim)",
)
STORAGE_CLASS_NEEDS_SIZE = cel(
    "!has(self.storageClassName) || has(self.size)",
    "storageClassName applies to a new claim (size); it cannot be combined with claimName",
)
STORAGE_IMMUTABLE = cel(
    "self == oldSelf",
    "storage is immutable: the wallet files live on it; create a new WalletPool to use other storage",
)
ZMQ_NEEDS_DAEMON = cel(
    "!has(self.daemonZmq) || self.daemon != 'offline'",
    "daemonZmq is the publisher of the pool's daemon: set daemon (host:port) too, or drop daemonZmq",
)
NETWORK_IMMUTABLE = cel(
    "self == oldSelf",
    "network is immutable: wallet files belong to one network; create a new WalletPool for another network",
)


class Network(StrEnum):
    MAINNET = "mainnet"
    STAGENET = "stagenet"
    TESTNET = "testnet"
    #: A private test chain (``monerod --regtest``): mainnet addresses, every hard fork at height 1.
    REGTEST = "regtest"


class PoolStorage(ApiModel):
    """The shared ReadWriteMany volume of wallet files: an existing claim, or a new claim of this size."""

    model_config = ConfigDict(
        json_schema_extra=validations(STORAGE_ONE_SOURCE, STORAGE_CLASS_NEEDS_SIZE, STORAGE_IMMUTABLE)
    )

    claim_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
        description="An existing ReadWriteMany PersistentVolumeClaim in the pool's namespace.",
    )
    size: str | None = Field(
        default=None,
        max_length=64,
        pattern=STORAGE_SIZE_PATTERN,
        description="Size of a new ReadWriteMany claim the operator creates, a quantity such as 10Gi.",
    )
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        description="Storage class of the new claim; unset for the cluster's default class.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> PoolStorage:
        if (self.claim_name is None) == (self.size is None):
            raise ValueError(STORAGE_ONE_SOURCE["message"])
        if self.storage_class_name is not None and self.size is None:
            raise ValueError(STORAGE_CLASS_NEEDS_SIZE["message"])
        if self.size is not None and _quantity_number(self.size) <= 0:
            raise ValueError(f"storage size must be positive, not {self.size!r}")
        return self


def _quantity_number(quantity: str) -> Decimal:
    """The numeric part of a quantity that matched :data:`STORAGE_SIZE_PATTERN` (enough to test for zero)."""
    number = quantity.rstrip("KMGTPEikmi")  # noqa: B005 - any of the suffixes' letters, in any order
    try:
        return Decimal(number)
    except InvalidOperation:  # pragma: no cover - the pattern only admits numbers
        raise ValueError(f"{quantity!r} is not a quantity") from None


def _quantity(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not re.fullmatch(QUANTITY_PATTERN, str(value)):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 1Gi)")
    return value


Quantity = Annotated[
    Any,
    AfterValidator(_quantity),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]


class ResourceRequirements(ApiModel):
    """Requests and limits of the wallet-rpc container, as in core/v1."""

    limits: dict[str, Quantity] | None = Field(default=None, description="Upper bounds, e.g. cpu: 2, memory: 1Gi.")
    requests: dict[str, Quantity] | None = Field(default=None, description="Guaranteed amounts, e.g. cpu: 500m.")


class WalletPoolSpec(ApiModel):
    """The desired pool of wallet-rpc pods."""

    model_config = ConfigDict(json_schema_extra=validations(ZMQ_NEEDS_DAEMON))

    replicas: int = Field(
        default=DEFAULT_REPLICAS,
        ge=0,
        le=MAX_REPLICAS,
        description="Number of wallet-rpc pods; the scale subresource (HPA, KEDA, kubectl scale) sets it.",
    )
    image: str = Field(default=DEFAULT_IMAGE, min_length=1, max_length=512, description="The monero-wallet-rpc image.")
    operator_image: str = Field(
        default=DEFAULT_OPERATOR_IMAGE,
        min_length=1,
        max_length=512,
        description="The operator image, which runs the walletfs sidecar.",
    )
    network: Network = Field(
        default=Network.MAINNET,
        description="mainnet, stagenet, testnet, or regtest (a private test chain of monerod --regtest: "
        "mainnet addresses; wallet-rpc then accepts the chain's hard-fork heights). Immutable.",
        json_schema_extra=validations(NETWORK_IMMUTABLE),
    )
    daemon: str = Field(
        default=OFFLINE,
        max_length=262,
        pattern=DAEMON_PATTERN,
        description="monerod RPC address host:port, or offline (no daemon: enough for the key exchange).",
    )
    daemon_zmq: str | None = Field(
        default=None,
        max_length=262,
        pattern=HOST_PORT_PATTERN,
        description="monerod's ZMQ publisher host:port (monerod --zmq-pub tcp://0.0.0.0:18084): new blocks "
        "are pushed to the operator as monerod adds them; without it the operator polls get_info.",
    )
    storage: PoolStorage = Field(description="The shared wallet volume. Immutable.")
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Compute resources of the wallet-rpc container (a core/v1 ResourceRequirements).",
    )

    @model_validator(mode="after")
    def _zmq_needs_daemon(self) -> WalletPoolSpec:
        if self.daemon_zmq is not None and self.offline:
            raise ValueError(ZMQ_NEEDS_DAEMON["message"])
        return self

    @property
    def offline(self) -> bool:
        return self.daemon == OFFLINE


class WalletPoolStatus(ApiModel):
    """Observed state of the pool."""

    replicas: int = Field(default=0, ge=0, description="Pods that exist (for the scale subresource).")
    ready_replicas: int = Field(default=0, ge=0, description="Pods ready to run steps.")
    selector: str | None = Field(
        default=None, max_length=1024, description="Label selector of the pool's pods (for the scale subresource)."
    )
    busy_pods: int = Field(default=0, ge=0, description="Pods running a step now.")
    queued_steps: int = Field(default=0, ge=0, description="Steps waiting for a free pod.")
    conditions: list[Condition] = conditions_field("Ready, Reconciling, Stalled and Reconciled (kstatus conventions).")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status was computed for."
    )


class WalletPool(ApiModel):
    """A pool of monero-wallet-rpc pods sharing one volume of wallet files; Escrows run on it."""

    api_version: str | None = Field(default=None, description="xmrescrow.dev/v1alpha1")
    kind: str | None = Field(default=None, description="WalletPool")
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: WalletPoolSpec = Field(description="The desired pool.")
    status: WalletPoolStatus = Field(default_factory=WalletPoolStatus, description="Observed state of the pool.")

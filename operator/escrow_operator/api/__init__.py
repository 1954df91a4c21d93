"""API of group ``xmrescrow.dev``, version ``v1alpha1``: the Escrow, EscrowPayout and WalletPool resources.

Models use snake_case attributes and camelCase wire names (see :mod:`.conditions`). Read an object with
``EscrowSpec.model_validate(body["spec"])`` (or ``Escrow.model_validate(body)``), write a status with
``status.to_api()``. The CRDs in ``crds/`` are generated from these models: after changing a model run
``python -m escrow_operator.api.crdgen``.
"""

from __future__ import annotations

from typing import Any

from .conditions import (
    DEGRADED,
    READY,
    RECONCILING,
    STALLED,
    ApiModel,
    Condition,
    ConditionStatus,
    Timestamp,
    format_time,
    get_condition,
    is_condition_true,
    remove_condition,
    set_condition,
    utcnow,
)
from .escrow import (
    ATOMIC_PER_XMR,
    DEFAULT_PARTICIPANTS,
    DEFAULT_THRESHOLD,
    MAX_ATOMIC,
    MAX_PARTICIPANTS,
    MIN_PARTICIPANTS,
    Escrow,
    EscrowPhase,
    EscrowSpec,
    EscrowStatus,
    FundingPayout,
    FundingStatus,
    ParticipantStatus,
    PayoutAddress,
    Role,
    WalletRetention,
    xmr,
)
from .payout import (
    EscrowPayout,
    EscrowPayoutSpec,
    EscrowPayoutStatus,
    PayoutDestination,
    PayoutPhase,
)
from .walletpool import (
    DEFAULT_IMAGE,
    DEFAULT_OPERATOR_IMAGE,
    DEFAULT_REPLICAS,
    MAX_REPLICAS,
    OFFLINE,
    Network,
    PoolStorage,
    WalletPool,
    WalletPoolSpec,
    WalletPoolStatus,
)

GROUP = "xmrescrow.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

ESCROW_KIND = "Escrow"
ESCROW_PLURAL = "escrows"
ESCROW_SINGULAR = "escrow"
ESCROW_SHORT_NAMES = ("esc",)

PAYOUT_KIND = "EscrowPayout"
PAYOUT_PLURAL = "escrowpayouts"
PAYOUT_SINGULAR = "escrowpayout"
PAYOUT_SHORT_NAMES = ("payout",)

WALLETPOOL_KIND = "WalletPool"
WALLETPOOL_PLURAL = "walletpools"
WALLETPOOL_SINGULAR = "walletpool"
WALLETPOOL_SHORT_NAMES = ("wpool",)


def owner_reference(body: dict[str, Any], kind: str) -> dict[str, Any]:
    """The controller owner reference to the object ``body`` of ``kind`` (with blockOwnerDeletion)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


#: ``kubectl get xmrescrow`` lists every kind.
CATEGORY = "xmrescrow"

__all__ = [
    "API_VERSION",
    "ATOMIC_PER_XMR",
    "CATEGORY",
    "DEFAULT_IMAGE",
    "DEFAULT_OPERATOR_IMAGE",
    "DEFAULT_PARTICIPANTS",
    "DEFAULT_REPLICAS",
    "DEFAULT_THRESHOLD",
    "DEGRADED",
    "ESCROW_KIND",
    "ESCROW_PLURAL",
    "ESCROW_SHORT_NAMES",
    "ESCROW_SINGULAR",
    "GROUP",
    "MAX_ATOMIC",
    "MAX_PARTICIPANTS",
    "MAX_REPLICAS",
    "MIN_PARTICIPANTS",
    "OFFLINE",
    "PAYOUT_KIND",
    "PAYOUT_PLURAL",
    "PAYOUT_SHORT_NAMES",
    "PAYOUT_SINGULAR",
    "READY",
    "RECONCILING",
    "STALLED",
    "VERSION",
    "WALLETPOOL_KIND",
    "WALLETPOOL_PLURAL",
    "WALLETPOOL_SHORT_NAMES",
    "WALLETPOOL_SINGULAR",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "Escrow",
    "EscrowPayout",
    "EscrowPayoutSpec",
    "EscrowPayoutStatus",
    "EscrowPhase",
    "EscrowSpec",
    "EscrowStatus",
    "FundingPayout",
    "FundingStatus",
    "Network",
    "ParticipantStatus",
    "PayoutAddress",
    "PayoutDestination",
    "PayoutPhase",
    "PoolStorage",
    "Role",
    "Timestamp",
    "WalletPool",
    "WalletPoolSpec",
    "WalletPoolStatus",
    "WalletRetention",
    "format_time",
    "get_condition",
    "is_condition_true",
    "owner_reference",
    "remove_condition",
    "set_condition",
    "utcnow",
    "xmr",
]

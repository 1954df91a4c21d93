"""The ``EscrowPayout`` resource: one payment out of a Ready Escrow, signed by M of its participants.

A release to the vendor, a refund to the buyer, a dispute settled with the arbiter: each is an
EscrowPayout naming the escrow, the signers (exactly the escrow's threshold, the first builds the
transaction) and either ``destinations`` (amounts in atomic units) or ``sweepTo`` (everything unlocked,
less the fee). The spec is immutable; one transaction set is built per payout and submitted at most
once as built (docs/design.md, Signing).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from .conditions import ApiModel, Condition, Timestamp, cel, conditions_field, validations
from .escrow import (
    ADDRESS_MAX_LENGTH,
    ADDRESS_PATTERN,
    DEFAULT_CONFIRMATIONS,
    MAX_ATOMIC,
    MAX_CONFIRMATIONS,
    MAX_PARTICIPANTS,
    Role,
    TxHash,
)

#: A DNS-1123 subdomain (an Escrow's name).
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_DESTINATIONS = 16
#: wallet-rpc's transfer priorities: 0 default, 1 unimportant .. 4 priority.
MAX_PRIORITY = 4

ONE_TARGET = cel(
    "has(self.destinations) != has(self.sweepTo)",
    "give either destinations (amounts to addresses) or sweepTo (everything unlocked to one address), not both",
)
SPEC_IMMUTABLE = cel(
    "self == oldSelf", "spec is immutable once the EscrowPayout is created; delete it and create another"
)
SIGNERS_UNIQUE = cel("self.all(p, self.exists_one(q, q == p))", "signers must be unique")


class PayoutPhase(StrEnum):
    PENDING = "Pending"  # waiting for the escrow (Ready, on a pool with a daemon), funds or an earlier payout
    SYNCING = "Syncing"  # the signers' multisig infos exported and imported
    SIGNING = "Signing"  # the transaction built and signed in turn
    SUBMITTED = "Submitted"  # handed to the daemon: waiting for confirmations
    CONFIRMED = "Confirmed"
    FAILED = "Failed"


class PayoutDestination(ApiModel):
    address: str = Field(
        min_length=95, max_length=ADDRESS_MAX_LENGTH, pattern=ADDRESS_PATTERN, description="A Monero address."
    )
    amount: int = Field(ge=1, le=MAX_ATOMIC, description="Atomic units (1 XMR = 10^12).")


class EscrowPayoutSpec(ApiModel):
    """The payment to make. Immutable once created."""

    model_config = ConfigDict(json_schema_extra=validations(ONE_TARGET, SPEC_IMMUTABLE))

    escrow_ref: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
        description="Name of the Escrow in the same namespace to pay out of.",
    )
    signers: list[Role] = Field(
        min_length=1,
        max_length=MAX_PARTICIPANTS,
        description=(
            "The participants who sign, exactly the escrow's threshold of them; the first builds the transaction, "
            "the others sign it in this order."
        ),
        json_schema_extra=validations(SIGNERS_UNIQUE),
    )
    destinations: list[PayoutDestination] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_DESTINATIONS,
        description="Amounts to pay to addresses (the fee comes on top).",
    )
    sweep_to: str | None = Field(
        default=None,
        min_length=95,
        max_length=ADDRESS_MAX_LENGTH,
        pattern=ADDRESS_PATTERN,
        description="Pay everything unlocked, less the fee, to this address.",
    )
    priority: int = Field(
        default=0, ge=0, le=MAX_PRIORITY, description="wallet-rpc's fee priority: 0 default, 1 low .. 4 high."
    )
    confirmations: int = Field(
        default=DEFAULT_CONFIRMATIONS,
        ge=1,
        le=MAX_CONFIRMATIONS,
        description="Confirmations the transaction needs before the payout is Confirmed.",
    )

    @field_validator("signers")
    @classmethod
    def _signers_unique(cls, signers: list[str]) -> list[str]:
        duplicates = sorted({role for role in signers if signers.count(role) > 1})
        if duplicates:
            raise ValueError(f"{SIGNERS_UNIQUE['message']} (repeated: {', '.join(duplicates)})")
        return signers

    @model_validator(mode="after")
    def _one_target(self) -> EscrowPayoutSpec:
        if (self.destinations is None) == (self.sweep_to is None):
            raise ValueError(ONE_TARGET["message"])
        return self

    @property
    def requested(self) -> int | None:
        """The atomic units the destinations ask for (None: a sweep)."""
        return None if self.destinations is None else sum(d.amount for d in self.destinations)


class EscrowPayoutStatus(ApiModel):
    """Observed state of the payout. Never holds secret material (multisig infos, transaction sets)."""

    phase: PayoutPhase | None = Field(
        default=None, description="Pending, Syncing, Signing, Submitted, Confirmed or Failed."
    )
    attempt: int = Field(
        default=0, ge=0, description="Signing attempts started (a new one re-exports every signer's info)."
    )
    signatures: int = Field(default=0, ge=0, description="Signatures on the transaction set so far.")
    escrow_uid: str | None = Field(
        default=None, max_length=36, description="The uid of the Escrow paid out of (recorded at the first attempt)."
    )
    tx_hashes: list[TxHash] = Field(
        default=[],
        max_length=MAX_DESTINATIONS,
        description="The transactions' hashes, recorded before they are submitted; set once, never changed.",
    )
    amount: int | None = Field(default=None, ge=0, description="Atomic units the transactions pay (less change).")
    amount_xmr: str | None = Field(default=None, max_length=32, description="amount in XMR (for printer columns).")
    fee: int | None = Field(default=None, ge=0, description="The transactions' fee in atomic units.")
    fee_xmr: str | None = Field(default=None, max_length=32, description="fee in XMR (for printer columns).")
    height: int | None = Field(default=None, ge=0, description="The block the transactions were mined in.")
    confirmations: int | None = Field(default=None, ge=0, description="Confirmations of the transactions.")
    conditions: list[Condition] = conditions_field("Ready, Reconciling and Stalled (kstatus conventions).")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status was computed for."
    )
    message: str | None = Field(default=None, max_length=1024, description="Short human-readable state.")
    secret_name: str | None = Field(
        default=None,
        max_length=253,
        description=(
            "The Secret in the operator's namespace holding the payout's record: multisig infos, transaction "
            "sets, hashes and outcome (no namespace user can write it)."
        ),
    )
    submitted_at: Timestamp | None = Field(default=None, description="When the transactions were handed to the daemon.")
    confirmed_at: Timestamp | None = Field(default=None, description="When they reached spec.confirmations.")


class EscrowPayout(ApiModel):
    """A payment out of an Escrow's multisig wallet, signed by M of its participants."""

    api_version: str | None = Field(default=None, description="xmrescrow.dev/v1alpha1")
    kind: str | None = Field(default=None, description="EscrowPayout")
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: EscrowPayoutSpec = Field(description="The payment to make. Immutable once created.")
    status: EscrowPayoutStatus = Field(default_factory=EscrowPayoutStatus, description="Progress of the payout.")

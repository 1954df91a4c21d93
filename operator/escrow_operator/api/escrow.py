"""The ``Escrow`` resource: one M-of-N multisig wallet set (docs/design.md).

The API server enforces the rules below through the generated CRD (schema keywords and the CEL rules
in ``json_schema_extra``); the pydantic validators repeat them so the operator refuses the same specs
itself. The one rule pydantic cannot check is immutability (it needs the old object).

Not every M-of-N shape can be built: the round messages of the key exchange, all kept in the Escrow's
Secret, grow with C(N-1, s) keys and must fit in its 1 MiB. :data:`MIN_THRESHOLDS` (from the size
model in :mod:`escrow_operator.shapes`) gives the lowest threshold per participant count; both the
CEL rule :data:`SHAPE_FITS_SECRET` and the pydantic validator are generated from it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from escrow_operator.naming import ROLE_PATTERN, final_step
from escrow_operator.shapes import SECRET_DATA_LIMIT, max_participants_for, min_thresholds, secret_data_bytes

from .conditions import ApiModel, Condition, Timestamp, cel, conditions_field, validations

#: A participant role: also part of wallet file names, so lowercase letters and digits only.
ROLE_MAX_LENGTH = 16
Role = Annotated[str, StringConstraints(min_length=1, max_length=ROLE_MAX_LENGTH, pattern=rf"^{ROLE_PATTERN}$")]

#: A DNS-1123 label (the name of a WalletPool in the same namespace).
DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_LABEL_MAX_LENGTH = 63

MIN_PARTICIPANTS = 2
MAX_PARTICIPANTS = 16
DEFAULT_THRESHOLD = 2
DEFAULT_PARTICIPANTS: tuple[str, ...] = ("buyer", "vendor", "arbiter")

#: Atomic units per XMR.
ATOMIC_PER_XMR = 10**12
#: The largest amount the API takes: one million XMR (the schema's bound must be exact as a float64,
#: which 2^63 - 1 is not: the API server would read it as -2^63).
MAX_ATOMIC = 10**18
DEFAULT_CONFIRMATIONS = 10
MAX_CONFIRMATIONS = 10_000


def xmr(atomic: int) -> str:
    """``atomic`` units as an exact decimal XMR string: 4000000000000 -> "4", 1500000000 -> "0.0015"."""
    whole, fraction = divmod(atomic, ATOMIC_PER_XMR)
    return f"{whole}.{fraction:012d}".rstrip("0").rstrip(".") if fraction else str(whole)


#: A Monero address (standard, subaddress or integrated): base58.
ADDRESS_PATTERN = r"^[1-9A-HJ-NP-Za-km-z]+$"
ADDRESS_MIN_LENGTH = 95
ADDRESS_MAX_LENGTH = 128

PARTICIPANTS_UNIQUE = cel("self.all(p, self.exists_one(q, q == p))", "participants must be unique")
THRESHOLD_AT_MOST_PARTICIPANTS = cel(
    "self.threshold <= size(self.participants)",
    "threshold must not exceed the number of participants",
)
SPEC_IMMUTABLE = cel("self == oldSelf", "spec is immutable once the Escrow is created; delete and recreate it")
PAYOUT_ROLES_ARE_PARTICIPANTS = cel(
    "!has(self.payoutAddresses) || self.payoutAddresses.all(a, a.role in self.participants)",
    "every payoutAddresses role must be one of the participants",
)

#: {N: the lowest threshold whose N-participant key exchange fits in the Escrow's Secret}, N in
#: MIN_PARTICIPANTS..MAX_PARTICIPANTS (escrow_operator.shapes: measured message sizes, 900 KiB budget).
MIN_THRESHOLDS: dict[int, int] = min_thresholds(MIN_PARTICIPANTS, MAX_PARTICIPANTS)
#: What the CEL rule and the pydantic validator say first.
SHAPE_TOO_LARGE = (
    "this threshold/participants shape makes the key-exchange messages larger than the Escrow's Secret can hold "
    f"({SECRET_DATA_LIMIT // (1024 * 1024)} MiB)"
)


def _restricted(table: dict[int, int]) -> dict[int, int]:
    """The participant counts whose lowest threshold is above 1; they must run up to the largest count."""
    restricted = {n: lowest for n, lowest in table.items() if lowest > 1}
    if not restricted or sorted(restricted) != list(range(min(restricted), max(table) + 1)):
        raise ValueError(f"expected every count above some N to need a threshold above 1: {table}")
    return restricted


def _lowest_thresholds(table: dict[int, int]) -> str:
    """The restricted part of ``table`` for messages: ``6 with 12, 9 with 13, ... participants``."""
    return ", ".join(f"{lowest} with {n}" for n, lowest in sorted(_restricted(table).items())) + " participants"


def shape_rule(table: dict[int, int]) -> dict[str, str]:
    """The CEL rule refusing the shapes that ``table`` ({N: lowest threshold}) does not allow.

    Up to the last N that allows every threshold anything goes; above it the lowest threshold is read
    from a list indexed by N minus the first restricted N. A count above the schema's maxItems never
    reaches the rule (a maxItems violation stops CEL evaluation), so the index stays in the list."""
    restricted = _restricted(table)
    first = min(restricted)
    lowest = ", ".join(str(restricted[n]) for n in sorted(restricted))
    return cel(
        f"size(self.participants) <= {first - 1} || self.threshold >= [{lowest}][size(self.participants) - {first}]",
        f"{SHAPE_TOO_LARGE}: use at most {first - 1} participants, or a threshold of at least "
        f"{_lowest_thresholds(table)}",
    )


SHAPE_FITS_SECRET = shape_rule(MIN_THRESHOLDS)


class WalletRetention(StrEnum):
    """What happens to the wallet files and the Escrow's Secret when the Escrow is deleted."""

    RETAIN = "Retain"
    DELETE = "Delete"


class EscrowPhase(StrEnum):
    PENDING = "Pending"
    KEY_EXCHANGE = "KeyExchange"
    READY = "Ready"
    FAILED = "Failed"


class PayoutAddress(ApiModel):
    """Where one participant may be paid out of the escrow."""

    role: Role = Field(description="The participant (buyer, vendor, arbiter, ...).")
    address: str = Field(
        min_length=ADDRESS_MIN_LENGTH,
        max_length=ADDRESS_MAX_LENGTH,
        pattern=ADDRESS_PATTERN,
        description="The Monero address paid to that participant (the buyer's refund address, the vendor's, ...).",
    )


class EscrowSpec(ApiModel):
    """The desired multisig wallet set. Immutable once created."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            THRESHOLD_AT_MOST_PARTICIPANTS, SHAPE_FITS_SECRET, PAYOUT_ROLES_ARE_PARTICIPANTS, SPEC_IMMUTABLE
        )
    )

    pool_ref: str = Field(
        min_length=1,
        max_length=DNS1123_LABEL_MAX_LENGTH,
        pattern=DNS1123_LABEL_PATTERN,
        description="Name of the WalletPool in the same namespace whose wallet-rpc pods run the key exchange.",
    )
    threshold: int = Field(
        default=DEFAULT_THRESHOLD,
        ge=1,
        le=MAX_PARTICIPANTS,
        description=(
            "M: how many participants must sign to spend. At most the number of participants, and at least "
            f"{_lowest_thresholds(MIN_THRESHOLDS)} (the key-exchange messages must fit in the Escrow's Secret)."
        ),
    )
    participants: list[Role] = Field(
        default=list(DEFAULT_PARTICIPANTS),
        min_length=MIN_PARTICIPANTS,
        max_length=MAX_PARTICIPANTS,
        description=(
            "N participant roles, unique; each is part of the wallet file names, so lowercase letters and "
            "digits, starting with a letter, at most 16 characters."
        ),
        json_schema_extra=validations(PARTICIPANTS_UNIQUE),
    )
    wallet_retention: WalletRetention = Field(
        default=WalletRetention.RETAIN,
        description=(
            "Retain keeps the final wallet files and releases the Escrow's Secret (a wallet may hold funds); "
            "Delete removes both with the Escrow."
        ),
    )

    amount: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ATOMIC,
        description=(
            "The amount the buyer must pay, in atomic units (1 XMR = 10^12); drives the Funded condition. "
            "Optional: without it the escrow reports what it received and has no Funded condition."
        ),
    )
    confirmations: int = Field(
        default=DEFAULT_CONFIRMATIONS,
        ge=1,
        le=MAX_CONFIRMATIONS,
        description="Confirmations a payment needs before it counts toward the amount (Funded).",
    )
    payout_addresses: list[PayoutAddress] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PARTICIPANTS,
        description=(
            "Where this escrow's money may go, fixed when the escrow is made (the spec is immutable): at most one "
            "address per participant role. Every payout of an escrow that records them may pay only these "
            "addresses (destinations and sweepTo), and each signer checks the transaction against them before it "
            "signs; so whoever may create EscrowPayouts can at worst pay the wrong party of the trade, never a "
            "stranger. Without them a payout may pay any address."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["role"]},
    )

    @field_validator("payout_addresses")
    @classmethod
    def _one_address_per_role(cls, addresses: list[PayoutAddress] | None) -> list[PayoutAddress] | None:
        roles = [a.role for a in addresses or []]
        duplicates = sorted({role for role in roles if roles.count(role) > 1})
        if duplicates:
            raise ValueError(f"payoutAddresses names a role more than once: {', '.join(duplicates)}")
        return addresses

    @model_validator(mode="after")
    def _payout_roles_are_participants(self) -> EscrowSpec:
        strangers = [a.role for a in self.payout_addresses or [] if a.role not in self.participants]
        if strangers:
            raise ValueError(f"{PAYOUT_ROLES_ARE_PARTICIPANTS['message']} (not participants: {', '.join(strangers)})")
        return self

    def payable(self) -> dict[str, str] | None:
        """Address -> role of the addresses this escrow may pay (None: any address)."""
        if self.payout_addresses is None:
            return None
        return {a.address: a.role for a in self.payout_addresses}

    @field_validator("participants")
    @classmethod
    def _participants_unique(cls, participants: list[str]) -> list[str]:
        duplicates = sorted({role for role in participants if participants.count(role) > 1})
        if duplicates:
            raise ValueError(f"{PARTICIPANTS_UNIQUE['message']} (repeated: {', '.join(duplicates)})")
        return participants

    @model_validator(mode="after")
    def _threshold_at_most_participants(self) -> EscrowSpec:
        if self.threshold > len(self.participants):
            raise ValueError(
                f"{THRESHOLD_AT_MOST_PARTICIPANTS['message']} "
                f"(threshold {self.threshold}, {len(self.participants)} participants)"
            )
        return self

    @model_validator(mode="after")
    def _shape_fits_secret(self) -> EscrowSpec:
        """The CEL rule :data:`SHAPE_FITS_SECRET`, with the shape's size and both ways out in the message."""
        participants, threshold = len(self.participants), self.threshold
        lowest = MIN_THRESHOLDS.get(participants)
        if lowest is None or threshold > participants or threshold >= lowest:
            return self  # other rules refuse counts out of range and thresholds above the count
        most = max_participants_for(threshold, MIN_THRESHOLDS)
        raise ValueError(
            f"{SHAPE_TOO_LARGE}: threshold {threshold} of {participants} participants would need a Secret of "
            f"{secret_data_bytes(participants, threshold):,} bytes; use a threshold of at least {lowest} "
            f"with {participants} participants, or at most {most} participants with threshold {threshold}"
        )

    @property
    def steps(self) -> int:
        """Steps per participant, 0..K with K = N - M + 2 (:func:`escrow_operator.naming.final_step`)."""
        return final_step(len(self.participants), self.threshold) + 1


class ParticipantStatus(ApiModel):
    """Progress of one participant."""

    role: Role = Field(description="The participant's role.")
    round: int = Field(default=0, ge=0, description="Steps completed for this participant.")
    wallet: str | None = Field(
        default=None,
        max_length=255,
        description="The participant's newest published wallet (file name without suffix).",
    )


TX_HASH_PATTERN = r"^[0-9a-f]{64}$"
TxHash = Annotated[str, StringConstraints(pattern=TX_HASH_PATTERN, min_length=64, max_length=64)]
#: Own payouts an escrow's funding figures remember (far more than any escrow makes).
MAX_FUNDING_PAYOUTS = 64


class FundingPayout(ApiModel):
    """One of the escrow's own payouts, once submitted, as the funding figures account for it."""

    tx_hashes: list[TxHash] = Field(min_length=1, max_length=16, description="Its transactions' hashes.")
    spent: int = Field(ge=0, description="What it paid out of the escrow: amount and fee, atomic units.")


class FundingStatus(ApiModel):
    """What the escrow's address received, as its wallets see it after the newest block. Atomic units."""

    received: int = Field(
        default=0,
        ge=0,
        description="Total received from others, confirmed and in the daemon's pool (own payouts' change left out).",
    )
    received_xmr: str = Field(default="0", max_length=32, description="received in XMR (for printer columns).")
    unlocked: int = Field(
        default=0, ge=0, description="The part of the balance that can be spent now (own payouts' spends left out)."
    )
    transfers: int = Field(default=0, ge=0, description="Incoming transfers seen (own payouts' change left out).")
    confirmations: int | None = Field(
        default=None, ge=0, description="Confirmations of the newest incoming transfer (0: in the pool)."
    )
    height: int = Field(default=0, ge=0, description="The chain height these figures were read at.")
    paid_out: int = Field(default=0, ge=0, description="Paid out by the escrow's own submitted payouts, fees included.")
    payouts: list[FundingPayout] = Field(
        default=[],
        max_length=MAX_FUNDING_PAYOUTS,
        description="The escrow's own submitted payouts: their change is not counted as received, and what they "
        "spent is not counted as unlocked.",
    )
    message: str | None = Field(
        default=None, max_length=1024, description="Why the figures could not be read at the last block, if so."
    )


class EscrowStatus(ApiModel):
    """Observed state of the key exchange. Never holds secret material (round messages, passwords)."""

    phase: EscrowPhase | None = Field(default=None, description="Pending, KeyExchange, Ready or Failed.")
    round: int = Field(default=0, ge=0, description="Rounds completed: steps every participant has done.")
    rounds: int = Field(default=0, ge=0, description="Total steps of the key exchange.")
    participants: list[ParticipantStatus] = Field(
        default=[],
        max_length=MAX_PARTICIPANTS,
        description="Per-participant progress.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["role"]},
    )
    address: str | None = Field(
        default=None,
        max_length=128,
        pattern=ADDRESS_PATTERN,
        description="The multisig address, set once every participant reports the same final address.",
    )
    conditions: list[Condition] = conditions_field("Ready, Reconciling, Stalled and Degraded (kstatus conventions).")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this status was computed for."
    )
    started_at: Timestamp | None = Field(default=None, description="When the key exchange started.")
    ready_at: Timestamp | None = Field(default=None, description="When the multisig address became ready.")
    message: str | None = Field(default=None, max_length=1024, description="Short human-readable state.")
    secret_name: str | None = Field(
        default=None, max_length=253, description="The Secret holding the wallet passwords (escrow-<uid>)."
    )
    restore_height: int | None = Field(
        default=None,
        ge=0,
        description="The chain height recorded before the wallets were made (pools with a daemon); every scan of "
        "the escrow's wallets starts there. Unset for wallets made on an offline pool.",
    )
    funding: FundingStatus | None = Field(
        default=None, description="What the address received (pools with a daemon; updated at each new block)."
    )
    last_retry: str | None = Field(
        default=None,
        max_length=253,
        description="The value of the xmrescrow.dev/retry annotation last acted on, or found when the escrow last "
        "failed (a Failed escrow is retried when the annotation changes from it).",
    )


class Escrow(ApiModel):
    """An M-of-N Monero multisig escrow: a wallet per participant, built on a WalletPool."""

    api_version: str | None = Field(default=None, description="xmrescrow.dev/v1alpha1")
    kind: str | None = Field(default=None, description="Escrow")
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: EscrowSpec = Field(description="The multisig wallet set to build. Immutable once created.")
    status: EscrowStatus = Field(default_factory=EscrowStatus, description="Progress of the key exchange.")

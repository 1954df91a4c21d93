"""Building blocks shared by the API models: the base model, timestamps, CEL rules and conditions.

Field naming convention: attributes are snake_case in Python and camelCase on the wire. Every model
derives from :class:`ApiModel`, whose alias generator maps ``pool_ref`` to ``poolRef``; models accept
both spellings (``populate_by_name``) and :meth:`ApiModel.to_api` dumps the camelCase JSON form that
the API server stores. The CRDs in ``crds/`` are generated from these models by
:mod:`escrow_operator.api.crdgen`.

Conditions follow ``metav1.Condition``: ``type``, ``status`` (True|False|Unknown), ``reason``,
``message``, ``observedGeneration`` and ``lastTransitionTime``, which changes only when ``status``
does (:func:`set_condition`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

#: The condition types of Escrows and WalletPools, as kstatus reads them (docs/install.md, GitOps):
#: Ready is the summary, Reconciling is True while work is under way, Stalled is True when the object
#: cannot make progress without a change, Degraded is True while something is wrong.
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
DEGRADED = "Degraded"

# metav1.Condition's validation, as in the core types.
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
MAX_CONDITIONS = 16


def cel(rule: str, message: str) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry. Every rule carries the message the API server returns."""
    if not message:
        raise ValueError(f"CEL rule {rule!r} needs a message")
    return {"rule": rule, "message": message}


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` attaching CEL rules to a model or a field."""
    return {"x-kubernetes-validations": list(rules)}


class ApiModel(BaseModel):
    """Base of every API model: snake_case attributes, camelCase names on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_api(self) -> dict[str, Any]:
        """The JSON form for the API server: camelCase names, RFC 3339 times, unset (None) fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with second precision, the form of ``metav1.Time``."""
    return _as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


#: A ``date-time`` string on the wire, an aware UTC datetime in Python (naive values are taken as UTC).
Timestamp = Annotated[
    datetime,
    AfterValidator(_as_utc),
    PlainSerializer(format_time, return_type=str, when_used="json"),
]


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of the object's state, as in metav1.Condition."""

    type: str = Field(
        min_length=1,
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        description="Type of the condition, such as Ready, Reconciling, Stalled or Degraded.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description="A CamelCase reason for the condition's last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the condition was set for."
    )
    last_transition_time: Timestamp = Field(description="When the status last changed.")


def conditions_field(description: str) -> Any:
    """The ``conditions`` list of a status: a map list keyed by ``type``."""
    return Field(
        default=[],
        max_length=MAX_CONDITIONS,
        description=description,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def get_condition(conditions: Sequence[Condition], type: str) -> Condition | None:
    """The condition of this type, or None."""
    for condition in conditions:
        if condition.type == type:
            return condition
    return None


def is_condition_true(conditions: Sequence[Condition], type: str) -> bool:
    condition = get_condition(conditions, type)
    return condition is not None and condition.status == ConditionStatus.TRUE


def _as_status(status: ConditionStatus | str | bool) -> ConditionStatus:
    if isinstance(status, bool):
        return ConditionStatus.TRUE if status else ConditionStatus.FALSE
    return ConditionStatus(status)


def set_condition(
    conditions: list[Condition],
    type: str,
    status: ConditionStatus | str | bool,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> bool:
    """Add or update the condition of this type in place; True when anything changed.

    ``lastTransitionTime`` is set to ``now`` (default: the current time) when the condition is new or
    its status changes, and kept otherwise, so a reason or message update is not a transition.
    """
    new_status = _as_status(status)
    existing = get_condition(conditions, type)
    if existing is not None and existing.status == new_status:
        transition = existing.last_transition_time
    else:
        transition = now if now is not None else utcnow()
    updated = Condition(
        type=type,
        status=new_status,
        reason=reason,
        message=message,
        observed_generation=observed_generation,
        last_transition_time=transition,
    )
    if existing is None:
        conditions.append(updated)
        return True
    if updated == existing:
        return False
    for index, condition in enumerate(conditions):
        if condition is existing:
            conditions[index] = updated
    return True


def remove_condition(conditions: list[Condition], type: str) -> bool:
    """Remove the condition of this type; True when there was one."""
    existing = get_condition(conditions, type)
    if existing is None:
        return False
    conditions.remove(existing)
    return True

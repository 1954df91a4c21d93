"""Figures from the operator's ``Step done:`` log lines.

    Step done: escrow=NS/NAME role=R round=K pod=P start=<epoch> end=<epoch> [rpc=<s> fs=<s> warm=<0|1>]

``rpc`` (seconds in wallet-rpc calls), ``fs`` (seconds in walletfs calls) and ``warm`` (the wallet
was already open on the pod: a wallet-affinity hit) are optional: figures that need them are None
when an operator does not log them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from escrow_operator.exchange import STEP_RETRY_PREFIX

from .measure import p50_p95

_LINE = re.compile(r"Step done: (?P<fields>.*)$", re.MULTILINE)
_FIELD = re.compile(r"(\w+)=(\S+)")


@dataclass(frozen=True)
class Step:
    escrow: str
    role: str
    round: int
    pod: str
    start: float
    end: float
    rpc: float | None = None
    fs: float | None = None
    warm: bool | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def work(self) -> float | None:
        """Seconds spent in wallet-rpc and walletfs calls (None when not logged)."""
        return None if self.rpc is None or self.fs is None else self.rpc + self.fs

    @property
    def overhead(self) -> float | None:
        """Seconds of the step spent in the operator itself: the step's time less its calls."""
        return None if self.work is None else self.seconds - self.work


def parse_steps(log: str) -> list[Step]:
    steps = []
    for match in _LINE.finditer(log):
        fields = dict(_FIELD.findall(match.group("fields")))
        steps.append(
            Step(
                escrow=fields["escrow"],
                role=fields["role"],
                round=int(fields["round"]),
                pod=fields["pod"],
                start=float(fields["start"]),
                end=float(fields["end"]),
                rpc=_float(fields.get("rpc")),
                fs=_float(fields.get("fs")),
                warm=None if "warm" not in fields else fields["warm"] == "1",
            )
        )
    return steps


_RETRY = re.compile(rf"\b{re.escape(STEP_RETRY_PREFIX)} ", re.MULTILINE)
_ERROR = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) ", re.MULTILINE)


def retried_attempts(log: str) -> int:
    """Step attempts the operator retried (a pod lost, or a wallet-rpc/walletfs error), from its warnings."""
    return len(_RETRY.findall(log))


def error_lines(log: str) -> int:
    """Lines the operator (or kopf in it) logged at ERROR or CRITICAL."""
    return len(_ERROR.findall(log))


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def busy_seconds(steps: list[Step]) -> float:
    return sum(step.seconds for step in steps)


def overhead_ms(steps: list[Step]) -> tuple[float | None, float | None]:
    """p50 and p95 of the operator's own time per step in ms (None when rpc/fs are not logged)."""
    values = [step.overhead * 1000 for step in steps if step.overhead is not None]
    if not values or len(values) != len(steps):
        return None, None
    return p50_p95(sorted(values))


def warm_fraction(steps: list[Step]) -> float | None:
    """Share of steps that found their wallet already open (None when ``warm`` is not logged)."""
    flags = [step.warm for step in steps if step.warm is not None]
    if not flags or len(flags) != len(steps):
        return None
    return sum(flags) / len(flags)


def critical_path(steps: list[Step]) -> float | None:
    """Sum over rounds of the slowest participant's rpc+fs time: the least time an escrow can take
    if its steps never waited and the operator cost nothing. For one escrow's steps."""
    if not steps or any(step.work is None for step in steps):
        return None
    slowest: dict[int, float] = {}
    for step in steps:
        slowest[step.round] = max(slowest.get(step.round, 0.0), step.work or 0.0)
    return sum(slowest.values())

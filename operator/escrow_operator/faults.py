"""Fault injection at named points, for the crash and fault tests. Off unless ESCROW_FAULTS is set,
and refused when ESCROW_MODE=production (the default): a production operator never injects.

``ESCROW_FAULTS`` is a comma-separated list of ``ACTION:POINT[/WORD][@STEP][xCOUNT]`` (``/WORD``: a word of
the step's label, e.g. ``sign`` or ``merge`` for a payout's steps; ``@STEP``: a step index, docs/design.md,
Words, or a payout's signing attempt):

* ``crash:step.after_publish@2``  SIGKILL the operator itself the first time any participant's step 2
  reaches ``step.after_publish``;
* ``fail:rpc.before.exchange_multisig_keys@3x2``  make that call fail (a retryable wallet-rpc error)
  the first two times it is reached in step 3;
* ``crash:step.after_record/sign``  SIGKILL the operator the first time a payout's sign step has
  recorded its signature;
* ``pause:rpc.before.exchange_multisig_keys@2``  hold the step there, its pod leased, until the
  operator receives SIGUSR1 (the log names the point and the pod), so a test can break the pod
  exactly mid-step.

Points are data (:class:`Point` and :func:`rpc_point`); :func:`step_points` lists every point a step of
the key exchange reaches, in order (the crash test iterates it), and :meth:`Faults.parse` refuses a
point that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from dataclasses import dataclass
from enum import StrEnum

from .walletrpc import WalletRpcError

log = logging.getLogger(__name__)


class Point(StrEnum):
    """The named points of a step, a round and the clean-up (besides ``rpc.before|after.METHOD``)."""

    STEP_START = "step.start"
    AFTER_COPY = "step.after_copy"  # the input copied to the work name
    AFTER_RECORD = "step.after_record"  # the step's result in the Secret
    BEFORE_PUBLISH = "step.before_publish"
    AFTER_PUBLISH = "step.after_publish"
    ROUND_BEFORE_STATUS = "round.before_status"  # every participant done, status not yet written
    ROUND_AFTER_STATUS = "round.after_status"
    CLEANUP_AFTER_DELETE = "cleanup.after_delete"  # the first intermediate deleted
    CLEANUP_BEFORE_READY = "cleanup.before_ready"
    PAYOUT_BEFORE_SUBMIT = "payout.before_submit"  # the transaction hashes in status, nothing submitted
    PAYOUT_AFTER_SUBMIT = "payout.after_submit"  # submitted, the status not yet Submitted
    WATCH_AFTER_LEDGERS = "watch.after_ledgers"  # a block's findings saved, the chain cursor not yet moved
    WATCH_BEFORE_CURSOR = "watch.before_cursor"  # blocks scanned, the chain cursor about to be written


#: wallet-rpc calls are named by method; ``drop_stale`` is the close_wallet(autosave=false) of whatever
#: an interrupted or other step left open.
RPC_NAMES = (
    "drop_stale",
    "create_wallet",
    "open_wallet",
    "close_wallet",
    "store",
    "prepare_multisig",
    "make_multisig",
    "exchange_multisig_keys",
    "is_multisig",
    "get_address",
    "query_key",
    "incoming_transfers",
    "refresh",
    "export_multisig_info",
    "import_multisig_info",
    "get_balance",
    "validate_address",
    "transfer",
    "sweep_all",
    "sign_multisig",
    "submit_multisig",
)


def rpc_point(when: str, name: str) -> str:
    """``rpc.before.NAME`` or ``rpc.after.NAME``."""
    return f"rpc.{when}.{name}"


def known_points() -> set[str]:
    return {p.value for p in Point} | {rpc_point(w, n) for w in ("before", "after") for n in RPC_NAMES}


def step_points(step: int, final: int, calls: list[str], affinity: bool = True) -> list[str]:
    """Every point a cold run of step ``step`` reaches, in order; ``calls`` are the operation's
    wallet-rpc methods (:func:`escrow_operator.multisig.calls`)."""

    def rpc(*names: str) -> list[str]:
        return [rpc_point(when, name) for name in names for when in ("before", "after")]

    points = [Point.STEP_START.value, *rpc("drop_stale")]
    if step > 0:
        points += [Point.AFTER_COPY.value, *rpc("open_wallet")]
    points += [*rpc(*calls), Point.AFTER_RECORD.value]
    points += rpc("store" if affinity and step < final else "close_wallet")
    points += [
        Point.BEFORE_PUBLISH.value,
        Point.AFTER_PUBLISH.value,
        Point.ROUND_BEFORE_STATUS.value,
        Point.ROUND_AFTER_STATUS.value,
    ]
    return points


_SPEC = re.compile(
    r"^(?P<action>crash|fail|pause):(?P<point>[a-z_]+(?:\.[a-z_]+)+)(?:/(?P<within>[a-z]+))?(?:@(?P<round>\d+))?"
    r"(?:x(?P<count>\d+))?$"
)


class InjectedFault(WalletRpcError):
    """A failure made on purpose at a named point; handled like any retryable wallet-rpc error."""

    def __init__(self, point: str) -> None:
        super().__init__(point, -999, f"injected fault at {point}")


@dataclass
class Fault:
    action: str
    point: str
    round: int | None
    remaining: int
    within: str | None = None  # a word of the step's label

    def matches(self, point: str, round_: int | None, label: str) -> bool:
        return (
            self.remaining > 0
            and self.point == point
            and (self.round is None or self.round == round_)
            and (self.within is None or self.within in re.split(r"[\s/]+", label))
        )


class Faults:
    def __init__(self, faults: list[Fault]) -> None:
        self.faults = faults
        self._resume: asyncio.Event | None = None

    def install_resume_signal(self) -> None:
        """SIGUSR1 releases every paused step (only when a pause fault is armed)."""
        if any(f.action == "pause" for f in self.faults):
            self._resume = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self._resume.set)

    @classmethod
    def parse(cls, spec: str | None, mode: str) -> Faults:
        if not spec:
            return cls([])
        if mode == "production":
            raise ValueError(
                "ESCROW_FAULTS is set but ESCROW_MODE is production: fault injection is for tests only. "
                "Unset ESCROW_FAULTS, or set ESCROW_MODE=test on a test cluster."
            )
        faults = []
        for item in filter(None, (s.strip() for s in spec.split(","))):
            m = _SPEC.match(item)
            if not m:
                raise ValueError(
                    f"bad fault {item!r}: expected ACTION:POINT[/WORD][@STEP][xCOUNT], e.g. crash:step.after_publish@2"
                )
            if m["point"] not in known_points():
                raise ValueError(
                    f"bad fault {item!r}: no point {m['point']!r}; points: {', '.join(sorted(known_points()))}"
                )
            round_ = int(m["round"]) if m["round"] else None
            faults.append(Fault(m["action"], m["point"], round_, int(m["count"] or 1), m["within"]))
        return cls(faults)

    def __bool__(self) -> bool:
        return bool(self.faults)

    async def check(self, point: str, round_: int | None = None, pod: str | None = None, label: str = "") -> None:
        for fault in self.faults:
            if fault.matches(point, round_, label):
                fault.remaining -= 1
                if fault.action == "pause" and self._resume is not None:
                    log.warning("fault injection: paused at %s (round %s) pod=%s; SIGUSR1 resumes", point, round_, pod)
                    await self._resume.wait()
                    log.warning("fault injection: resumed at %s (round %s) pod=%s", point, round_, pod)
                    return
                if fault.action == "crash":
                    log.warning("fault injection: SIGKILL at %s (round %s) step=%s", point, round_, label or "-")
                    for handler in logging.getLogger().handlers:
                        handler.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                log.warning("fault injection: failing at %s (round %s)", point, round_)
                raise InjectedFault(point)


NONE = Faults([])

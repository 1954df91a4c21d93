"""Fault injection at named points, for the crash and fault tests. Off unless ESCROW_FAULTS is set,
and refused when ESCROW_MODE=production (the default): a production operator never injects.

``ESCROW_FAULTS`` is a comma-separated list of ``ACTION:POINT[@ROUND][xCOUNT]``:

* ``crash:step.after_publish@2``  SIGKILL the operator itself the first time any participant's round-2
  step reaches ``step.after_publish``;
* ``fail:rpc.before.exchange_multisig_keys@3x2``  make that call fail (a retryable wallet-rpc error)
  the first two times it is reached in round 3;
* ``pause:rpc.before.exchange_multisig_keys@2``  hold the step there, its pod leased, until the
  operator receives SIGUSR1 (the log names the point and the pod), so a test can break the pod
  exactly mid-step.

Points: ``step.start``, ``rpc.before.drop_stale`` / ``rpc.after.drop_stale`` (closing whatever an
interrupted step left open), ``step.after_copy``, ``rpc.before.METHOD`` / ``rpc.after.METHOD`` for every
wallet-rpc call of a step, ``step.after_record`` (message in the Secret), ``step.before_publish``,
``step.after_publish``, ``round.before_status`` / ``round.after_status`` (the status patch after a
round), ``cleanup.after_delete`` (after the first intermediate is deleted), ``cleanup.before_ready``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from dataclasses import dataclass

from .walletrpc import WalletRpcError

log = logging.getLogger(__name__)

_SPEC = re.compile(r"^(?P<action>crash|fail|pause):(?P<point>[a-z_]+(?:\.[a-z_]+)+)(?:@(?P<round>\d+))?(?:x(?P<count>\d+))?$")


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

    def matches(self, point: str, round_: int | None) -> bool:
        return self.remaining > 0 and self.point == point and (self.round is None or self.round == round_)


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
    def parse(cls, spec: str | None, mode: str) -> "Faults":
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
                raise ValueError(f"bad fault {item!r}: expected ACTION:POINT[@ROUND][xCOUNT], e.g. crash:step.after_publish@2")
            faults.append(
                Fault(m["action"], m["point"], int(m["round"]) if m["round"] else None, int(m["count"] or 1))
            )
        return cls(faults)

    def __bool__(self) -> bool:
        return bool(self.faults)

    async def check(self, point: str, round_: int | None = None, pod: str | None = None) -> None:
        for fault in self.faults:
            if fault.matches(point, round_):
                fault.remaining -= 1
                if fault.action == "pause" and self._resume is not None:
                    log.warning("fault injection: paused at %s (round %s) pod=%s; SIGUSR1 resumes", point, round_, pod)
                    await self._resume.wait()
                    log.warning("fault injection: resumed at %s (round %s) pod=%s", point, round_, pod)
                    return
                if fault.action == "crash":
                    log.warning("fault injection: SIGKILL at %s (round %s)", point, round_)
                    for handler in logging.getLogger().handlers:
                        handler.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                log.warning("fault injection: failing at %s (round %s)", point, round_)
                raise InjectedFault(point)


NONE = Faults([])

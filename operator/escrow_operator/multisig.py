"""The multisig key-exchange protocol: what each step does on its open wallet (docs/design.md, Steps and files).

Steps of participant ``role`` in an M-of-N escrow, K = N - M + 2 (:func:`escrow_operator.naming.final_step`):

====  ====================================================================  ====================
step  calls (on the wallet the step opened or created)                      message recorded
====  ====================================================================  ====================
0     ``create_wallet``, ``prepare_multisig``                               round-1 info
1     ``prepare_multisig`` (enables multisig in this process),              round-2 info
      ``make_multisig`` with the previous messages, ``is_multisig`` check
s     ``exchange_multisig_keys`` with the others' previous messages          round-(s+1) info
K     ``exchange_multisig_keys``, ``is_multisig`` (ready), the address      none (the address)
====  ====================================================================  ====================

:data:`CALLS` lists the wallet-rpc methods of each kind of step in order (the fault points of the
crash tests are made from it). :func:`run_step` does one step on an open wallet through a
:class:`RpcHook`, which the operator uses for timing, metrics and fault points and the benchmark's
prior-design driver passes straight through. The version policy (which messages ``make_multisig``
takes) and the checks after ``make_multisig`` and after the last exchange live here too.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from pydantic import SecretStr

from .walletrpc import MultisigStatus, Version, WalletRpc, secret

T = TypeVar("T")


class MultisigMismatch(Exception):
    """``is_multisig`` after a round does not describe the wallet that was meant to be built."""


# --------------------------------------------------------------------------------------------------------------
# Version policy: which round messages to pass
# --------------------------------------------------------------------------------------------------------------
#
# Established from monero-project/monero's history (tags and branches; no code copied) and measured with
# Debian's 0.18.0.0:
#
# * Every v0.18.x release (0.18.0.0 ... 0.18.5.1; wallet RPC 1.25 ... 1.31) builds the signer list in
#   wallet2::make_multisig from the messages passed, skipping the local wallet's own message, then adds itself.
#   So there the own message is optional, and own + a SUBSET of the others silently yields fewer signers
#   (measured: own + one other gives a 2-of-2). Measured on 0.18.0.0: the other N-1 messages and all N
#   messages both give the 2-of-3; Monero's own functional tests on the 0.18 line pass all N.
# * Commit ddf3af1f0 "add key exchange round booster to multisig_account" (PR #8203, merged into master on
#   2024-07-16, present on release-v0.19, in NO v0.18 tag) makes make_multisig REQUIRE the local wallet's own
#   message ("The local account's signer key was not found in initial multisig kex messages ...") so that the
#   number of messages equals the number of signers.
# * WALLET_RPC_VERSION_MINOR does not separate the two lines: master was at 1.26 when PR #8203 merged
#   (bumped to 1.26 on 2024-01-19, to 1.27 on 2025-02-14), while releases 0.18.1.2 ... 0.18.3.3 are also
#   1.26 and later 0.18 releases reuse 1.27 ... 1.31. Only <= 1.25 is unambiguous (0.18.0.0 ... 0.18.1.1,
#   and master before 2024-01-19): own message left out, the measured 0.18.0.0 behaviour.
# * For >= 1.26 we pass the own message too: required by the newer code, and ignored by every 0.18 release
#   (skipped when collecting signers; its key is dropped from the round-1 evaluation).
#
# Exchange rounds: the other N-1 participants' messages in every version. Measured on 0.18.0.0: the N-1
# others and all N both work; own + a subset fails with "A pubkey recommended by multisig kex messages had
# an unexpected number of recommendations". Later code drops the local signer's keys from the evaluation.
#
# Whatever is passed, the caller checks is_multisig threshold/total after make_multisig (check_multisig).

#: Last wallet RPC version known to require the own message to be left out of make_multisig.
LAST_VERSION_WITHOUT_OWN_MESSAGE: Final[tuple[int, int]] = (1, 25)


class Stage(enum.StrEnum):
    MAKE = "make_multisig"
    EXCHANGE = "exchange_multisig_keys"


def own_message_in_make_multisig(version: Version) -> bool:
    """Whether this participant's own round-1 message goes into its ``make_multisig`` call."""
    return version.parts > LAST_VERSION_WITHOUT_OWN_MESSAGE


def messages_for(
    own_role: str,
    all_messages: Mapping[str, str | SecretStr],
    version: Version,
    stage: Stage | str,
) -> list[SecretStr]:
    """The round messages participant ``own_role`` passes to its call in ``stage``.

    ``all_messages`` maps every participant's role to its message of the previous round (all N of them,
    own included); the result keeps the mapping's order. Raises :class:`ValueError` (without showing any
    message) if ``own_role`` is missing or two participants published the same message.
    """
    stage = Stage(stage)
    if own_role not in all_messages:
        raise ValueError(f"no message of participant {own_role!r} among {sorted(all_messages)}")
    if len(all_messages) < 2:
        raise ValueError("a multisig round needs the messages of at least two participants")
    seen: dict[str, str] = {}
    for role, message in all_messages.items():
        value = secret(message).get_secret_value()
        if not value:
            raise ValueError(f"participant {role!r} has an empty message")
        if value in seen:
            raise ValueError(f"participants {seen[value]!r} and {role!r} have the same message")
        seen[value] = role
    include_own = stage is Stage.MAKE and own_message_in_make_multisig(version)
    return [secret(m) for role, m in all_messages.items() if include_own or role != own_role]


def check_multisig(status: MultisigStatus, threshold: int, total: int, *, ready: bool | None = None) -> None:
    """Raise :class:`MultisigMismatch` unless ``status`` is a ``threshold``-of-``total`` multisig wallet
    (and, if ``ready`` is given, in that readiness state)."""
    if not status.multisig:
        raise MultisigMismatch(f"the wallet is not multisig; expected a {threshold}-of-{total} wallet")
    if (status.threshold, status.total) != (threshold, total):
        raise MultisigMismatch(
            f"built a {status.threshold}-of-{status.total} instead of {threshold}-of-{total}: "
            "the round messages did not name the expected signers (altered or duplicated in the escrow's Secret?)"
        )
    if ready is not None and status.ready != ready:
        state = "ready" if status.ready else "not ready"
        raise MultisigMismatch(f"the {threshold}-of-{total} multisig wallet is {state}, expected the opposite")


class RoundMessagesInvalid(Exception):
    """The recorded messages of a round cannot be passed on (missing, empty or duplicated)."""


# --------------------------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------------------------


class RpcHook(Protocol):
    """Runs one typed wallet-rpc call (``call``) for the step; ``method`` names it for timing and fault points."""

    async def rpc(self, method: str, call: Awaitable[T], point: str | None = None) -> T: ...


class PassThrough:
    """A hook that only awaits the call (the benchmark's driver, tests)."""

    async def rpc(self, method: str, call: Awaitable[T], point: str | None = None) -> T:
        return await call


@dataclass(frozen=True)
class Shape:
    threshold: int
    total: int

    @property
    def final(self) -> int:
        """K = N - M + 2: the index of the last step."""
        return self.total - self.threshold + 2


@dataclass(frozen=True)
class StepResult:
    """What a step leaves to record: the next round's message (all steps but the last) or the address."""

    message: SecretStr | None
    address: str | None = None


def calls(step: int, shape: Shape) -> list[str]:
    """The wallet-rpc methods step ``step`` calls on its open wallet, in order (``get_address`` only
    when ``exchange_multisig_keys`` does not return the address)."""
    if step == 0:
        return ["create_wallet", "prepare_multisig"]
    if step == 1:
        return ["prepare_multisig", "make_multisig", "is_multisig"]
    if step < shape.final:
        return ["exchange_multisig_keys"]
    return ["exchange_multisig_keys", "is_multisig"]


async def create(hook: RpcHook, rpc: WalletRpc, wallet: str, password: SecretStr) -> StepResult:
    """Step 0: create the participant's wallet and its round-1 message."""
    await hook.rpc("create_wallet", rpc.create_wallet(wallet, password))
    return StepResult((await hook.rpc("prepare_multisig", rpc.prepare_multisig(True))).multisig_info)


async def exchange(
    hook: RpcHook,
    rpc: WalletRpc,
    step: int,
    shape: Shape,
    role: str,
    password: SecretStr,
    previous: Mapping[str, SecretStr],
    version: Version,
) -> StepResult:
    """Steps 1..K on the participant's open wallet, with every participant's message of step - 1."""
    try:
        if step == 1:
            made = messages_for(role, previous, version, Stage.MAKE)
        else:
            exchanged = messages_for(role, previous, version, Stage.EXCHANGE)
    except ValueError as exc:
        raise RoundMessagesInvalid(str(exc)) from None
    if step == 1:
        await hook.rpc("prepare_multisig", rpc.prepare_multisig(True))  # enables multisig in this process
        made_reply = await hook.rpc("make_multisig", rpc.make_multisig(made, shape.threshold, password))
        check_multisig(await hook.rpc("is_multisig", rpc.is_multisig()), shape.threshold, shape.total, ready=False)
        return StepResult(made_reply.multisig_info)
    reply = await hook.rpc("exchange_multisig_keys", rpc.exchange_multisig_keys(exchanged, password))
    if step < shape.final:
        return StepResult(reply.multisig_info)
    check_multisig(await hook.rpc("is_multisig", rpc.is_multisig()), shape.threshold, shape.total, ready=True)
    address = reply.address or await hook.rpc("get_address", rpc.get_address())
    return StepResult(None, address)

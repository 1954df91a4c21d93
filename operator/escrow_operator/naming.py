"""Wallet file names of the escrow protocol (docs/design.md, Steps and files).

For participant ``role`` of the escrow with uid ``uid`` the base name is ``{role}_escrow_{uid}``.
An M-of-N escrow runs K = N - M + 2 steps after creation numbering 0..K:

====  =====================  ======================  =========================
step  call                   runs on (a copy of)     publishes
====  =====================  ======================  =========================
0     create + prepare       (new wallet)            ``B_round_1``
1     make_multisig          ``B_round_1``           ``B_round_2_input``
s     exchange_multisig_keys ``B_round_s_input``     ``B_round_{s+1}_input``
K     exchange_multisig_keys ``B_round_K_input``     ``B_round_K_final``
====  =====================  ======================  =========================

A wallet is a file set: ``NAME.keys``, the cache ``NAME`` and optionally ``NAME.address.txt``.
Every name this module produces matches :data:`WALLET_FILE_RE`; the walletfs sidecar accepts no other.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

ROLE_PATTERN = r"[a-z][a-z0-9]{0,15}"
UID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: A payout's copies: ``pay_{payout}_{attempt}_{synced|merged|work_{random}}`` (:class:`PayoutNames`).
PAYOUT_STAGE_PATTERN = r"pay_[0-9a-f]{12}_[1-9][0-9]?_(?:synced|merged|work_[0-9a-f]{8})"
STAGE_PATTERN = (
    r"round_1|round_[1-9][0-9]?_input|round_[1-9][0-9]?_final|work_[0-9]{1,2}_[0-9a-f]{8}|watch|" + PAYOUT_STAGE_PATTERN
)
WALLET_SUFFIXES = ("", ".keys", ".address.txt")

#: A wallet name (no suffix) of the escrow pattern.
WALLET_NAME_RE = re.compile(rf"^(?P<role>{ROLE_PATTERN})_escrow_(?P<uid>{UID_PATTERN})_(?P<stage>{STAGE_PATTERN})$")
#: A single file of a wallet file set.
WALLET_FILE_RE = re.compile(
    rf"^(?P<wallet>{ROLE_PATTERN}_escrow_{UID_PATTERN}_(?:{STAGE_PATTERN}))(?P<suffix>\.keys|\.address\.txt)?$"
)
ROLE_RE = re.compile(rf"^{ROLE_PATTERN}$")


def is_wallet_name(name: str) -> bool:
    return WALLET_NAME_RE.fullmatch(name) is not None


def is_wallet_file(name: str) -> bool:
    return WALLET_FILE_RE.fullmatch(name) is not None


def final_step(participants: int, threshold: int) -> int:
    """K = N - M + 2: the index of the last step (the one that publishes ``round_K_final``)."""
    if not 1 <= threshold <= participants:
        raise ValueError(f"threshold {threshold} must be between 1 and the participant count {participants}")
    return participants - threshold + 2


@dataclass(frozen=True)
class WalletNames:
    """The file names of one participant of one escrow."""

    role: str
    uid: str
    final: int  # K

    def __post_init__(self) -> None:
        if not ROLE_RE.fullmatch(self.role):
            raise ValueError(f"role {self.role!r} does not match {ROLE_PATTERN}")
        if not re.fullmatch(UID_PATTERN, self.uid):
            raise ValueError(f"uid {self.uid!r} is not a lowercase Kubernetes uid")

    @property
    def base(self) -> str:
        return f"{self.role}_escrow_{self.uid}"

    def stage(self, stage: str) -> str:
        return f"{self.base}_{stage}"

    def input_of(self, step: int) -> str | None:
        """The published wallet a step runs on (a copy of); None for step 0, which creates one."""
        if step == 0:
            return None
        if step == 1:
            return self.stage("round_1")
        self._check(step)
        return self.stage(f"round_{step}_input")

    def output_of(self, step: int) -> str:
        """The wallet a step publishes."""
        self._check(step)
        if step == 0:
            return self.stage("round_1")
        if step == self.final:
            return self.stage(f"round_{self.final}_final")
        return self.stage(f"round_{step + 1}_input")

    @property
    def final_wallet(self) -> str:
        return self.output_of(self.final)

    @property
    def watch(self) -> str:
        """The funding watch's copy of the final wallet (a cache of its scan; never published)."""
        return self.stage("watch")

    def intermediates(self) -> list[str]:
        """Every published wallet but the final one, in step order."""
        return [self.output_of(step) for step in range(self.final)]

    def work(self, step: int, attempt: str | None = None) -> str:
        """A fresh work-copy name for one attempt at a step (unique, so a stale attempt never collides)."""
        self._check(step)
        return self.stage(f"work_{step}_{attempt or secrets.token_hex(4)}")

    def _check(self, step: int) -> None:
        if not 0 <= step <= self.final:
            raise ValueError(f"step {step} is outside 0..{self.final}")


#: Attempts of one payout (a fresh attempt re-exports every signer's multisig info).
MAX_PAYOUT_ATTEMPTS = 99


def payout_tag(payout_uid: str) -> str:
    """What a payout's wallet names carry of its uid: ``pay_`` and its first 12 hex digits."""
    if not re.fullmatch(UID_PATTERN, payout_uid):
        raise ValueError(f"uid {payout_uid!r} is not a lowercase Kubernetes uid")
    return "pay_" + payout_uid.replace("-", "")[:12]


@dataclass(frozen=True)
class PayoutNames:
    """The copies one signer's wallet goes through in one attempt of one payout (docs/design.md, Signing).

    ``synced`` (the final wallet after its multisig info was exported) and ``merged`` (after the other
    signers' infos were imported) are published like a round's wallets: each step runs on a copy of the
    previous one, so the final wallet is never opened and a crash leaves the step to run again.
    """

    wallet: WalletNames
    payout_uid: str
    attempt: int

    def __post_init__(self) -> None:
        if not 1 <= self.attempt <= MAX_PAYOUT_ATTEMPTS:
            raise ValueError(f"payout attempt {self.attempt} is outside 1..{MAX_PAYOUT_ATTEMPTS}")

    @property
    def base(self) -> str:
        return self.wallet.stage(f"{payout_tag(self.payout_uid)}_{self.attempt}")

    @property
    def synced(self) -> str:
        return f"{self.base}_synced"

    @property
    def merged(self) -> str:
        return f"{self.base}_merged"

    def work(self) -> str:
        return f"{self.base}_work_{secrets.token_hex(4)}"


def wallet_files(wallet: str) -> list[str]:
    """The files of a wallet set; ``.keys`` last, the order in which they are published."""
    return [wallet + ".address.txt", wallet, wallet + ".keys"]

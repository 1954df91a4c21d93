"""Which M-of-N escrow shapes fit: the size of the key-exchange round messages and of the Escrow's Secret.

Every step but the last records its round message in the Secret ``escrow-<uid>``
(:mod:`escrow_operator.escrow_secret`), next to a password and, at the end, an address per participant.
The API server refuses a Secret whose ``data`` values add up to more than 1 MiB (``ValidateSecret``:
``totalSize += len(value)`` over the *decoded* values, keys not counted; ``core.MaxSecretSize``), and
the round messages grow with the binomial coefficient C(N-1, s), so wide escrows with a low threshold
cannot be built. This module models the sizes exactly; :mod:`escrow_operator.api.escrow` refuses the
shapes that do not fit (CEL rule in the CRD and a pydantic validator, both from
:func:`min_thresholds`).

The model, measured on Debian's monero-wallet-rpc 0.18.0.0 with ``hack/measure-message-sizes.py``
(offline wallets, the operator's exact calls; shapes 1-of-2, 1-of-3, 2-of-3, 3-of-3, 2-of-4, 2-of-5,
3-of-5, 2-of-6, 4-of-6; every length matched, see ``tests/unit/test_shapes.py``), and read the same
way from wallet2's ``multisig_kex_msg`` (format V2):

- step 0 (``prepare_multisig``): ``"MultisigxV2R1"`` + base58 of a private key, a signing public key
  and a signature (32 + 32 + 64 bytes): always 189 characters;
- step s in 1..K-2 (``make_multisig``, then ``exchange_multisig_keys``; the message of kex round s+1):
  ``"MultisigxV2Rn"`` + base58 of varint(round) + varint(count) + count public keys of 32 bytes + a
  signing key and signature (96 bytes), with count = C(N-1, s);
- step K-1 (the post-kex verification message, K = N - M + 2) and step K (not recorded): the same
  layout with 2 keys (236 characters).

Monero's base58 encodes each 8-byte block as 11 characters and a final block of k bytes as
``[0, 2, 3, 5, 6, 7, 9, 10, 11][k]``, so each key adds exactly 44 characters. The model also
reproduces the field report of a 2-of-16 escrow whose Secret held 1,017,748 bytes (passwords, steps 0-3
of all 16 participants, step 4 of ten: C(15, 4) = 1365 keys, 60,210 characters each) when the
eleventh step-4 write was refused.

A shape fits when its complete Secret (all recorded messages, passwords and addresses) stays within
:data:`SECRET_DATA_BUDGET`, 900 KiB: a tenth below the limit for anything this model does not see.
Stored as JSON (``--storage-media-type``) the base64 form of 900 KiB is still below etcd's default
1.5 MiB request limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import comb
from typing import Final

from .naming import final_step

#: ``core.MaxSecretSize``: the most the decoded values of a Secret's ``data`` may add up to.
SECRET_DATA_LIMIT: Final[int] = 1024 * 1024
#: What a shape's Secret may use: :data:`SECRET_DATA_LIMIT` less a tenth.
SECRET_DATA_BUDGET: Final[int] = 900 * 1024

#: ``secrets.token_urlsafe(32)``: a wallet password (:mod:`escrow_operator.escrow_secret`).
PASSWORD_LENGTH: Final[int] = 43
#: A standard Monero address (mainnet, stagenet and testnet alike): the multisig address.
ADDRESS_LENGTH: Final[int] = 95

#: ``"MultisigxV2R1"`` and ``"MultisigxV2Rn"``: the prefix of every round message.
MAGIC_LENGTH: Final[int] = 13
#: Step 0's payload: message private key, signing public key, signature.
FIRST_MESSAGE_PAYLOAD: Final[int] = 32 + 32 + 64
#: A public key in a later message.
KEY_BYTES: Final[int] = 32
#: The signing public key and the signature that close every later message.
SIGNATURE_BYTES: Final[int] = 32 + 64
#: Keys in the post-kex verification message (step K-1) and in the last step's reply (step K).
POST_KEX_KEYS: Final[int] = 2

#: Characters of Monero's base58 for a final block of 0..8 bytes (a full block: 11).
_BASE58_TAIL: Final[tuple[int, ...]] = (0, 2, 3, 5, 6, 7, 9, 10, 11)


def base58_length(size: int) -> int:
    """Characters of Monero's block-wise base58 for ``size`` bytes (8-byte blocks, 11 characters each)."""
    if size < 0:
        raise ValueError(f"size {size} is negative")
    return 11 * (size // 8) + _BASE58_TAIL[size % 8]


def varint_length(value: int) -> int:
    """Bytes of Monero's varint (7 bits a byte) for a non-negative ``value``."""
    if value < 0:
        raise ValueError(f"varint {value} is negative")
    length = 1
    while value >= 0x80:
        value >>= 7
        length += 1
    return length


def message_keys(participants: int, threshold: int, step: int) -> int:
    """Public keys in the message of ``step`` (0 for step 0, whose message carries a private key)."""
    final = final_step(participants, threshold)
    if not 0 <= step <= final:
        raise ValueError(f"step {step} is outside 0..{final} of a {threshold}-of-{participants} exchange")
    if step == 0:
        return 0
    if step >= final - 1:
        return POST_KEX_KEYS
    return comb(participants - 1, step)


def message_length(participants: int, threshold: int, step: int) -> int:
    """Characters (= bytes, base58 is ASCII) of one participant's ``multisig_info`` from ``step``."""
    if step == 0:
        final_step(participants, threshold)  # checks the shape
        return MAGIC_LENGTH + base58_length(FIRST_MESSAGE_PAYLOAD)
    keys = message_keys(participants, threshold, step)
    payload = varint_length(step + 1) + varint_length(keys) + KEY_BYTES * keys + SIGNATURE_BYTES
    return MAGIC_LENGTH + base58_length(payload)


def recorded_steps(participants: int, threshold: int) -> range:
    """The steps whose message the Secret keeps: 0..K-1 (the last step's is not needed by anyone)."""
    return range(final_step(participants, threshold))


def secret_data_bytes(participants: int, threshold: int) -> int:
    """What the API server counts for a finished escrow's Secret: every value's decoded length.

    N passwords, N addresses and the N messages of every recorded step. The Secret only grows during
    the exchange, so this is its largest size."""
    messages = sum(message_length(participants, threshold, step) for step in recorded_steps(participants, threshold))
    return participants * (PASSWORD_LENGTH + ADDRESS_LENGTH + messages)


def fits(participants: int, threshold: int, budget: int = SECRET_DATA_BUDGET) -> bool:
    """Whether an M-of-N escrow's Secret stays within ``budget``."""
    return secret_data_bytes(participants, threshold) <= budget


def min_threshold(participants: int, budget: int = SECRET_DATA_BUDGET) -> int:
    """The lowest threshold whose N-participant escrow fits (a higher one always needs fewer, smaller
    messages). Raises :class:`ValueError` if not even N-of-N fits."""
    for threshold in range(1, participants + 1):
        if fits(participants, threshold, budget):
            return threshold
    raise ValueError(f"no threshold of {participants} participants fits in {budget} bytes")


def min_thresholds(min_participants: int, max_participants: int, budget: int = SECRET_DATA_BUDGET) -> dict[int, int]:
    """{N: :func:`min_threshold` of N} for N in ``min_participants..max_participants``."""
    return {n: min_threshold(n, budget) for n in range(min_participants, max_participants + 1)}


def max_participants_for(threshold: int, table: Mapping[int, int]) -> int | None:
    """The most participants a ``threshold`` allows by ``table`` ({N: minimum threshold}), or None if
    no N of the table allows it."""
    allowed = [n for n, lowest in table.items() if lowest <= threshold <= n]
    return max(allowed) if allowed else None

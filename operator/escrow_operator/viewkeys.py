"""Finding an escrow's outputs in a transaction with its private view key, the way wallet2 does.

Pure functions over decoded transactions (``get_transactions`` / ``get_block`` JSON). The curve is
libsodium's Ed25519 (through PyNaCl) and the hash Keccak-256 (pycryptodome); nothing here does field
arithmetic by hand. For each transaction public key R (and each additional key, one per output):

1. the derivation D = 8·(a·R): the cofactor applied after the scalar multiplication, as wallet2's
   ``generate_key_derivation`` does. libsodium only multiplies points of the prime-order subgroup, so
   8·R is formed first (three doublings) and multiplied by a: a·(8·R) equals 8·(a·R) as integers
   commute, and it is also right for an R with a torsion component, where (8a mod l)·R is not;
2. for output i, its one-byte view tag ``Keccak("view_tag" || D || varint(i))[0]`` where the output
   has one, then the full output key ``Hs(D || varint(i))·G + B`` (B the public spend key);
3. the amount: in the clear for a coinbase (and pre-RingCT) output, else decrypted from ``ecdhInfo``
   (``amount XOR Keccak("amount" || s)[:8]``) and **checked against the output's commitment** C =
   mask·G + amount·H (mask = Hs("commitment_mask" || s)). An output whose commitment does not open to
   the decrypted amount is not counted: a sender cannot make the watch report money it did not send.

Key images (:attr:`Transaction.key_images`) are what a spend reveals: the operator records those of the
escrow's outputs when it signs a payout, and a transaction that carries one spends that output.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings as sodium
from Crypto.Hash import keccak
from nacl.exceptions import RuntimeError as SodiumError

#: Monero's second generator H (amount commitments C = mask·G + amount·H).
H_POINT = bytes.fromhex("8b655970153799af2aeadc9ff1add0ea6c7251d54154cfa92c173a0dd39c1f94")
IDENTITY = bytes([1]) + bytes(31)
_ZERO32 = bytes(32)
#: RingCT types whose ecdhInfo holds an 8-byte encrypted amount (Bulletproof2, CLSAG, Bulletproof+).
COMPACT_AMOUNT_TYPES = frozenset({4, 5, 6})
#: tx_extra field tags (cryptonote_basic/tx_extra.h).
_EXTRA_PADDING, _EXTRA_PUBKEY, _EXTRA_NONCE, _EXTRA_MERGE_MINING, _EXTRA_ADDITIONAL = 0, 1, 2, 3, 4
_EXTRA_MYSTERIOUS_MINERGATE = 0xDE

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BLOCK_CHARS = [0, 2, 3, 5, 6, 7, 9, 10, 11]  # base58 chars of a block of 0..8 bytes


class BadKeys(ValueError):
    """Keys or an address that do not fit together (a forged or corrupted record)."""


def keccak256(data: bytes) -> bytes:
    return keccak.new(data=data, digest_bits=256).digest()


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def hash_to_scalar(data: bytes) -> bytes:
    return sodium.crypto_core_ed25519_scalar_reduce(keccak256(data) + _ZERO32)


def _base58_decode(text: str) -> bytes:
    out = bytearray()
    for start in range(0, len(text), 11):
        chunk = text[start : start + 11]
        size = _BLOCK_CHARS.index(len(chunk)) if len(chunk) in _BLOCK_CHARS else -1
        if size <= 0:
            raise BadKeys(f"not a Monero base58 string (a block of {len(chunk)} characters)")
        number = 0
        for char in chunk:
            digit = _ALPHABET.find(char)
            if digit < 0:
                raise BadKeys(f"not a Monero base58 string ({char!r})")
            number = number * 58 + digit
        if number >= 1 << (8 * size):
            raise BadKeys("not a Monero base58 string (a block overflows)")
        out += number.to_bytes(size, "big")
    return bytes(out)


def address_keys(address: str) -> tuple[bytes, bytes]:
    """The public spend and view keys of a standard address, its checksum verified."""
    raw = _base58_decode(address)
    if len(raw) < 69:
        raise BadKeys(f"not a standard Monero address ({len(raw)} bytes decoded)")
    body, checksum = raw[:-4], raw[-4:]
    if keccak256(body)[:4] != checksum:
        raise BadKeys("the address's checksum does not match")
    keys = body[-64:]
    return keys[:32], keys[32:]


@dataclass(frozen=True)
class WatchKeys:
    """What watching one escrow needs: its private view key a and public spend key B (the address's)."""

    view_secret: bytes
    spend_public: bytes

    @classmethod
    def from_wallet(cls, view_key_hex: str, address: str) -> WatchKeys:
        """From wallet-rpc's ``query_key view_key`` and the wallet's address; refuses keys that do not
        belong to the address (its public view key must be a·G)."""
        try:
            secret = bytes.fromhex(view_key_hex)
        except ValueError:
            raise BadKeys("the view key is not hex") from None
        if len(secret) != 32 or sodium.crypto_core_ed25519_scalar_reduce(secret + _ZERO32) != secret:
            raise BadKeys("the view key is not a reduced 32-byte scalar")
        spend, view = address_keys(address)
        if sodium.crypto_scalarmult_ed25519_base_noclamp(secret) != view:
            raise BadKeys("the view key does not belong to the address")
        return cls(secret, spend)


@dataclass(frozen=True)
class Output:
    """An output of a transaction (its index in ``vout``), as scanning needs it."""

    index: int
    key: bytes
    view_tag: int | None
    clear_amount: int  # non-zero for coinbase and pre-RingCT outputs


@dataclass(frozen=True)
class Transaction:
    """A decoded transaction: what scanning and spend detection read of it."""

    hash: str
    unlock_time: int
    coinbase: bool
    rct_type: int
    outputs: Sequence[Output]
    pubkeys: Sequence[bytes]
    additional_pubkeys: Sequence[bytes]
    ecdh_amounts: Sequence[bytes]
    commitments: Sequence[bytes]
    key_images: Sequence[str] = field(default=())
    #: 8·R for each public key (None: not a point, or of small order), computed once per transaction.
    _eight: dict[bytes, bytes | None] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, tx_hash: str, decoded: str | dict[str, Any]) -> Transaction:
        doc = json.loads(decoded) if isinstance(decoded, str) else decoded
        vin = doc.get("vin") or []
        coinbase = any("gen" in entry for entry in vin)
        outputs = []
        for index, out in enumerate(doc.get("vout") or []):
            target = out.get("target") or {}
            if "tagged_key" in target:
                key, tag = target["tagged_key"]["key"], int(target["tagged_key"]["view_tag"], 16)
            elif "key" in target:
                key, tag = target["key"], None
            else:
                continue  # not a key output: nobody's
            outputs.append(Output(index, bytes.fromhex(key), tag, int(out.get("amount") or 0)))
        rct = doc.get("rct_signatures") or {}
        pubkeys, additional = parse_extra(bytes(doc.get("extra") or []))
        return cls(
            hash=tx_hash,
            unlock_time=int(doc.get("unlock_time") or 0),
            coinbase=coinbase,
            rct_type=int(rct.get("type") or 0),
            outputs=outputs,
            pubkeys=pubkeys,
            additional_pubkeys=additional,
            ecdh_amounts=[bytes.fromhex(e.get("amount", ""))[:8] for e in rct.get("ecdhInfo") or []],
            commitments=[bytes.fromhex(c) for c in rct.get("outPk") or []],
            key_images=[entry["key"]["k_image"] for entry in vin if "key" in entry],
        )

    def eight(self, pubkey: bytes) -> bytes | None:
        if pubkey not in self._eight:
            self._eight[pubkey] = _times_eight(pubkey)
        return self._eight[pubkey]


def parse_extra(extra: bytes) -> tuple[list[bytes], list[bytes]]:
    """The transaction public keys and the additional ones in ``tx_extra``; like wallet2, what parses
    before a malformed field is kept."""
    pubkeys: list[bytes] = []
    additional: list[bytes] = []
    pos = 0
    try:
        while pos < len(extra):
            tag = extra[pos]
            pos += 1
            if tag == _EXTRA_PADDING:
                break
            if tag == _EXTRA_PUBKEY:
                if pos + 32 > len(extra):
                    break
                if extra[pos : pos + 32] not in pubkeys:
                    pubkeys.append(extra[pos : pos + 32])
                pos += 32
            elif tag == _EXTRA_ADDITIONAL:
                count, pos = _read_varint(extra, pos)
                if pos + 32 * count > len(extra):
                    break
                additional = [extra[pos + 32 * k : pos + 32 * (k + 1)] for k in range(count)]
                pos += 32 * count
            elif tag in (_EXTRA_NONCE, _EXTRA_MERGE_MINING, _EXTRA_MYSTERIOUS_MINERGATE):
                size, pos = _read_varint(extra, pos)
                pos += size
            else:
                break  # an unknown field: its size is unknown, nothing after it can be read
    except IndexError:
        pass
    return pubkeys, additional


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def _times_eight(point: bytes) -> bytes | None:
    try:
        twice = sodium.crypto_core_ed25519_add(point, point)
        four = sodium.crypto_core_ed25519_add(twice, twice)
        eight: bytes = sodium.crypto_core_ed25519_add(four, four)
    except SodiumError:
        return None  # not a point on the curve: no output can be derived from it
    return eight


def derivation(view_secret: bytes, eight_r: bytes | None) -> bytes:
    """8·(a·R) from 8·R; the identity when 8·R is (an R of small order, as wallet2 then computes)."""
    if eight_r is None or eight_r == IDENTITY:
        return IDENTITY
    try:
        return sodium.crypto_scalarmult_ed25519_noclamp(view_secret, eight_r)
    except SodiumError:  # the product is the identity (cannot happen for a reduced non-zero a)
        return IDENTITY


@dataclass(frozen=True)
class Found:
    """An output that belongs to the watched keys, with its amount verified."""

    tx_hash: str
    index: int
    key: str  # the one-time output key, hex
    amount: int


def scan(tx: Transaction, keys: WatchKeys) -> list[Found]:
    """The outputs of ``tx`` that belong to ``keys``."""
    found: list[Found] = []
    if not tx.outputs:
        return found
    derivations = [derivation(keys.view_secret, tx.eight(r)) for r in tx.pubkeys]
    tagged = [b"view_tag" + d for d in derivations]  # the view tag's hash input, less the index
    for out in tx.outputs:
        index = _VARINTS[out.index] if out.index < len(_VARINTS) else varint(out.index)
        for d, tag_prefix in zip(derivations, tagged, strict=True):
            if out.view_tag is not None and keccak256(tag_prefix + index)[0] != out.view_tag:
                continue
            hit = _check(tx, out, keys, d + index)
            if hit is not None:
                found.append(hit)
                break
        else:
            if out.index < len(tx.additional_pubkeys):
                d = derivation(keys.view_secret, tx.eight(tx.additional_pubkeys[out.index]))
                if out.view_tag is None or keccak256(b"view_tag" + d + index)[0] == out.view_tag:
                    hit = _check(tx, out, keys, d + index)
                    if hit is not None:
                        found.append(hit)
    return found


def _check(tx: Transaction, out: Output, keys: WatchKeys, suffix: bytes) -> Found | None:
    """The full check of an output whose view tag matched: its key, then its amount."""
    scalar = hash_to_scalar(suffix)
    if _one_time_key(scalar, keys.spend_public) != out.key:
        return None
    amount = _amount(tx, out, scalar)
    return None if amount is None else Found(tx.hash, out.index, out.key.hex(), amount)


_VARINTS = [varint(i) for i in range(128)]


def _one_time_key(scalar: bytes, spend_public: bytes) -> bytes | None:
    try:
        key: bytes = sodium.crypto_core_ed25519_add(sodium.crypto_scalarmult_ed25519_base_noclamp(scalar), spend_public)
    except SodiumError:
        return None
    return key


def _amount(tx: Transaction, out: Output, scalar: bytes) -> int | None:
    """The output's amount, or None when its commitment does not open to the decrypted one."""
    if tx.coinbase or tx.rct_type == 0:
        return out.clear_amount
    if tx.rct_type not in COMPACT_AMOUNT_TYPES or out.index >= min(len(tx.ecdh_amounts), len(tx.commitments)):
        return None  # RingCT before Bulletproof2 (2019): not a type an escrow made since can receive
    pad = keccak256(b"amount" + scalar)[:8]
    amount = int.from_bytes(bytes(x ^ y for x, y in zip(tx.ecdh_amounts[out.index], pad, strict=True)), "little")
    mask = hash_to_scalar(b"commitment_mask" + scalar)
    return amount if commitment(mask, amount) == tx.commitments[out.index] else None


def commitment(mask: bytes, amount: int) -> bytes | None:
    """mask·G + amount·H."""
    try:
        masked = sodium.crypto_scalarmult_ed25519_base_noclamp(mask)
        if amount == 0:
            return masked
        value = sodium.crypto_scalarmult_ed25519_noclamp(amount.to_bytes(32, "little"), H_POINT)
        result: bytes = sodium.crypto_core_ed25519_add(masked, value)
    except SodiumError:
        return None
    return result

"""Multisig signing: what each signing step of a payout does on its open wallet (docs/design.md, Signing).

The protocol, as measured on Debian's 0.18.0.0 against a regtest monerod (the project's design facts,
section 7). For a payout signed by M signers of an escrow, the first signer in the escrow's order
builds the transaction and the others sign it in turn:

=====  ==============================================================  ==========================
stage  calls (on a copy of the signer's wallet)                        result, recorded before next
=====  ==============================================================  ==========================
sync   ``refresh``, ``export_multisig_info``                           the signer's info
merge  ``refresh``, ``import_multisig_info`` (the other signers' infos)   (the wallet, published)
build  ``transfer`` or ``sweep_all`` (first signer)                     the unsigned set, its hashes
sign   ``sign_multisig`` (each other signer, in order)                  the set with that signature
submit ``submit_multisig`` (the last signer)                            the transaction hashes
=====  ==============================================================  ==========================

``refresh`` must come before ``import_multisig_info``: without it the import "succeeds", the balance
reads 0 and the later signature fails (-34). Imported infos live in memory until ``store``: the step
that imports publishes its wallet. The known failure modes get their own exception
(:func:`classify`): stale data on sign (-35: export fresh infos and sign again), an import needed
before building, no transaction possible (-16: too little unlocked, or stale infos), an unparsable set
(-34) and a transaction the daemon rejected (-36).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import SecretStr

from .multisig import RpcHook
from .walletrpc import Destination, SignedSet, UnsignedSet, WalletRpc, WalletRpcError


class SigningError(Exception):
    """A signing call failed in a known way; ``reason`` is the status reason a payout reports."""

    reason = "SigningFailed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StaleData(SigningError):
    """sign_multisig -35: the set was built on multisig infos older than this signer's; sync again."""

    reason = "StaleMultisigData"


class ImportNeeded(SigningError):
    """The wallet holds outputs whose key images need the other signers' infos first; sync again."""

    reason = "MultisigImportNeeded"


class NotPossible(SigningError):
    """transfer -16 "No transaction created": not enough unlocked funds, or infos out of date."""

    reason = "TransactionNotPossible"


class Unparsable(SigningError):
    """-34 "Failed to parse multisig tx data": the set is damaged or the wallet state does not match it."""

    reason = "TransactionSetInvalid"


class Rejected(SigningError):
    """submit_multisig -36: the daemon rejected the transaction (its reason is in the message)."""

    reason = "RejectedByDaemon"


_BY_CODE: dict[int, type[SigningError]] = {-35: StaleData, -16: NotPossible, -34: Unparsable, -36: Rejected}


def classify(exc: WalletRpcError) -> SigningError | None:
    """The known signing failure ``exc`` is, or None for any other wallet-rpc error."""
    kind = _BY_CODE.get(exc.code)
    if kind is None and "import" in exc.message.lower() and "multisig" in exc.message.lower():
        kind = ImportNeeded
    return kind(f"{exc.method}: {exc.message} (code {exc.code})") if kind is not None else None


async def export_info(hook: RpcHook, rpc: WalletRpc, start_height: int | None = None) -> SecretStr:
    """Sync: this signer's multisig info, after a refresh from ``start_height`` (the escrow's recorded
    height; the info covers every output the wallet has seen)."""
    await hook.rpc("refresh", rpc.refresh(start_height))
    return await hook.rpc("export_multisig_info", rpc.export_multisig_info())


async def import_infos(
    hook: RpcHook, rpc: WalletRpc, infos: Sequence[SecretStr], start_height: int | None = None
) -> int:
    """Merge: import the other signers' infos (refresh first); the caller stores and publishes."""
    await hook.rpc("refresh", rpc.refresh(start_height))
    try:
        return await hook.rpc("import_multisig_info", rpc.import_multisig_info(infos))
    except WalletRpcError as exc:
        raise classify(exc) or exc from None


async def build(
    hook: RpcHook,
    rpc: WalletRpc,
    destinations: Sequence[Destination] | None,
    sweep_to: str | None,
    priority: int = 0,
) -> UnsignedSet:
    """Build: the first signer creates the transaction set (to ``destinations``, or all to ``sweep_to``)."""
    try:
        if sweep_to is not None:
            return await hook.rpc("sweep_all", rpc.sweep_all(sweep_to, priority))
        if not destinations:
            raise ValueError("a payout needs destinations or sweep_to")
        return await hook.rpc("transfer", rpc.transfer(destinations, priority))
    except WalletRpcError as exc:
        raise classify(exc) or exc from None


async def sign(hook: RpcHook, rpc: WalletRpc, txset: SecretStr) -> SignedSet:
    """Sign: add this signer's signature to the set."""
    try:
        return await hook.rpc("sign_multisig", rpc.sign_multisig(txset))
    except WalletRpcError as exc:
        raise classify(exc) or exc from None


async def submit(hook: RpcHook, rpc: WalletRpc, txset: SecretStr) -> list[str]:
    """Submit: hand the fully signed set to the daemon; returns the transaction hashes."""
    try:
        return await hook.rpc("submit_multisig", rpc.submit_multisig(txset))
    except WalletRpcError as exc:
        raise classify(exc) or exc from None

"""Async JSON-RPC client for monero-wallet-rpc (docs/design.md, Measured costs).

One :class:`WalletRpc` talks to one wallet-rpc endpoint (one process). A process holds ONE open wallet and
nothing in a request names it, so exclusive use of the process for a whole step is the caller's job (the
pool scheduler); this client only makes each call safe and typed.

Secrets: wallet passwords and round messages (``multisig_info``) carry key material. They are typed as
:class:`pydantic.SecretStr` everywhere in this module, so ``repr``/``str``/logging of a reply, a model or an
exception never shows them; the value is revealed only while building the request body. Exceptions carry the
method name, the endpoint and wallet-rpc's error code/message, never request parameters.

Cancellation: every call is a single httpx request, and httpx requests may be cancelled at any await point
(``asyncio.timeout``, task cancellation). Note that wallet-rpc still finishes a call whose HTTP request was
abandoned: after a cancelled or timed-out round the process (and its open wallet) must be treated as
unknown state, which is why rounds run on work copies (docs/design.md, Steps and files).

Message-passing policy (which round messages a participant passes) is in :func:`messages_for`; see
:func:`own_message_in_make_multisig` for the version history it is based on.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .httpclient import OwnsAsyncClient

__all__ = [
    "DEFAULT_TIMEOUT",
    "ExchangeResult",
    "MakeMultisigResult",
    "MultisigInfo",
    "MultisigStatus",
    "Secret",
    "Version",
    "WalletRpc",
    "WalletRpcAuthError",
    "WalletRpcError",
    "WalletRpcFailure",
    "WalletRpcProtocolError",
    "WalletRpcUnavailable",
    "secret",
]

#: A secret string (a wallet password or a round message). ``str()``/``repr()`` show ``**********``.
Secret = SecretStr

#: Default per-call timeout in seconds. ``create_wallet``/``open_wallet`` are CPU-bound (~1-5 s on a loaded
#: node) and ``make_multisig`` up to a few seconds; a generous default avoids abandoning a call that
#: wallet-rpc will finish anyway.
DEFAULT_TIMEOUT: Final[float] = 120.0
#: Default connect timeout in seconds (a process that does not accept a connection in this time is down).
DEFAULT_CONNECT_TIMEOUT: Final[float] = 10.0

# wallet-rpc error codes (wallet_rpc_server_error_codes.h) this module gives a meaning to.
CODE_UNKNOWN_ERROR: Final[int] = -1
CODE_NOT_OPEN: Final[int] = -13
CODE_ALREADY_MULTISIG: Final[int] = -28
CODE_NOT_MULTISIG: Final[int] = -31
CODE_MULTISIG_DISABLED: Final[int] = -48  # "This wallet is multisig, and multisig is disabled. ..."

#: Longest wallet-rpc error message kept in an exception (the text comes from the server, not from us).
_MAX_MESSAGE = 500


def secret(value: str | SecretStr) -> SecretStr:
    """Wrap ``value`` as a :data:`Secret` (idempotent)."""
    return value if isinstance(value, SecretStr) else SecretStr(value)


# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------


class WalletRpcFailure(Exception):
    """Base of every error raised by :class:`WalletRpc`."""

    def __init__(self, method: str, endpoint: str, detail: str) -> None:
        super().__init__(method, endpoint, detail)
        self.method = method
        self.endpoint = endpoint
        self.detail = detail

    def __str__(self) -> str:
        return f"wallet-rpc {self.endpoint} {self.method}: {self.detail}"


class WalletRpcError(WalletRpcFailure):
    """wallet-rpc answered the call with a JSON-RPC error (the process is fine; the call failed)."""

    def __init__(self, method: str, code: int, message: str, endpoint: str = "") -> None:
        message = message if len(message) <= _MAX_MESSAGE else message[:_MAX_MESSAGE] + "..."
        self.code = code
        self.message = message
        super().__init__(method, endpoint, _describe_error(method, code, message))

    @property
    def no_wallet_open(self) -> bool:
        """The process has no wallet open (``-13 No wallet file``)."""
        return self.code == CODE_NOT_OPEN


class WalletRpcUnavailable(WalletRpcFailure):
    """The call did not reach a working wallet-rpc: connection refused/reset, timeout, HTTP 5xx or other
    non-200 status, or refused credentials (:class:`WalletRpcAuthError`). Whether a call that timed out or
    lost its connection ran on the server is unknown."""


class WalletRpcAuthError(WalletRpcUnavailable):
    """HTTP 401/403: the RPC credentials were refused."""


class WalletRpcProtocolError(WalletRpcFailure):
    """wallet-rpc answered with something that is not the expected JSON-RPC reply."""


def _describe_error(method: str, code: int, message: str) -> str:
    text = f"error {code}: {message}"
    hint = ""
    if code == CODE_NOT_OPEN:
        hint = (
            "no wallet is open in this wallet-rpc process (the process restarted, or another step closed "
            "its wallet: one process must be used by one step at a time)"
        )
    elif method == "open_wallet" and code == CODE_UNKNOWN_ERROR:
        hint = (
            "wallet-rpc reports every open failure this way; the cause is only in wallet-rpc's log: wrong "
            "password, missing file, wallet locked by another process, or .keys and cache files out of sync"
        )
    elif method == "create_wallet" and code == CODE_UNKNOWN_ERROR:
        hint = "the cause is only in wallet-rpc's log (often: a wallet of that name already exists)"
    elif code == CODE_MULTISIG_DISABLED or "multisig is disabled" in message.lower():
        hint = (
            "multisig was not enabled in this process: call prepare_multisig with "
            "enable_multisig_experimental in the same process before make_multisig"
        )
    elif "unexpected number of recommendations" in message or "number of unique other signers" in message.lower():
        hint = (
            "the round messages passed do not come from the other participants' wallets of this round: one was "
            "altered, duplicated or copied from another escrow (the operator passes exactly the other "
            "participants' messages recorded in the escrow's Secret)"
        )
    elif code == CODE_ALREADY_MULTISIG:
        hint = "the wallet is already multisig (this round already ran on this file)"
    elif code == CODE_NOT_MULTISIG:
        hint = "the wallet is not multisig (make_multisig has not run on this file)"
    return f"{text} ({hint})" if hint else text


# --------------------------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------------------------


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Empty(_Reply):
    """A reply without fields (``create_wallet``, ``open_wallet``, ``close_wallet``, ``store``)."""


class AddressCheck(_Reply):
    """``validate_address``: whether an address is valid (for the open wallet's network unless
    ``any_net_type``), and the network it belongs to."""

    valid: bool
    nettype: str = ""
    integrated: bool = False
    subaddress: bool = False


class Version(_Reply):
    """``get_version``: the wallet RPC version, ``major << 16 | minor``."""

    version: int = Field(ge=0)
    release: bool = False

    @classmethod
    def of(cls, major: int, minor: int, release: bool = True) -> Version:
        return cls(version=(major << 16) | minor, release=release)

    @property
    def major(self) -> int:
        return self.version >> 16

    @property
    def minor(self) -> int:
        return self.version & 0xFFFF

    @property
    def parts(self) -> tuple[int, int]:
        """``(major, minor)``, for comparisons."""
        return (self.major, self.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


class RefreshResult(_Reply):
    blocks_fetched: int = 0
    received_money: bool = False


class GetAddressResult(_Reply):
    address: str


class MultisigInfo(_Reply):
    """``prepare_multisig``: this participant's first round message."""

    multisig_info: SecretStr


class MakeMultisigResult(_Reply):
    """``make_multisig``: the next round message. ``address`` is a placeholder: never use it."""

    address: str = ""
    multisig_info: SecretStr


class ExchangeResult(_Reply):
    """``exchange_multisig_keys``: the next round message; ``address`` is empty until the last round."""

    address: str = ""
    multisig_info: SecretStr = SecretStr("")

    @property
    def done(self) -> bool:
        """This was the last round: ``address`` is the multisig address."""
        return bool(self.address)


class MultisigStatus(_Reply):
    """``is_multisig``."""

    multisig: bool
    ready: bool = False
    threshold: int = 0
    total: int = 0


class Transfer(_Reply):
    """One entry of ``get_transfers`` (incoming, confirmed or in the daemon's pool). Amounts in atomic units."""

    txid: str
    amount: int = Field(ge=0)
    height: int = Field(default=0, ge=0)  # 0 while in the pool
    confirmations: int = Field(default=0, ge=0)
    type: str = ""  # "in" or "pool"


class Transfers(_Reply):
    """``get_transfers``: one list per kind asked for (absent when empty)."""

    in_: list[Transfer] = Field(default=[], alias="in")
    pool: list[Transfer] = []

    @property
    def incoming(self) -> list[Transfer]:
        """Confirmed and pool transfers, newest (highest, then pool) last."""
        return sorted(self.in_, key=lambda t: t.height) + list(self.pool)


class Balance(_Reply):
    balance: int = Field(ge=0)
    unlocked_balance: int = Field(ge=0)
    multisig_import_needed: bool = False


class QueriedKey(_Reply):
    key: SecretStr


class IncomingTransfer(_Reply):
    """One output of the open wallet (``incoming_transfers``): its key image once known."""

    tx_hash: str
    key_image: str = ""
    pubkey: str = ""
    spent: bool = False


class IncomingTransfers(_Reply):
    transfers: list[IncomingTransfer] = []


class Height(_Reply):
    height: int = Field(ge=0)


class ExportedInfo(_Reply):
    """``export_multisig_info``: this signer's partial key images, for the other signers to import."""

    info: SecretStr


class ImportedInfos(_Reply):
    n_outputs: int = Field(default=0, ge=0)


class Destination(BaseModel):
    model_config = ConfigDict(frozen=True)

    address: str
    amount: int = Field(gt=0)


class UnsignedSet(_Reply):
    """``transfer`` / ``sweep_all`` on a multisig wallet: the transaction set for the other signers."""

    multisig_txset: SecretStr
    fee: int = Field(default=0, ge=0)
    amount: int = Field(default=0, ge=0)
    fee_list: list[int] = []
    amount_list: list[int] = []
    tx_hash: str = ""
    tx_hash_list: list[str] = []

    @property
    def total_fee(self) -> int:
        return self.fee or sum(self.fee_list)


class Recipient(_Reply):
    address: str
    amount: int = Field(ge=0)


class DescribedTransfer(_Reply):
    """One transaction of a set, as ``describe_transfer`` reads it: where its money goes."""

    recipients: list[Recipient] = []
    fee: int = Field(default=0, ge=0)
    change_address: str = ""
    change_amount: int = Field(default=0, ge=0)
    unlock_time: int = Field(default=0, ge=0)
    payment_id: str = ""


class TransferDescription(_Reply):
    desc: list[DescribedTransfer] = []


class SignedSet(_Reply):
    """``sign_multisig``: the set with this signature added, and the hashes of its transactions."""

    tx_data_hex: SecretStr
    tx_hash_list: list[str] = []


class Submitted(_Reply):
    tx_hash_list: list[str]


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


R = TypeVar("R", bound=_Reply)


# --------------------------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------------------------


class WalletRpc(OwnsAsyncClient):
    """Client of one monero-wallet-rpc endpoint (``http://host:port/json_rpc``) with digest auth.

    Use as ``async with WalletRpc(url, user, password) as rpc: ...`` or call :meth:`aclose`. Each method takes
    ``timeout`` (seconds for the whole call; default :data:`DEFAULT_TIMEOUT`).
    """

    def __init__(
        self,
        url: str,
        user: str,
        password: str | SecretStr,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        auth = httpx.DigestAuth(user, secret(password).get_secret_value())
        self._http = httpx.AsyncClient(
            auth=auth,
            transport=transport,
            timeout=self._timeout(timeout),
            # One process serves one step at a time; a single kept-alive connection saves the handshakes.
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=1),
            follow_redirects=False,
            trust_env=False,  # never send wallet traffic through a proxy from the environment
        )
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"WalletRpc({self.url!r})"

    def _timeout(self, timeout: float) -> httpx.Timeout:
        return httpx.Timeout(timeout, connect=min(timeout, self.connect_timeout))

    # ---------------------------------------------------------------------------------------------- transport

    async def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """One JSON-RPC call; returns the ``result`` object. ``params`` values of type :class:`SecretStr`
        (also inside lists) are revealed only into the request body."""
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            body["params"] = _reveal(params)
        t = self.timeout if timeout is None else timeout
        try:
            response = await self._http.post(self.url, json=body, timeout=self._timeout(t))
        except httpx.TimeoutException as exc:
            raise WalletRpcUnavailable(method, self.url, f"no answer within {t:g} s ({type(exc).__name__})") from None
        except httpx.RequestError as exc:
            # ConnectError, ReadError, RemoteProtocolError, ...: the str names the OS error, never the body.
            raise WalletRpcUnavailable(method, self.url, f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status in (401, 403):
            raise WalletRpcAuthError(
                method,
                self.url,
                f"HTTP {status}: the RPC credentials (from the pool Secret) were refused; check that the Secret "
                "matches wallet-rpc's --rpc-login",
            )
        if status != 200:
            kind = "server error" if status >= 500 else "unexpected status (is this a wallet-rpc /json_rpc endpoint?)"
            raise WalletRpcUnavailable(method, self.url, f"HTTP {status}: {kind}")
        try:
            envelope = _Envelope.model_validate_json(response.content)
        except ValidationError:
            raise WalletRpcProtocolError(method, self.url, "reply is not a JSON-RPC object") from None
        if envelope.error is not None:
            code = envelope.error.get("code")
            message = envelope.error.get("message")
            raise WalletRpcError(
                method,
                code if isinstance(code, int) else 0,
                message if isinstance(message, str) else "",
                self.url,
            )
        if envelope.result is None:
            raise WalletRpcProtocolError(method, self.url, "reply has neither result nor error")
        return envelope.result

    async def _call(
        self, model: type[R], method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None
    ) -> R:
        result = await self.call(method, params, timeout=timeout)
        try:
            return model.model_validate(result)
        except ValidationError as exc:
            # Never str() a ValidationError here: it quotes the input, which may be a round message.
            fields = sorted({".".join(str(p) for p in e["loc"]) + f" ({e['type']})" for e in exc.errors()})
            raise WalletRpcProtocolError(method, self.url, f"unexpected reply: {', '.join(fields)}") from None

    # ------------------------------------------------------------------------------------------------ methods

    async def get_version(self, *, timeout: float | None = None) -> Version:
        return await self._call(Version, "get_version", timeout=timeout)

    async def create_wallet(
        self, filename: str, password: str | SecretStr, *, language: str = "English", timeout: float | None = None
    ) -> None:
        """Create ``filename`` in the wallet dir; it stays open in this process."""
        params = {"filename": filename, "password": secret(password), "language": language}
        await self._call(Empty, "create_wallet", params, timeout=timeout)

    async def open_wallet(self, filename: str, password: str | SecretStr, *, timeout: float | None = None) -> None:
        """Open ``filename`` (closing, with autosave, any wallet open in the process)."""
        params = {"filename": filename, "password": secret(password)}
        await self._call(Empty, "open_wallet", params, timeout=timeout)

    async def close_wallet(self, autosave: bool = True, *, timeout: float | None = None) -> bool:
        """Close the open wallet. Returns False if none was open (``-13 No wallet file``), True otherwise."""
        try:
            await self._call(Empty, "close_wallet", {"autosave_current": autosave}, timeout=timeout)
        except WalletRpcError as exc:
            if exc.no_wallet_open:
                return False
            raise
        return True

    async def store(self, *, timeout: float | None = None) -> None:
        await self._call(Empty, "store", timeout=timeout)

    async def refresh(self, start_height: int | None = None, *, timeout: float | None = None) -> RefreshResult:
        """Scan the chain for the open wallet; ``start_height`` skips the blocks below it."""
        params = None if start_height is None else {"start_height": start_height}
        return await self._call(RefreshResult, "refresh", params, timeout=timeout)

    async def get_transfers_in(self, *, timeout: float | None = None) -> Transfers:
        """Incoming transfers of account 0: confirmed (``in``) and in the daemon's pool (``pool``)."""
        params = {"in": True, "pool": True, "account_index": 0}
        return await self._call(Transfers, "get_transfers", params, timeout=timeout)

    async def validate_address(
        self, address: str, any_net_type: bool = False, *, timeout: float | None = None
    ) -> AddressCheck:
        params = {"address": address, "any_net_type": any_net_type}
        return await self._call(AddressCheck, "validate_address", params, timeout=timeout)

    async def get_balance(self, *, timeout: float | None = None) -> Balance:
        return await self._call(Balance, "get_balance", {"account_index": 0}, timeout=timeout)

    async def get_height(self, *, timeout: float | None = None) -> int:
        """The height the open wallet has scanned to."""
        return (await self._call(Height, "get_height", timeout=timeout)).height

    async def get_address(self, *, timeout: float | None = None) -> str:
        """The open wallet's primary address (account 0)."""
        reply = await self._call(GetAddressResult, "get_address", {"account_index": 0}, timeout=timeout)
        return reply.address

    async def query_key(self, key_type: str, *, timeout: float | None = None) -> SecretStr:
        """A key of the open wallet (``view_key``; a multisig wallet's is the shared view key)."""
        return (await self._call(QueriedKey, "query_key", {"key_type": key_type}, timeout=timeout)).key

    async def incoming_transfers(self, *, timeout: float | None = None) -> list[IncomingTransfer]:
        """Every output of the open wallet, spent or not, with its key image and output key."""
        params = {"transfer_type": "all", "account_index": 0}
        return (await self._call(IncomingTransfers, "incoming_transfers", params, timeout=timeout)).transfers

    async def prepare_multisig(self, enable_experimental: bool = True, *, timeout: float | None = None) -> MultisigInfo:
        """The first round message; with ``enable_experimental`` also enables multisig in this process (it
        must be, in the same process, before ``make_multisig``)."""
        params = {"enable_multisig_experimental": True} if enable_experimental else None
        return await self._call(MultisigInfo, "prepare_multisig", params, timeout=timeout)

    async def make_multisig(
        self,
        infos: Sequence[str | SecretStr],
        threshold: int,
        password: str | SecretStr,
        *,
        timeout: float | None = None,
    ) -> MakeMultisigResult:
        """Turn the open wallet multisig. ``infos`` per :func:`messages_for` (stage ``make``); check the result
        with :meth:`is_multisig` and :func:`check_multisig`."""
        params = {"multisig_info": [secret(i) for i in infos], "threshold": threshold, "password": secret(password)}
        return await self._call(MakeMultisigResult, "make_multisig", params, timeout=timeout)

    async def exchange_multisig_keys(
        self,
        infos: Sequence[str | SecretStr],
        password: str | SecretStr,
        *,
        timeout: float | None = None,
    ) -> ExchangeResult:
        """One key exchange round. ``infos`` per :func:`messages_for` (stage ``exchange``)."""
        params = {"multisig_info": [secret(i) for i in infos], "password": secret(password)}
        return await self._call(ExchangeResult, "exchange_multisig_keys", params, timeout=timeout)

    async def is_multisig(self, *, timeout: float | None = None) -> MultisigStatus:
        return await self._call(MultisigStatus, "is_multisig", timeout=timeout)

    # --- signing (docs/design.md, Signing) ------------------------------------------------------------
    async def export_multisig_info(self, *, timeout: float | None = None) -> SecretStr:
        return (await self._call(ExportedInfo, "export_multisig_info", timeout=timeout)).info

    async def import_multisig_info(self, infos: Sequence[str | SecretStr], *, timeout: float | None = None) -> int:
        """Import the other signers' exported infos; returns the number of outputs they cover."""
        params = {"info": [secret(i) for i in infos]}
        return (await self._call(ImportedInfos, "import_multisig_info", params, timeout=timeout)).n_outputs

    async def transfer(
        self, destinations: Sequence[Destination], priority: int = 0, *, timeout: float | None = None
    ) -> UnsignedSet:
        """Build (and, on a multisig wallet, not sign beyond this signer) a transfer to ``destinations``."""
        params = {"destinations": [d.model_dump() for d in destinations], "priority": priority}
        return await self._call(UnsignedSet, "transfer", params, timeout=timeout)

    async def sweep_all(self, address: str, priority: int = 0, *, timeout: float | None = None) -> UnsignedSet:
        """Build a transfer of the whole unlocked balance (less the fee) to ``address``."""
        params = {"address": address, "priority": priority, "account_index": 0}
        return await self._call(UnsignedSet, "sweep_all", params, timeout=timeout)

    async def describe_transfer(self, txset: str | SecretStr, *, timeout: float | None = None) -> TransferDescription:
        """What a multisig transaction set pays (its recipients, change, fee), read by this signer's wallet."""
        params = {"multisig_txset": secret(txset)}
        return await self._call(TransferDescription, "describe_transfer", params, timeout=timeout)

    async def sign_multisig(self, txset: str | SecretStr, *, timeout: float | None = None) -> SignedSet:
        params = {"tx_data_hex": secret(txset)}
        return await self._call(SignedSet, "sign_multisig", params, timeout=timeout)

    async def submit_multisig(self, txset: str | SecretStr, *, timeout: float | None = None) -> list[str]:
        params = {"tx_data_hex": secret(txset)}
        return (await self._call(Submitted, "submit_multisig", params, timeout=timeout)).tx_hash_list


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Mapping):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reveal(v) for v in value]
    return value

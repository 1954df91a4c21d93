"""Unit tests of the wallet-rpc client: JSON-RPC framing, error mapping, secrets, message policy.

The network is faked with httpx.MockTransport; tests/integration/test_walletrpc_process.py runs the same
client against real monero-wallet-rpc processes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from escrow_operator.multisig import MultisigMismatch, Stage, check_multisig, messages_for, own_message_in_make_multisig
from escrow_operator.walletrpc import (
    ExchangeResult,
    MakeMultisigResult,
    MultisigStatus,
    Version,
    WalletRpc,
    WalletRpcAuthError,
    WalletRpcError,
    WalletRpcFailure,
    WalletRpcProtocolError,
    WalletRpcUnavailable,
    secret,
)

URL = "http://127.0.0.9:18083/json_rpc"
PASSWORD = "wallet-password-XYZ"
MSG = "MultisigxV2R1-secret-round-message"

Handler = Callable[[httpx.Request], httpx.Response]


def rpc_result(result: dict[str, Any]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    return handler


def rpc_error(code: int, message: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(
            200, json={"jsonrpc": "2.0", "id": body["id"], "error": {"code": code, "message": message}}
        )

    return handler


class Recorder:
    """A MockTransport handler that records requests and answers from a queue of handlers."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = list(handlers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.handlers.pop(0) if len(self.handlers) > 1 else self.handlers[0]
        return handler(request)

    def body(self, i: int = -1) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.requests[i].content)
        return body


def client(handler: Any, **kw: Any) -> WalletRpc:
    return WalletRpc(URL, "rpcuser", "rpcpass", transport=httpx.MockTransport(handler), **kw)


def assert_no_secrets(text: str) -> None:
    assert PASSWORD not in text
    assert MSG not in text
    assert "rpcpass" not in text


# ------------------------------------------------------------------------------------------------ framing


async def test_get_version_parses_major_minor() -> None:
    rec = Recorder(rpc_result({"release": False, "version": 65561}))
    async with client(rec) as rpc:
        version = await rpc.get_version()
    assert (version.major, version.minor, version.release) == (1, 25, False)
    assert str(version) == "1.25"
    assert Version.of(1, 25).version == 65561
    body = rec.body()
    assert body["jsonrpc"] == "2.0" and body["method"] == "get_version" and "params" not in body
    assert rec.requests[0].url == httpx.URL(URL)


async def test_request_ids_increase_and_params_reveal_secrets_only_in_body() -> None:
    rec = Recorder(rpc_result({"address": "4placeholder", "multisig_info": "MultisigxV2Rn-next"}))
    async with client(rec) as rpc:
        result = await rpc.make_multisig([secret(MSG), "other-plain"], 2, PASSWORD)
        await rpc.make_multisig([MSG], 2, secret(PASSWORD))
    first, second = rec.body(0), rec.body(1)
    assert second["id"] > first["id"]
    assert first["method"] == "make_multisig"
    assert first["params"] == {"multisig_info": [MSG, "other-plain"], "threshold": 2, "password": PASSWORD}
    assert isinstance(result, MakeMultisigResult)
    assert isinstance(result.multisig_info, SecretStr)
    assert result.multisig_info.get_secret_value() == "MultisigxV2Rn-next"
    assert "MultisigxV2Rn-next" not in repr(result) and "MultisigxV2Rn-next" not in str(result)


async def test_wallet_calls_send_expected_params() -> None:
    rec = Recorder(rpc_result({}))
    async with client(rec) as rpc:
        await rpc.create_wallet("w1", PASSWORD)
        await rpc.open_wallet("w1", PASSWORD)
        await rpc.store()
        assert await rpc.close_wallet(autosave=False) is True
        assert await rpc.close_wallet() is True
    bodies = [json.loads(r.content) for r in rec.requests]
    assert [b["method"] for b in bodies] == ["create_wallet", "open_wallet", "store", "close_wallet", "close_wallet"]
    assert bodies[0]["params"] == {"filename": "w1", "password": PASSWORD, "language": "English"}
    assert bodies[1]["params"] == {"filename": "w1", "password": PASSWORD}
    assert bodies[3]["params"] == {"autosave_current": False}
    assert bodies[4]["params"] == {"autosave_current": True}


async def test_multisig_replies() -> None:
    rec = Recorder(
        rpc_result({"multisig_info": MSG}),
        rpc_result({"address": "", "multisig_info": "round3"}),
        rpc_result({"address": "5final", "multisig_info": ""}),
        rpc_result({"multisig": True, "ready": True, "threshold": 2, "total": 3}),
        rpc_result({"address": "5final", "addresses": [{"address": "5final", "address_index": 0}]}),
        rpc_result({"blocks_fetched": 0, "received_money": False}),
    )
    async with client(rec) as rpc:
        info = await rpc.prepare_multisig()
        ex1 = await rpc.exchange_multisig_keys([MSG, "x"], PASSWORD)
        ex2 = await rpc.exchange_multisig_keys(["y", "z"], PASSWORD)
        status = await rpc.is_multisig()
        address = await rpc.get_address()
        await rpc.refresh()
    assert info.multisig_info.get_secret_value() == MSG
    assert rec.body(0)["params"] == {"enable_multisig_experimental": True}
    assert rec.body(1)["params"] == {"multisig_info": [MSG, "x"], "password": PASSWORD}
    assert isinstance(ex1, ExchangeResult) and not ex1.done
    assert ex2.done and ex2.address == "5final"
    assert status == MultisigStatus(multisig=True, ready=True, threshold=2, total=3)
    assert address == "5final"
    assert_no_secrets(repr(info) + str(info) + repr(ex1) + repr(rec.body(0)))


async def test_digest_challenge_is_answered() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "authorization" not in request.headers:
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Digest qop="auth",algorithm=MD5,realm="monero-rpc",nonce="abc",stale=false'
                },
            )
        assert request.headers["authorization"].startswith("Digest ")
        assert 'username="rpcuser"' in request.headers["authorization"]
        assert "rpcpass" not in request.headers["authorization"]
        return rpc_result({"version": 65561})(request)

    async with client(handler) as rpc:
        assert (await rpc.get_version()).minor == 25


async def test_context_manager_closes() -> None:
    rpc = client(rpc_result({}))
    async with rpc:
        assert not rpc.closed
    assert rpc.closed
    assert "rpcpass" not in repr(rpc)


# ------------------------------------------------------------------------------------------------- errors


async def test_close_wallet_without_open_wallet_returns_false() -> None:
    async with client(rpc_error(-13, "No wallet file")) as rpc:
        assert await rpc.close_wallet() is False


async def test_close_wallet_other_error_raises() -> None:
    async with client(rpc_error(-1, "Failed to save wallet")) as rpc:
        with pytest.raises(WalletRpcError) as info:
            await rpc.close_wallet()
    assert info.value.code == -1


async def test_open_wallet_error_names_the_log_and_hides_password() -> None:
    async with client(rpc_error(-1, "Failed to open wallet")) as rpc:
        with pytest.raises(WalletRpcError) as info:
            await rpc.open_wallet("buyer_escrow_x_round_1", PASSWORD)
    err = info.value
    assert (err.method, err.code, err.message) == ("open_wallet", -1, "Failed to open wallet")
    text = str(err)
    assert "log" in text and "wrong password" in text and "locked" in text
    assert URL in text
    assert_no_secrets(text + repr(err) + repr(err.args))


@pytest.mark.parametrize(
    ("code", "message", "fragment"),
    [
        (-13, "No wallet file", "no wallet is open"),
        (-48, "This wallet is multisig, and multisig is disabled. " + "x" * 600, "prepare_multisig"),
        (
            -1,
            (
                "Error calling exchange_multisig_info: A pubkey recommended by multisig kex messages had an "
                "unexpected number of recommendations."
            ),
            "do not come from the other participants' wallets",
        ),
    ],
)
async def test_error_hints(code: int, message: str, fragment: str) -> None:
    async with client(rpc_error(code, message)) as rpc:
        with pytest.raises(WalletRpcError) as info:
            await rpc.exchange_multisig_keys([MSG], PASSWORD)
    assert fragment in str(info.value)
    assert len(info.value.message) <= 503
    assert info.value.no_wallet_open is (code == -13)
    assert_no_secrets(str(info.value) + repr(info.value))


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_refused(status: int) -> None:
    async with client(lambda r: httpx.Response(status)) as rpc:
        with pytest.raises(WalletRpcAuthError) as info:
            await rpc.open_wallet("w", PASSWORD)
    assert isinstance(info.value, WalletRpcUnavailable)
    assert "credentials" in str(info.value) and "Secret" in str(info.value)
    assert_no_secrets(str(info.value))


@pytest.mark.parametrize("status", [500, 503, 404])
async def test_http_errors_are_unavailable(status: int) -> None:
    async with client(lambda r: httpx.Response(status, text=f"boom {PASSWORD}")) as rpc:
        with pytest.raises(WalletRpcUnavailable) as info:
            await rpc.open_wallet("w", PASSWORD)
    assert not isinstance(info.value, WalletRpcAuthError)
    assert f"HTTP {status}" in str(info.value)
    assert_no_secrets(str(info.value))


@pytest.mark.parametrize(
    ("exc", "fragment"),
    [
        (httpx.ConnectError("Connection refused"), "ConnectError"),
        (httpx.ReadError("Connection reset by peer"), "ReadError"),
        (httpx.RemoteProtocolError("Server disconnected"), "RemoteProtocolError"),
        (httpx.ReadTimeout("timed out"), "no answer within 7 s"),
        (httpx.ConnectTimeout("timed out"), "no answer within 7 s"),
    ],
)
async def test_transport_errors_are_unavailable(exc: Exception, fragment: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with client(handler) as rpc:
        with pytest.raises(WalletRpcUnavailable) as info:
            await rpc.make_multisig([MSG], 2, PASSWORD, timeout=7)
    err = info.value
    assert fragment in str(err)
    assert err.__cause__ is None and err.__suppress_context__
    assert_no_secrets(str(err) + repr(err))


async def test_per_call_timeout_reaches_httpx() -> None:
    rec = Recorder(rpc_result({"version": 65561}))
    async with client(rec, timeout=30, connect_timeout=5) as rpc:
        await rpc.get_version()
        await rpc.get_version(timeout=2)
    first, second = (r.extensions["timeout"] for r in rec.requests)
    assert first == {"connect": 5, "read": 30, "write": 30, "pool": 30}
    assert second == {"connect": 2, "read": 2, "write": 2, "pool": 2}


async def test_cancellation_propagates() -> None:
    started = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    async with client(handler) as rpc:
        task = asyncio.create_task(rpc.make_multisig([MSG], 2, PASSWORD))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await rpc.get_version()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="not json"),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"jsonrpc": "2.0", "id": 1}),
    ],
)
async def test_malformed_replies(response: httpx.Response) -> None:
    async with client(lambda r: response) as rpc:
        with pytest.raises(WalletRpcProtocolError):
            await rpc.get_version()


async def test_invalid_reply_fields_do_not_leak_secrets() -> None:
    async with client(rpc_result({"address": ["not", "a", "string"], "multisig_info": MSG})) as rpc:
        with pytest.raises(WalletRpcProtocolError) as info:
            await rpc.make_multisig([MSG], 2, PASSWORD)
    assert "address" in str(info.value)
    assert isinstance(info.value, WalletRpcFailure)
    assert info.value.__cause__ is None
    assert_no_secrets(str(info.value) + repr(info.value))


async def test_error_without_code_or_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "error": {}})

    async with client(handler) as rpc:
        with pytest.raises(WalletRpcError) as info:
            await rpc.store()
    assert info.value.code == 0


# ---------------------------------------------------------------------------------------- message policy

V0_18_0 = Version(version=65561)  # 1.25, Debian's 0.18.0.0
V1_26 = Version.of(1, 26)
ROLES: dict[str, str | SecretStr] = {"buyer": secret("m-buyer"), "vendor": "m-vendor", "arbiter": secret("m-arbiter")}


def values(messages: list[SecretStr]) -> list[str]:
    return [m.get_secret_value() for m in messages]


def test_own_message_in_make_multisig_by_version() -> None:
    assert not own_message_in_make_multisig(Version.of(1, 24))
    assert not own_message_in_make_multisig(V0_18_0)
    assert own_message_in_make_multisig(V1_26)
    assert own_message_in_make_multisig(Version.of(1, 31))
    assert own_message_in_make_multisig(Version.of(2, 0))


def test_messages_for_0_18_0_passes_the_others_only() -> None:
    for stage in (Stage.MAKE, "exchange_multisig_keys", "make_multisig"):
        assert values(messages_for("vendor", ROLES, V0_18_0, stage)) == ["m-buyer", "m-arbiter"]


def test_messages_for_newer_includes_own_in_make_only() -> None:
    assert values(messages_for("vendor", ROLES, V1_26, Stage.MAKE)) == ["m-buyer", "m-vendor", "m-arbiter"]
    assert values(messages_for("vendor", ROLES, V1_26, Stage.EXCHANGE)) == ["m-buyer", "m-arbiter"]


def test_messages_for_rejects_bad_sets_without_showing_messages() -> None:
    with pytest.raises(ValueError, match="no message of participant 'seller'"):
        messages_for("seller", ROLES, V0_18_0, Stage.MAKE)
    with pytest.raises(ValueError, match="'buyer' and 'vendor' have the same message") as info:
        messages_for("buyer", {"buyer": "same", "vendor": secret("same")}, V0_18_0, Stage.EXCHANGE)
    assert "same message" in str(info.value) and "'same'" not in str(info.value)
    with pytest.raises(ValueError, match="empty"):
        messages_for("buyer", {"buyer": "a", "vendor": ""}, V0_18_0, Stage.EXCHANGE)
    with pytest.raises(ValueError, match="at least two"):
        messages_for("buyer", {"buyer": "a"}, V0_18_0, Stage.EXCHANGE)
    with pytest.raises(ValueError):
        messages_for("buyer", ROLES, V0_18_0, "finalize_multisig")


def test_check_multisig() -> None:
    check_multisig(MultisigStatus(multisig=True, ready=False, threshold=2, total=3), 2, 3, ready=False)
    check_multisig(MultisigStatus(multisig=True, ready=True, threshold=2, total=3), 2, 3)
    with pytest.raises(
        MultisigMismatch, match="built a 2-of-2 instead of 2-of-3: the round messages did not name the expected signers"
    ):
        check_multisig(MultisigStatus(multisig=True, ready=False, threshold=2, total=2), 2, 3)
    with pytest.raises(MultisigMismatch, match="not multisig"):
        check_multisig(MultisigStatus(multisig=False), 2, 3)
    with pytest.raises(MultisigMismatch, match="is ready"):
        check_multisig(MultisigStatus(multisig=True, ready=True, threshold=2, total=3), 2, 3, ready=False)


def test_secret_helper_is_idempotent_and_hidden() -> None:
    s = secret(PASSWORD)
    assert secret(s) is s
    assert PASSWORD not in repr(s) and PASSWORD not in str(s) and PASSWORD not in f"{s}"

"""A real monero-wallet-rpc (a local process over a temporary wallet directory; no cluster) refuses requests
without credentials, with wrong ones and with the right ones over Basic auth, state-changing calls
included; the right digest credentials work on the same process (the control).

Integration: it needs the monero-wallet-rpc binary (`make deps`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.walletrpc_proc import standalone_wallet_rpc


@pytest.fixture(scope="module")
def wallet_rpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with standalone_wallet_rpc(tmp_path_factory.mktemp("rpc-wallets"), ip="127.0.0.61") as rpc:
        yield rpc


GET_VERSION = {"jsonrpc": "2.0", "id": "0", "method": "get_version"}


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(None, id="no-credentials"),
        pytest.param(("inspector", "wrong-password"), id="wrong-password"),
        pytest.param(("intruder", "PASSWORD"), id="wrong-user"),
        pytest.param(("inspector", ""), id="empty-password"),
        pytest.param(("", ""), id="empty-user-and-password"),
        pytest.param("basic", id="basic-with-right-credentials"),
    ],
)
def test_wallet_rpc_refuses_bad_credentials(wallet_rpc: Any, auth: Any) -> None:
    right: httpx.DigestAuth = wallet_rpc.auth
    user, password = _digest_credentials(right)
    if auth is None:
        client_auth: httpx.Auth | None = None
    elif auth == "basic":
        client_auth = httpx.BasicAuth(user, password)
    else:
        client_auth = httpx.DigestAuth(auth[0], password if auth[1] == "PASSWORD" else auth[1])
    response = httpx.post(wallet_rpc.url, json=GET_VERSION, auth=client_auth, timeout=10)
    assert response.status_code == 401, response.text[:300]
    assert "result" not in response.text
    # Control: the right digest credentials work on the same process.
    ok = httpx.post(wallet_rpc.url, json=GET_VERSION, auth=right, timeout=10)
    assert ok.status_code == 200 and "version" in ok.json()["result"], ok.text[:300]


@pytest.mark.parametrize("method", ["open_wallet", "create_wallet", "stop_wallet"])
def test_wallet_rpc_refuses_state_changing_calls_without_credentials(wallet_rpc: Any, method: str) -> None:
    response = httpx.post(
        wallet_rpc.url,
        json={
            "jsonrpc": "2.0",
            "id": "0",
            "method": method,
            "params": {"filename": "x", "password": "", "language": "English"},
        },
        timeout=10,
    )
    assert response.status_code == 401, response.text[:300]
    assert httpx.post(wallet_rpc.url, json=GET_VERSION, auth=wallet_rpc.auth, timeout=10).status_code == 200


def _digest_credentials(auth: httpx.DigestAuth) -> tuple[str, str]:
    return auth._username.decode(), auth._password.decode()  # the helper exposes no public accessor

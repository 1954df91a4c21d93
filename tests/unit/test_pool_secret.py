"""The pool Secret's parsing: a damaged Secret is a clear refusal naming what is missing, never a KeyError."""

from __future__ import annotations

import base64

import pytest

from escrow_operator.pool_secret import PoolCredentials, PoolSecretInvalid, rpc_config


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


GOOD = {"username": b64("escrow-operator"), "password": b64("pw"), "walletfs-token": b64("tok")}


def test_credentials_are_read_from_the_secret() -> None:
    creds = PoolCredentials.from_secret(GOOD)
    assert creds.username == "escrow-operator"
    assert creds.password.get_secret_value() == "pw" and creds.walletfs_token.get_secret_value() == "tok"
    assert "pw" not in repr(creds)


@pytest.mark.parametrize("missing", ["username", "password", "walletfs-token"])
def test_a_missing_key_is_named(missing: str) -> None:
    data = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(PoolSecretInvalid, match=f"lacks {missing}; delete the Secret"):
        PoolCredentials.from_secret(data)


def test_a_value_that_is_not_base64_is_refused() -> None:
    with pytest.raises(PoolSecretInvalid, match="not base64"):
        PoolCredentials.from_secret({**GOOD, "password": "%%%"})


def test_wallet_rpc_config_carries_the_login() -> None:
    assert rpc_config("u", "p") == "rpc-login=u:p\n"

"""What deleting an Escrow does to its wallets, decided without a cluster."""

from __future__ import annotations

import pytest

from escrow_operator.handlers import _deletion_spec


@pytest.mark.parametrize(
    ("retention", "received", "found", "annotations", "expected"),
    [
        ("Retain", 0, False, {}, (True, False)),
        ("Retain", 5, True, {}, (True, False)),
        ("Delete", 0, False, {}, (False, False)),
        ("Delete", 5, True, {}, (True, True)),  # funds were received: kept although the spec says Delete
        ("Delete", 0, True, {}, (True, True)),  # a status patched to 0 does not hide what the watch found
        ("Delete", 5, False, {}, (True, True)),  # a status that says funds came keeps them too
        ("Delete", 5, True, {"xmrescrow.dev/delete-funded-wallets": "true"}, (False, False)),
        ("Delete", 5, True, {"xmrescrow.dev/delete-funded-wallets": "yes"}, (True, True)),
    ],
)
def test_a_funded_escrow_keeps_its_wallets_unless_told_explicitly(
    retention: str, received: int, found: bool, annotations: dict[str, str], expected: tuple[bool, bool]
) -> None:
    body = {
        "metadata": {"annotations": annotations},
        "spec": {"poolRef": "wallets", "walletRetention": retention},
        "status": {"funding": {"received": received}},
    }
    assert _deletion_spec(body, found) == ("wallets", *expected)

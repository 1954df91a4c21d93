"""What the chain watch knows of one escrow, kept where no user of the escrow's namespace can write it.

``escrow-<uid>-watch`` lives in the operator's namespace, as the chain cursor and the recovery copy
do. Funding decides whether a marketplace ships goods, so none of its inputs may come from a store a
namespace user can edit:

* ``viewkey`` and ``address``: the escrow's private view key and its address, both read from the
  escrow's own final wallet; on every load the view key is checked against the address (its public
  view key must be a·G) and the public spend key is taken from the address, so the two cannot be
  swapped for another wallet's;
* ``daemon``, ``ledger``, ``joined``: what the chain watch of that daemon found (outputs and spends,
  :class:`escrow_operator.watch_ledger.Ledger`) and whether the escrow has joined that watch;
* ``keyimages``: key image -> output key of the escrow's outputs, recorded by its payouts.

An operator before this one kept these in the Escrow's own Secret (``watch.*``); nothing is read from
there. An escrow without this Secret has its keys read from its wallet again and its chain scanned
again from its restore height, so its figures come from the chain alone. The Secret has no owner (an
owner cannot be in another namespace): the escrow's deletion deletes it.
"""

from __future__ import annotations

import json

from pydantic import SecretStr

from .api import GROUP
from .kube import Kube
from .secret_store import RecordSecret
from .settings import ESCROW_LABEL, OPERATOR_NAME
from .viewkeys import BadKeys, WatchKeys
from .watch_ledger import Ledger

WATCH_LABEL = f"{GROUP}/watch"


def watch_secret_name(uid: str) -> str:
    return f"escrow-{uid}-watch"


class WatchSecret(RecordSecret):
    """The chain watch's record of one escrow (``namespace`` is the operator's)."""

    def __init__(self, kube: Kube, namespace: str, escrow: tuple[str, str], uid: str) -> None:
        super().__init__(kube, namespace, watch_secret_name(uid))
        self.escrow = escrow
        self.uid = uid
        self.exists = False

    async def load_if_present(self) -> bool:
        self.exists = await super().load_if_present()
        return self.exists

    # --- reading --------------------------------------------------------------------------------
    def watch_keys(self) -> WatchKeys | None:
        """The view key and public spend key, checked against the address recorded with them (None: not
        recorded yet)."""
        view, address = self._get("viewkey"), self._get("address")
        if view is None or address is None:
            return None
        return WatchKeys.from_wallet(view, address)  # raises BadKeys when they do not belong together

    def checked_keys(self) -> WatchKeys | None:
        """:meth:`watch_keys`, or None when what is recorded does not hold together (read them again)."""
        try:
            return self.watch_keys()
        except BadKeys:
            return None

    def address(self) -> str | None:
        return self._get("address")

    def ledger(self, daemon: str) -> tuple[str | None, bool]:
        """What the chain watch of ``daemon`` found, and whether the escrow joined that watch (scanned from
        its wallets' creation up to the cursor). Findings of another daemon's chain do not count."""
        if self._get("daemon") != daemon:
            return None, False
        return self._get("ledger"), self._get("joined") == "true"

    def received_anything(self) -> bool:
        """Whether the chain watch ever found an output of the escrow in a block (of any daemon it watched)."""
        return bool(Ledger.from_json(self._get("ledger")).outputs)

    def spent_out(self, daemon: str) -> int | None:
        """What the escrow received (its payouts' change left out), when every output of it the chain
        watch of ``daemon`` found in a block is spent by a payout (None: it received nothing yet, or holds
        an unspent output)."""
        text, _ = self.ledger(daemon)
        ledger = Ledger.from_json(text)
        if not ledger.outputs or any(out.key not in ledger.spends for out in ledger.outputs.values()):
            return None
        own = {spend.tx_hash for spend in ledger.spends.values()}  # the escrow's payouts
        return sum(out.amount for out in ledger.outputs.values() if out.tx_hash not in own)

    def key_images(self) -> dict[str, str]:
        """Key image -> output key of the escrow's outputs (recorded when its payouts were built)."""
        raw = self._get("keyimages")
        return dict(json.loads(raw)) if raw else {}

    # --- writing --------------------------------------------------------------------------------
    async def record_keys(self, view_key: SecretStr, address: str) -> WatchKeys:
        """Record the view key and the address, both read from the escrow's wallet (checked together first)."""
        keys = WatchKeys.from_wallet(view_key.get_secret_value(), address)
        values = {"viewkey": keys.view_secret.hex(), "address": address}
        await self._ensure(values)
        if any(self._get(k) != v for k, v in values.items()):
            # Keys that did not hold together, or another wallet's: the findings were made with them.
            await self._write({**values, "daemon": None, "ledger": None, "joined": None})
        return keys

    async def save_ledger(self, daemon: str, ledger: str, joined: bool) -> None:
        await self._write({"daemon": daemon, "ledger": ledger, "joined": "true" if joined else "false"})

    async def add_key_images(self, images: dict[str, str]) -> None:
        merged = {**self.key_images(), **images}
        if merged != self.key_images():
            await self._ensure({})
            await self._write({"keyimages": json.dumps(merged, sort_keys=True, separators=(",", ":"))})

    async def _ensure(self, data: dict[str, str]) -> None:
        if self.exists:
            return
        namespace, name = self.escrow
        await self.create_or_load(
            labels={WATCH_LABEL: "true", ESCROW_LABEL: name, "app.kubernetes.io/managed-by": OPERATOR_NAME},
            annotations={f"{GROUP}/escrow": f"{namespace}/{name}", f"{GROUP}/escrow-uid": self.uid},
            owner=None,
            data=data,
        )
        self.exists = True

"""One chain watch as a process of its own, for the tests that kill it: ``python -m tests.support.chainwatch_proc STATE``.

``STATE/escrows.json`` names the daemon, the namespace of the cursor Secret and the watched wallets
(name, address, view key, start height, key images). Each wallet's findings are kept in
``STATE/ledger-<name>.json`` (written atomically, as the operator writes them to the escrow's Secret),
and the figures, whenever they change, in ``STATE/figures.json``. ``ESCROW_FAULTS`` (with
``ESCROW_MODE=test``) makes it SIGKILL itself at a named point, as the operator does.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from escrow_operator.blocks import Chains
from escrow_operator.chainwatch import ChainWatch, Watched
from escrow_operator.faults import Faults
from escrow_operator.kube import Kube, load_api_client
from escrow_operator.settings import OperatorSettings
from escrow_operator.viewkeys import WatchKeys
from escrow_operator.watch_ledger import Ledger


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def main(state: Path) -> None:
    config: dict[str, Any] = json.loads((state / "escrows.json").read_text())
    settings = OperatorSettings.model_validate({"block_poll_interval": 0.5})
    faults = Faults.parse(os.environ.get("ESCROW_FAULTS", ""), os.environ.get("ESCROW_MODE", "production"))
    chains = Chains(settings)
    watch = ChainWatch(chains.watch(config["daemon"]), Kube(load_api_client()), config["namespace"], settings, faults)
    entries = []
    for escrow in config["escrows"]:
        path = state / f"ledger-{escrow['name']}.json"
        stored: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"ledger": None, "joined": False}
        ledger = Ledger.from_json(stored["ledger"])
        ledger.learn(escrow.get("key_images") or {})

        async def save(text: str, joined: bool, path: Path = path) -> None:
            _write(path, json.dumps({"ledger": text, "joined": joined}))

        keys = WatchKeys.from_wallet(escrow["view_key"], escrow["address"])
        entries.append(Watched(escrow["name"], keys, escrow["start"], ledger, stored["joined"], save))
    for entry in entries:
        watch.watch(entry)
    while True:
        waits = [asyncio.ensure_future(e.changed.wait()) for e in entries]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        figures = {}
        for entry in entries:
            entry.changed.clear()
            if entry.scan is not None:
                figures[entry.key] = {
                    "height": entry.scan.height,
                    "received": sum(t.amount for t in entry.scan.transfers),
                    "transfers": len(entry.scan.transfers),
                    "unlocked": entry.scan.unlocked,
                }
        _write(state / "figures.json", json.dumps({"figures": figures, "blocks": watch.blocks_scanned}))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))

"""What the operator's HTTP clients (wallet-rpc, walletfs) share: each owns one ``httpx.AsyncClient``
for its lifetime and is closed with ``async with`` or :meth:`aclose`."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import httpx


class OwnsAsyncClient:
    """Base of a client that owns ``self._http``."""

    _http: httpx.AsyncClient

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

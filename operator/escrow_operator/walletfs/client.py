"""Async client of the walletfs sidecar, used by the operator (one client per pool pod).

Errors: :class:`WalletfsUnavailable` when the pod cannot be reached (connection refused, reset,
timeout: the pod is likely gone) and :class:`WalletfsError` with the server's message and HTTP status
for every other failure. ``WalletfsUnavailable`` is a subclass of ``WalletfsError``, so catch it first.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from escrow_operator.httpclient import OwnsAsyncClient
from escrow_operator.walletfs.files import FileInfo, WalletEntry, WalletStat

__all__ = [
    "CopyResult",
    "DeleteResult",
    "FileInfo",
    "PublishResult",
    "WalletEntry",
    "WalletList",
    "WalletStat",
    "WalletfsClient",
    "WalletfsError",
    "WalletfsUnavailable",
]

DEFAULT_PORT = 8090
DEFAULT_TIMEOUT = 30.0

M = TypeVar("M", bound=BaseModel)


class WalletfsError(Exception):
    """The sidecar answered with an error (or something that is not a valid reply)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class WalletfsUnavailable(WalletfsError):
    """The sidecar could not be reached or did not answer in time (the pod is likely gone)."""


class WalletfsAuthError(WalletfsUnavailable):
    """The sidecar refused the token: the pod runs with other credentials than the client has."""


class CopyResult(BaseModel):
    files: dict[str, str]  # target file name -> sha256
    copied: bool = True  # False: the target already held identical files


class PublishResult(BaseModel):
    files: dict[str, str] = {}  # published file name -> sha256; empty if already published
    already_published: bool = False  # the target existed (409); nothing was changed


class DeleteResult(BaseModel):
    deleted: list[str]


class WalletList(BaseModel):
    wallets: list[WalletEntry]


def _base_url(pod_ip: str, port: int) -> str:
    host = f"[{pod_ip}]" if ":" in pod_ip and not pod_ip.startswith("[") else pod_ip
    return f"http://{host}:{port}"


class WalletfsClient(OwnsAsyncClient):
    """Client of the sidecar at ``http://{pod_ip}:{port}``; use ``async with`` or call :meth:`aclose`."""

    def __init__(
        self,
        pod_ip: str,
        token: str | SecretStr,
        *,
        port: int = DEFAULT_PORT,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        self.base_url = _base_url(pod_ip, port)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:  # never shows the token
        return f"WalletfsClient({self.base_url!r})"

    # -- operations

    async def copy(self, source: str, target: str) -> dict[str, str]:
        """Copy wallet ``source`` to ``target``; return sha256 per target file (idempotent)."""
        response = await self._request("POST", "/v1/copy", json={"source": source, "target": target})
        return self._parse(CopyResult, response).files

    async def publish(self, source: str, target: str, keep_source: bool = False) -> PublishResult:
        """Publish work copy ``source`` as ``target``; ``already_published`` if ``target`` existed.

        ``keep_source`` publishes a copy and leaves ``source`` in place (it is still open in wallet-rpc).
        """
        body: dict[str, object] = {"source": source, "target": target}
        if keep_source:
            body["keep_source"] = True
        response = await self._request("POST", "/v1/publish", json=body, ok=(200, 409))
        if response.status_code == 409:
            return PublishResult(already_published=True)
        return self._parse(PublishResult, response)

    async def delete(self, wallet: str) -> list[str]:
        """Delete a wallet's file set; return the file names deleted (empty if it was absent)."""
        response = await self._request("DELETE", f"/v1/wallets/{wallet}")
        return self._parse(DeleteResult, response).deleted

    async def stat(self, wallet: str) -> WalletStat:
        """Whether ``wallet`` exists and the size and sha256 of each of its files."""
        response = await self._request("GET", f"/v1/wallets/{wallet}")
        return self._parse(WalletStat, response)

    async def list(self, uid: str | None = None) -> list[WalletEntry]:
        """Wallet names of the escrow pattern on the pod, optionally only those of one escrow uid."""
        params = {"uid": uid} if uid is not None else None
        response = await self._request("GET", "/v1/wallets", params=params)
        return self._parse(WalletList, response).wallets

    # -- plumbing

    async def _request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        _check_path_segment(path)
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise WalletfsUnavailable(f"walletfs at {self.base_url} unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 401:
            raise WalletfsAuthError(
                f"walletfs at {self.base_url} refused the pool's token (401): the pod runs with other credentials "
                "than the pool Secret holds",
                401,
            )
        if response.status_code not in ok:
            raise WalletfsError(
                f"walletfs {method} {path} failed with {response.status_code}: {_error_message(response)}",
                response.status_code,
            )
        return response

    @staticmethod
    def _parse(model: type[M], response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise WalletfsError(
                f"walletfs sent an invalid {model.__name__} reply: {exc.error_count()} error(s)",
                response.status_code,
            ) from None


def _check_path_segment(path: str) -> None:
    """Refuse names that would change the URL path (the server would reject them too)."""
    prefix = "/v1/wallets/"
    if path.startswith(prefix):
        segment = path[len(prefix) :]
        if not segment or any(c in segment for c in "/?#%\\") or segment in (".", ".."):
            raise WalletfsError(f"invalid wallet name {segment[:80]!r}", 400)


def _error_message(response: httpx.Response) -> str:
    """The server's ``{"error": ...}`` message, or a short excerpt of whatever came back."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return error
    text = response.text.strip()
    return text[:200] if text else response.reason_phrase

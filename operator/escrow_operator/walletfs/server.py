"""The walletfs sidecar: an authenticated HTTP service next to monero-wallet-rpc in every pool pod.

It shares the wallet volume with wallet-rpc (and with the sidecars of the pool's other pods) and
offers copy / publish / delete / stat / list on wallet names of the escrow pattern only. The file
operations hold across pods and nodes (see :mod:`escrow_operator.walletfs.files`): of two publishes of
one target, from any pods, exactly one wins with its whole file set and the other is told the target
is published; temp files carry this pod's name (``WALLETFS_OWNER``, else ``POD_NAME``, else the host
name) and only this pod's are removed when it starts.

Endpoints (every ``/v1`` one needs ``Authorization: Bearer <token>``; errors are ``{"error": ...}``):

=======  ===========================  =====================================================
GET      ``/healthz``                 process alive (no auth)
GET      ``/readyz``                  wallet-rpc answers ``get_version`` (no auth; the answer is
                                     reused for ``WALLETFS_READY_CACHE`` s, concurrent probes share
                                     one call)
POST     ``/v1/copy``                 ``{"source", "target"}`` -> ``{"files", "copied"}``
POST     ``/v1/publish``              ``{"source", "target", "keep_source"}`` -> ``{"files"}``; 409 if
                                     published (by anyone, also by a concurrent publish that won);
                                     ``keep_source`` publishes a copy (wallet affinity)
DELETE   ``/v1/wallets/{wallet}``     -> ``{"deleted": [...]}``
GET      ``/v1/wallets/{wallet}``     -> ``{"exists", "files": {name: {"size", "sha256"}}}``
GET      ``/v1/wallets[?uid=UID]``    -> ``{"wallets": [{"name", "complete"}]}``
=======  ===========================  =====================================================

Hostile clients: a body over 64 KiB is refused (413), JSON nested deeper than
:data:`MAX_JSON_DEPTH` levels is refused before parsing (400), and a connection that does not deliver
its request headers, or its body, within ``WALLETFS_REQUEST_TIMEOUT`` seconds is dropped
(:class:`RequestDeadlines`). A client that goes away mid-request costs one log line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import sys
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, StrictStr, ValidationError, field_validator

from escrow_operator.walletfs import files

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware  # a Protocol in recent aiohttp releases

log = logging.getLogger("escrow_operator.walletfs")

#: Largest request body accepted (413 above).
MAX_BODY_BYTES = 64 * 1024
#: Deepest nesting of JSON arrays and objects accepted in a body (400 above; bodies are flat objects).
MAX_JSON_DEPTH = 32
#: Default seconds a client has for its request headers, and again for its body (WALLETFS_REQUEST_TIMEOUT).
DEFAULT_REQUEST_TIMEOUT = 10.0
#: Default seconds a readiness answer of wallet-rpc is reused (WALLETFS_READY_CACHE).
DEFAULT_READY_CACHE = 2.0
#: Paths that need no token.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
#: Timeout of the readiness call to wallet-rpc, seconds.
READY_TIMEOUT = 3.0
#: wallet-rpc serves one request at a time: while it runs a long call (``create_wallet`` under load
#: takes tens of seconds) it accepts the probe's connection but cannot answer. Having answered within
#: this many seconds, it counts as busy, not unready, so its pod keeps getting steps (and keeps the
#: wallet it holds open). Longer than the operator's wallet-rpc call timeout.
BUSY_GRACE = 300.0

T = TypeVar("T")
Body = TypeVar("Body", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------------------------- settings


class SettingsError(ValueError):
    """The sidecar is misconfigured (message is safe to print: it never contains a secret)."""


class WalletfsSettings(BaseModel):
    """Configuration of the sidecar."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    wallet_dir: Path
    bind: str = "0.0.0.0"
    port: int = Field(default=8090, ge=0, le=65535)  # 0: any free port (tests)
    token: SecretStr
    rpc_url: str | None = None
    rpc_login: SecretStr | None = None  # "user:pass" for wallet-rpc's digest auth
    owner: str = Field(default_factory=files.default_owner)  # the pod name, in this pod's temp file names
    request_timeout: float = Field(default=DEFAULT_REQUEST_TIMEOUT, gt=0, le=3600)
    ready_cache: float = Field(default=DEFAULT_READY_CACHE, ge=0, le=60)

    @field_validator("owner")
    @classmethod
    def _owner_is_a_name(cls, value: str) -> str:
        owner = files.sanitize_owner(value)
        if not owner:
            raise ValueError("the owner must not be empty")
        return owner

    @field_validator("token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the token must not be empty")
        return value

    @field_validator("rpc_login")
    @classmethod
    def _login_has_colon(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and ":" not in value.get_secret_value():
            raise ValueError("rpc_login must look like user:password")
        return value

    @field_validator("rpc_url")
    @classmethod
    def _empty_url_is_none(cls, value: str | None) -> str | None:
        return value or None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WalletfsSettings:
        """Read ``WALLETFS_DIR``, ``WALLETFS_BIND``, ``WALLETFS_PORT``, ``WALLETFS_TOKEN`` or
        ``WALLETFS_TOKEN_FILE``, ``WALLETFS_RPC_URL``, ``WALLETFS_RPC_LOGIN`` or ``WALLETFS_RPC_LOGIN_FILE``,
        ``WALLETFS_REQUEST_TIMEOUT``, ``WALLETFS_READY_CACHE`` and the owner: ``WALLETFS_OWNER``, else
        ``POD_NAME``, else the host name (``HOSTNAME``, else the system's; a StatefulSet pod's host name
        is its pod name).
        """
        env = os.environ if environ is None else environ
        wallet_dir = env.get("WALLETFS_DIR")
        if not wallet_dir:
            raise SettingsError("WALLETFS_DIR (or --dir) is required")
        token = _secret_from_env(env, "WALLETFS_TOKEN", required=True)
        values: dict[str, Any] = {
            "wallet_dir": Path(wallet_dir),
            "token": token,
            "rpc_url": env.get("WALLETFS_RPC_URL") or None,
            "rpc_login": _secret_from_env(env, "WALLETFS_RPC_LOGIN", required=False),
            "owner": files.default_owner(env),
        }
        for var, key in (
            ("WALLETFS_BIND", "bind"),
            ("WALLETFS_PORT", "port"),
            ("WALLETFS_REQUEST_TIMEOUT", "request_timeout"),
            ("WALLETFS_READY_CACHE", "ready_cache"),
        ):
            if env.get(var):
                values[key] = env[var]
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SettingsError(f"invalid walletfs settings: {problems}") from None

    @property
    def rpc_auth(self) -> httpx.DigestAuth | None:
        if self.rpc_login is None:
            return None
        user, _, password = self.rpc_login.get_secret_value().partition(":")
        return httpx.DigestAuth(user, password)


def _secret_from_env(env: Mapping[str, str], name: str, *, required: bool) -> str | None:
    """``NAME`` or the stripped contents of the file named by ``NAME_FILE`` (not both)."""
    value, file_name = env.get(name), env.get(f"{name}_FILE")
    if value and file_name:
        raise SettingsError(f"set only one of {name} and {name}_FILE")
    if file_name:
        try:
            value = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"cannot read {name}_FILE {file_name}: {exc.strerror}") from None
        if not value:
            raise SettingsError(f"{name}_FILE {file_name} is empty")
    if required and not value:
        raise SettingsError(f"{name} or {name}_FILE is required")
    return value or None


# --------------------------------------------------------------------------------------------- locks


class NameLocks:
    """One asyncio.Lock per wallet name, created on demand and dropped when nobody uses it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, *names: str) -> AsyncIterator[None]:
        """Hold the locks of all ``names`` (taken in sorted order, so two holders never deadlock)."""
        ordered = sorted(set(names))
        for name in ordered:
            self._users[name] = self._users.get(name, 0) + 1
            self._locks.setdefault(name, asyncio.Lock())
        held: list[str] = []
        try:
            for name in ordered:
                await self._locks[name].acquire()
                held.append(name)
            yield
        finally:
            for name in reversed(held):
                self._locks[name].release()
            for name in ordered:
                self._users[name] -= 1
                if not self._users[name]:
                    del self._users[name]
                    del self._locks[name]

    def __len__(self) -> int:
        return len(self._locks)


# --------------------------------------------------------------------------------------------- requests


class TransferRequest(BaseModel):
    """Body of ``/v1/copy`` and ``/v1/publish``."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    source: StrictStr
    target: StrictStr


class PublishRequest(TransferRequest):
    """Body of ``/v1/publish``: ``keep_source`` publishes a copy and leaves the work wallet in place."""

    keep_source: StrictBool = False


_ERROR_STATUS: dict[type[files.WalletfsFileError], int] = {
    files.InvalidName: 400,
    files.UnsafeFile: 400,
    files.WalletNotFound: 404,
    files.WalletConflict: 409,
    files.TargetOccupied: 503,  # a torn leftover, or a wallet this node does not see complete yet: retry
    files.BrokenRecord: 500,
}


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _status_of(exc: files.WalletfsFileError) -> int:
    for cls in type(exc).__mro__:
        if cls in _ERROR_STATUS:
            return _ERROR_STATUS[cls]
    return 400


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into ``{"error": message}`` with the right status."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        response = error_response(exc.status, message or "error", headers)
        if exc.status == 408:
            response.force_close()  # the rest of a late body is not waited for
        return response
    except ClientGone:
        return error_response(400, "the client went away mid-request")  # nobody reads it
    except files.WalletfsFileError as exc:
        status = _status_of(exc)
        if status >= 500:
            (log.error if status == 500 else log.warning)("%s %s failed: %s", request.method, request.path, exc)
        return error_response(status, str(exc))
    except OSError as exc:
        log.exception("File operation failed for %s %s", request.method, request.path)
        return error_response(500, f"file operation failed: {exc.strerror or type(exc).__name__}")


def bearer_auth(token: SecretStr) -> Middleware:
    """Middleware requiring ``Authorization: Bearer <token>`` on everything but the probes."""
    expected = token.get_secret_value().encode("utf-8")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode("utf-8", "surrogateescape"), expected
        )
        if not ok:
            return error_response(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return middleware


# --------------------------------------------------------------------------------------------- deadlines


class ClientGone(Exception):
    """The client closed its connection before its request was complete (logged once, answered to nobody)."""


class RequestDeadlines:
    """Drops clients that do not deliver their request in time (slow-header clients hold a connection
    and a file descriptor each for as long as they like otherwise).

    A connection must complete its request headers within ``limit`` seconds of being accepted or of its
    previous response (an idle keep-alive connection is closed after as long), and its body within
    ``limit`` seconds of its headers (:meth:`read_body`, 408). aiohttp has no deadline for request
    headers (its keep-alive timeout, an hour by default, is none, and before 3.14 it did not even
    apply to a connection's first request), so :meth:`middleware` marks the connections whose request
    is being handled and :meth:`watch` closes every other connection of the server that has waited
    longer than ``limit``. It looks every ``limit / 4`` seconds (at most every second), so a
    connection goes at most that much after its deadline.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._busy: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._served: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._waiting_since: weakref.WeakKeyDictionary[asyncio.BaseTransport, float] = weakref.WeakKeyDictionary()

    def middleware(self) -> Middleware:
        """Middleware exempting a connection from the header deadline while its request is handled."""

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            transport = request.transport
            if transport is None:
                return await handler(request)
            self._busy.add(transport)
            try:
                return await handler(request)
            finally:
                self._busy.discard(transport)
                self._served.add(transport)
                self._waiting_since[transport] = asyncio.get_running_loop().time()

        return middleware

    async def read_body(self, request: web.Request) -> bytes:
        """The request body; 408 if it is not complete within ``limit`` seconds, 413 if too large, and
        :class:`ClientGone` if the client disconnects meanwhile."""
        try:
            async with asyncio.timeout(self.limit):
                return await request.read()  # raises HTTPRequestEntityTooLarge (413) above client_max_size
        except TimeoutError:
            log.info(
                "Dropped a client that did not send its %s %s body within %g s",
                request.method,
                request.path,
                self.limit,
            )
            raise web.HTTPRequestTimeout(text=f"request body not received within {self.limit:g} s") from None
        except ConnectionError:
            log.info("Client went away before sending all of its %s %s body", request.method, request.path)
            raise ClientGone from None

    async def watch(self, server: web.Server) -> None:
        """Close ``server``'s connections that miss their deadline, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.limit / 4))
            self.sweep(server.connections, loop.time())

    def sweep(self, connections: Iterable[asyncio.BaseProtocol], now: float) -> int:
        """Close the connections that have waited for a complete request longer than ``limit``
        (first seen now if never seen); return how many."""
        dropped = 0
        for protocol in connections:
            transport = getattr(protocol, "transport", None)
            if transport is None or transport in self._busy:
                continue
            since = self._waiting_since.setdefault(transport, now)
            if now - since < self.limit:
                continue
            if transport.is_closing():
                transport.abort()  # closed last time but not gone: a client that reads nothing
                continue
            if transport not in self._served:
                log.info(
                    "Dropped a connection from %s that sent no complete request within %g s",
                    _peer(transport),
                    self.limit,
                )
            transport.close()
            dropped += 1
        return dropped


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "a client"


# --------------------------------------------------------------------------------------------- server


class WalletfsServer:
    """The handlers and state (locks, wallet-rpc client) of one sidecar."""

    def __init__(self, settings: WalletfsSettings) -> None:
        self.settings = settings
        self.wallet_dir = settings.wallet_dir
        self.owner = settings.owner
        self.locks = NameLocks()
        self.deadlines = RequestDeadlines(settings.request_timeout)
        self._rpc: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ready: bool | None = None  # the last readiness answer
        self._ready_at: float | None = None  # monotonic time it was found
        self._ready_check: asyncio.Task[bool] | None = None  # the readiness check in flight
        self._last_answer: float | None = None  # monotonic time of wallet-rpc's last get_version answer

    # -- lifecycle

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY_BYTES,
            middlewares=[self.deadlines.middleware(), json_errors, bearer_auth(self.settings.token)],
        )
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_post("/v1/copy", self.copy)
        app.router.add_post("/v1/publish", self.publish)
        app.router.add_get("/v1/wallets", self.list_wallets)
        app.router.add_get("/v1/wallets/{wallet}", self.stat_wallet)
        app.router.add_delete("/v1/wallets/{wallet}", self.delete_wallet)
        app.cleanup_ctx.append(self._lifespan)
        return app

    async def _lifespan(self, app: web.Application) -> AsyncIterator[None]:
        if not self.wallet_dir.is_dir():
            raise SettingsError(f"wallet directory {self.wallet_dir} does not exist or is not a directory")
        recovery = await asyncio.to_thread(files.recover, self.wallet_dir, self.owner)
        if recovery.finished:
            log.info("Finished %d publish(es) committed before a restart", recovery.finished)
        log.info(
            "Removed %d leftover temp file(s) of owner %s (torn writes of an earlier run) from %s",
            recovery.removed,
            self.owner,
            self.wallet_dir,
        )
        if self.settings.rpc_url:
            self._rpc = httpx.AsyncClient(auth=self.settings.rpc_auth, timeout=READY_TIMEOUT)
        try:
            yield
        finally:
            if self._ready_check is not None:
                await asyncio.gather(self._ready_check, return_exceptions=True)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._rpc is not None:
                await self._rpc.aclose()
                self._rpc = None

    async def _locked(self, names: tuple[str, ...], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking ``fn(*args, **kwargs)`` in a thread while holding the locks of ``names``.

        The work runs in its own task shielded from the handler: if the client goes away, the thread
        still finishes before the locks are released, so two operations on a name never overlap.
        """

        async def run() -> T:
            async with self.locks.hold(*names):
                return await asyncio.to_thread(fn, *args, **kwargs)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: the handler may have gone away before it finished

    # -- probes

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.settings.rpc_url:
            return await self.healthz(request)
        if await self._readiness():
            return web.json_response({"status": "ready"})
        return error_response(503, "wallet-rpc is not ready")

    async def _readiness(self) -> bool:
        """wallet-rpc's readiness, asked at most once per ``ready_cache`` seconds: a recent answer is
        reused, and concurrent probes share the one check in flight (wallet-rpc serves one request at a
        time, so every extra ``get_version`` queues behind a step's calls)."""
        now = time.monotonic()
        if self._ready is not None and self._ready_at is not None and now - self._ready_at < self.settings.ready_cache:
            return self._ready
        if self._ready_check is None:
            self._ready_check = asyncio.ensure_future(self._check_readiness())
            self._ready_check.add_done_callback(self._readiness_checked)
        return await asyncio.shield(self._ready_check)

    async def _check_readiness(self) -> bool:
        ready = await self._wallet_rpc_ready()
        if ready != self._ready:
            (log.info if ready else log.warning)("wallet-rpc is %s", "ready" if ready else "not ready")
        self._ready, self._ready_at = ready, time.monotonic()
        return ready

    def _readiness_checked(self, task: asyncio.Task[bool]) -> None:
        self._ready_check = None
        if not task.cancelled():
            task.exception()  # retrieved here: every probe waiting for it may have gone away

    async def _wallet_rpc_ready(self) -> bool:
        """True iff wallet-rpc answers ``get_version`` with a result, or is busy: it accepted the
        connection but is still running a long call, and it answered within :data:`BUSY_GRACE`."""
        assert self.settings.rpc_url is not None
        client = self._rpc
        if client is None:
            return False
        try:
            response = await client.post(
                self.settings.rpc_url, json={"jsonrpc": "2.0", "id": "0", "method": "get_version"}
            )
            body: object = response.json() if response.status_code == 200 else None
        except httpx.ReadTimeout:
            return self._last_answer is not None and time.monotonic() - self._last_answer < BUSY_GRACE
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("wallet-rpc readiness call failed: %s", type(exc).__name__)
            return False
        answered = isinstance(body, dict) and isinstance(body.get("result"), dict)
        if answered:
            self._last_answer = time.monotonic()
        return answered

    # -- /v1

    async def copy(self, request: web.Request) -> web.Response:
        body = await self._transfer_body(request, TransferRequest)
        source = files.check_wallet_name(body.source, "source")
        target = files.check_wallet_name(body.target, "target")
        outcome = await self._locked(
            (source, target), files.copy_wallet, self.wallet_dir, source, target, owner=self.owner
        )
        if outcome.copied:
            log.info("Copied %s -> %s", source, target)
        else:
            log.info("Copy %s -> %s: target already identical", source, target)
        return web.json_response({"files": outcome.files, "copied": outcome.copied})

    async def publish(self, request: web.Request) -> web.Response:
        body = await self._transfer_body(request, PublishRequest)
        source = files.check_wallet_name(body.source, "source")
        target = files.check_wallet_name(body.target, "target")
        publish = files.publish_copy if body.keep_source else files.publish_wallet
        try:
            result = await self._locked((source, target), publish, self.wallet_dir, source, target, owner=self.owner)
        except files.AlreadyPublished:
            log.info("Publish %s -> %s: already published", source, target)
            raise
        log.info("Published %s -> %s", source, target)
        return web.json_response({"files": result})

    async def delete_wallet(self, request: web.Request) -> web.Response:
        wallet = files.check_wallet_name(request.match_info["wallet"])
        deleted = await self._locked((wallet,), files.delete_wallet, self.wallet_dir, wallet, owner=self.owner)
        if deleted:
            log.info("Deleted %s", wallet)
        return web.json_response({"deleted": deleted})

    async def stat_wallet(self, request: web.Request) -> web.Response:
        wallet = files.check_wallet_name(request.match_info["wallet"])
        result = await self._locked((wallet,), files.stat_wallet, self.wallet_dir, wallet, owner=self.owner)
        return web.json_response(result.model_dump())

    async def list_wallets(self, request: web.Request) -> web.Response:
        uid = request.query.get("uid")
        if uid is not None:
            uid = files.check_uid(uid)
        wallets = await asyncio.to_thread(files.list_wallets, self.wallet_dir, uid)
        return web.json_response({"wallets": [w.model_dump() for w in wallets]})

    async def _transfer_body(self, request: web.Request, model: type[Body]) -> Body:
        """Parse ``{"source": NAME, "target": NAME}`` (413 above the size limit, 408 if too slow, 400
        if malformed or nested deeper than :data:`MAX_JSON_DEPTH`)."""
        return _parse_body(await self.deadlines.read_body(request), model)


def _parse_body(raw: bytes, model: type[Body]) -> Body:
    if json_too_deep(raw, MAX_JSON_DEPTH):
        raise web.HTTPBadRequest(text=f"request body must be JSON nested at most {MAX_JSON_DEPTH} levels deep")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise web.HTTPBadRequest(text="request body must be JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError:
        raise web.HTTPBadRequest(
            text='request body must be {"source": WALLET_NAME, "target": WALLET_NAME}'
            + (' with optional "keep_source": true|false' if model is PublishRequest else "")
        ) from None


_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")


def json_too_deep(raw: bytes, limit: int) -> bool:
    """Whether ``raw`` nests JSON arrays and objects more than ``limit`` levels deep (brackets inside
    strings do not count). A linear scan without parsing: ``json.loads`` recurses once per level and
    fails with RecursionError (a 500) on a deep enough body."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif byte in _CLOSERS:
            depth -= 1
    return False


def make_app(settings: WalletfsSettings) -> web.Application:
    """The aiohttp application of the sidecar (this owner's temp files are removed when it starts)."""
    return WalletfsServer(settings).app()


async def serve(settings: WalletfsSettings, *, stop: asyncio.Event | None = None) -> None:
    """Serve until cancelled (or until ``stop`` is set), then shut down cleanly.

    Connections that miss their request deadlines are dropped (:class:`RequestDeadlines`: also idle
    keep-alive connections, after ``request_timeout`` seconds).
    """
    server = WalletfsServer(settings)
    runner = web.AppRunner(server.app(), access_log=None, lingering_time=min(10.0, settings.request_timeout))
    await runner.setup()
    assert runner.server is not None
    watchdog = asyncio.create_task(server.deadlines.watch(runner.server))
    try:
        site = web.TCPSite(runner, settings.bind, settings.port)
        await site.start()
        log.info(
            "walletfs %s serving %s on %s:%d (readiness via %s)",
            settings.owner,
            settings.wallet_dir,
            settings.bind,
            settings.port,
            "wallet-rpc get_version" if settings.rpc_url else "process liveness",
        )
        await (stop or asyncio.Event()).wait()
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        await runner.cleanup()


# --------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="escrow-operator walletfs",
        description="walletfs sidecar: authenticated copy/publish/delete of escrow wallet files",
    )
    parser.add_argument("--dir", help="wallet directory shared with wallet-rpc (WALLETFS_DIR)")
    parser.add_argument("--bind", help="address to listen on (WALLETFS_BIND, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (WALLETFS_PORT, default 8090)")
    parser.add_argument(
        "--owner", help="name in this process's temp files: the pod name (WALLETFS_OWNER, POD_NAME, host name)"
    )
    parser.add_argument("--token-file", help="file holding the bearer token (WALLETFS_TOKEN[_FILE])")
    parser.add_argument("--rpc-url", help="wallet-rpc json_rpc URL for /readyz (WALLETFS_RPC_URL)")
    parser.add_argument("--rpc-login-file", help="file holding wallet-rpc's user:password (WALLETFS_RPC_LOGIN[_FILE])")
    return parser


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> WalletfsSettings:
    """Settings from the environment, with command-line flags taking precedence."""
    env = dict(os.environ if environ is None else environ)
    for flag, var in (
        ("dir", "WALLETFS_DIR"),
        ("bind", "WALLETFS_BIND"),
        ("rpc_url", "WALLETFS_RPC_URL"),
        ("owner", "WALLETFS_OWNER"),
    ):
        if getattr(args, flag):
            env[var] = getattr(args, flag)
    if args.port is not None:
        env["WALLETFS_PORT"] = str(args.port)
    if args.token_file:
        env.pop("WALLETFS_TOKEN", None)
        env["WALLETFS_TOKEN_FILE"] = args.token_file
    if args.rpc_login_file:
        env.pop("WALLETFS_RPC_LOGIN", None)
        env["WALLETFS_RPC_LOGIN_FILE"] = args.rpc_login_file
    return WalletfsSettings.from_env(env)


async def _serve_until_signalled(settings: WalletfsSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop=stop)
    log.info("walletfs stopped")


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs a full traceback for every malformed request (an overlong request line, say), so any
    client could flood the log. Such requests are refused with 400 anyway: keep one line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "refused a malformed request: %s", (type(exc).__name__,)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``escrow-operator walletfs ...``; returns the exit status."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.server").addFilter(_MalformedRequestFilter())
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"walletfs: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_until_signalled(settings))
    except SettingsError as exc:
        print(f"walletfs: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"walletfs: cannot serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

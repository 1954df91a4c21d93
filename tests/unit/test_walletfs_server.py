"""The walletfs sidecar over real HTTP on 127.0.0.1, driven by the real client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from escrow_operator.naming import WalletNames
from escrow_operator.walletfs import files
from escrow_operator.walletfs import server as server_module
from escrow_operator.walletfs.client import WalletfsAuthError, WalletfsClient, WalletfsError, WalletfsUnavailable
from escrow_operator.walletfs.server import (
    SettingsError,
    WalletfsSettings,
    _parser,
    make_app,
    serve,
    settings_from_args,
)

TOKEN = "s3cret-token-value-0123456789"
UID = "0b5f2c1e-7d3a-4e8b-9c6f-1a2b3c4d5e6f"
NAMES = WalletNames("buyer", UID, final=3)
ROUND_1 = NAMES.output_of(0)
ROUND_2 = NAMES.output_of(1)
WORK = NAMES.work(1, "deadbeef")
CONTENT = {".keys": b"KEYS\x00secret", "": b"cache" * 500, ".address.txt": b"4Address"}


def make_wallet(directory: Path, wallet: str, content: dict[str, bytes] = CONTENT) -> None:
    for suffix, data in content.items():
        (directory / (wallet + suffix)).write_bytes(data)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_for(wallet_dir: Path, **extra: object) -> WalletfsSettings:
    return WalletfsSettings(wallet_dir=wallet_dir, bind="127.0.0.1", port=0, token=SecretStr(TOKEN), **extra)


@pytest.fixture
def wallet_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "wallets"
    directory.mkdir()
    return directory


@pytest.fixture
async def server(wallet_dir: Path) -> AsyncIterator[TestServer]:
    async with TestServer(make_app(settings_for(wallet_dir)), host="127.0.0.1") as srv:
        yield srv


@pytest.fixture
async def client(server: TestServer) -> AsyncIterator[WalletfsClient]:
    async with WalletfsClient("127.0.0.1", TOKEN, port=server.port, timeout=10) as c:
        yield c


@pytest.fixture
async def http(server: TestServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as c:
        yield c


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def raw_get(port: int, target: str, method: str = "GET") -> tuple[int, dict]:
    """Send a request line exactly as given (no client-side URL normalisation)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode(
            "latin-1"
        )
    )
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {}


# --------------------------------------------------------------------------------------------- happy paths


async def test_copy_publish_stat_list_delete_roundtrip(client: WalletfsClient, wallet_dir: Path) -> None:
    make_wallet(wallet_dir, ROUND_1)

    copied = await client.copy(ROUND_1, WORK)
    assert copied == {WORK + s: hashlib.sha256(d).hexdigest() for s, d in CONTENT.items()}
    for suffix, data in CONTENT.items():
        assert (wallet_dir / (WORK + suffix)).read_bytes() == data
        assert (wallet_dir / (ROUND_1 + suffix)).read_bytes() == data
    assert await client.copy(ROUND_1, WORK) == copied  # idempotent

    stat = await client.stat(WORK)
    assert stat.exists and {n: f.sha256 for n, f in stat.files.items()} == copied

    published = await client.publish(WORK, ROUND_2)
    assert not published.already_published
    assert published.files == {ROUND_2 + s: hashlib.sha256(d).hexdigest() for s, d in CONTENT.items()}
    assert not (await client.stat(WORK)).exists

    again = await client.publish(WORK, ROUND_2)  # the work copy is gone, the output exists
    assert again.already_published and again.files == {}

    wallets = await client.list(uid=UID)
    assert [(w.name, w.complete) for w in wallets] == [(ROUND_1, True), (ROUND_2, True)]
    assert await client.list(uid="22222222-2222-4222-8222-222222222222") == []

    deleted = await client.delete(ROUND_1)
    assert deleted[0] == ROUND_1 + ".keys" and len(deleted) == 3
    assert await client.delete(ROUND_1) == []
    assert listing(wallet_dir) == sorted(ROUND_2 + s for s in CONTENT)


async def test_publish_refuses_to_overwrite(client: WalletfsClient, wallet_dir: Path) -> None:
    make_wallet(wallet_dir, WORK)
    make_wallet(wallet_dir, ROUND_2, {".keys": b"first", "": b"first cache"})
    result = await client.publish(WORK, ROUND_2)
    assert result.already_published
    assert (wallet_dir / (ROUND_2 + ".keys")).read_bytes() == b"first"
    assert (wallet_dir / (WORK + ".keys")).read_bytes() == CONTENT[".keys"]


async def test_publish_onto_a_torn_cache_is_503_not_already_published(client: WalletfsClient, wallet_dir: Path) -> None:
    """A cache without .keys that no publish owns (a torn write of an older walletfs) is never
    overwritten, and never reported as published: the step fails and is retried."""
    make_wallet(wallet_dir, WORK)
    (wallet_dir / ROUND_2).write_bytes(b"torn cache")
    before = listing(wallet_dir)
    with pytest.raises(WalletfsError) as err:
        await client.publish(WORK, ROUND_2)
    assert err.value.status == 503 and "no .keys" in err.value.message
    assert listing(wallet_dir) == before and (wallet_dir / ROUND_2).read_bytes() == b"torn cache"


async def test_publish_keep_source_publishes_a_copy(client: WalletfsClient, wallet_dir: Path) -> None:
    make_wallet(wallet_dir, WORK)
    result = await client.publish(WORK, ROUND_2, keep_source=True)
    assert not result.already_published
    assert result.files == {ROUND_2 + s: hashlib.sha256(d).hexdigest() for s, d in CONTENT.items()}
    assert (await client.stat(WORK)).exists  # still open in wallet-rpc for the next round
    assert (await client.publish(WORK, ROUND_2, keep_source=True)).already_published


async def test_missing_wallets_are_404(client: WalletfsClient, wallet_dir: Path) -> None:
    with pytest.raises(WalletfsError) as copy_err:
        await client.copy(ROUND_1, WORK)
    assert copy_err.value.status == 404 and ROUND_1 in copy_err.value.message
    with pytest.raises(WalletfsError) as publish_err:
        await client.publish(WORK, ROUND_2)
    assert publish_err.value.status == 404
    assert listing(wallet_dir) == []


async def test_operations_log_their_names(
    client: WalletfsClient, wallet_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="escrow_operator.walletfs")
    make_wallet(wallet_dir, ROUND_1)
    await client.copy(ROUND_1, WORK)
    await client.publish(WORK, ROUND_2)
    await client.delete(ROUND_2)
    messages = [r.getMessage() for r in caplog.records]
    assert f"Copied {ROUND_1} -> {WORK}" in messages
    assert f"Published {WORK} -> {ROUND_2}" in messages
    assert f"Deleted {ROUND_2}" in messages
    assert not any(TOKEN in m for m in messages)


async def test_concurrent_copies_of_the_same_target(client: WalletfsClient, wallet_dir: Path) -> None:
    make_wallet(wallet_dir, ROUND_1)
    results = await asyncio.gather(*(client.copy(ROUND_1, WORK) for _ in range(5)))
    assert all(r == results[0] for r in results)
    assert listing(wallet_dir) == sorted([*(ROUND_1 + s for s in CONTENT), *(WORK + s for s in CONTENT)])


# --------------------------------------------------------------------------------------------- refusals


BAD_NAMES = [
    "../etc/passwd",
    "/etc/passwd",
    "..",
    f"{ROUND_1}\x00",
    f"{ROUND_1}.keys",
    f"../{ROUND_1}",
    "a" * 201,
    f"bûyer_escrow_{UID}_round_1",
    "wallet",
]


@pytest.mark.parametrize("bad", BAD_NAMES)
async def test_bad_names_in_bodies_are_400(http: httpx.AsyncClient, wallet_dir: Path, bad: str) -> None:
    make_wallet(wallet_dir, ROUND_1)
    before = listing(wallet_dir)
    for path, body in (
        ("/v1/copy", {"source": ROUND_1, "target": bad}),
        ("/v1/copy", {"source": bad, "target": WORK}),
        ("/v1/publish", {"source": ROUND_1, "target": bad}),
        ("/v1/publish", {"source": bad, "target": ROUND_2}),
    ):
        response = await http.post(path, json=body, headers=AUTH)
        assert response.status_code == 400, (path, body, response.text)
        assert isinstance(response.json()["error"], str)
    assert listing(wallet_dir) == before
    assert listing(wallet_dir.parent) == ["wallets"]


@pytest.mark.parametrize(
    "target",
    [
        "/v1/wallets/..%2F..%2Fetc%2Fpasswd",
        "/v1/wallets/%2E%2E",
        f"/v1/wallets/{ROUND_1}%00",
        f"/v1/wallets/{ROUND_1}.keys",
        "/v1/wallets/" + "a" * 201,
        f"/v1/wallets/b%C3%BByer_escrow_{UID}_round_1",
    ],
)
async def test_bad_names_in_paths_are_refused(server: TestServer, wallet_dir: Path, target: str) -> None:
    make_wallet(wallet_dir, ROUND_1)
    (wallet_dir.parent / "passwd").write_bytes(b"keep")
    before = listing(wallet_dir)
    for method in ("GET", "DELETE"):
        status, body = await raw_get(server.port, target, method)
        assert status == 400, (method, target, status)
        assert body["error"]
    assert listing(wallet_dir) == before
    assert (wallet_dir.parent / "passwd").read_bytes() == b"keep"


async def test_bad_uid_is_400(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/wallets", params={"uid": "../x"}, headers=AUTH)
    assert response.status_code == 400 and "uid" in response.json()["error"]


async def test_symlinks_are_refused(http: httpx.AsyncClient, client: WalletfsClient, wallet_dir: Path) -> None:
    outside = wallet_dir.parent / "outside"
    outside.write_bytes(b"outside")
    (wallet_dir / (ROUND_1 + ".keys")).symlink_to(outside)
    (wallet_dir / ROUND_1).write_bytes(b"cache")

    response = await http.post("/v1/copy", json={"source": ROUND_1, "target": WORK}, headers=AUTH)
    assert response.status_code == 400 and "symlink" in response.json()["error"]
    for call in (client.stat(ROUND_1), client.delete(ROUND_1), client.publish(ROUND_1, ROUND_2)):
        with pytest.raises(WalletfsError) as err:
            await call
        assert err.value.status == 400
    assert listing(wallet_dir) == sorted([ROUND_1, ROUND_1 + ".keys"])
    assert (wallet_dir / (ROUND_1 + ".keys")).is_symlink()
    assert outside.read_bytes() == b"outside"


async def test_malformed_bodies_are_400(http: httpx.AsyncClient) -> None:
    for content in (b"not json", b"[]", b'{"source": "x"}', b'{"source": 1, "target": 2}'):
        response = await http.post("/v1/copy", content=content, headers=AUTH)
        assert response.status_code == 400
        assert response.json()["error"]


async def test_oversize_body_is_413(http: httpx.AsyncClient, wallet_dir: Path) -> None:
    body = json.dumps({"source": ROUND_1, "target": WORK, "pad": "x" * (65 * 1024)}).encode()
    response = await http.post("/v1/copy", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert "error" in response.json()
    assert listing(wallet_dir) == []


# --------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ],
)
async def test_missing_or_wrong_token_is_401(http: httpx.AsyncClient, wallet_dir: Path, headers: dict) -> None:
    make_wallet(wallet_dir, ROUND_1)
    before = listing(wallet_dir)
    for method, path, body in (
        ("POST", "/v1/copy", {"source": ROUND_1, "target": WORK}),
        ("POST", "/v1/publish", {"source": ROUND_1, "target": ROUND_2}),
        ("DELETE", f"/v1/wallets/{ROUND_1}", None),
        ("GET", f"/v1/wallets/{ROUND_1}", None),
        ("GET", "/v1/wallets", None),
    ):
        response = await http.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.json() == {"error": "missing or invalid bearer token"}
    assert listing(wallet_dir) == before


async def test_client_with_wrong_token_raises(server: TestServer) -> None:
    """A refused token is the pod's problem (it runs with other credentials): another pod is tried."""
    async with WalletfsClient("127.0.0.1", SecretStr("nope"), port=server.port) as bad:
        with pytest.raises(WalletfsAuthError) as err:
            await bad.list()
    assert err.value.status == 401 and isinstance(err.value, WalletfsUnavailable)
    assert "nope" not in str(err.value)


async def test_probes_need_no_token(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200  # no rpc_url: readyz = healthz


# --------------------------------------------------------------------------------------------- lifecycle


async def test_startup_removes_its_own_temp_leftovers_only(wallet_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="escrow_operator.walletfs")
    make_wallet(wallet_dir, ROUND_1)
    for i in range(2):
        (wallet_dir / f"{files.TEMP_PREFIX}wallets-0-{i:016x}").write_bytes(b"torn copy of my last life")
    in_flight = f"{files.TEMP_PREFIX}wallets-1-{0:016x}"
    (wallet_dir / in_flight).write_bytes(b"another pod's copy in flight")
    async with TestServer(make_app(settings_for(wallet_dir, owner="wallets-0")), host="127.0.0.1"):
        assert listing(wallet_dir) == sorted([*(ROUND_1 + s for s in CONTENT), in_flight])
    assert any("Removed 2 leftover" in r.getMessage() and "wallets-0" in r.getMessage() for r in caplog.records)


@contextlib.asynccontextmanager
async def fake_wallet_rpc(handler: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[str]:
    """A stand-in for wallet-rpc's JSON-RPC endpoint (unit tests of the probe); yields its URL."""
    app = web.Application()
    app.router.add_post("/json_rpc", handler)
    async with TestServer(app, host="127.0.0.1") as rpc:
        yield f"http://127.0.0.1:{rpc.port}/json_rpc"


async def test_readyz_503_when_wallet_rpc_unreachable(wallet_dir: Path) -> None:
    settings = settings_for(wallet_dir, rpc_url=f"http://127.0.0.1:{free_port()}/json_rpc", rpc_login=SecretStr("u:p"))
    async with (
        TestServer(make_app(settings), host="127.0.0.1") as srv,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}") as http,
    ):
        response = await http.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {"error": "wallet-rpc is not ready"}
        assert (await http.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    ("status", "reply", "ready"),
    [
        (200, {"jsonrpc": "2.0", "id": "0", "result": {"version": 65562}}, True),
        (200, {"jsonrpc": "2.0", "id": "0", "error": {"code": -1, "message": "x"}}, False),
        (401, {}, False),
    ],
)
async def test_readyz_follows_get_version(wallet_dir: Path, status: int, reply: dict, ready: bool) -> None:
    calls: list[dict] = []

    async def json_rpc(request: web.Request) -> web.Response:
        calls.append(await request.json())
        return web.json_response(reply, status=status)

    async with fake_wallet_rpc(json_rpc) as rpc:
        settings = settings_for(wallet_dir, rpc_url=rpc)
        async with (
            TestServer(make_app(settings), host="127.0.0.1") as srv,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}") as http,
        ):
            response = await http.get("/readyz")
    assert response.status_code == (200 if ready else 503)
    assert calls and calls[0]["method"] == "get_version"


async def test_readyz_counts_a_busy_wallet_rpc_as_ready_only_after_an_answer(
    wallet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wallet-rpc serves one request at a time: during a long call the probe's request waits."""
    monkeypatch.setattr(server_module, "READY_TIMEOUT", 0.2)
    busy = asyncio.Event()
    release = asyncio.Event()

    async def json_rpc(request: web.Request) -> web.Response:
        if busy.is_set():
            await release.wait()  # a long create_wallet ahead of the probe
        return web.json_response({"jsonrpc": "2.0", "id": "0", "result": {"version": 65562}})

    async with fake_wallet_rpc(json_rpc) as rpc:
        settings = settings_for(wallet_dir, rpc_url=rpc, ready_cache=0.0)  # every probe asks
        async with (
            TestServer(make_app(settings), host="127.0.0.1") as srv,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}") as http,
        ):
            busy.set()
            assert (await http.get("/readyz")).status_code == 503  # never answered: not ready
            busy.clear()
            assert (await http.get("/readyz")).status_code == 200
            busy.set()
            assert (await http.get("/readyz")).status_code == 200  # busy after an answer: ready
            monkeypatch.setattr(server_module, "BUSY_GRACE", 0.0)
            assert (await http.get("/readyz")).status_code == 503  # silent too long: not ready
            release.set()


async def test_readyz_answers_wallet_rpc_digest_challenge(wallet_dir: Path) -> None:
    seen: list[str] = []

    async def json_rpc(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        seen.append(auth)
        if not auth.startswith("Digest ") or 'username="rpcuser"' not in auth:
            challenge = 'Digest qop="auth",algorithm=MD5,realm="monero-rpc",nonce="abc123",stale=false'
            return web.json_response({}, status=401, headers={"WWW-Authenticate": challenge})
        return web.json_response({"jsonrpc": "2.0", "id": "0", "result": {"version": 65562}})

    async with fake_wallet_rpc(json_rpc) as rpc:
        settings = settings_for(wallet_dir, rpc_url=rpc, rpc_login=SecretStr("rpcuser:rpcpass"))
        async with (
            TestServer(make_app(settings), host="127.0.0.1") as srv,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}") as http,
        ):
            response = await http.get("/readyz")
    assert response.status_code == 200
    assert seen[0] == "" and "rpcpass" not in seen[-1]


async def test_client_unavailable_when_pod_is_gone() -> None:
    async with WalletfsClient("127.0.0.1", TOKEN, port=free_port(), timeout=2) as gone:
        with pytest.raises(WalletfsUnavailable):
            await gone.stat(ROUND_1)


async def test_serve_runs_until_stopped(wallet_dir: Path) -> None:
    port = free_port()
    settings = WalletfsSettings(wallet_dir=wallet_dir, bind="127.0.0.1", port=port, token=SecretStr(TOKEN))
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    try:
        async with WalletfsClient("127.0.0.1", TOKEN, port=port, timeout=5) as c:
            for _ in range(50):
                try:
                    assert await c.list() == []
                    break
                except WalletfsUnavailable:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("serve() did not start")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


# --------------------------------------------------------------------------------------------- settings


def test_settings_from_env_and_flags(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    login_file = tmp_path / "login"
    login_file.write_text("rpcuser:rpcpass\n")
    env = {"WALLETFS_DIR": "/wallets", "WALLETFS_TOKEN": "env-token", "WALLETFS_PORT": "9000", "POD_NAME": "wallets-2"}

    settings = WalletfsSettings.from_env(env)
    assert settings.wallet_dir == Path("/wallets") and settings.port == 9000
    assert settings.token.get_secret_value() == "env-token" and settings.rpc_url is None
    assert settings.owner == "wallets-2"
    assert (settings.request_timeout, settings.ready_cache) == (10.0, 2.0)
    tuned = WalletfsSettings.from_env(
        {**env, "WALLETFS_OWNER": "fs-2", "WALLETFS_REQUEST_TIMEOUT": "2.5", "WALLETFS_READY_CACHE": "0"}
    )
    assert (tuned.owner, tuned.request_timeout, tuned.ready_cache) == ("fs-2", 2.5, 0.0)

    args = _parser().parse_args(
        [
            "--dir",
            str(tmp_path),
            "--token-file",
            str(token_file),
            "--rpc-url",
            "http://127.0.0.1:18083/json_rpc",
            "--rpc-login-file",
            str(login_file),
            "--bind",
            "127.0.0.1",
            "--owner",
            "wallets-9",
        ]
    )
    settings = settings_from_args(args, env)
    assert settings.wallet_dir == tmp_path and settings.bind == "127.0.0.1" and settings.port == 9000
    assert settings.owner == "wallets-9"
    assert settings.token.get_secret_value() == TOKEN
    assert settings.rpc_login is not None and settings.rpc_login.get_secret_value() == "rpcuser:rpcpass"
    assert TOKEN not in repr(settings) and "rpcpass" not in repr(settings)


@pytest.mark.parametrize(
    "env",
    [
        {"WALLETFS_TOKEN": "t"},
        {"WALLETFS_DIR": "/w"},
        {"WALLETFS_DIR": "/w", "WALLETFS_TOKEN": "t", "WALLETFS_TOKEN_FILE": "/f"},
        {"WALLETFS_DIR": "/w", "WALLETFS_TOKEN_FILE": "/nonexistent/token"},
        {"WALLETFS_DIR": "/w", "WALLETFS_TOKEN": "t", "WALLETFS_RPC_LOGIN": "no-colon-secret"},
        {"WALLETFS_DIR": "/w", "WALLETFS_TOKEN": "t", "WALLETFS_PORT": "99999"},
        {"WALLETFS_DIR": "/w", "WALLETFS_TOKEN": "t", "WALLETFS_REQUEST_TIMEOUT": "0"},
        {"WALLETFS_DIR": "/w", "WALLETFS_TOKEN": "t", "WALLETFS_READY_CACHE": "-1"},
    ],
)
def test_bad_settings(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as err:
        WalletfsSettings.from_env(env)
    assert "no-colon-secret" not in str(err.value)

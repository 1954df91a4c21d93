"""The walletfs sidecar against hostile or broken clients: deep JSON, slow clients, probe floods,
clients that go away mid-request. Connection handling is tested through :func:`serve` (the production
runner, with its watchdog) on 127.0.0.1; request handling through aiohttp's TestServer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from escrow_operator.walletfs.server import MAX_JSON_DEPTH, WalletfsSettings, json_too_deep, make_app, serve

TOKEN = "s3cret-token-value-0123456789"
UID = "0b5f2c1e-7d3a-4e8b-9c6f-1a2b3c4d5e6f"
SOURCE = f"buyer_escrow_{UID}_round_1"
TARGET = f"buyer_escrow_{UID}_work_1_deadbeef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def wallet_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "wallets"
    directory.mkdir()
    return directory


def settings_for(wallet_dir: Path, **extra: object) -> WalletfsSettings:
    values: dict[str, object] = {
        "wallet_dir": wallet_dir,
        "bind": "127.0.0.1",
        "port": free_port(),
        "token": SecretStr(TOKEN),
    }
    return WalletfsSettings(**{**values, **extra})  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(settings: WalletfsSettings) -> AsyncIterator[str]:
    """Run :func:`serve` until the block ends; yields its base URL."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    url = f"http://127.0.0.1:{settings.port}"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(100):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{url}/healthz")).status_code == 200:
                        break
                assert not task.done(), task
                await asyncio.sleep(0.02)
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def closed_after(reader: asyncio.StreamReader, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes the connection (EOF or reset), and what it sent meanwhile."""
    started = time.monotonic()
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(4096), limit):
            received += chunk
    return time.monotonic() - started, received


# --------------------------------------------------------------------------------------------- deep JSON


@pytest.mark.parametrize(
    ("raw", "too_deep"),
    [
        (b'{"source": "a", "target": "b"}', False),
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, False),
        (b"[" * (MAX_JSON_DEPTH + 1), True),
        (b'{"a":' * 30_000, True),
        (b'{"source": "' + b"[{" * 1000 + b'", "target": "x"}', False),  # brackets inside a string
        (b'{"source": "\\"' + b"[" * 1000 + b'"}', False),  # an escaped quote does not end the string
        (b'["\\\\", ' + b"[" * 40, True),  # an escaped backslash does
    ],
)
def test_json_too_deep(raw: bytes, too_deep: bool) -> None:
    assert json_too_deep(raw, MAX_JSON_DEPTH) is too_deep


@pytest.mark.parametrize(("opener", "closer", "depth"), [(b"[", b"]", 30_000), (b'{"a":', b"}", 10_000)])
@pytest.mark.parametrize("endpoint", ["copy", "publish"])
async def test_deeply_nested_json_is_refused_with_400(
    wallet_dir: Path, caplog: pytest.LogCaptureFixture, opener: bytes, closer: bytes, depth: int, endpoint: str
) -> None:
    """JSON nested 30,000 deep (under the 64 KiB limit) used to answer 500 with a RecursionError traceback."""
    caplog.set_level(logging.INFO)
    body = opener * depth + closer * depth
    async with (
        TestServer(make_app(settings_for(wallet_dir)), host="127.0.0.1") as srv,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}") as http,
    ):
        response = await http.post(f"/v1/{endpoint}", content=body, headers=AUTH)
        assert response.status_code == 400
        assert response.json() == {"error": f"request body must be JSON nested at most {MAX_JSON_DEPTH} levels deep"}
        fine = await http.post(f"/v1/{endpoint}", json={"source": SOURCE, "target": TARGET}, headers=AUTH)
        assert fine.status_code == 404  # an ordinary body still gets through to the file operations
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# --------------------------------------------------------------------------------------------- slow clients


async def test_slow_clients_are_dropped_within_the_request_timeout(
    wallet_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """35 of 35 connections sending their headers a byte at a time used to stay open for good."""
    caplog.set_level(logging.INFO, logger="escrow_operator.walletfs")
    limit = 1.0
    async with serving(settings_for(wallet_dir, request_timeout=limit)) as url:
        port = int(url.rsplit(":", 1)[1])

        async def slow_headers() -> tuple[float, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = f"GET /v1/wallets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()

            async def trickle() -> None:
                with contextlib.suppress(ConnectionError):
                    for byte in head[:-4]:  # never the blank line that ends the headers
                        writer.write(bytes([byte]))
                        await writer.drain()
                        await asyncio.sleep(0.1)

            sender = asyncio.create_task(trickle())
            try:
                return await closed_after(reader, 5 * limit)
            finally:
                sender.cancel()
                writer.close()

        async def silent() -> tuple[float, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                return await closed_after(reader, 5 * limit)
            finally:
                writer.close()

        async def slow_body() -> tuple[float, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST /v1/copy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
            )
            try:
                return await closed_after(reader, 5 * limit)
            finally:
                writer.close()

        results = await asyncio.gather(*(slow_headers() for _ in range(10)), silent(), slow_body())
        for elapsed, _ in results:  # the watchdog looks every limit / 4 seconds
            assert 0.8 * limit <= elapsed <= 2.5 * limit, [r[0] for r in results]
        assert results[-1][1].startswith(b"HTTP/1.1 408 ")  # the slow body is told why
        assert b"request body not received within 1 s" in results[-1][1]
        async with httpx.AsyncClient() as http:  # the server serves on
            assert (await http.get(f"{url}/v1/wallets", headers=AUTH)).json() == {"wallets": []}
    dropped = [r for r in caplog.records if "sent no complete request within 1 s" in r.getMessage()]
    assert len(dropped) == 11
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_keep_alive_client_is_served_within_the_limit(wallet_dir: Path) -> None:
    async with (
        serving(settings_for(wallet_dir, request_timeout=0.6)) as url,
        httpx.AsyncClient(base_url=url, headers=AUTH) as http,
    ):
        for _ in range(6):  # 1.2 s on one connection: each request arrives within the limit
            assert (await http.get("/v1/wallets")).status_code == 200
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.2)  # idle longer than the limit: the server closed the connection
        assert (await http.get("/v1/wallets")).status_code == 200  # and the client just opens another


# --------------------------------------------------------------------------------------------- /readyz


async def test_readyz_checks_wallet_rpc_once_for_many_probes(wallet_dir: Path) -> None:
    """3,112 probes used to make 5,983 wallet-rpc calls: now concurrent probes share one call, and an
    answer is reused for ``ready_cache`` seconds."""
    calls = 0

    async def json_rpc(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)  # wallet-rpc answers one request at a time, slowly
        return web.json_response({"jsonrpc": "2.0", "id": "0", "result": {"version": 65562}})

    app = web.Application()
    app.router.add_post("/json_rpc", json_rpc)
    async with TestServer(app, host="127.0.0.1") as rpc:
        url = f"http://127.0.0.1:{rpc.port}/json_rpc"
        for ready_cache, rounds, pause in ((2.0, 3, 0.0), (0.2, 2, 0.3)):
            calls = 0
            sidecar = make_app(settings_for(wallet_dir, rpc_url=url, ready_cache=ready_cache))
            async with (
                TestServer(sidecar, host="127.0.0.1") as srv,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as http,
            ):
                for _ in range(rounds):
                    statuses = await asyncio.gather(*(http.get("/readyz") for _ in range(20)))
                    assert [r.status_code for r in statuses] == [200] * 20
                    await asyncio.sleep(pause)
            # One call for all 20 concurrent probes of a round; later rounds reuse it while it is fresh.
            assert calls == (1 if pause < ready_cache else rounds), (ready_cache, calls)


async def test_readyz_caches_not_ready_too(wallet_dir: Path) -> None:
    calls = 0

    async def json_rpc(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"jsonrpc": "2.0", "id": "0", "error": {"code": -1, "message": "x"}})

    app = web.Application()
    app.router.add_post("/json_rpc", json_rpc)
    async with TestServer(app, host="127.0.0.1") as rpc:
        settings = settings_for(wallet_dir, rpc_url=f"http://127.0.0.1:{rpc.port}/json_rpc")
        async with (
            TestServer(make_app(settings), host="127.0.0.1") as srv,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}") as http,
        ):
            statuses = [(await http.get("/readyz")).status_code for _ in range(20)]
    assert statuses == [503] * 20 and calls == 1


# --------------------------------------------------------------------------------------------- disconnects


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
async def test_a_client_going_away_mid_body_costs_one_log_line(
    wallet_dir: Path, caplog: pytest.LogCaptureFixture, reset: bool
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    caplog.set_level(logging.INFO, logger="escrow_operator.walletfs")
    async with serving(settings_for(wallet_dir)) as url:
        _reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        body = json.dumps({"source": SOURCE, "target": TARGET}).encode()
        writer.write(
            f"POST /v1/copy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        if reset:
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        for _ in range(100):
            if any("went away" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # anything else it would log
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in gone] == [
        ("INFO", "Client went away before sending all of its POST /v1/copy body")
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert sorted(p.name for p in wallet_dir.iterdir()) == []

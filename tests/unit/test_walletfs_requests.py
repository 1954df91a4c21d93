"""Hostile HTTP input to a real ``escrow-operator walletfs`` process (started over a temporary directory; no
cluster): it refuses traversal, symlinks, names outside the escrow pattern, malformed bodies, missing or
wrong tokens and oversize bodies; nothing in its directory (or outside it) changes; and it logs no
traceback, file error or token for any of it.

Each test is independent of the others: the module's server is left as it was found (the ``unchanged``
fixture compares a snapshot of its files before and after every test, and checks the log lines that test
caused), and the test of the log after every kind of hostile input sends that input to a server of its own.
Connection handling (deep JSON, slow clients, probe floods, clients going away) is in test_walletfs_hostile.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from escrow_operator.walletfs.server import MAX_BODY_BYTES
from tests.support.processes import free_port, stop, wait_serving


@dataclass
class Walletfs:
    host: str
    port: int
    token: str
    root: Path  # holds wallets/ (the served directory), the canary and outside/
    wallet_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]
    uid: str
    http: httpx.Client

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def raw(
        self, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """A request with ``target`` sent exactly as given (no client-side normalization of ``..``)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            all_headers = {"Content-Length": str(len(body or b"")), **(headers or {})}
            for key, value in all_headers.items():
                conn.putheader(key, value)
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def log_size(self) -> int:
        """Where the next line of the server's log will start (read between requests: the server is idle)."""
        return self.log.stat().st_size

    def log_text(self, since: int = 0) -> str:
        """The server's log from byte ``since`` on."""
        with open(self.log, "rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``root`` (symlinks not followed): kind, and sha256 of files or the link target."""
    seen: dict[str, tuple[str, str]] = {}
    for directory, dirs, names in os.walk(root, followlinks=False):
        for entry in dirs + names:
            path = Path(directory) / entry
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir", oct(path.stat().st_mode))
            else:
                seen[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest() + oct(path.stat().st_mode))
    return seen


@contextlib.contextmanager
def walletfs_server(base: Path) -> Iterator[Walletfs]:
    """A walletfs process serving ``base``/root/wallets: a real wallet, wallet-named symlinks out of the
    directory, a wallet-named directory, and outside it a canary and wallets that must stay untouched."""
    root = base / "root"
    wallet_dir = root / "wallets"
    outside = root / "outside"
    wallet_dir.mkdir(parents=True)
    outside.mkdir()
    uid = str(uuid.uuid4())
    canary = root / "canary"
    canary.write_bytes(b"canary: must never be read, written, moved or deleted through walletfs\n")
    (outside / f"seller_escrow_{uid}_round_1.keys").write_bytes(secrets.token_bytes(2048))  # a wallet outside
    (outside / f"seller_escrow_{uid}_round_1").write_bytes(secrets.token_bytes(4096))
    valid = f"buyer_escrow_{uid}_round_1"
    (wallet_dir / f"{valid}.keys").write_bytes(secrets.token_bytes(2048))
    (wallet_dir / valid).write_bytes(secrets.token_bytes(4096))
    # Wallet-named symlinks pointing outside the directory (the cache, the keys, both).
    linked = f"vendor_escrow_{uid}_round_1"
    (wallet_dir / f"{linked}.keys").symlink_to(canary)
    (wallet_dir / linked).symlink_to("../canary")
    keys_link = f"arbiter_escrow_{uid}_round_2_input"
    (wallet_dir / f"{keys_link}.keys").symlink_to(outside / f"seller_escrow_{uid}_round_1.keys")
    # A wallet-named directory (not a regular file) and a symlink to a directory.
    (wallet_dir / f"judge_escrow_{uid}_round_1.keys").mkdir()
    (wallet_dir / f"agent_escrow_{uid}_round_1.keys").symlink_to(outside, target_is_directory=True)
    for path in wallet_dir.iterdir():
        if not path.is_symlink() and path.is_file():
            path.chmod(0o600)

    run = base / "run"  # token and log: outside the snapshot
    run.mkdir()
    token = secrets.token_urlsafe(32)
    token_file = run / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    host = "127.0.0.1"
    port = free_port(host)
    log = run / "walletfs.log"
    binary = Path(sys.executable).parent / "escrow-operator"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                "walletfs",
                "--dir",
                str(wallet_dir),
                "--bind",
                host,
                "--port",
                str(port),
                "--token-file",
                str(token_file),
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Walletfs(host, port, token, root, wallet_dir, log, proc, uid, httpx.Client(timeout=30))
    try:
        wait_serving(
            proc,
            lambda: server.http.get(f"{server.url}/healthz", timeout=2).status_code == 200,
            what="walletfs",
            interval=0.05,
            detail=lambda: log.read_text(errors="replace"),
        )
        yield server
    finally:
        server.http.close()
        stop(proc)


@pytest.fixture(scope="module")
def walletfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walletfs]:
    """One server for the module: every test leaves it as it found it (see ``unchanged``)."""
    with walletfs_server(tmp_path_factory.mktemp("walletfs")) as server:
        yield server


@pytest.fixture(scope="module")
def walletfs_before(walletfs: Walletfs) -> dict[str, tuple[str, str]]:
    before = snapshot(walletfs.root)
    assert f"wallets/buyer_escrow_{walletfs.uid}_round_1.keys" in before
    return before


@pytest.fixture
def unchanged(walletfs: Walletfs, walletfs_before: dict[str, tuple[str, str]]) -> Iterator[Walletfs]:
    """The walletfs server; after the test, nothing under its root (inside the directory or out) changed,
    and the log lines the test caused show no crash, no file error and not the token."""
    assert snapshot(walletfs.root) == walletfs_before
    since = walletfs.log_size()
    yield walletfs
    assert snapshot(walletfs.root) == walletfs_before
    assert walletfs.proc.poll() is None, walletfs.log_text()
    assert_logged_cleanly(walletfs, since)


# Names, with U standing for the escrow uid of the fixture's files.
VALID = "buyer_escrow_U_round_1"
WORK = "buyer_escrow_U_work_1_0badcafe"  # a valid name that does not exist
LINKED = "vendor_escrow_U_round_1"  # cache and keys are symlinks out of the directory
KEYS_LINK = "arbiter_escrow_U_round_2_input"  # keys is a symlink to a wallet outside
DIR_KEYS = "judge_escrow_U_round_1"  # keys is a directory
DIR_LINK = "agent_escrow_U_round_1"  # keys is a symlink to a directory outside
OVERLONG = "buyer_escrow_U_round_1" + "x" * 300

BAD_NAMES = [
    pytest.param("../canary", "is a path", id="dotdot-slash"),
    pytest.param("../../../../etc/passwd", "is a path", id="deep-traversal"),
    pytest.param(f"../wallets/{VALID}", "is a path", id="traversal-back-in"),
    pytest.param("../outside/seller_escrow_U_round_1", "is a path", id="traversal-to-outside-wallet"),
    pytest.param("%2e%2e%2fcanary", "is not an escrow wallet name", id="url-encoded-in-json"),
    pytest.param("..", "is a path", id="dotdot"),
    pytest.param(".", "is a path", id="dot"),
    pytest.param("/etc/passwd", "is a path", id="absolute"),
    pytest.param(f"/tmp/{VALID}", "is a path", id="absolute-wallet-name"),
    pytest.param(VALID + "\x00", "must not contain NUL", id="nul-suffix"),
    pytest.param(VALID + "\x00/../../canary", "must not contain NUL", id="nul-traversal"),
    pytest.param(OVERLONG, "must be at most 200 characters", id="overlong"),
    pytest.param("canary", "is not an escrow wallet name", id="not-escrow-pattern"),
    pytest.param(VALID + ".keys", "is not an escrow wallet name", id="with-keys-suffix"),
    pytest.param(".walletfs-tmp-0123456789abcdef", "is not an escrow wallet name", id="temp-file-name"),
    pytest.param("BUYER_escrow_U_round_1", "is not an escrow wallet name", id="uppercase-role"),
    pytest.param("buyer_escrow_U_round_1 ", "is not an escrow wallet name", id="trailing-space"),
    pytest.param("buyer_escrow_U_round_1\n", "is not an escrow wallet name", id="trailing-newline"),
    pytest.param("k\u00e4ufer_escrow_U_round_1", "must be ASCII", id="non-ascii"),
    pytest.param("", "must not be empty", id="empty"),
    pytest.param("buyer_escrow_U_round_0", "is not an escrow wallet name", id="round-0"),
    pytest.param("buyer_escrow_U_round_1_final/..", "is a path", id="wallet-then-dotdot"),
]

UNSAFE_NAMES = [
    pytest.param(LINKED, "is a symlink", id="symlinked-wallet"),
    pytest.param(KEYS_LINK, "is a symlink", id="symlinked-keys"),
    pytest.param(DIR_KEYS, "is not a regular file", id="directory-keys"),
    pytest.param(DIR_LINK, "is a symlink", id="symlink-to-directory"),
]


def real(walletfs: Walletfs, name: str) -> str:
    return name.replace("_U_", f"_{walletfs.uid}_")


def call(walletfs: Walletfs, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request with the right token."""
    headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {walletfs.token}"}
    return walletfs.http.request(method, walletfs.url + path, headers=headers, **kwargs)


def assert_refused(response: httpx.Response | tuple[int, dict[str, str], bytes], status: int, expected: str) -> None:
    if isinstance(response, httpx.Response):
        code, body = response.status_code, response.content
    else:
        code, _, body = response
    assert code == status, (code, body[:500])
    error = json.loads(body)["error"]
    assert expected in error, error


# --------------------------------------------------------------------------------------------- requests
# One function per kind of hostile request: the tests below send one each and check the answer; the log test
# at the end sends all of them to a server of its own.


def transfer(fs: Walletfs, endpoint: str, side: str, bad: str) -> httpx.Response:
    """POST /v1/copy or /v1/publish with ``bad`` as the source or the target.

    The other side is always real: the source a real wallet, the target a free valid name, so a missing
    check would copy or move a real file (onto the canary, out of the directory...) and show in the snapshot.
    """
    names = {"source": real(fs, VALID), "target": real(fs, WORK)}
    names[side] = real(fs, bad)
    return call(fs, "POST", f"/v1/{endpoint}", json=names)


def stat_or_delete(fs: Walletfs, method: str, bad: str) -> tuple[int, dict[str, str], bytes]:
    return fs.raw(
        method, f"/v1/wallets/{quote(real(fs, bad), safe='')}", headers={"Authorization": f"Bearer {fs.token}"}
    )


def send_raw_target(fs: Walletfs, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """``target`` sent byte for byte, with the right token (and a real transfer as the body of POST and PUT)."""
    target = target.replace("_U_", f"_{fs.uid}_").replace("uid=U", f"uid={fs.uid}")
    body = (
        json.dumps({"source": real(fs, VALID), "target": real(fs, WORK)}).encode()
        if method in ("POST", "PUT")
        else None
    )
    return fs.raw(method, target, body, {"Authorization": f"Bearer {fs.token}", "Content-Type": "application/json"})


def send_malformed_body(fs: Walletfs, endpoint: str, body: bytes) -> httpx.Response:
    body = body.replace(b"_U_", f"_{fs.uid}_".encode())
    return call(fs, "POST", f"/v1/{endpoint}", content=body, headers={"Content-Type": "application/json"})


def _endpoints(fs: Walletfs) -> list[tuple[str, str, bytes | None]]:
    pair = json.dumps({"source": real(fs, VALID), "target": real(fs, WORK)}).encode()
    return [
        ("POST", "/v1/copy", pair),
        ("POST", "/v1/publish", pair),
        ("DELETE", f"/v1/wallets/{real(fs, VALID)}", None),
        ("GET", f"/v1/wallets/{real(fs, VALID)}", None),
        ("GET", "/v1/wallets", None),
        ("GET", f"/v1/wallets?uid={fs.uid}", None),
    ]


def send_with_authorization(
    fs: Walletfs, authorization: str | None
) -> list[tuple[str, str, tuple[int, dict[str, str], bytes]]]:
    """Requests that would succeed (copy, publish and delete of a real wallet), with ``authorization`` (TOKEN
    standing for the right token) or no Authorization header: each (method, path, answer)."""
    header = None
    if authorization is not None:
        header = authorization.replace("TOKEN[:-1]", fs.token[:-1]).replace("TOKEN", fs.token)
    answers = []
    for method, path, payload in _endpoints(fs):
        headers = {"Content-Type": "application/json"}
        if header is not None:  # sent as is (latin-1 on the wire), even where httpx would refuse it
            headers["Authorization"] = header.encode("utf-8").decode("latin-1")
        answers.append((method, path, fs.raw(method, path, payload, headers)))
    return answers


def send_oversize(fs: Walletfs, endpoint: str, size: int, with_token: bool) -> httpx.Response:
    """A body of ``size`` bytes that names a real wallet and a free target."""
    pair = {"source": real(fs, VALID), "target": real(fs, WORK)}
    head = json.dumps(pair)[:-1] + ', "pad": "'
    body = (head + "x" * (size - len(head) - 2) + '"}').encode()
    assert len(body) == size
    headers = {"Content-Type": "application/json"}
    if with_token:
        headers["Authorization"] = f"Bearer {fs.token}"
    return fs.http.post(f"{fs.url}/v1/{endpoint}", content=body, headers=headers)


def _log_records(log: str) -> list[str]:
    """The log split into records (a record starts with a timestamp; tracebacks are continuation lines)."""
    records: list[str] = []
    for line in log.splitlines():
        if (line[:4].isdigit() and line[4:5] == "-") or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return records


def _parser_refusal(record: str) -> bool:
    """aiohttp's own report of a request line it refused before any walletfs code ran (with a traceback)."""
    return "ERROR aiohttp.server: Error handling request" in record and "aiohttp.http_exceptions.LineTooLong" in record


def assert_logged_cleanly(fs: Walletfs, since: int) -> None:
    """What the server logged from byte ``since`` on: no traceback (not even aiohttp's own, for a request line it
    refused), no failed file operation, not the token."""
    assert fs.http.get(fs.url + "/healthz").status_code == 200  # every request before has been handled and logged
    text = fs.log_text(since)
    crashes = [r for r in _log_records(text) if "Traceback" in r or "File operation failed" in r or _parser_refusal(r)]
    assert not crashes, "\n".join(crashes)[-4000:]
    assert fs.token not in text


# --------------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("endpoint", ["copy", "publish"])
@pytest.mark.parametrize("side", ["source", "target"])
@pytest.mark.parametrize(("bad", "expected"), BAD_NAMES + UNSAFE_NAMES)
def test_walletfs_transfer_refuses_bad_names(
    unchanged: Walletfs, endpoint: str, side: str, bad: str, expected: str
) -> None:
    assert_refused(transfer(unchanged, endpoint, side, bad), 400, expected)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize(
    ("bad", "expected"), [p for p in BAD_NAMES if p.id != "empty"] + UNSAFE_NAMES
)  # "" is the list
def test_walletfs_stat_and_delete_refuse_bad_names(unchanged: Walletfs, method: str, bad: str, expected: str) -> None:
    assert_refused(stat_or_delete(unchanged, method, bad), 400, expected)


RAW_TARGETS = [
    pytest.param("/v1/wallets/..%2fcanary", id="encoded-slash"),
    pytest.param("/v1/wallets/%2e%2e%2fcanary", id="fully-encoded"),
    pytest.param("/v1/wallets/%2e%2e%2f%2e%2e%2fcanary", id="fully-encoded-twice"),
    pytest.param("/v1/wallets/..%252fcanary", id="double-encoded"),
    pytest.param("/v1/wallets/../../canary", id="literal-dotdot"),
    pytest.param("/v1/wallets/%2e%2e/%2e%2e/canary", id="encoded-dots-literal-slash"),
    pytest.param("/v1/wallets/..\\..\\canary", id="backslashes"),
    pytest.param("/v1/wallets/%2fetc%2fpasswd", id="encoded-absolute"),
    pytest.param("/v1/wallets//etc/passwd", id="double-slash-absolute"),
    pytest.param("/v1/wallets/buyer_escrow_U_round_1%00", id="encoded-nul"),
    pytest.param("/v1/wallets/buyer_escrow_U_round_1%00.keys", id="encoded-nul-suffix"),
    pytest.param("/v1/wallets/buyer_escrow_U_round_1%2f..%2f..%2fcanary", id="wallet-then-traversal"),
    pytest.param("/v1/wallets/" + "b" * 9000, id="9000-char-name"),
    pytest.param("/v1/wallets/vendor_escrow_U_round_1", id="symlinked-wallet"),
    pytest.param("/v1/wallets/buyer_escrow_U_round_1.keys", id="keys-suffix"),
    pytest.param("/v1/wallets/k%C3%A4ufer_escrow_U_round_1", id="non-ascii"),
    pytest.param("/v1/wallets?uid=../..", id="list-uid-traversal"),
    pytest.param("/v1/wallets?uid=%2e%2e%2f", id="list-uid-encoded"),
    pytest.param("/v1/wallets?uid=U%00", id="list-uid-nul"),
    pytest.param("/v1/wallets?uid=U/..", id="list-uid-slash"),
    pytest.param("/v1/wallets?uid=" + "a" * 300, id="list-uid-overlong"),
    pytest.param("/v1/wallets?uid=", id="list-uid-empty"),
    pytest.param("/v1/wallets?uid=*", id="list-uid-glob"),
    pytest.param("/v1/../../canary", id="route-dotdot"),
    pytest.param("/v1/copy/../../canary", id="copy-dotdot"),
]


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST", "PUT"])
@pytest.mark.parametrize("target", RAW_TARGETS)
def test_walletfs_raw_paths_are_refused(unchanged: Walletfs, method: str, target: str) -> None:
    """Request targets sent byte for byte (no client-side normalization): refused, never a 2xx or 5xx."""
    status, _, payload = send_raw_target(unchanged, method, target)
    assert 400 <= status < 500, (status, payload[:300])
    assert status != 401, payload  # refused for what it is, not for the token


def test_walletfs_list_skips_symlinks_and_directories(unchanged: Walletfs) -> None:
    fs = unchanged
    response = call(fs, "GET", "/v1/wallets")
    assert response.status_code == 200, response.text
    assert response.json() == {"wallets": [{"name": real(fs, VALID), "complete": True}]}
    response = call(fs, "GET", "/v1/wallets", params={"uid": fs.uid})
    assert response.json() == {"wallets": [{"name": real(fs, VALID), "complete": True}]}
    # Control: the server does work on this directory (so the refusals above are refusals, not misconfiguration).
    response = call(fs, "GET", f"/v1/wallets/{real(fs, VALID)}")
    assert response.status_code == 200, response.text
    on_disk = {
        name: hashlib.sha256((fs.wallet_dir / name).read_bytes()).hexdigest()
        for name in (real(fs, VALID), real(fs, VALID) + ".keys")
    }
    assert {name: info["sha256"] for name, info in response.json()["files"].items()} == on_disk
    assert response.json()["exists"] is True


MALFORMED_BODIES = [
    pytest.param(b"{not json", "request body must be JSON", id="not-json"),
    pytest.param(b"", "request body must be JSON", id="empty"),
    pytest.param(b"\xff\xfe\x00", "request body must be JSON", id="binary"),
    pytest.param(b"[]", "request body must be", id="array"),
    pytest.param(b'{"source": "buyer_escrow_U_round_1"}', "request body must be", id="no-target"),
    pytest.param(b'{"source": 1, "target": 2}', "request body must be", id="integers"),
    pytest.param(
        b'{"source": ["../canary"], "target": "buyer_escrow_U_work_1_0badcafe"}',
        "request body must be",
        id="list-name",
    ),
    pytest.param(
        b'{"source": "buyer_escrow_U_round_1", "target": "buyer_escrow_U_work_1_0badcafe", "overwrite": true}',
        "request body must be",
        id="extra-field",
    ),
    pytest.param(
        b'{"source": "buyer_escrow_U_round_1", "target": "buyer_escrow_U_round_1"}',
        "source and target must be different wallets",
        id="same-wallet",
    ),
]


@pytest.mark.parametrize(("body", "expected"), MALFORMED_BODIES)
@pytest.mark.parametrize("endpoint", ["copy", "publish"])
def test_walletfs_malformed_bodies_are_refused(unchanged: Walletfs, endpoint: str, body: bytes, expected: str) -> None:
    assert_refused(send_malformed_body(unchanged, endpoint, body), 400, expected)


AUTH_HEADERS = [
    pytest.param(None, id="no-header"),
    pytest.param("Bearer wrong-token", id="wrong-token"),
    pytest.param("Bearer", id="bearer-without-token"),
    pytest.param("Bearer ", id="bearer-empty"),
    pytest.param("TOKEN", id="bare-token"),
    pytest.param("Basic TOKEN", id="basic-scheme"),
    pytest.param("Bearer TOKENx", id="token-plus-char"),
    pytest.param("Bearer TOKEN[:-1]", id="token-minus-char"),
    pytest.param("Bearer TOKEN TOKEN", id="token-twice"),
    pytest.param("Bearer \u00e4TOKEN", id="non-ascii-token"),
]


@pytest.mark.parametrize("authorization", AUTH_HEADERS)
def test_walletfs_requires_the_token(unchanged: Walletfs, authorization: str | None) -> None:
    """Requests that would succeed (copy, publish and delete of a real wallet) are refused without the token."""
    for method, path, (status, response_headers, body) in send_with_authorization(unchanged, authorization):
        assert status == 401, (method, path, status, body[:300])
        assert response_headers.get("www-authenticate") == "Bearer", response_headers
        assert json.loads(body) == {"error": "missing or invalid bearer token"}


def test_walletfs_probes_need_no_token_and_reveal_nothing(unchanged: Walletfs) -> None:
    for probe in ("/healthz", "/readyz"):
        response = unchanged.http.get(unchanged.url + probe)
        assert response.status_code == 200 and response.json() == {"status": "ok"}, response.text


OVERSIZE = [
    pytest.param(MAX_BODY_BYTES + 1, True, 413, id="limit-plus-1"),
    pytest.param(1 << 20, True, 413, id="1MiB"),
    pytest.param(8 << 20, True, 413, id="8MiB"),
    pytest.param(1 << 20, False, 401, id="1MiB-without-token"),
]


@pytest.mark.parametrize("endpoint", ["copy", "publish"])
@pytest.mark.parametrize(("size", "with_token", "status"), OVERSIZE)
def test_walletfs_refuses_oversize_bodies(
    unchanged: Walletfs, endpoint: str, size: int, with_token: bool, status: int
) -> None:
    """A body over the limit is refused even when it names a real wallet and a free target."""
    response = send_oversize(unchanged, endpoint, size, with_token)
    assert response.status_code == status, response.text[:300]
    assert "error" in response.json()


def test_walletfs_overlong_request_line_logs_no_traceback(unchanged: Walletfs) -> None:
    fs = unchanged
    since = fs.log_size()
    status, _, _ = fs.raw("GET", "/v1/wallets/" + "b" * 9000)
    assert status == 400
    assert fs.http.get(fs.url + "/healthz").status_code == 200  # the refusal above has been handled and logged
    records = _log_records(fs.log_text(since))
    assert not any(_parser_refusal(r) or "Traceback" in r for r in records)
    assert any("refused a malformed request: LineTooLong" in r for r in records)


@pytest.fixture
def own_walletfs(tmp_path: Path) -> Iterator[Walletfs]:
    """A server of the test's own: its log holds only what that test sent."""
    with walletfs_server(tmp_path) as server:
        yield server


def cases(params: Iterable[Any]) -> list[tuple[Any, ...]]:
    """The values of ``pytest.param`` cases, as the tests receive them."""
    return [tuple(p.values) for p in params]


def test_walletfs_logged_no_traceback(own_walletfs: Walletfs) -> None:
    """Every hostile request of the tests above, sent to one server: afterwards no walletfs handler has
    crashed or hit a file error, nothing under its root changed and the token is not in its log."""
    fs = own_walletfs
    before = snapshot(fs.root)
    assert f"wallets/{real(fs, VALID)}.keys" in before
    answers: list[int] = []
    for endpoint in ("copy", "publish"):
        for bad, _ in cases(BAD_NAMES + UNSAFE_NAMES):
            answers += [transfer(fs, endpoint, side, bad).status_code for side in ("source", "target")]
        for body, _ in cases(MALFORMED_BODIES):
            answers.append(send_malformed_body(fs, endpoint, body).status_code)
        for size, with_token, _ in cases(OVERSIZE):
            answers.append(send_oversize(fs, endpoint, size, with_token).status_code)
    for method in ("GET", "DELETE"):
        for bad, _ in cases(p for p in BAD_NAMES + UNSAFE_NAMES if p.id != "empty"):
            answers.append(stat_or_delete(fs, method, bad)[0])
    for method in ("GET", "DELETE", "POST", "PUT"):
        for (target,) in cases(RAW_TARGETS):
            answers.append(send_raw_target(fs, method, target)[0])
    for (authorization,) in cases(AUTH_HEADERS):
        answers += [status for _, _, (status, _, _) in send_with_authorization(fs, authorization)]
    fs.raw("GET", "/v1/wallets/" + "b" * 9000)
    assert all(400 <= status < 500 for status in answers), sorted(set(answers))  # every one was refused
    assert fs.http.get(fs.url + "/healthz").status_code == 200  # and has been handled and logged

    records = [r for r in _log_records(fs.log_text()) if not _parser_refusal(r)]
    crashes = [r for r in records if "Traceback" in r or "File operation failed" in r]
    assert not crashes, "\n".join(crashes)[-4000:]
    assert snapshot(fs.root) == before
    assert fs.token not in fs.log_text()
    assert fs.proc.poll() is None, fs.log_text()

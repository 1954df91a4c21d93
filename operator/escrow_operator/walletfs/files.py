"""The walletfs file operations: plain blocking file I/O, no HTTP (DESIGN.md sections 3 and 4).

A wallet is a file set ``NAME.address.txt``, ``NAME`` (the cache) and ``NAME.keys`` in one flat
directory; it *exists* iff ``NAME.keys`` exists. Every function here

* accepts only wallet names of the escrow pattern (:data:`escrow_operator.naming.WALLET_NAME_RE`),
  so no path, ``..`` or separator ever reaches the file system;
* refuses to follow symlinks (``lstat`` first, ``O_NOFOLLOW`` on every open) and refuses anything
  that is not a regular file;
* writes atomically: data goes to a hidden temp file (``.walletfs-tmp-*``, which can never match the
  escrow pattern), is fsynced and renamed into place, ``.keys`` last, and the directory is fsynced,
  so a reader never sees a half-written wallet.

The functions block; the server runs them in a thread and serializes calls on the same wallet name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from escrow_operator import naming

#: Prefix of temporary files; the leading dot keeps them from ever matching the escrow pattern.
TEMP_PREFIX = ".walletfs-tmp-"
#: Longest wallet name accepted (the escrow pattern is far shorter; this bounds error messages too).
MAX_NAME_LENGTH = 200
#: Mode of every file written.
FILE_MODE = 0o600

_CHUNK = 1 << 20
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_UID_RE = re.compile(naming.UID_PATTERN)


# --------------------------------------------------------------------------------------------- errors


class WalletfsFileError(Exception):
    """Base of the errors the file operations raise on purpose; ``str()`` is a message for the caller."""


class InvalidName(WalletfsFileError):
    """A name that is not a wallet name of the escrow pattern (or a uid that is not a uid)."""


class UnsafeFile(WalletfsFileError):
    """A wallet file that is a symlink or not a regular file; nothing is done with it."""


class WalletNotFound(WalletfsFileError):
    """The source wallet (its ``.keys`` file) does not exist."""


class WalletConflict(WalletfsFileError):
    """The target wallet exists and the operation would have to overwrite it."""


class AlreadyPublished(WalletConflict):
    """The publish target exists already; a published wallet is never overwritten."""


# --------------------------------------------------------------------------------------------- models


class FileInfo(BaseModel):
    size: int
    sha256: str


class WalletStat(BaseModel):
    exists: bool
    files: dict[str, FileInfo]


class WalletEntry(BaseModel):
    name: str
    complete: bool


@dataclass(frozen=True)
class CopyOutcome:
    """Result of :func:`copy_wallet`: sha256 per target file, and whether anything was written."""

    files: dict[str, str] = field(default_factory=dict)
    copied: bool = True


# --------------------------------------------------------------------------------------------- names


def _shorten(value: str, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_wallet_name(name: object, what: str = "wallet name") -> str:
    """Return ``name`` if it is a wallet name of the escrow pattern, else raise :class:`InvalidName`."""
    if not isinstance(name, str):
        raise InvalidName(f"{what} must be a string")
    if not name:
        raise InvalidName(f"{what} must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"{what} must be at most {MAX_NAME_LENGTH} characters")
    if "\x00" in name:
        raise InvalidName(f"{what} must not contain NUL")
    if not name.isascii():
        raise InvalidName(f"{what} must be ASCII")
    if "/" in name or name in (".", ".."):
        raise InvalidName(f"{what} {_shorten(name)} is a path; only bare wallet names are accepted")
    if not naming.is_wallet_name(name):
        raise InvalidName(
            f"{what} {_shorten(name)} is not an escrow wallet name (ROLE_escrow_UID_STAGE, without suffix)"
        )
    return name


def check_uid(uid: object) -> str:
    """Return ``uid`` if it is a lowercase Kubernetes uid, else raise :class:`InvalidName`."""
    if not isinstance(uid, str) or len(uid) > MAX_NAME_LENGTH or not _UID_RE.fullmatch(uid):
        shown = _shorten(uid) if isinstance(uid, str) else type(uid).__name__
        raise InvalidName(f"uid {shown} is not a lowercase Kubernetes uid")
    return uid


def _check_pair(source: object, target: object) -> tuple[str, str]:
    src = check_wallet_name(source, "source")
    dst = check_wallet_name(target, "target")
    if src == dst:
        raise InvalidName("source and target must be different wallets")
    return src, dst


# --------------------------------------------------------------------------------------------- low level


def _lstat_regular(path: Path) -> os.stat_result | None:
    """``lstat`` a wallet file: None if absent; :class:`UnsafeFile` if a symlink or not a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFile(f"{path.name} is a symlink; refusing to touch it")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{path.name} is not a regular file; refusing to touch it")
    return st


def _present(wallet_dir: Path, wallet: str) -> list[str]:
    """The files of ``wallet`` that exist, in publish order (``.keys`` last); checks each is safe."""
    return [name for name in naming.wallet_files(wallet) if _lstat_regular(wallet_dir / name) is not None]


@contextmanager
def _open_read(path: Path) -> Iterator[int]:
    """Open a regular file read-only without following symlinks (and without blocking on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(f"{path.name} is a symlink; refusing to touch it") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFile(f"{path.name} is not a regular file; refusing to touch it")
        yield fd
    finally:
        os.close(fd)


def _read_chunks(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, _CHUNK):
        yield chunk


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def file_sha256(path: Path) -> str:
    """sha256 of a regular file (never through a symlink)."""
    digest = hashlib.sha256()
    with _open_read(path) as fd:
        for chunk in _read_chunks(fd):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> str:
    """fsync a regular file and return its sha256."""
    with _open_read(path) as fd:
        digest = hashlib.sha256()
        for chunk in _read_chunks(fd):
            digest.update(chunk)
        os.fsync(fd)
    return digest.hexdigest()


def fsync_dir(directory: Path) -> None:
    """fsync a directory so renames and unlinks in it are durable."""
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_path(wallet_dir: Path) -> Path:
    return wallet_dir / f"{TEMP_PREFIX}{secrets.token_hex(8)}"


def _copy_to_temp(src: Path, wallet_dir: Path) -> tuple[Path, str]:
    """Copy ``src`` (opened read-only) into a fresh fsynced mode-0600 temp file; return it and the sha256."""
    tmp = _temp_path(wallet_dir)
    digest = hashlib.sha256()
    with _open_read(src) as src_fd:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(out, FILE_MODE)
            for chunk in _read_chunks(src_fd):
                digest.update(chunk)
                _write_all(out, chunk)
            os.fsync(out)
        except BaseException:
            os.close(out)
            _unlink_quietly(tmp)
            raise
        os.close(out)
    return tmp, digest.hexdigest()


def _crash_point(point: str) -> None:
    """Test-only: SIGKILL this process at a named point (WALLETFS_MODE=test and WALLETFS_CRASH_AT=point)."""
    if os.environ.get("WALLETFS_MODE") == "test" and os.environ.get("WALLETFS_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rename_target(source_file: str, source: str, target: str) -> str:
    """The target file name for a source file name (``source`` + suffix -> ``target`` + suffix)."""
    return target + source_file[len(source) :]


# --------------------------------------------------------------------------------------------- operations


def copy_wallet(wallet_dir: Path, source: str, target: str) -> CopyOutcome:
    """Copy the file set of ``source`` to ``target``; ``source`` is only ever opened read-only.

    Each file is written to a temp file, fsynced and renamed into place, ``.keys`` last, then the
    directory is fsynced. If ``target`` already holds exactly the same files (sha256 per file) nothing
    is written. Raises :class:`WalletNotFound` if the source does not exist and :class:`WalletConflict`
    if the target exists with different content. Non-``.keys`` leftovers of a torn earlier copy are
    overwritten (or removed, if the source has no such file).
    """
    source, target = _check_pair(source, target)
    src_files = _present(wallet_dir, source)
    dst_files = _present(wallet_dir, target)
    if source + ".keys" not in src_files:
        raise WalletNotFound(f"source wallet {source} does not exist")

    if target + ".keys" in dst_files:
        wanted = {_rename_target(f, source, target): file_sha256(wallet_dir / f) for f in src_files}
        have = {f: file_sha256(wallet_dir / f) for f in dst_files}
        if wanted == have:
            return CopyOutcome(files=have, copied=False)
        raise WalletConflict(f"target wallet {target} exists with different content; not overwriting it")

    return CopyOutcome(files=_copy_files(wallet_dir, source, target, src_files, dst_files), copied=True)


def _copy_files(wallet_dir: Path, source: str, target: str, src_files: list[str], dst_files: list[str]) -> dict[str, str]:
    """Write ``source``'s files under ``target``: temp file, fsync, rename, ``.keys`` last, then fsync
    the directory. Returns sha256 per target file."""
    result: dict[str, str] = {}
    # Stray files of a torn earlier copy that the source does not have: remove so the copy is exact.
    wanted_names = {_rename_target(f, source, target) for f in src_files}
    for stray in dst_files:
        if stray not in wanted_names:
            os.unlink(wallet_dir / stray)
    for src_name in src_files:  # publish order: .keys last
        dst_name = _rename_target(src_name, source, target)
        tmp, digest = _copy_to_temp(wallet_dir / src_name, wallet_dir)
        _crash_point("copy.after_temp")
        try:
            os.replace(tmp, wallet_dir / dst_name)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        result[dst_name] = digest
    fsync_dir(wallet_dir)
    return result


def _publishable(wallet_dir: Path, source: str, target: str) -> tuple[str, str, list[str], list[str]]:
    """Checked names and present files of a publish: refused if ``target`` is published already
    (:class:`AlreadyPublished`, also when the source is gone) or ``source`` does not exist."""
    source, target = _check_pair(source, target)
    src_files = _present(wallet_dir, source)
    dst_files = _present(wallet_dir, target)
    if target + ".keys" in dst_files:
        raise AlreadyPublished(f"wallet {target} is already published; it is never overwritten")
    if source + ".keys" not in src_files:
        raise WalletNotFound(f"work wallet {source} does not exist (and {target} is not published)")
    return source, target, src_files, dst_files


def publish_wallet(wallet_dir: Path, source: str, target: str) -> dict[str, str]:
    """Move the work copy ``source`` to its published name ``target``; return sha256 per target file.

    Each source file is fsynced, then renamed, ``.keys`` last, then the directory is fsynced. A
    published wallet is never overwritten: if ``target.keys`` exists :class:`AlreadyPublished` is
    raised and nothing changes (also when the source is gone). If neither exists,
    :class:`WalletNotFound`. Non-``.keys`` files of ``target`` left by a torn earlier publish are
    overwritten by the source's files; those the source no longer has (they were already moved by
    that earlier publish) are kept.
    """
    source, target, src_files, dst_files = _publishable(wallet_dir, source, target)
    for name in src_files:
        _fsync_file(wallet_dir / name)
    for name in src_files:  # publish order: .keys last
        os.replace(wallet_dir / name, wallet_dir / _rename_target(name, source, target))
    fsync_dir(wallet_dir)
    return {name: file_sha256(wallet_dir / name) for name in _present(wallet_dir, target)}


def publish_copy(wallet_dir: Path, source: str, target: str) -> dict[str, str]:
    """Publish a copy of ``source`` (a work wallet still open in wallet-rpc) as ``target``.

    The work wallet stays in place for the next round (wallet affinity); its stored files are
    copied to temp files, fsynced and renamed into place, ``.keys`` last. Like :func:`publish_wallet`
    a published wallet is never overwritten (:class:`AlreadyPublished`).
    """
    source, target, src_files, dst_files = _publishable(wallet_dir, source, target)
    return _copy_files(wallet_dir, source, target, src_files, dst_files)


def delete_wallet(wallet_dir: Path, wallet: str) -> list[str]:
    """Delete the file set of ``wallet``, ``.keys`` first; return the names deleted (empty if absent)."""
    wallet = check_wallet_name(wallet)
    present = _present(wallet_dir, wallet)
    order = sorted(present, key=lambda name: not name.endswith(".keys"))  # .keys first
    deleted: list[str] = []
    for name in order:
        try:
            os.unlink(wallet_dir / name)
        except FileNotFoundError:
            continue
        deleted.append(name)
    if deleted:
        fsync_dir(wallet_dir)
    return deleted


def stat_wallet(wallet_dir: Path, wallet: str) -> WalletStat:
    """Whether ``wallet`` exists (has ``.keys``) and the size and sha256 of each of its files."""
    wallet = check_wallet_name(wallet)
    files: dict[str, FileInfo] = {}
    for name in _present(wallet_dir, wallet):
        path = wallet_dir / name
        with _open_read(path) as fd:
            digest = hashlib.sha256()
            size = 0
            for chunk in _read_chunks(fd):
                digest.update(chunk)
                size += len(chunk)
        files[name] = FileInfo(size=size, sha256=digest.hexdigest())
    return WalletStat(exists=wallet + ".keys" in files, files=files)


def list_wallets(wallet_dir: Path, uid: str | None = None) -> list[WalletEntry]:
    """Wallet names (no suffix) of the escrow pattern in the directory, optionally of one escrow uid.

    Symlinks and anything that is not a regular file are skipped. ``complete`` means ``.keys`` exists.
    """
    if uid is not None:
        uid = check_uid(uid)
    complete: dict[str, bool] = {}
    with os.scandir(wallet_dir) as entries:
        for entry in entries:
            match = naming.WALLET_FILE_RE.fullmatch(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            wallet = match.group("wallet")
            if uid is not None:
                name_match = naming.WALLET_NAME_RE.fullmatch(wallet)
                if name_match is None or name_match.group("uid") != uid:
                    continue
            complete[wallet] = complete.get(wallet, False) or match.group("suffix") == ".keys"
    return [WalletEntry(name=name, complete=complete[name]) for name in sorted(complete)]


def remove_temp_files(wallet_dir: Path) -> int:
    """Remove leftover ``.walletfs-tmp-*`` files of torn copies; return how many were removed."""
    removed = 0
    with os.scandir(wallet_dir) as entries:
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX) and not entry.is_dir(follow_symlinks=False):
                _unlink_quietly(Path(entry.path))
                removed += 1
    if removed:
        fsync_dir(wallet_dir)
    return removed

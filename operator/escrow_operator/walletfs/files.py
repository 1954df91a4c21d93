"""The walletfs file operations: plain blocking file I/O, no HTTP (docs/design.md, Publishing across pods).

A wallet is a file set ``NAME.address.txt`` (optional), ``NAME`` (the cache) and ``NAME.keys`` in one
flat directory; it *exists* iff ``NAME.keys`` exists. The directory is shared by every pod of a pool
(a ReadWriteMany volume, possibly NFS, mounted on several nodes at once), so no guarantee here rests
on a check in one process's memory. Every function here

* accepts only wallet names of the escrow pattern (:data:`escrow_operator.naming.WALLET_NAME_RE`),
  so no path, ``..`` or separator ever reaches the file system;
* refuses to follow symlinks (``lstat`` first, ``O_NOFOLLOW`` on every open) and refuses anything
  that is not a regular file;
* writes a wallet (a copy, a published copy, a moved work wallet alike) with one *publish protocol*
  whose decision is a single atomic no-replace operation of the file system, ``link(2)``: it fails
  with EEXIST if the name exists, atomically on local file systems and on NFS, across processes,
  pods and nodes. Nothing is ever renamed over a cache or ``.keys`` file.

  1. *stage*: the writer puts its whole file set under private temp names (a copy, or a hard link of
     the work file it moves), fsyncs them, and writes a :class:`PublishRecord` naming them (inode
     number and sha256 of each) to a record file of its own; then it fsyncs the directory. Nothing
     under the target's names has been touched.
  2. *commit*: it links its staged cache to the target's cache name ``NAME``. Exactly one writer of a
     target succeeds, and the name stays taken for as long as the wallet exists (every complete
     wallet has a cache, and a source without one is refused). A writer that gets EEXIST has lost:
     it removes only its own temp and record files and reports that the target exists
     (``already published``), after finishing the winner's publish if that is still unfinished.
  3. *roll forward*: the winner links the rest of its staged files to the target names, ``.keys``
     last, fsyncing the directory before and after the ``.keys`` link; then it removes its temp
     names and its record. (An address file left by a torn write is replaced: holding the cache
     name proves that no complete wallet owns it.) Rolling forward only ever places the committed
     record's inodes, is idempotent, and anyone may do it: whoever finds a target whose cache is
     committed but whose ``.keys`` is missing (its writer died after the commit) finds the record by
     the cache's inode and finishes it before reading or writing that wallet; a process starting up
     finishes the records of its own owner.

  So a crash at any point leaves either no target (before the commit: only temp and record files) or
  a target whose files all come from the one committed writer, complete once anyone looks. Inputs are
  never modified. A cache left without ``.keys`` and without a record (a torn write of an older
  walletfs, or a torn delete) is never overwritten: writing over it is refused with
  :class:`TargetOccupied`, since this node might just not see that wallet's ``.keys`` yet (NFS caches
  lookups); remove such a leftover by hand.

Temp and record files are named ``.walletfs-tmp-<owner>-<random>`` and
``.walletfs-rec-<owner>-<target hash>-<random>``, where the owner is the pod name (see
:func:`default_owner`). At startup a process finishes its own committed publishes and removes only its
own temp and record files: a StatefulSet pod name exists once at a time, so those are provably from a
dead earlier incarnation; another pod's may be in flight and are left alone. Both start with a dot and
never match the escrow pattern, so they are never taken for wallets.

The functions block; the server runs them in a thread and serializes calls on the same wallet name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import signal
import socket
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from escrow_operator import naming

#: Prefix of temporary files; the leading dot keeps them from ever matching the escrow pattern.
TEMP_PREFIX = ".walletfs-tmp-"
#: Prefix of publish records (one per publish in flight, removed when it is complete).
RECORD_PREFIX = ".walletfs-rec-"
#: Longest wallet name accepted (the escrow pattern is far shorter; this bounds error messages too).
MAX_NAME_LENGTH = 200
#: Longest owner (pod name) in a temp file name; Kubernetes pod host names are at most 63 characters.
MAX_OWNER_LENGTH = 63
#: Temp files of walletfs versions that did not name their owner are removed at startup only when
#: older than this many seconds: no copy takes that long, so nobody is still writing them.
LEGACY_TEMP_AGE = 3600.0
#: Mode of every file written.
FILE_MODE = 0o600

_CHUNK = 1 << 20
_RECORD_MAX_BYTES = 16 * 1024
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_UID_RE = re.compile(naming.UID_PATTERN)
_OWNER_RE = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_OWNER_LENGTH}}}")
_NOT_OWNER_CHARS_RE = re.compile(r"[^A-Za-z0-9._-]")
_TEMP_RE = re.compile(rf"{re.escape(TEMP_PREFIX)}(?P<owner>[A-Za-z0-9._-]+)-[0-9a-f]{{16}}")
_RECORD_RE = re.compile(
    rf"{re.escape(RECORD_PREFIX)}(?P<owner>[A-Za-z0-9._-]+)-(?P<target>[0-9a-f]{{8}})-[0-9a-f]{{16}}"
)
_LEGACY_TEMP_RE = re.compile(rf"{re.escape(TEMP_PREFIX)}[0-9a-f]{{16}}")


# --------------------------------------------------------------------------------------------- errors


class WalletfsFileError(Exception):
    """Base of the errors the file operations raise on purpose; ``str()`` is a message for the caller."""


class InvalidName(WalletfsFileError):
    """A name that is not a wallet name of the escrow pattern (or a uid that is not a uid)."""


class UnsafeFile(WalletfsFileError):
    """A wallet file that is a symlink or not a regular file; nothing is done with it."""


class WalletNotFound(WalletfsFileError):
    """The source wallet (its ``.keys`` file) does not exist, or it has no cache file."""


class WalletConflict(WalletfsFileError):
    """The target wallet exists and the operation would have to overwrite it."""


class AlreadyPublished(WalletConflict):
    """The publish target exists already (or another writer committed it first); it is never overwritten."""


class TargetOccupied(WalletfsFileError):
    """The target's cache name holds a file that is not part of a complete wallet and not of a publish in
    flight: a leftover of a torn write, or a wallet whose ``.keys`` this node does not see yet. Never
    overwritten; retrying later is safe."""


class BrokenRecord(WalletfsFileError):
    """A committed publish that cannot be finished: its staged files are gone although its target was
    never completed (only tampering with the directory, or two live processes sharing one owner name)."""


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


class StagedFile(BaseModel):
    """One file of a publish: its target name and the temp file holding its inode until the roll forward."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    temp: str
    ino: int
    sha256: str


class PublishRecord(BaseModel):
    """A publish: ``files`` in placement order, the cache first (its link is the commit), ``.keys`` last."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    target: str
    owner: str
    files: tuple[StagedFile, ...]

    @property
    def cache(self) -> StagedFile:
        return self.files[0]

    @property
    def keys(self) -> StagedFile:
        return self.files[-1]


@dataclass(frozen=True)
class _Publish:
    """A publish record and the file it is stored in."""

    path: Path
    record: PublishRecord


@dataclass(frozen=True)
class CopyOutcome:
    """Result of :func:`copy_wallet`: sha256 per target file, and whether anything was written."""

    files: dict[str, str] = field(default_factory=dict)
    copied: bool = True


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` did at startup."""

    finished: int = 0  # publishes an earlier incarnation committed but did not complete
    removed: int = 0  # temp and record files removed (its own, and owner-less ones of older versions)


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


def sanitize_owner(value: str) -> str:
    """``value`` as an owner for temp file names: characters other than ``A-Za-z0-9._-`` become ``_``,
    at most :data:`MAX_OWNER_LENGTH` characters; empty if ``value`` is blank."""
    return _NOT_OWNER_CHARS_RE.sub("_", value.strip())[:MAX_OWNER_LENGTH]


def default_owner(environ: Mapping[str, str] | None = None) -> str:
    """The owner of this process's temp files: ``WALLETFS_OWNER``, else ``POD_NAME``, else the host
    name (``HOSTNAME``, else the system's; in a StatefulSet pod the host name is the pod name),
    sanitized by :func:`sanitize_owner`."""
    env = os.environ if environ is None else environ
    for candidate in (env.get("WALLETFS_OWNER"), env.get("POD_NAME"), env.get("HOSTNAME"), socket.gethostname()):
        owner = sanitize_owner(candidate or "")
        if owner:
            return owner
    return "walletfs"


def _owner(owner: str | None) -> str:
    if owner is None:
        return default_owner()
    if not _OWNER_RE.fullmatch(owner):
        raise ValueError(f"owner {_shorten(owner)} must be 1-{MAX_OWNER_LENGTH} characters of A-Za-z0-9._-")
    return owner


def temp_owner(name: str) -> str | None:
    """The owner named in a temp or record file name, or None if ``name`` is neither (of this version)."""
    match = _TEMP_RE.fullmatch(name) or _RECORD_RE.fullmatch(name)
    return match.group("owner") if match else None


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


def _inode(path: Path) -> int | None:
    """The inode number of whatever ``path`` names (symlinks not followed), or None if nothing."""
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None


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


def _fsync_file(path: Path) -> tuple[str, int]:
    """fsync a regular file; return its sha256 and inode number."""
    with _open_read(path) as fd:
        digest = hashlib.sha256()
        for chunk in _read_chunks(fd):
            digest.update(chunk)
        os.fsync(fd)
        return digest.hexdigest(), os.fstat(fd).st_ino


def fsync_dir(directory: Path) -> None:
    """fsync a directory so links, renames and unlinks in it are durable."""
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _own_path(wallet_dir: Path, prefix: str, owner: str, tag: str = "") -> Path:
    """A fresh name ``<prefix><owner>-[<tag>-]<random>`` for a temp or record file of ``owner``."""
    return wallet_dir / f"{prefix}{owner}-{tag + '-' if tag else ''}{secrets.token_hex(8)}"


def _target_tag(wallet: str) -> str:
    """A short hash of a target in its record names, so the records of one target are found unread."""
    return hashlib.sha256(wallet.encode("ascii")).hexdigest()[:8]


def _create_own(wallet_dir: Path, prefix: str, owner: str, tag: str = "") -> tuple[Path, int]:
    """A fresh empty mode-0600 file of ``owner`` (see :func:`_own_path`), open for writing."""
    path = _own_path(wallet_dir, prefix, owner, tag)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    return path, fd


def _copy_to_temp(src: Path, wallet_dir: Path, owner: str) -> tuple[Path, str, int]:
    """Copy ``src`` (opened read-only) into a fresh fsynced temp file; return it, its sha256 and inode."""
    digest = hashlib.sha256()
    with _open_read(src) as src_fd:
        tmp, out = _create_own(wallet_dir, TEMP_PREFIX, owner)
        try:
            for chunk in _read_chunks(src_fd):
                digest.update(chunk)
                _write_all(out, chunk)
            os.fsync(out)
            ino = os.fstat(out).st_ino
        except BaseException:
            os.close(out)
            _unlink_quietly(tmp)
            raise
        os.close(out)
    return tmp, digest.hexdigest(), ino


def _crash_point(point: str) -> None:
    """Test-only: SIGKILL this process at a named point (WALLETFS_MODE=test and WALLETFS_CRASH_AT=point)."""
    if os.environ.get("WALLETFS_MODE") == "test" and os.environ.get("WALLETFS_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _unlink_quietly(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _rename_target(source_file: str, source: str, target: str) -> str:
    """The target file name for a source file name (``source`` + suffix -> ``target`` + suffix)."""
    return target + source_file[len(source) :]


# --------------------------------------------------------------------------------------------- protocol


def _placement_order(src_files: list[str], source: str) -> list[str]:
    """``src_files`` in placement order: the cache first (its link is the commit), ``.keys`` last."""
    return [source, *(name for name in src_files if name not in (source, source + ".keys")), source + ".keys"]


def _stage_copies(wallet_dir: Path, source: str, target: str, src_files: list[str], owner: str) -> list[StagedFile]:
    """Copy ``source``'s files into fsynced temp files of ``owner`` (step 1 of the protocol)."""
    staged: list[StagedFile] = []
    try:
        for src_name in _placement_order(src_files, source):
            tmp, digest, ino = _copy_to_temp(wallet_dir / src_name, wallet_dir, owner)
            staged.append(
                StagedFile(name=_rename_target(src_name, source, target), temp=tmp.name, ino=ino, sha256=digest)
            )
            _crash_point("copy.after_temp")
    except BaseException:
        _discard(wallet_dir, staged)
        raise
    return staged


def _stage_links(wallet_dir: Path, source: str, target: str, src_files: list[str], owner: str) -> list[StagedFile]:
    """Hard-link ``source``'s files to temp names of ``owner`` and fsync them (step 1 for a move: nothing
    is copied, and the source stays as it is until the target is complete)."""
    staged: list[StagedFile] = []
    try:
        for src_name in _placement_order(src_files, source):
            tmp = _own_path(wallet_dir, TEMP_PREFIX, owner)
            os.link(wallet_dir / src_name, tmp, follow_symlinks=False)
            try:
                digest, ino = _fsync_file(tmp)  # a symlink swapped in meanwhile is refused here
            except BaseException:
                _unlink_quietly(tmp)
                raise
            staged.append(
                StagedFile(name=_rename_target(src_name, source, target), temp=tmp.name, ino=ino, sha256=digest)
            )
    except BaseException:
        _discard(wallet_dir, staged)
        raise
    return staged


def _discard(wallet_dir: Path, staged: Iterable[StagedFile]) -> None:
    for item in staged:
        _unlink_quietly(wallet_dir / item.temp)


def _write_record(wallet_dir: Path, record: PublishRecord, owner: str) -> _Publish:
    """Write ``record`` to a fresh fsynced record file of ``owner``, then fsync the directory, so the
    staged files and the record are durable before the commit (end of step 1)."""
    path, fd = _create_own(wallet_dir, RECORD_PREFIX, owner, _target_tag(record.target))
    try:
        _write_all(fd, record.model_dump_json().encode("utf-8"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)
    fsync_dir(wallet_dir)
    return _Publish(path, record)


def _commit(wallet_dir: Path, record: PublishRecord) -> bool:
    """Link the staged cache to the target's cache name (step 2): True if this publish holds the target."""
    cache = record.cache
    path = wallet_dir / cache.name
    try:
        os.link(wallet_dir / cache.temp, path, follow_symlinks=False)
    except FileExistsError:
        return _inode(path) == cache.ino  # NFS: a retransmitted LINK that had succeeded says EEXIST too
    return True


def _is_complete(wallet_dir: Path, record: PublishRecord) -> bool:
    return _inode(wallet_dir / record.keys.name) == record.keys.ino


def _finish(wallet_dir: Path, publish: _Publish) -> None:
    """Remove a completed (or never committed) publish's temp files and record."""
    _discard(wallet_dir, publish.record.files)
    _unlink_quietly(publish.path)


def _place(wallet_dir: Path, item: StagedFile, owner: str) -> bool:
    """Link ``item`` to its target name (no-replace); True if the name holds ``item``'s inode after.

    A non-``.keys`` name holding another file while this publish holds the target's cache is a leftover
    of a torn write (a complete wallet would own the cache name): it is replaced by a fresh link of the
    staged inode, which concurrent roll forwards of the same record agree on. Raises FileNotFoundError
    if the staged temp file is gone."""
    path = wallet_dir / item.name
    for _ in range(3):
        current = _inode(path)
        if current == item.ino:
            return True
        if current is None:
            try:
                os.link(wallet_dir / item.temp, path, follow_symlinks=False)
                return True
            except FileExistsError:
                continue  # placed meanwhile by a concurrent roll forward of this record: look again
        elif item.name.endswith(".keys"):
            return False
        else:
            tmp = _own_path(wallet_dir, TEMP_PREFIX, owner)
            os.link(wallet_dir / item.temp, tmp, follow_symlinks=False)
            try:
                os.replace(tmp, path)  # never the cache or .keys: a torn address file only
            except BaseException:
                _unlink_quietly(tmp)
                raise
            return True
    return _inode(path) == item.ino


def _roll_forward(wallet_dir: Path, publish: _Publish, owner: str) -> bool:
    """Place the committed ``publish``'s remaining files, ``.keys`` last, then remove its temp files and
    record (step 3). Idempotent, and safe to run from several processes at once.

    Returns True once the target holds this publish's files; False if its ``.keys`` name holds another
    file (which a cache of its own would have prevented: only a hand-made wallet without a cache).
    Raises :class:`BrokenRecord` if the staged files are gone before the target was completed."""
    record = publish.record
    try:
        for item in record.files[1:]:
            if item is record.keys:
                fsync_dir(wallet_dir)  # the cache and address file are durable before .keys
                _crash_point("publish.before_keys")
            if not _place(wallet_dir, item, owner):
                return False
    except FileNotFoundError:  # staged files are removed only once the target is complete
        if not _is_complete(wallet_dir, record):
            raise BrokenRecord(
                f"the staged files of the publish of {record.target} ({publish.path.name}) are gone "
                f"but {record.target} was never completed"
            ) from None
    fsync_dir(wallet_dir)
    _finish(wallet_dir, publish)
    return True


def _withdraw(wallet_dir: Path, publish: _Publish) -> None:
    """Undo a commit that cannot be completed: unlink the target names that hold its inodes, then its
    temp files and record."""
    for item in reversed(publish.record.files):
        if _inode(wallet_dir / item.name) == item.ino:
            _unlink_quietly(wallet_dir / item.name)
    _finish(wallet_dir, publish)


def _read_publish(path: Path) -> PublishRecord | None:
    """The record in ``path``, or None if it is gone, unsafe or not a valid record."""
    try:
        with _open_read(path) as fd:
            data = os.read(fd, _RECORD_MAX_BYTES + 1)
        record = PublishRecord.model_validate_json(data)
        check_wallet_name(record.target)
    except (OSError, WalletfsFileError, ValidationError):
        return None
    names = [item.name for item in record.files]
    allowed = naming.wallet_files(record.target)
    if (
        len(names) < 2
        or names[0] != record.target
        or names[-1] != record.target + ".keys"
        or len(set(names)) != len(names)
        or any(name not in allowed for name in names)
        or any(_TEMP_RE.fullmatch(item.temp) is None for item in record.files)
    ):
        return None  # it is read back from a shared directory: checked like any input
    return record


def _publishes(wallet_dir: Path, *, owner: str | None = None, target: str | None = None) -> Iterator[_Publish]:
    """The readable publish records in the directory (only ``owner``'s, or ``target``'s, if given)."""
    with os.scandir(wallet_dir) as entries:
        names = [entry.name for entry in entries if entry.name.startswith(RECORD_PREFIX)]
    tag = None if target is None else _target_tag(target)
    for name in names:
        match = _RECORD_RE.fullmatch(name)
        if match is None or owner not in (None, match.group("owner")) or tag not in (None, match.group("target")):
            continue
        record = _read_publish(wallet_dir / name)
        if record is not None and target in (None, record.target):
            yield _Publish(wallet_dir / name, record)


def _committed(wallet_dir: Path, wallet: str) -> _Publish | None:
    """The publish whose cache ``wallet``'s cache name holds, if its record is still there (a publish in
    flight, or one whose writer died after the commit)."""
    ino = _inode(wallet_dir / wallet)
    if ino is None:
        return None
    for publish in _publishes(wallet_dir, target=wallet):
        if publish.record.cache.ino == ino:
            return publish
    return None


def _settle(wallet_dir: Path, wallet: str, owner: str) -> None:
    """Finish a committed but unfinished publish of ``wallet`` (its writer died after the commit, or
    is still at it), so it is complete before anyone reads or writes it."""
    if _inode(wallet_dir / (wallet + ".keys")) is not None:
        return
    publish = _committed(wallet_dir, wallet)
    if publish is not None:
        _roll_forward(wallet_dir, publish, owner)


def _publish_staged(wallet_dir: Path, target: str, staged: list[StagedFile], owner: str) -> bool:
    """Record, commit and roll forward ``staged`` as ``target``: True if they were published, False if
    another writer holds the target (its publish is finished first if it is unfinished). Raises
    :class:`TargetOccupied` if the target's cache name holds a leftover that no publish owns.

    This publish's temp and record files are removed either way, except after a commit whose roll
    forward failed: that one is finished by whoever touches ``target`` next, or by this owner's next
    startup."""
    try:
        publish = _write_record(wallet_dir, PublishRecord(target=target, owner=owner, files=tuple(staged)), owner)
    except BaseException:
        _discard(wallet_dir, staged)
        raise
    try:
        committed = _commit(wallet_dir, publish.record)
    except BaseException:
        _finish(wallet_dir, publish)
        raise
    if not committed:
        _finish(wallet_dir, publish)
        _settle(wallet_dir, target, owner)
        _check_vacant(wallet_dir, target)
        return False
    _crash_point("publish.after_commit")
    try:
        if _roll_forward(wallet_dir, publish, owner):
            return True
    except BrokenRecord:
        _withdraw(wallet_dir, publish)
        raise
    _withdraw(wallet_dir, publish)
    return False


def _check_vacant(wallet_dir: Path, target: str) -> None:
    """Raise :class:`TargetOccupied` if ``target`` has a cache but no ``.keys``. Only meaningful after a
    lost commit and :func:`_settle`: before the commit, a cache may be another writer's commit of a
    moment ago."""
    if _inode(wallet_dir / (target + ".keys")) is None and _inode(wallet_dir / target) is not None:
        raise TargetOccupied(
            f"{target} has a cache file but no .keys and no publish in flight (a torn write, or a wallet "
            "this node does not see complete yet); not overwriting it"
        )


# --------------------------------------------------------------------------------------------- operations


def _source_files(wallet_dir: Path, source: str, missing: str) -> list[str]:
    """The present files of ``source``, which must have a ``.keys`` and a cache file."""
    src_files = _present(wallet_dir, source)
    if source + ".keys" not in src_files:
        raise WalletNotFound(missing)
    if source not in src_files:
        raise WalletNotFound(f"wallet {source} is incomplete: it has no cache file")
    return src_files


def copy_wallet(wallet_dir: Path, source: str, target: str, *, owner: str | None = None) -> CopyOutcome:
    """Copy the file set of ``source`` to ``target``; ``source`` is only ever opened read-only.

    The copy goes through the publish protocol (temp files of ``owner``, fsync, one no-replace commit,
    ``.keys`` last, directory fsync). If ``target`` already holds exactly the same files (sha256 per
    file), or another writer published identical files first, nothing is written and ``copied`` is
    False. Raises :class:`WalletNotFound` if the source does not exist (or has no cache file),
    :class:`WalletConflict` if the target exists with different content, and :class:`TargetOccupied`
    if a torn write left a cache under the target name.
    """
    owner = _owner(owner)
    source, target = _check_pair(source, target)
    _settle(wallet_dir, source, owner)
    _settle(wallet_dir, target, owner)
    src_files = _source_files(wallet_dir, source, f"source wallet {source} does not exist")
    if target + ".keys" in _present(wallet_dir, target):
        return _existing_copy(wallet_dir, source, target)
    staged = _stage_copies(wallet_dir, source, target, src_files, owner)
    if _publish_staged(wallet_dir, target, staged, owner):
        return CopyOutcome(files={item.name: item.sha256 for item in staged}, copied=True)
    return _existing_copy(wallet_dir, source, target)


def _existing_copy(wallet_dir: Path, source: str, target: str) -> CopyOutcome:
    """The outcome of copying onto an existing ``target``: nothing to do if identical, else a conflict."""
    wanted = {_rename_target(f, source, target): file_sha256(wallet_dir / f) for f in _present(wallet_dir, source)}
    have = {f: file_sha256(wallet_dir / f) for f in _present(wallet_dir, target)}
    if wanted == have:
        return CopyOutcome(files=have, copied=False)
    raise WalletConflict(f"target wallet {target} exists with different content; not overwriting it")


def _publishable(wallet_dir: Path, source: str, target: str, owner: str) -> tuple[str, str, list[str]]:
    """Checked names and the source's present files of a publish: refused if ``target`` is published
    already (:class:`AlreadyPublished`, also when the source is gone) or ``source`` does not exist."""
    source, target = _check_pair(source, target)
    _settle(wallet_dir, target, owner)
    _settle(wallet_dir, source, owner)
    if target + ".keys" in _present(wallet_dir, target):
        raise AlreadyPublished(f"wallet {target} is already published; it is never overwritten")
    src_files = _source_files(
        wallet_dir, source, f"work wallet {source} does not exist (and {target} is not published)"
    )
    return source, target, src_files


def publish_wallet(wallet_dir: Path, source: str, target: str, *, owner: str | None = None) -> dict[str, str]:
    """Move the work copy ``source`` to its published name ``target``; return sha256 per target file.

    The source files are hard-linked to temp files of ``owner`` and fsynced, published with the publish
    protocol (one no-replace commit, ``.keys`` last), and only then is the source removed. A published
    wallet is never overwritten: if ``target`` exists, or another writer commits it first,
    :class:`AlreadyPublished` is raised and the source is left as it was (also when the source is gone).
    If neither exists, :class:`WalletNotFound`.
    """
    owner = _owner(owner)
    source, target, src_files = _publishable(wallet_dir, source, target, owner)
    staged = _stage_links(wallet_dir, source, target, src_files, owner)
    if not _publish_staged(wallet_dir, target, staged, owner):
        raise AlreadyPublished(f"wallet {target} was published by another writer first; it is never overwritten")
    _unlink_wallet(wallet_dir, source)
    return {item.name: item.sha256 for item in staged}


def publish_copy(wallet_dir: Path, source: str, target: str, *, owner: str | None = None) -> dict[str, str]:
    """Publish a copy of ``source`` (a work wallet still open in wallet-rpc) as ``target``.

    The work wallet stays in place for the next round (wallet affinity); its stored files are copied
    to temp files and published with the publish protocol, ``.keys`` last. Like :func:`publish_wallet`
    a published wallet is never overwritten (:class:`AlreadyPublished`).
    """
    owner = _owner(owner)
    source, target, src_files = _publishable(wallet_dir, source, target, owner)
    staged = _stage_copies(wallet_dir, source, target, src_files, owner)
    if not _publish_staged(wallet_dir, target, staged, owner):
        raise AlreadyPublished(f"wallet {target} was published by another writer first; it is never overwritten")
    return {item.name: item.sha256 for item in staged}


def _unlink_wallet(wallet_dir: Path, wallet: str) -> list[str]:
    """Remove ``wallet``'s files, ``.keys`` first, then fsync the directory; return the names removed."""
    present = _present(wallet_dir, wallet)
    deleted = [
        name
        for name in sorted(present, key=lambda name: not name.endswith(".keys"))  # .keys first
        if _unlink_quietly(wallet_dir / name)
    ]
    if deleted:
        fsync_dir(wallet_dir)
    return deleted


def delete_wallet(wallet_dir: Path, wallet: str, *, owner: str | None = None) -> list[str]:
    """Delete the file set of ``wallet``, ``.keys`` first; return the names deleted (empty if absent).
    A committed but unfinished publish of ``wallet`` is finished first, so it cannot reappear later."""
    owner = _owner(owner)
    wallet = check_wallet_name(wallet)
    try:
        _settle(wallet_dir, wallet, owner)
    except BrokenRecord:
        pass  # nothing left to finish: deleted below like any torn wallet
    return _unlink_wallet(wallet_dir, wallet)


def stat_wallet(wallet_dir: Path, wallet: str, *, owner: str | None = None) -> WalletStat:
    """Whether ``wallet`` exists (has ``.keys``) and the size and sha256 of each of its files."""
    owner = _owner(owner)
    wallet = check_wallet_name(wallet)
    _settle(wallet_dir, wallet, owner)
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

    Symlinks and anything that is not a regular file are skipped. ``complete`` means ``.keys`` exists
    (a publish committed but not yet finished shows as incomplete until anyone touches that wallet).
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


# --------------------------------------------------------------------------------------------- startup


def _removable(wallet_dir: Path, owner: str, now: float) -> list[str]:
    """Temp and record files ``owner``'s startup may remove: its own, and old temp files that name no
    owner (walletfs versions before owners)."""
    names: list[str] = []
    with os.scandir(wallet_dir) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                continue
            if temp_owner(entry.name) == owner:
                names.append(entry.name)
            elif _LEGACY_TEMP_RE.fullmatch(entry.name):
                try:
                    age = now - entry.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
                if age > LEGACY_TEMP_AGE:
                    names.append(entry.name)
    return names


def remove_temp_files(wallet_dir: Path, owner: str | None = None) -> int:
    """Remove ``owner``'s leftover temp and record files (and owner-less temp files older than
    :data:`LEGACY_TEMP_AGE`); return how many. Never touches another owner's: they may be in flight.
    Call :func:`recover` instead at startup, which finishes ``owner``'s committed publishes first."""
    owner = _owner(owner)
    removed = sum(_unlink_quietly(wallet_dir / name) for name in _removable(wallet_dir, owner, time.time()))
    if removed:
        fsync_dir(wallet_dir)
    return removed


def recover(wallet_dir: Path, owner: str | None = None) -> Recovery:
    """Startup of ``owner``: finish the publishes its dead earlier incarnation committed (their target's
    cache name holds the staged cache), then remove all of its temp and record files."""
    owner = _owner(owner)
    finished = 0
    for publish in _publishes(wallet_dir, owner=owner):
        record = publish.record
        if _inode(wallet_dir / record.target) != record.cache.ino or _is_complete(wallet_dir, record):
            continue  # never committed, or complete: its files are removed below
        try:
            if _roll_forward(wallet_dir, publish, owner):
                finished += 1
                continue
        except WalletfsFileError:
            pass  # cannot be finished: its staged files are gone, or a file is unsafe
        _withdraw(wallet_dir, publish)  # back to no target rather than a cache without .keys
    return Recovery(finished=finished, removed=remove_temp_files(wallet_dir, owner))

"""The walletfs file operations, without HTTP."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from escrow_operator.naming import WalletNames
from escrow_operator.walletfs import files

UID = "0b5f2c1e-7d3a-4e8b-9c6f-1a2b3c4d5e6f"
OTHER_UID = "11111111-2222-4333-8444-555555555555"
NAMES = WalletNames("buyer", UID, final=3)
ROUND_1 = NAMES.output_of(0)
ROUND_2 = NAMES.output_of(1)
WORK = NAMES.work(1, "deadbeef")

CONTENT = {".keys": b"KEYS\x00\x01secret", "": b"cache" * 1000, ".address.txt": b"4Address"}


def make_wallet(directory: Path, wallet: str, content: dict[str, bytes] = CONTENT) -> dict[str, str]:
    """Write a wallet file set; return sha256 per file name."""
    hashes = {}
    for suffix, data in content.items():
        path = directory / (wallet + suffix)
        path.write_bytes(data)
        path.chmod(0o600)
        hashes[path.name] = hashlib.sha256(data).hexdigest()
    return hashes


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: (b"<link>" if p.is_symlink() else p.read_bytes()) for p in sorted(directory.iterdir())}


BAD_NAMES = [
    "",
    "..",
    ".",
    "/etc/passwd",
    f"../{ROUND_1}",
    f"{ROUND_1}/..",
    f"sub/{ROUND_1}",
    f"{ROUND_1}\x00",
    f"{ROUND_1}.keys",
    f"{ROUND_1}.address.txt",
    f"{ROUND_1}\n",
    "buyer_escrow_" + "a" * 300,
    "x" * 201,
    f"bûyer_escrow_{UID}_round_1",
    f"BUYER_escrow_{UID}_round_1",
    f"buyer_escrow_{UID}_round_0_input",
    f"buyer_escrow_{UID.upper()}_round_1",
    "wallet",
    f".walletfs-tmp-{ROUND_1}",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_wallet_name_refuses(name: str) -> None:
    with pytest.raises(files.InvalidName):
        files.check_wallet_name(name)


def test_check_wallet_name_accepts_protocol_names() -> None:
    for name in [*NAMES.intermediates(), NAMES.final_wallet, WORK]:
        assert files.check_wallet_name(name) == name
    with pytest.raises(files.InvalidName):
        files.check_wallet_name(42)


def test_copy_copies_bytes_atomically_and_keeps_source(tmp_path: Path) -> None:
    hashes = make_wallet(tmp_path, ROUND_1)
    before = {p.name: os.stat(p).st_mtime_ns for p in tmp_path.iterdir()}

    outcome = files.copy_wallet(tmp_path, ROUND_1, WORK)

    assert outcome.copied
    assert outcome.files == {name.replace(ROUND_1, WORK): digest for name, digest in hashes.items()}
    for suffix, data in CONTENT.items():
        assert (tmp_path / (WORK + suffix)).read_bytes() == data
        assert (tmp_path / (ROUND_1 + suffix)).read_bytes() == data
        assert stat.S_IMODE(os.stat(tmp_path / (WORK + suffix)).st_mode) == 0o600
    assert {p.name: os.stat(p).st_mtime_ns for p in tmp_path.iterdir() if p.name.startswith(ROUND_1)} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(files.TEMP_PREFIX)]


def test_copy_is_idempotent(tmp_path: Path) -> None:
    make_wallet(tmp_path, ROUND_1)
    first = files.copy_wallet(tmp_path, ROUND_1, WORK)
    mtimes = {p.name: os.stat(p).st_mtime_ns for p in tmp_path.iterdir()}

    second = files.copy_wallet(tmp_path, ROUND_1, WORK)

    assert not second.copied
    assert second.files == first.files
    assert {p.name: os.stat(p).st_mtime_ns for p in tmp_path.iterdir()} == mtimes


def test_copy_without_optional_address_file(tmp_path: Path) -> None:
    make_wallet(tmp_path, ROUND_1, {".keys": b"k", "": b"c"})
    outcome = files.copy_wallet(tmp_path, ROUND_1, WORK)
    assert set(outcome.files) == {WORK, WORK + ".keys"}
    assert not (tmp_path / (WORK + ".address.txt")).exists()


def test_copy_finishes_a_torn_copy(tmp_path: Path) -> None:
    make_wallet(tmp_path, ROUND_1)
    (tmp_path / WORK).write_bytes(b"half")  # cache written, .keys not yet: the target does not exist
    outcome = files.copy_wallet(tmp_path, ROUND_1, WORK)
    assert outcome.copied
    assert (tmp_path / WORK).read_bytes() == CONTENT[""]


def test_copy_refuses_to_overwrite_a_different_target(tmp_path: Path) -> None:
    make_wallet(tmp_path, ROUND_1)
    make_wallet(tmp_path, WORK, {".keys": b"other", "": b"other"})
    before = snapshot(tmp_path)
    with pytest.raises(files.WalletConflict):
        files.copy_wallet(tmp_path, ROUND_1, WORK)
    assert snapshot(tmp_path) == before


def test_copy_of_missing_source(tmp_path: Path) -> None:
    (tmp_path / ROUND_1).write_bytes(b"cache only")  # no .keys: does not exist
    with pytest.raises(files.WalletNotFound):
        files.copy_wallet(tmp_path, ROUND_1, WORK)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ROUND_1]


def test_copy_refuses_symlinks(tmp_path: Path) -> None:
    wallet_dir = tmp_path / "wallets"
    wallet_dir.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"do not touch")
    make_wallet(wallet_dir, ROUND_1)
    (wallet_dir / (WORK + ".keys")).symlink_to(outside)
    with pytest.raises(files.UnsafeFile):
        files.copy_wallet(wallet_dir, ROUND_1, WORK)
    assert outside.read_bytes() == b"do not touch"

    os.unlink(wallet_dir / (WORK + ".keys"))
    os.unlink(wallet_dir / ROUND_1)
    (wallet_dir / ROUND_1).symlink_to(outside)  # source cache is a symlink
    with pytest.raises(files.UnsafeFile):
        files.copy_wallet(wallet_dir, ROUND_1, WORK)
    assert not (wallet_dir / (WORK + ".keys")).exists()


def test_publish_moves_files_keys_last(tmp_path: Path) -> None:
    hashes = make_wallet(tmp_path, WORK)
    result = files.publish_wallet(tmp_path, WORK, ROUND_2)
    assert result == {name.replace(WORK, ROUND_2): digest for name, digest in hashes.items()}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(result)


def test_publish_never_overwrites(tmp_path: Path) -> None:
    make_wallet(tmp_path, WORK)
    make_wallet(tmp_path, ROUND_2, {".keys": b"published", "": b"published cache"})
    before = snapshot(tmp_path)
    with pytest.raises(files.AlreadyPublished):
        files.publish_wallet(tmp_path, WORK, ROUND_2)
    assert snapshot(tmp_path) == before

    for suffix in CONTENT:  # work copy gone, output present: still "already published"
        os.unlink(tmp_path / (WORK + suffix))
    with pytest.raises(files.AlreadyPublished):
        files.publish_wallet(tmp_path, WORK, ROUND_2)


def test_publish_of_nothing(tmp_path: Path) -> None:
    with pytest.raises(files.WalletNotFound):
        files.publish_wallet(tmp_path, WORK, ROUND_2)
    assert list(tmp_path.iterdir()) == []


def test_publish_completes_a_torn_publish(tmp_path: Path) -> None:
    make_wallet(tmp_path, WORK)
    # An earlier publish moved the address file and the cache, then died before .keys.
    os.rename(tmp_path / (WORK + ".address.txt"), tmp_path / (ROUND_2 + ".address.txt"))
    os.rename(tmp_path / WORK, tmp_path / ROUND_2)
    result = files.publish_wallet(tmp_path, WORK, ROUND_2)
    assert set(result) == {ROUND_2, ROUND_2 + ".keys", ROUND_2 + ".address.txt"}
    assert (tmp_path / (ROUND_2 + ".keys")).read_bytes() == CONTENT[".keys"]
    assert (tmp_path / ROUND_2).read_bytes() == CONTENT[""]


def test_publish_copy_leaves_the_open_work_wallet_and_never_overwrites(tmp_path: Path) -> None:
    hashes = make_wallet(tmp_path, WORK)
    result = files.publish_copy(tmp_path, WORK, ROUND_2)
    assert result == {name.replace(WORK, ROUND_2): digest for name, digest in hashes.items()}
    for suffix, data in CONTENT.items():  # the work wallet (open in wallet-rpc) is untouched
        assert (tmp_path / (WORK + suffix)).read_bytes() == data
        assert (tmp_path / (ROUND_2 + suffix)).read_bytes() == data
    (tmp_path / (WORK + ".keys")).write_bytes(b"the next round changed it")
    before = snapshot(tmp_path)
    with pytest.raises(files.AlreadyPublished):
        files.publish_copy(tmp_path, WORK, ROUND_2)
    assert snapshot(tmp_path) == before


def test_publish_copy_completes_a_torn_publish(tmp_path: Path) -> None:
    make_wallet(tmp_path, WORK)
    (tmp_path / ROUND_2).write_bytes(b"half a cache")  # an earlier publish died before .keys
    files.publish_copy(tmp_path, WORK, ROUND_2)
    assert (tmp_path / ROUND_2).read_bytes() == CONTENT[""]
    assert (tmp_path / (ROUND_2 + ".keys")).read_bytes() == CONTENT[".keys"]


def test_delete_removes_the_set_and_is_idempotent(tmp_path: Path) -> None:
    make_wallet(tmp_path, ROUND_1)
    make_wallet(tmp_path, ROUND_2)
    deleted = files.delete_wallet(tmp_path, ROUND_1)
    assert deleted[0] == ROUND_1 + ".keys"
    assert set(deleted) == {ROUND_1 + suffix for suffix in CONTENT}
    assert files.delete_wallet(tmp_path, ROUND_1) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ROUND_2 + s for s in CONTENT)


def test_delete_refuses_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"x")
    wallet_dir = tmp_path / "w"
    wallet_dir.mkdir()
    (wallet_dir / (ROUND_1 + ".keys")).symlink_to(outside)
    with pytest.raises(files.UnsafeFile):
        files.delete_wallet(wallet_dir, ROUND_1)
    assert (wallet_dir / (ROUND_1 + ".keys")).is_symlink()
    assert outside.read_bytes() == b"x"


def test_stat(tmp_path: Path) -> None:
    hashes = make_wallet(tmp_path, ROUND_1)
    result = files.stat_wallet(tmp_path, ROUND_1)
    assert result.exists
    assert {name: info.sha256 for name, info in result.files.items()} == hashes
    assert result.files[ROUND_1].size == len(CONTENT[""])
    missing = files.stat_wallet(tmp_path, ROUND_2)
    assert not missing.exists and missing.files == {}


def test_list_filters_pattern_and_uid(tmp_path: Path) -> None:
    make_wallet(tmp_path, ROUND_1)
    (tmp_path / WORK).write_bytes(b"cache only")
    other = WalletNames("seller", OTHER_UID, final=3).output_of(0)
    make_wallet(tmp_path, other)
    (tmp_path / "unrelated.keys").write_bytes(b"x")
    (tmp_path / (files.TEMP_PREFIX + "abc")).write_bytes(b"x")
    (tmp_path / (NAMES.final_wallet + ".keys")).symlink_to(tmp_path / "unrelated.keys")

    everything = files.list_wallets(tmp_path)
    assert [(w.name, w.complete) for w in everything] == sorted(
        [(ROUND_1, True), (WORK, False), (other, True)]
    )
    assert [w.name for w in files.list_wallets(tmp_path, UID)] == sorted([ROUND_1, WORK])
    with pytest.raises(files.InvalidName):
        files.list_wallets(tmp_path, "../x")


def test_remove_temp_files(tmp_path: Path) -> None:
    make_wallet(tmp_path, ROUND_1)
    for i in range(3):
        (tmp_path / f"{files.TEMP_PREFIX}{i}").write_bytes(b"torn")
    assert files.remove_temp_files(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(ROUND_1 + s for s in CONTENT)
    assert files.remove_temp_files(tmp_path) == 0

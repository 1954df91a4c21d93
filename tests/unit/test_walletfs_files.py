"""The walletfs file operations, without HTTP."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import time
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


def leftovers(directory: Path) -> list[str]:
    """Temp and record files of walletfs in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith((files.TEMP_PREFIX, files.RECORD_PREFIX)))


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


def test_copy_replaces_a_torn_address_file(tmp_path: Path) -> None:
    make_wallet(tmp_path, ROUND_1)
    (tmp_path / (WORK + ".address.txt")).write_bytes(b"torn")  # no cache, no .keys: the target does not exist
    outcome = files.copy_wallet(tmp_path, ROUND_1, WORK)
    assert outcome.copied
    assert (tmp_path / (WORK + ".address.txt")).read_bytes() == CONTENT[".address.txt"]
    assert not leftovers(tmp_path)


def test_copy_never_overwrites_a_cache_without_keys(tmp_path: Path) -> None:
    """A cache without .keys and without a publish in flight is a torn write of an older walletfs, or a
    wallet whose .keys this node does not see yet (NFS): never overwritten, retrying is safe."""
    make_wallet(tmp_path, ROUND_1)
    (tmp_path / WORK).write_bytes(b"half")
    before = snapshot(tmp_path)
    with pytest.raises(files.TargetOccupied, match=r"no \.keys"):
        files.copy_wallet(tmp_path, ROUND_1, WORK)
    assert snapshot(tmp_path) == before


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


def test_publish_never_overwrites_a_torn_publish_of_an_older_walletfs(tmp_path: Path) -> None:
    make_wallet(tmp_path, WORK)
    # An older walletfs renamed the address file and the cache into place, then died before .keys.
    os.rename(tmp_path / (WORK + ".address.txt"), tmp_path / (ROUND_2 + ".address.txt"))
    os.rename(tmp_path / WORK, tmp_path / ROUND_2)
    make_wallet(tmp_path, WORK)
    before = snapshot(tmp_path)
    for publish in (files.publish_wallet, files.publish_copy):
        with pytest.raises(files.TargetOccupied):
            publish(tmp_path, WORK, ROUND_2)
    assert snapshot(tmp_path) == before


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


def test_a_source_without_cache_is_not_a_wallet_to_write(tmp_path: Path) -> None:
    """Every wallet walletfs writes has a cache: its link is the commit of the publish protocol."""
    make_wallet(tmp_path, WORK, {".keys": b"keys only"})
    for call in (files.publish_wallet, files.publish_copy, files.copy_wallet):
        with pytest.raises(files.WalletNotFound, match="no cache"):
            call(tmp_path, WORK, ROUND_2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [WORK + ".keys"]


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
    assert [(w.name, w.complete) for w in everything] == sorted([(ROUND_1, True), (WORK, False), (other, True)])
    assert [w.name for w in files.list_wallets(tmp_path, UID)] == sorted([ROUND_1, WORK])
    with pytest.raises(files.InvalidName):
        files.list_wallets(tmp_path, "../x")


def test_remove_temp_files_removes_only_its_own_owners(tmp_path: Path) -> None:
    make_wallet(tmp_path, ROUND_1)
    mine = [f"{files.TEMP_PREFIX}pod-0-{i:016x}" for i in range(3)] + [f"{files.RECORD_PREFIX}pod-0-0badc0de-{9:016x}"]
    others = [
        f"{files.TEMP_PREFIX}pod-1-{1:016x}",  # another pod's copy in flight
        f"{files.TEMP_PREFIX}pod-0-x-{1:016x}",  # the owner "pod-0-x", not "pod-0"
        f"{files.RECORD_PREFIX}pod-1-0badc0de-{2:016x}",
        f"{files.TEMP_PREFIX}{3:016x}",  # an older walletfs's, recent: may be in flight
    ]
    old = f"{files.TEMP_PREFIX}{4:016x}"  # an older walletfs's, older than anything in flight
    for name in [*mine, *others, old]:
        (tmp_path / name).write_bytes(b"torn")
    stale = time.time() - files.LEGACY_TEMP_AGE - 60
    os.utime(tmp_path / old, (stale, stale))

    assert files.remove_temp_files(tmp_path, "pod-0") == len(mine) + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(ROUND_1 + s for s in CONTENT), *others])
    assert files.remove_temp_files(tmp_path, "pod-0") == 0
    with pytest.raises(ValueError):
        files.remove_temp_files(tmp_path, "../pod")


@pytest.mark.parametrize(
    ("env", "owner"),
    [
        ({"WALLETFS_OWNER": "wallets-3", "POD_NAME": "other"}, "wallets-3"),
        ({"POD_NAME": "wallets-4"}, "wallets-4"),
        ({"WALLETFS_OWNER": " ", "POD_NAME": "wallets-5"}, "wallets-5"),
        ({"HOSTNAME": "wallets-6"}, "wallets-6"),
        ({"WALLETFS_OWNER": "pod/../0 x"}, "pod_.._0_x"),
        ({"WALLETFS_OWNER": "p" * 100}, "p" * files.MAX_OWNER_LENGTH),
    ],
)
def test_default_owner(env: dict[str, str], owner: str) -> None:
    assert files.default_owner(env) == owner


def test_default_owner_falls_back_to_the_host_name() -> None:
    assert files.default_owner({}) == files.sanitize_owner(socket.gethostname())


# --------------------------------------------------------------------------------------------- the publish protocol

A_CONTENT = {".keys": b"A keys", "": b"A cache" * 100, ".address.txt": b"A address"}
B_CONTENT = {".keys": b"B keys", "": b"B cache" * 100}
WORK_B = NAMES.work(1, "0000000b")


def committed_elsewhere(directory: Path, source: str, target: str, owner: str) -> files.PublishRecord:
    """Another writer (``owner``) staged ``source`` for ``target`` and committed, then stopped (a slow pod,
    or one that died right after the commit)."""
    staged = files._stage_copies(directory, source, target, files._present(directory, source), owner)
    publish = files._write_record(
        directory, files.PublishRecord(target=target, owner=owner, files=tuple(staged)), owner
    )
    assert files._commit(directory, publish.record)
    return publish.record


def wallet_content(directory: Path, wallet: str) -> dict[str, bytes]:
    return {p.name[len(wallet) :]: p.read_bytes() for p in directory.iterdir() if p.name.startswith(wallet)}


def test_writes_leave_no_temp_or_record_files(tmp_path: Path) -> None:
    make_wallet(tmp_path, ROUND_1)
    files.copy_wallet(tmp_path, ROUND_1, WORK, owner="pod-a")
    files.publish_copy(tmp_path, WORK, ROUND_2, owner="pod-a")
    files.delete_wallet(tmp_path, ROUND_2, owner="pod-a")
    files.publish_wallet(tmp_path, WORK, ROUND_2, owner="pod-a")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(w + s for w in (ROUND_1, ROUND_2) for s in CONTENT)


def test_staged_files_carry_their_owner(tmp_path: Path) -> None:
    make_wallet(tmp_path, WORK)
    record = committed_elsewhere(tmp_path, WORK, ROUND_2, "wallets-7")
    assert [files.temp_owner(item.temp) for item in record.files] == ["wallets-7"] * 3
    assert [item.name for item in record.files] == [ROUND_2, ROUND_2 + ".address.txt", ROUND_2 + ".keys"]
    assert all(files.temp_owner(name) == "wallets-7" for name in leftovers(tmp_path))


def test_the_loser_of_a_race_finishes_the_winner_and_keeps_its_source(tmp_path: Path) -> None:
    make_wallet(tmp_path, WORK, A_CONTENT)
    make_wallet(tmp_path, WORK_B, B_CONTENT)
    committed_elsewhere(tmp_path, WORK_B, ROUND_2, "pod-b")  # B won the commit and stopped there

    for publish in (files.publish_wallet, files.publish_copy):
        with pytest.raises(files.AlreadyPublished):
            publish(tmp_path, WORK, ROUND_2, owner="pod-a")
    assert wallet_content(tmp_path, ROUND_2) == B_CONTENT  # the whole pair from B
    assert wallet_content(tmp_path, WORK) == A_CONTENT  # A's work wallet untouched
    assert leftovers(tmp_path) == []  # B's publish was finished, and its files with it


def test_a_commit_is_finished_by_the_next_reader(tmp_path: Path) -> None:
    make_wallet(tmp_path, WORK_B, B_CONTENT)
    committed_elsewhere(tmp_path, WORK_B, ROUND_2, "pod-b")
    assert files.list_wallets(tmp_path, UID)[0].complete is False  # listing does not finish anything

    result = files.stat_wallet(tmp_path, ROUND_2, owner="pod-a")
    assert result.exists
    assert {name: info.sha256 for name, info in result.files.items()} == {
        ROUND_2 + suffix: hashlib.sha256(data).hexdigest() for suffix, data in B_CONTENT.items()
    }
    assert leftovers(tmp_path) == []
    assert files.copy_wallet(tmp_path, WORK_B, ROUND_2, owner="pod-a").copied is False


def test_a_write_that_stopped_before_its_commit_leaves_no_target(tmp_path: Path) -> None:
    make_wallet(tmp_path, WORK, A_CONTENT)
    make_wallet(tmp_path, WORK_B, B_CONTENT)
    staged = files._stage_copies(tmp_path, WORK_B, ROUND_2, files._present(tmp_path, WORK_B), "pod-b")
    files._write_record(tmp_path, files.PublishRecord(target=ROUND_2, owner="pod-b", files=tuple(staged)), "pod-b")
    assert not files.stat_wallet(tmp_path, ROUND_2, owner="pod-a").exists

    files.publish_wallet(tmp_path, WORK, ROUND_2, owner="pod-a")
    assert wallet_content(tmp_path, ROUND_2) == A_CONTENT
    assert len(leftovers(tmp_path)) == 3  # B's temp files and record: another pod's, maybe in flight
    assert files.recover(tmp_path, "pod-a") == files.Recovery(finished=0, removed=0)
    assert files.recover(tmp_path, "pod-b") == files.Recovery(finished=0, removed=3)  # B restarted
    assert leftovers(tmp_path) == []
    assert wallet_content(tmp_path, ROUND_2) == A_CONTENT


def test_startup_finishes_its_own_committed_publishes_only(tmp_path: Path) -> None:
    make_wallet(tmp_path, WORK_B, B_CONTENT)
    committed_elsewhere(tmp_path, WORK_B, ROUND_2, "pod-b")

    assert files.recover(tmp_path, "pod-a") == files.Recovery(finished=0, removed=0)
    assert not (tmp_path / (ROUND_2 + ".keys")).exists()
    assert files.recover(tmp_path, "pod-b") == files.Recovery(finished=1, removed=0)
    assert wallet_content(tmp_path, ROUND_2) == B_CONTENT
    assert leftovers(tmp_path) == []


def test_a_commit_whose_staged_files_vanished(tmp_path: Path) -> None:
    make_wallet(tmp_path, WORK_B, B_CONTENT)
    record = committed_elsewhere(tmp_path, WORK_B, ROUND_2, "pod-b")
    os.unlink(tmp_path / record.keys.temp)  # tampering: the staged .keys is gone

    with pytest.raises(files.BrokenRecord, match="never completed"):
        files.stat_wallet(tmp_path, ROUND_2, owner="pod-a")
    assert files.recover(tmp_path, "pod-b").finished == 0  # withdrawn: back to no target
    assert not (tmp_path / ROUND_2).exists() and leftovers(tmp_path) == []
    assert wallet_content(tmp_path, WORK_B) == B_CONTENT


def test_racing_writers_of_two_owners(tmp_path: Path) -> None:
    """Two owners publish the same targets at once (threads here; processes in test_walletfs_crosspod):
    exactly one wins each, with its whole file set."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    rounds = 40
    barrier = Barrier(2)

    def publish(owner: str, source: str, target: str, copy: bool) -> str:
        barrier.wait()
        try:
            (files.publish_copy if copy else files.publish_wallet)(tmp_path, source, target, owner=owner)
        except files.AlreadyPublished:
            return "lost"
        return "won"

    with ThreadPoolExecutor(2) as pool:
        for i in range(rounds):
            names = WalletNames("buyer", f"{i:08x}-0000-4000-8000-000000000000", final=3)
            target, sources = names.output_of(1), {o: names.work(1, f"{o:0>8}") for o in ("a", "b")}
            content = {o: {".keys": f"{o} keys {i}".encode(), "": f"{o} cache {i}".encode() * 500} for o in sources}
            for owner, source in sources.items():
                make_wallet(tmp_path, source, content[owner])
            futures = {o: pool.submit(publish, o, s, target, i % 2 == 1) for o, s in sources.items()}
            outcomes = {o: f.result() for o, f in futures.items()}
            assert sorted(outcomes.values()) == ["lost", "won"], (i, outcomes)
            winner = next(o for o, outcome in outcomes.items() if outcome == "won")
            assert wallet_content(tmp_path, target) == content[winner]
    assert leftovers(tmp_path) == []

"""The process kubelet's container mode: a pod's container as ``podman run`` (no podman needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from hack.devcluster.podman import (
    HOST_IMAGE,
    ImageNotPresent,
    Mount,
    Security,
    check,
    process_argv,
    run_argv,
    write_env_file,
)

RESTRICTED_POD = client.V1PodSecurityContext(
    run_as_non_root=True, run_as_user=10001, run_as_group=10001, fs_group=10001
)
RESTRICTED_CONTAINER = client.V1SecurityContext(
    allow_privilege_escalation=False,
    read_only_root_filesystem=True,
    capabilities=client.V1Capabilities(drop=["ALL"]),
)


def argv(**overrides: object) -> list[str]:
    values: dict = {
        "name": "dc-pod-wallet-rpc",
        "image": "xmr-escrow/wallet-rpc:0.18.4.0",
        "command": None,
        "args": ["--rpc-bind-ip=127.1.0.5", "--wallet-dir=/wallets"],
        "env_file": Path("/k/env/wallet-rpc.env"),
        "mounts": [Mount("/k/claim", "/wallets"), Mount("/k/secret", "/etc/wallet-rpc", read_only=True)],
        "security": Security.of(RESTRICTED_POD, RESTRICTED_CONTAINER),
        "working_dir": None,
        "labels": {"xmrescrow.dev/devcluster": "abc"},
    }
    values.update(overrides)
    return run_argv(**values)


def test_the_restricted_pod_runs_as_its_user_read_only_without_capabilities() -> None:
    a = argv()
    assert a[:2] == ["podman", "run"]
    assert "--network=host" in a and "--pull=never" in a and "--rm" in a
    assert a[a.index("--user") + 1] == "10001:10001"
    assert a[a.index("--group-add") + 1] == "10001"  # fsGroup
    assert "--read-only" in a and "--read-only-tmpfs=false" in a
    assert a[a.index("--cap-drop") + 1] == "ALL" and "--cap-add" not in a
    assert a[a.index("--security-opt") + 1] == "no-new-privileges"
    volumes = [a[i + 1] for i, x in enumerate(a) if x == "--volume"]
    assert volumes == ["/k/claim:/wallets:rw", "/k/secret:/etc/wallet-rpc:ro"]
    # the image, then the pod's args verbatim (the image's entrypoint is kept: no command given)
    assert "--entrypoint" not in a
    assert a[-3:] == ["xmr-escrow/wallet-rpc:0.18.4.0", "--rpc-bind-ip=127.1.0.5", "--wallet-dir=/wallets"]
    assert a[a.index("--env-file") + 1] == "/k/env/wallet-rpc.env"


def test_a_command_replaces_the_entrypoint_and_nothing_else_is_asked() -> None:
    a = argv(command=["escrow-operator", "run"], args=None, security=Security(), mounts=[], working_dir="/work")
    assert a[a.index("--entrypoint") + 1] == '["escrow-operator", "run"]'
    assert a[-1] == "xmr-escrow/wallet-rpc:0.18.4.0"
    assert a[a.index("--workdir") + 1] == "/work"
    for flag in ("--user", "--group-add", "--read-only", "--cap-drop", "--security-opt", "--volume"):
        assert flag not in a


def test_the_containers_context_overrides_the_pods() -> None:
    pod = client.V1PodSecurityContext(run_as_user=10001, run_as_group=10001, run_as_non_root=True)
    container = client.V1SecurityContext(run_as_user=20002, run_as_non_root=False)
    s = Security.of(pod, container)
    assert (s.user, s.group, s.run_as_non_root) == (20002, 10001, False)
    assert Security.of(None, None) == Security()


@pytest.mark.parametrize(
    ("security", "image_user", "refused"),
    [
        (Security(run_as_non_root=True, user=0), "10001", "runAsUser=0"),
        (Security(run_as_non_root=True), "", "non-numeric user (root)"),
        (Security(run_as_non_root=True), "app", "non-numeric user (app)"),
        (Security(run_as_non_root=True), "0:0", "will run as root"),
        (Security(run_as_non_root=True), "10001:10001", None),
        (Security(run_as_non_root=True, user=10001), "", None),
        (Security(), "", None),
    ],
)
def test_run_as_non_root_is_enforced_as_a_kubelet_does(
    security: Security, image_user: str, refused: str | None
) -> None:
    if refused is None:
        check(security, image_user)
    else:
        with pytest.raises(RuntimeError, match=refused.replace("(", r"\(").replace(")", r"\)")):
            check(security, image_user)


def test_the_environment_file_is_private_and_refuses_what_it_cannot_carry(tmp_path: Path) -> None:
    path = tmp_path / "env" / "c.env"
    write_env_file(path, {"WALLETFS_TOKEN": "s3cret", "POD_IP": "127.1.0.5"})
    assert path.read_text() == "WALLETFS_TOKEN=s3cret\nPOD_IP=127.1.0.5\n"
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeError, match="newline"):
        write_env_file(path, {"KEY": "two\nlines"})


# --- which files a container of an image runs as a local process (process mode) ---------------------
@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An image cache of the test's own, with the root filesystem of wallet-rpc 1.2.3.4 exported."""
    monkeypatch.setenv("XMR_ESCROW_IMAGES", str(tmp_path))
    tree = tmp_path / "rootfs" / "wallet-rpc-1.2.3.4"
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "usr" / "bin" / "monero-wallet-rpc").write_bytes(b"")
    return tree


def test_a_wallet_rpc_image_runs_its_own_exported_binary(images: Path) -> None:
    argv = process_argv("localhost/xmr-escrow/wallet-rpc:1.2.3.4", None)
    assert argv[-1] == f"{images}/usr/bin/monero-wallet-rpc"
    assert argv[0] == f"{images}/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"


def test_a_wallet_rpc_image_never_made_is_not_present_and_no_host_binary_stands_in(images: Path) -> None:
    with pytest.raises(ImageNotPresent, match=r'"xmr-escrow/wallet-rpc:0.1.0.0" is not present.*make images'):
        process_argv("xmr-escrow/wallet-rpc:0.1.0.0", None)
    with pytest.raises(RuntimeError, match="executable file 'monerod' not found"):
        process_argv("xmr-escrow/wallet-rpc:1.2.3.4", ["monerod"])


@pytest.mark.parametrize(
    ("image", "command", "argv"),
    [
        ("xmr-escrow/operator:0.1.0", None, ["escrow-operator"]),
        ("xmr-escrow/operator:0.1.0-debian", ["escrow-operator", "walletfs"], ["escrow-operator", "walletfs"]),
        (HOST_IMAGE, ["monerod", "--regtest"], ["monerod", "--regtest"]),
    ],
)
def test_the_operator_runs_from_this_checkout_and_the_host_image_runs_host_commands(
    images: Path, image: str, command: list[str] | None, argv: list[str]
) -> None:
    assert process_argv(image, command) == argv


@pytest.mark.parametrize("image", ["busybox", "registry.invalid/never:1", "monero-wallet-rpc"])
def test_any_other_image_is_not_present(images: Path, image: str) -> None:
    with pytest.raises(ImageNotPresent):
        process_argv(image, ["sh"])

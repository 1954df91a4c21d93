"""The images ``make images`` builds, checked with podman: who they run as, what they hold, their labels.

Each image runs with ``--read-only --network=none`` doing its real job; the distroless operator has no
shell and no package manager, the wallet-rpc images no monerod; the labels record the project version,
the commit and, on wallet-rpc, the pinned monero versions. Missing images fail the module (``make images``).
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
from typing import Any

import pytest

from tests.support.images import (
    ALL_IMAGES,
    MONERO_DEB_VERSIONS,
    OPERATOR,
    OPERATOR_DEBIAN,
    OPERATOR_IMAGES,
    VERSION,
    WALLET_RPC,
    podman,
    require_images,
)

pytestmark = pytest.mark.integration

#: An executable that is not there: runc's error, podman's exit code 127 ("command not found").
NOT_FOUND = 127
#: What the distroless image must not have, with arguments that would succeed if it did.
ABSENT_FROM_DISTROLESS = {
    "/bin/sh": ["-c", "true"],
    "/usr/bin/apt-get": ["--version"],
    "/usr/bin/dpkg": ["--version"],
    "/usr/bin/pip": ["--version"],
}


@pytest.fixture(scope="module", autouse=True)
def images() -> None:
    require_images()


def run(image: str, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    """The image run as it is configured (its user), on a read-only root filesystem, without a network."""
    options = ["--rm", "--read-only", "--network=none"]
    if entrypoint is not None:
        options.append(f"--entrypoint={entrypoint}")
    return podman("run", *options, image, *args)


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"{shlex.join(result.args)} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"


def assert_not_found(result: subprocess.CompletedProcess[str], path: str) -> None:
    """The run failed because ``path`` does not exist in the image, and for no other reason."""
    assert result.returncode == NOT_FOUND, explain(result)
    assert f"{path}: no such file or directory" in result.stderr, explain(result)


@functools.cache
def config(image: str) -> dict[str, Any]:
    result = podman("image", "inspect", image)
    assert result.returncode == 0, explain(result)
    found: dict[str, Any] = json.loads(result.stdout)[0]["Config"]
    return found


def labels(image: str) -> dict[str, str]:
    return config(image).get("Labels") or {}


@pytest.mark.parametrize("image", ALL_IMAGES)
def test_configured_user_is_not_root(image: str) -> None:
    user = config(image).get("User", "")
    name, _, group = user.partition(":")
    assert name not in ("", "0", "root"), f"{image} runs as {user!r}"
    assert group not in ("0", "root"), f"{image} runs in group {user!r}"


@pytest.mark.parametrize("monero", WALLET_RPC)
def test_wallet_rpc_reports_its_version(monero: str) -> None:
    result = run(WALLET_RPC[monero], "--version")
    assert result.returncode == 0, explain(result)
    assert f"(v{monero}-" in result.stdout, explain(result)


@pytest.mark.parametrize("image", OPERATOR_IMAGES)
def test_operator_prints_the_crds(image: str) -> None:
    result = run(image, "crds")
    assert result.returncode == 0, explain(result)
    assert "kind: CustomResourceDefinition" in result.stdout, explain(result)


@pytest.mark.parametrize("image", OPERATOR_IMAGES)
def test_operator_walletfs_help(image: str) -> None:
    result = run(image, "walletfs", "--help")
    assert result.returncode == 0, explain(result)


@pytest.mark.parametrize("path", ABSENT_FROM_DISTROLESS)
def test_distroless_operator_has_no_shell_or_package_manager(path: str) -> None:
    assert_not_found(run(OPERATOR, *ABSENT_FROM_DISTROLESS[path], entrypoint=path), path)


@pytest.mark.parametrize("path", ["/bin/sh", "/usr/bin/apt-get", "/usr/bin/dpkg"])
def test_debian_operator_has_them(path: str) -> None:
    """The control: the same runs succeed on the debian image, so the distroless failures are the files' absence."""
    result = run(OPERATOR_DEBIAN, *ABSENT_FROM_DISTROLESS[path], entrypoint=path)
    assert result.returncode == 0, explain(result)


def test_distroless_operator_venv_has_no_pip() -> None:
    result = run(OPERATOR, "-m", "pip", "--version", entrypoint="/opt/escrow-operator/bin/python")
    assert result.returncode == 1, explain(result)
    assert "No module named pip" in result.stderr, explain(result)


@pytest.mark.parametrize("monero", WALLET_RPC)
def test_wallet_rpc_has_no_monerod(monero: str) -> None:
    image = WALLET_RPC[monero]
    assert_not_found(run(image, "--version", entrypoint="/usr/bin/monerod"), "/usr/bin/monerod")
    listing = run(
        image, "-c", "ls /usr/bin /usr/local/bin /usr/sbin /usr/local/sbin | grep monero", entrypoint="/bin/sh"
    )
    assert listing.returncode == 0, explain(listing)
    assert listing.stdout.split() == ["monero-wallet-rpc"], explain(listing)


@pytest.mark.parametrize("monero", WALLET_RPC)
def test_wallet_rpc_labels_record_the_pinned_monero(monero: str) -> None:
    image = WALLET_RPC[monero]
    assert labels(image).get("dev.xmrescrow.monero.version") == monero, labels(image)
    assert labels(image).get("dev.xmrescrow.monero.deb-version") == MONERO_DEB_VERSIONS[monero], labels(image)
    installed = run(image, "-W", "-f=${Version}", "monero", entrypoint="/usr/bin/dpkg-query")
    assert installed.returncode == 0, explain(installed)
    assert installed.stdout == MONERO_DEB_VERSIONS[monero], explain(installed)


@pytest.mark.parametrize("image", ALL_IMAGES)
def test_revision_label_is_a_commit(image: str) -> None:
    revision = labels(image).get("org.opencontainers.image.revision", "")
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", revision), f"{image}: revision {revision!r}"


@pytest.mark.parametrize("image", OPERATOR_IMAGES)
def test_operator_version_label_is_the_project_version(image: str) -> None:
    assert labels(image).get("org.opencontainers.image.version") == VERSION, labels(image)

"""The images ``make images`` (hack/images.sh) builds, and podman run as that script runs it.

References are short names (``xmr-escrow/...``), as the chart and the CRD name them; podman finds them
among its local images (``localhost/xmr-escrow/...``). The wallet-rpc versions and their pinned Debian
package versions are those of ``WALLET_RPC`` in hack/images.sh.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hack.devcluster.podman import control

ROOT = Path(__file__).resolve().parents[2]


def project_version() -> str:
    """The project's version: the first ``version = "..."`` line of pyproject.toml (as hack/images.sh reads it)."""
    match = re.search(r'^version = "(.*)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError("pyproject.toml has no version line")
    return match.group(1)


VERSION = project_version()
#: The operator, distroless (the default target): no shell, no package manager.
OPERATOR = f"xmr-escrow/operator:{VERSION}"
#: The operator on Debian slim, with a shell (``--target debian``).
OPERATOR_DEBIAN = f"xmr-escrow/operator:{VERSION}-debian"
#: Monero version -> the Debian package version of ``monero`` its image is pinned to.
MONERO_DEB_VERSIONS = {
    "0.18.0.0": "0.18.0.0+~0+20200826-1+deb12u1",  # bookworm
    "0.18.4.0": "0.18.4.0+~0+20200826-1",  # trixie
}
#: Monero version -> its wallet-rpc image.
WALLET_RPC = {monero: f"xmr-escrow/wallet-rpc:{monero}" for monero in MONERO_DEB_VERSIONS}
#: The CRD's default wallet-rpc image (trixie's 0.18.4.0).
WALLET_RPC_DEFAULT = WALLET_RPC["0.18.4.0"]
#: The previous default (bookworm's 0.18.0.0), still supported.
WALLET_RPC_PREVIOUS = WALLET_RPC["0.18.0.0"]
OPERATOR_IMAGES = (OPERATOR, OPERATOR_DEBIAN)
ALL_IMAGES = (*OPERATOR_IMAGES, *WALLET_RPC.values())


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` as the dev cluster runs it (the containers.conf of hack/images.sh), output captured
    as text; the exit code is the caller's to check."""
    return control(*args, timeout=timeout)


def missing_images(images: tuple[str, ...] = ALL_IMAGES) -> list[str]:
    """The images of ``images`` podman does not have (all of them when podman is not installed)."""
    if shutil.which("podman") is None:
        return list(images)
    return [image for image in images if podman("image", "exists", image).returncode != 0]


def require_images(images: tuple[str, ...] = ALL_IMAGES) -> None:
    """Fail (not skip) the calling test when an image is missing: `make images` builds them."""
    missing = missing_images(images)
    if missing:
        pytest.fail(f"images missing: {', '.join(missing)}; run `make images` (hack/images.sh) first", pytrace=False)

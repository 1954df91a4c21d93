"""The process kubelet's container mode: a pod's container run from its image under podman.

``run_argv`` turns a container of a pod spec into ``podman run`` (pure: tested without podman). The
container runs in the host's network namespace, so it listens on the pod's own loopback address as
the process mode's pods do; its volumes are bind mounts of the kubelet's volume directories, its
environment is passed in a file (never on a command line, where any user could read a Secret), and
the pod's and container's ``securityContext`` become podman's user, groups, capabilities and
read-only root filesystem, as a container runtime applies them in a cluster.

podman runs with runc and ulimits within the hard limits, through the ``containers.conf`` that
``make images`` writes (``CONTAINERS_CONF``); the host's ``/etc/containers`` is never read for that.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controlplane import cache_root

#: Every container of a dev cluster carries this label with the cluster's kubelet root (a digest),
#: so the kubelet removes what a crashed predecessor left running.
CLUSTER_LABEL = "xmrescrow.dev/devcluster"
POD_LABEL = "xmrescrow.dev/pod-uid"


def cache_dir() -> Path:
    """Where ``make images`` keeps its state (containers.conf, the exported root filesystems).

    ``XMR_ESCROW_IMAGES`` names an image cache of its own, with a podman storage of its own in it
    (``storage.conf``): a machine on which no image was ever built, as a newcomer's is."""
    if own := os.environ.get("XMR_ESCROW_IMAGES"):
        return Path(own)
    return cache_root() / "images"


#: The image of the dev cluster's own test-ground pods that run a command of the host (the regtest
#: monerod: Debian's monero package ships it, the wallet-rpc image leaves it out). The process kubelet
#: runs no host binary for any other image.
HOST_IMAGE = "devcluster.xmrescrow.dev/host:latest"

#: ``make images`` exports each wallet-rpc image's root filesystem here (``wallet-rpc-<version>``), so
#: the process mode runs the image's own binary and libraries, not the host's.
_WALLET_RPC_TAG = re.compile(r"(?:^|/)wallet-rpc:(?P<version>[0-9][0-9.]*)$")
_OPERATOR_IMAGE = re.compile(r"(?:^|/)operator(?::[^/]*)?$")


class ImageNotPresent(Exception):
    """The node has no copy of the image (the kubelet's ``ErrImageNeverPull``): ``make images`` makes it."""

    reason = "ErrImageNeverPull"


def wallet_rpc_tree(image: str) -> Path | None:
    """The exported root filesystem of a wallet-rpc image, when ``make images`` made one."""
    match = _WALLET_RPC_TAG.search(image or "")
    if match is None:
        return None
    tree = cache_dir() / "rootfs" / f"wallet-rpc-{match['version']}"
    return tree if (tree / "usr" / "bin" / "monero-wallet-rpc").is_file() else None


def loader_argv(tree: Path, binary: str) -> list[str]:
    """Run ``binary`` of another root filesystem with that tree's dynamic loader and libraries (no
    chroot: the process keeps the host's paths, so the pod's volumes stay where the kubelet put them)."""
    libs = tree / "usr" / "lib" / "x86_64-linux-gnu"
    return [str(libs / "ld-linux-x86-64.so.2"), "--library-path", str(libs), str(tree) + binary]


def wallet_rpc_argv(image: str) -> list[str] | None:
    """monero-wallet-rpc of ``image``'s exported root filesystem (None: ``make images`` made none)."""
    tree = wallet_rpc_tree(image)
    return None if tree is None else loader_argv(tree, "/usr/bin/monero-wallet-rpc")


def not_present(image: str) -> ImageNotPresent:
    return ImageNotPresent(
        f'Container image "{image}" is not present on the dev cluster\'s node: build it with `make images` '
        "(the process kubelet runs an image's own files and never pulls)"
    )


def process_argv(image: str, command: list[str] | None) -> list[str]:
    """The command line that runs a container of ``image`` as a local process, from the image's own
    files: a wallet-rpc image from the root filesystem ``make images`` exported (its entrypoint, or the
    command found in its ``/usr/bin``), the operator image from this checkout (the files it is built
    from), :data:`HOST_IMAGE` from the host. Any other image, or a wallet-rpc image not exported yet,
    raises :class:`ImageNotPresent`: no other binary ever stands in for an image's."""
    if _WALLET_RPC_TAG.search(image or ""):
        tree = wallet_rpc_tree(image)
        if tree is None:
            raise not_present(image)
        if not command:
            return loader_argv(tree, "/usr/bin/monero-wallet-rpc")
        binary = "/usr/bin/" + command[0].rsplit("/", 1)[-1]
        if not (tree / binary.lstrip("/")).is_file():
            raise RuntimeError(f"executable file {command[0]!r} not found in image {image!r}")
        return [*loader_argv(tree, binary), *command[1:]]
    if _OPERATOR_IMAGE.search(image or ""):
        return list(command or ["escrow-operator"])
    if (image or "").split(":", 1)[0] == HOST_IMAGE.split(":", 1)[0]:
        if not command:
            raise RuntimeError(f"a container of {HOST_IMAGE} needs a command (a program of the host)")
        return list(command)
    raise not_present(image)


def environment() -> dict[str, str]:
    """The environment podman runs with: the caller's, with the containers.conf of ``make images`` (and
    the storage.conf of an image cache of its own)."""
    env = dict(os.environ)
    for var, name in (("CONTAINERS_CONF", "containers.conf"), ("CONTAINERS_STORAGE_CONF", "storage.conf")):
        conf = cache_dir() / name
        if var not in env and conf.exists():
            env[var] = str(conf)
    return env


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Security:
    """What the pod's and the container's securityContext ask of the runtime (the container's wins)."""

    user: int | None = None
    group: int | None = None
    fs_group: int | None = None
    supplemental: tuple[int, ...] = ()
    read_only_root: bool = False
    run_as_non_root: bool = False
    no_new_privileges: bool = False
    drop: tuple[str, ...] = ()
    add: tuple[str, ...] = ()

    @classmethod
    def of(cls, pod: Any, container: Any) -> Security:
        """From the client's V1PodSecurityContext and V1SecurityContext (either may be None)."""
        p, c = pod or _Empty(), container or _Empty()

        def pick(name: str) -> Any:
            value = getattr(c, name, None)
            return getattr(p, name, None) if value is None else value

        caps = getattr(c, "capabilities", None) or _Empty()
        return cls(
            user=pick("run_as_user"),
            group=pick("run_as_group"),
            fs_group=getattr(p, "fs_group", None),
            supplemental=tuple(getattr(p, "supplemental_groups", None) or ()),
            read_only_root=bool(getattr(c, "read_only_root_filesystem", False)),
            run_as_non_root=bool(pick("run_as_non_root")),
            no_new_privileges=getattr(c, "allow_privilege_escalation", None) is False,
            drop=tuple(getattr(caps, "drop", None) or ()),
            add=tuple(getattr(caps, "add", None) or ()),
        )


class _Empty:
    pass


def check(security: Security, image_user: str) -> None:
    """The kubelet's runAsNonRoot check: refuse to start a container that would run as root."""
    if not security.run_as_non_root:
        return
    if security.user is not None:
        if security.user == 0:
            raise RuntimeError("container's runAsUser breaks non-root policy (runAsUser=0)")
        return
    name = image_user.split(":", 1)[0]
    if not name.isdigit():
        raise RuntimeError(f"container has runAsNonRoot and image has non-numeric user ({name or 'root'})")
    if int(name) == 0:
        raise RuntimeError("container has runAsNonRoot and image will run as root")


def run_argv(
    *,
    name: str,
    image: str,
    command: list[str] | None,
    args: list[str] | None,
    env_file: Path,
    mounts: list[Mount],
    security: Security,
    working_dir: str | None,
    labels: dict[str, str],
) -> list[str]:
    """``podman run`` for one container, attached (its output is the container's log)."""
    argv = ["podman", "run", "--rm", "--replace", "--name", name, "--pull=never", "--network=host"]
    argv += ["--env-file", str(env_file)]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    if security.user is not None or security.group is not None:
        user = "" if security.user is None else str(security.user)
        argv += ["--user", user + ("" if security.group is None else f":{security.group}")]
    for group in ([security.fs_group] if security.fs_group is not None else []) + list(security.supplemental):
        argv += ["--group-add", str(group)]
    if security.read_only_root:
        # Kubernetes mounts nothing writable the pod did not ask for (podman would add tmpfs on /tmp).
        argv += ["--read-only", "--read-only-tmpfs=false"]
    if security.no_new_privileges:
        argv += ["--security-opt", "no-new-privileges"]
    for cap in security.drop:
        argv += ["--cap-drop", cap]
    for cap in security.add:
        argv += ["--cap-add", cap]
    for m in mounts:
        argv += ["--volume", f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}"]
    if working_dir:
        argv += ["--workdir", working_dir]
    if command:
        argv += ["--entrypoint", json.dumps(command)]
        # Kubernetes: a command without args runs no image CMD (podman keeps none with --entrypoint).
    argv.append(image)
    argv += list(args or [])
    return argv


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """The container's environment for ``--env-file``, readable by root only."""
    for key, value in env.items():
        if "\n" in value or "\n" in key:
            raise RuntimeError(f"environment variable {key!r} holds a newline, which podman's --env-file cannot carry")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{k}={v}\n" for k, v in env.items())
    tmp.replace(path)


def image_user(image: str) -> str:
    """The image's configured USER ("" for root by default)."""
    done = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Config.User}}", image],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise not_present(image)
    return done.stdout.strip()


def control(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Another podman command (stop, kill, exec, rm), its output captured."""
    return subprocess.run(["podman", *args], env=environment(), capture_output=True, text=True, timeout=timeout)


def remove_labelled(label: str) -> None:
    """Remove every container carrying ``label`` (key=value), running or not."""
    listed = control("ps", "--all", "--quiet", "--filter", f"label={label}")
    ids = listed.stdout.split()
    if ids:
        control("rm", "--force", "--time", "0", *ids, timeout=120)

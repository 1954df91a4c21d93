"""What GitOps tools say about Escrows and WalletPools, from the tools' own status code.

:func:`verdicts` runs ``gitops-verdict`` (hack/gitops-verdict, built by ``make tools`` into the tool
cache next to helm and kind) on objects: kstatus's ``status.Compute`` (sigs.k8s.io/cli-utils, what
Flux's health checks and kpt run) and the Argo CD health checks of docs/install.md, executed in
gopher-lua the way Argo CD executes them. Objects are plain dicts, as the API returns them::

    from tests.support.gitops import verdicts

    [v] = verdicts([custom_objects(api).get_namespaced_custom_object(GROUP, VERSION, ns, ESCROW_PLURAL, name)])
    assert (v.kstatus, v.argo) == ("Current", "Healthy")
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hack.devcluster import bin_dir

ROOT = Path(__file__).resolve().parents[2]
INSTALL_MD = ROOT / "docs" / "install.md"
TOOL = "gitops-verdict"
#: The tool's sources; hack/build-tools.sh stamps the binary with a hash of these files, in this order.
SOURCES = [ROOT / "hack" / TOOL / name for name in ("go.mod", "go.sum", "main.go")]

#: kstatus's statuses (NotFound comes from its poller, never from Compute on an object).
KSTATUS = frozenset({"InProgress", "Current", "Failed", "Terminating", "NotFound", "Unknown"})
#: Argo CD's health codes.
ARGO = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})


class GitOpsToolError(RuntimeError):
    """The tool is missing or out of date, or it refused the input or a health check."""


@dataclass(frozen=True)
class Verdict:
    """What kstatus and Argo CD say about one object."""

    kstatus: str  # InProgress | Current | Failed | Terminating | ...
    kstatus_message: str
    argo: str  # Healthy | Progressing | Degraded | Suspended | Missing | Unknown
    argo_message: str

    @property
    def pair(self) -> tuple[str, str]:
        """``(kstatus, argo)``, for compact assertions."""
        return (self.kstatus, self.argo)


def source_hash() -> str:
    """The stamp hack/build-tools.sh writes for a binary built from the current sources."""
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.read_bytes())
    return "src-" + digest.hexdigest()[:16]


def tool_binary() -> Path:
    """The built tool; an error saying what to run when it is missing or older than its sources."""
    path = bin_dir() / TOOL
    if not os.access(path, os.X_OK):
        raise GitOpsToolError(f"{TOOL} is not built ({path} is missing): run make tools (hack/build-tools.sh)")
    stamp = bin_dir().parent / "src" / TOOL / "VERSION"
    built = stamp.read_text().strip() if stamp.is_file() else "(no stamp)"
    if built != source_hash():
        raise GitOpsToolError(
            f"{path} was built from other sources than hack/{TOOL} ({built}, sources {source_hash()}): run make tools"
        )
    return path


def verdicts(
    objs: Sequence[Mapping[str, Any]], *, kind: str | None = None, install_md: Path = INSTALL_MD
) -> list[Verdict]:
    """kstatus's and Argo CD's verdict on each object, in order.

    The Argo CD health check is the one docs/install.md (or ``install_md``) gives the object's
    group and kind; ``kind`` ("Escrow", "WalletPool" or "xmrescrow.dev/Escrow") picks it for objects
    without their own ``apiVersion``/``kind``.
    """
    if not objs:
        return []
    doc: dict[str, Any] = {"objects": list(objs)}
    if kind is not None:
        doc["kind"] = kind
    out = subprocess.run(
        [str(tool_binary()), "-install-md", str(install_md)],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise GitOpsToolError(f"{TOOL} failed ({out.returncode}): {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if len(lines) != len(objs):
        raise GitOpsToolError(f"{TOOL} printed {len(lines)} verdicts for {len(objs)} objects:\n{out.stdout}")
    result = []
    for line in lines:
        v = json.loads(line)
        result.append(Verdict(v["kstatus"], v["kstatusMessage"], v["argo"], v["argoMessage"]))
    return result


def verdict(obj: Mapping[str, Any], *, kind: str | None = None, install_md: Path = INSTALL_MD) -> Verdict:
    """The verdict on one object."""
    [v] = verdicts([obj], kind=kind, install_md=install_md)
    return v

"""Commands the tests run (helm, kubectl, kustomize, scripts): checked, their output in the failure."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any


def checked(
    argv: list[Any], *, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; a failure names the command and shows what it printed."""
    out = subprocess.run([str(a) for a in argv], input=input, capture_output=True, text=True, env=env, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, argv))} failed ({out.returncode}):\n{out.stderr}\n{out.stdout}"
    return out


def helm_environment(home: Path) -> dict[str, str]:
    """The environment with helm's caches and config under ``home``, not the user's."""
    return {**os.environ, **{f"HELM_{kind}_HOME": str(home / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}}

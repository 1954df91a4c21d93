"""Run the operator as a real process against the test ground, and read what it logged."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from escrow_operator.kube import metadata

from .kube import wait_for

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"


def install_crds(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    import yaml

    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = ext.read_custom_resource_definition(crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = metadata(current).resource_version
            ext.replace_custom_resource_definition(crd["metadata"]["name"], crd)
        wait_for(
            ext.list_custom_resource_definition,
            lambda c: any(x.type == "Established" and x.status == "True" for x in (c.status.conditions or [])),
            field_selector=f"metadata.name={crd['metadata']['name']}",
            what=f"CRD {crd['metadata']['name']} established",
        )


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    #: ESCROW_METRICS_PORT: 0 (the default) serves no metrics, so parallel operators never collide.
    metrics_port: int = 0

    def start(self) -> OperatorProcess:
        env = dict(os.environ)
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "ESCROW_METRICS_PORT": str(self.metrics_port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.env)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "escrow_operator", "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def metrics_url(self) -> str:
        """Where this operator serves /metrics and /healthz (needs a metrics_port)."""
        assert self.metrics_port, "started without a metrics_port"
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log_count(self, text: str, count: int, since: int = 0, timeout: float = 60) -> str:
        """Wait until ``text`` occurs ``count`` times in the log after offset ``since``; returns that part.

        kopf logs a handler's outcome after the handler's own effects (an Event, an object) are visible,
        so a test that saw the effects waits here for the line (polling a file, like :meth:`wait_log`)."""
        deadline = time.monotonic() + timeout
        while (log := self.log[since:]).count(text) < count and time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"the operator exited:\n{self.log[-3000:]}"
            time.sleep(0.1)
        return log

    def wait_log(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        """Wait for a line in the operator's log (polling a file: it signals nothing else)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.log):
                return m
            assert self.proc is not None and self.proc.poll() is None, f"the operator exited:\n{self.log[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{self.log[-3000:]}")

"""The process kubelet: runs the dev cluster's pods as local processes.

It registers one Node, binds unscheduled pods to it, and runs each container's command as a
process. Every pod gets a loopback address of its own (127.0.x.y, never reused while the kubelet's
root lives), so all pods listen on the same ports as they would in a cluster. Volumes become
directories under the kubelet's root; a PersistentVolumeClaim of the ``devcluster`` StorageClass is
provisioned as a host directory (a real PersistentVolume, bound by the real binder), so all pods
of a pool share one directory, as they share a ReadWriteMany claim in a cluster. Paths that name a
volume's mountPath in a container's command, args or env are rewritten to that directory.

It reports phase, podIP, the Ready condition from the pod's own readiness probe (httpGet,
tcpSocket, exec), container restarts, restarts crashed containers per restartPolicy, honours
liveness probes, and stops the processes when the pod is deleted.

Container mode: the pods of a namespace labelled ``devcluster.xmrescrow.dev/runtime=podman`` (or
every pod, with ``DEVCLUSTER_RUNTIME=podman`` in the kubelet's environment) run each container from
its image under podman (:mod:`.podman`), with the pod's command, args, env, volumes mounted at their
mountPaths, securityContext and address, so a chart's pods run as a cluster would run them: the
operator as its Deployment's pod with in-cluster config (the ServiceAccount token projected by
TokenRequest, ``KUBERNETES_SERVICE_HOST`` naming the apiserver). The process mode stays the default.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from . import podman
from .procs import pdeathsig_preexec

log = logging.getLogger("kubelet")

NODE = "devcluster"
STORAGE_CLASS = "devcluster"
PROVISIONER = "xmrescrow.dev/devcluster-hostpath"
MERGE = "application/merge-patch+json"
#: A namespace label choosing how its pods run: "process" (the default) or "podman" (container mode).
RUNTIME_LABEL = "devcluster.xmrescrow.dev/runtime"
RUNTIMES = ("process", "podman")
#: The kubelet's crash-loop back-off (its defaults): a container that exits is restarted at once the
#: first time, then after 10 s, 20 s, ... at most 5 minutes; ten quiet minutes start it over.
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
#: How often a container whose image is not present looks for it again (``make images`` may make it).
IMAGE_RECHECK = 5.0
#: FallbackToLogsOnError: the tail of a failed container's log becomes its termination message.
TERMINATION_LINES = 80
TERMINATION_BYTES = 2048


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


T = TypeVar("T")


def present(value: T | None, what: str) -> T:
    """A field the apiserver always fills in, which the client's models declare optional."""
    if value is None:
        raise RuntimeError(f"the apiserver sent no {what}")
    return value


class _Object(Protocol):
    @property
    def metadata(self) -> client.V1ObjectMeta | None: ...


def meta(obj: _Object) -> client.V1ObjectMeta:
    return present(obj.metadata, "metadata")


def uid_of(obj: _Object) -> str:
    return present(meta(obj).uid, "uid")


def identity(obj: _Object) -> tuple[str, str, str]:
    """The namespace, name and uid of a namespaced object."""
    m = meta(obj)
    return present(m.namespace, "namespace"), present(m.name, "name"), present(m.uid, "uid")


class IpAllocator:
    """Loopback addresses of one /16 (127.N.0.1 onwards), handed out once each (persisted), so none is
    reused; each dev cluster has its own N, so clusters running side by side never share an address."""

    def __init__(self, state: Path, octet: int) -> None:
        if not 1 <= octet <= 254:
            raise ValueError(f"the pods' /16 must be 127.N.0.0 with N in 1..254, not {octet}")
        self.state = state
        self.lock = threading.Lock()
        self.first = int(ipaddress.ip_address(f"127.{octet}.0.1"))
        self.last = int(ipaddress.ip_address(f"127.{octet}.255.254"))
        self.next = int(state.read_text()) if state.exists() else self.first

    def allocate(self) -> str:
        with self.lock:
            addr = ipaddress.ip_address(self.next)
            while addr.packed[3] in (0, 255):
                addr += 1
            if int(addr) > self.last:
                raise RuntimeError("loopback addresses exhausted; restart the dev cluster with a fresh state dir")
            self.next = int(addr) + 1
            self.state.write_text(str(self.next))
            return str(addr)


@dataclass
class Probe:
    spec: Any  # V1Probe
    failures: int = 0
    successes: int = 0
    next_at: float = 0.0

    @property
    def period(self) -> float:
        return float(self.spec.period_seconds or 10)


@dataclass
class Container:
    spec: Any  # V1Container
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    proc: subprocess.Popen | None = None
    restarts: int = 0
    ready: bool = False
    started_at: str | None = None
    last_terminated: dict | None = None
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    restart_at: float | None = None
    #: the crash-loop back-off: the delay before the next restart of a failing container, and when it
    #: last grew (None: no failure in the last ten minutes)
    backoff: float | None = None
    backoff_updated: float = 0.0
    finished_at: float = 0.0  # monotonic time of the last exit
    log_offset: int = 0  # where this run's output starts in the container's log
    #: the image is not present: the container waits for it (no restart is counted)
    image_missing: bool = False
    readiness: Probe | None = None
    liveness: Probe | None = None
    #: Container mode: the podman container's name (the process is podman's attached client).
    podman_name: str | None = None


class PodRunner:
    """Runs one pod: one thread that starts, watches, probes and restarts its containers."""

    def __init__(self, kubelet: ProcessKubelet, pod: client.V1Pod) -> None:
        self.kubelet = kubelet
        self.pod = pod
        self.spec = present(pod.spec, "pod spec")
        self.namespace, self.name, self.uid = identity(pod)
        self.dir = kubelet.root / "pods" / self.uid
        self.events: queue.Queue[tuple] = queue.Queue()
        self.containers = [Container(spec=c) for c in self.spec.containers]
        self.ip: str | None = None
        self.containerized = False
        #: Each volume's directory on the host, and whether its kind is mounted read-only (Secrets ...).
        self.volumes: dict[str, tuple[str, bool]] = {}
        self.mounts: dict[str, str] = {}  # each mountPath's host directory
        self.start_time = now()
        self.transitions: dict[str, tuple[str, str]] = {}
        self.stopped = threading.Event()
        self.unreported = False
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.namespace}/{self.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def terminate(self, grace: float) -> None:
        self.events.put(("terminate", grace))

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    # --- the pod's thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.ip = self.kubelet.ips.allocate()
            self.containerized = self.kubelet.runtime_of(self.namespace) == "podman"
            self.mounts = self._prepare_volumes()
            for c in self.containers:
                self._start(c)
            self._report()
            self._loop()
        except _Terminate as t:
            self._stop_all(t.grace)
        except Exception as exc:  # the pod cannot run here: say why in its status
            log.exception("pod %s/%s failed", self.namespace, self.name)
            for c in self.containers:
                c.waiting = ("CreateContainerError", str(exc)[:500])
            self._report()
            self._wait_for_termination()
        finally:
            self.stopped.set()

    def _wait_for_termination(self) -> None:
        while True:
            event = self.events.get()
            if event[0] == "terminate":
                self._stop_all(event[1])
                return

    def _loop(self) -> None:
        while True:
            timeout = self._next_deadline() - time.monotonic()
            try:
                event = self.events.get(timeout=max(0.0, timeout))
            except queue.Empty:
                event = ("tick",)
            changed = False
            if event[0] == "terminate":
                raise _Terminate(event[1])
            if event[0] == "exited":
                changed |= self._on_exit(event[1], event[2])
            changed |= self._restart_due()
            changed |= self._probe_due()
            if changed or self.unreported:
                self._report()

    def _next_deadline(self) -> float:
        times = [time.monotonic() + (1 if self.unreported else 30)]
        for c in self.containers:
            if c.restart_at is not None:
                times.append(c.restart_at)
            for probe in (c.readiness, c.liveness):
                if probe and c.proc and c.proc.poll() is None:
                    times.append(probe.next_at)
        return min(times)

    # --- containers ---------------------------------------------------------------------------
    def _prepare_container(self, c: Container, mounts: dict[str, str]) -> None:
        spec = c.spec
        env: dict[str, str] = {"HOSTNAME": self.name}
        home = self.dir / "home" / spec.name
        home.mkdir(parents=True, exist_ok=True)
        if self.containerized:
            mounts = {}  # the volumes are mounted where the pod says: no path is rewritten
            env.update(self.kubelet.service_env())  # in-cluster config finds the apiserver
        else:
            env.update({"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)})
        for source in spec.env_from or []:
            if source.secret_ref:
                data = self.kubelet.secret(self.namespace, source.secret_ref.name)
            elif source.config_map_ref:
                data = self.kubelet.config_map(self.namespace, source.config_map_ref.name)
            else:
                continue
            env.update({(source.prefix or "") + k: v for k, v in data.items()})
        for var in spec.env or []:
            env[var.name] = _rewrite(_expand(self._env_value(var), env), mounts)
        if self.containerized:
            self._prepare_podman(c, env, home)
        else:
            command = podman.process_argv(spec.image, spec.command)
            c.argv = [_rewrite(_expand(a, env), mounts) for a in command + (spec.args or [])]
            c.env = env
            c.cwd = _rewrite(spec.working_dir, mounts) if spec.working_dir else str(home)
        if spec.readiness_probe:
            c.readiness = Probe(spec.readiness_probe)
        if spec.liveness_probe:
            c.liveness = Probe(spec.liveness_probe)

    def _prepare_podman(self, c: Container, env: dict[str, str], home: Path) -> None:
        spec = c.spec
        security = podman.Security.of(self.spec.security_context, spec.security_context)
        podman.check(security, podman.image_user(spec.image))
        mounts = []
        for m in spec.volume_mounts or []:
            source, read_only = self.volumes[m.name]
            if m.sub_path:
                source = os.path.join(source, m.sub_path)
            mounts.append(podman.Mount(source, m.mount_path, read_only or bool(m.read_only)))
        env_file = self.dir / "env" / f"{spec.name}.env"
        podman.write_env_file(env_file, env)
        c.podman_name = f"dc-{self.uid[:13]}-{spec.name}"
        c.argv = podman.run_argv(
            name=c.podman_name,
            image=spec.image,
            command=[_expand(a, env) for a in spec.command] if spec.command else None,
            args=[_expand(a, env) for a in spec.args] if spec.args else None,
            env_file=env_file,
            mounts=mounts,
            security=security,
            working_dir=spec.working_dir,
            labels={podman.CLUSTER_LABEL: self.kubelet.cluster_id, podman.POD_LABEL: self.uid},
        )
        c.env = podman.environment()
        c.cwd = str(home)

    def _env_value(self, var: Any) -> str:
        if var.value_from is None:
            return var.value or ""
        ref = var.value_from
        if ref.field_ref:
            fields = {
                "status.podIP": self.ip,
                "status.podIPs": self.ip,
                "status.hostIP": "127.0.0.1",
                "metadata.name": self.name,
                "metadata.namespace": self.namespace,
                "metadata.uid": self.uid,
                "spec.nodeName": NODE,
                "spec.serviceAccountName": self.spec.service_account_name or "default",
            }
            return fields.get(ref.field_ref.field_path, "") or ""
        if ref.secret_key_ref:
            data = self.kubelet.secret(self.namespace, ref.secret_key_ref.name)
            return data.get(ref.secret_key_ref.key, "")
        if ref.config_map_key_ref:
            data = self.kubelet.config_map(self.namespace, ref.config_map_key_ref.name)
            return data.get(ref.config_map_key_ref.key, "")
        return ""

    def _start(self, c: Container) -> None:
        if not c.argv:
            try:
                self._prepare_container(c, self.mounts)
            except podman.ImageNotPresent as exc:  # as ErrImageNeverPull: wait for the image, look again
                c.waiting, c.image_missing = (exc.reason, str(exc)), True
                c.restart_at = time.monotonic() + IMAGE_RECHECK
                return
            c.image_missing = False
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            with open(logs / f"{c.spec.name}.log", "ab") as out:
                c.log_offset = out.tell()
                proc = subprocess.Popen(
                    c.argv,
                    env=c.env,
                    cwd=c.cwd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=pdeathsig_preexec,  # dies with this thread: no process outlives its pod
                )
        except OSError as exc:
            c.waiting = ("RunContainerError", f"cannot start {c.argv[0]!r}: {exc}")
            c.finished_at = time.monotonic()
            self._schedule_restart(c)
            return
        c.proc, c.waiting, c.ready, c.restart_at = proc, None, False, None
        c.started_at = now()
        for probe in (c.readiness, c.liveness):
            if probe:
                probe.failures = probe.successes = 0
                probe.next_at = time.monotonic() + float(probe.spec.initial_delay_seconds or 0)
        if not c.readiness:
            c.ready = True
        threading.Thread(target=self._watch_exit, args=(c, proc), daemon=True).start()
        self.kubelet.record_pid(self.uid, c.spec.name, proc.pid)

    def _watch_exit(self, c: Container, proc: subprocess.Popen) -> None:
        code = proc.wait()
        self.events.put(("exited", c, proc, code))

    def _on_exit(self, c: Container, proc: subprocess.Popen) -> bool:
        if c.proc is not proc:
            return False
        code = proc.returncode
        c.finished_at = time.monotonic()
        c.last_terminated = {
            "exitCode": code if code >= 0 else 128 - code,
            "reason": "Completed" if code == 0 else ("Error" if code > 0 else "Killed"),
            "startedAt": c.started_at,
            "finishedAt": now(),
        }
        if code != 0 and (c.spec.termination_message_policy or "File") == "FallbackToLogsOnError":
            message = self._log_tail(c)
            if message:
                c.last_terminated["message"] = message
        c.proc, c.ready = None, False
        policy = self.spec.restart_policy or "Always"
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            self._schedule_restart(c)
        return True

    def _log_tail(self, c: Container) -> str:
        """The end of this run's output: at most 80 lines and 2 KiB, as the kubelet's FallbackToLogsOnError."""
        try:
            with open(self.dir / "logs" / f"{c.spec.name}.log", "rb") as out:
                out.seek(0, os.SEEK_END)
                size = out.tell()
                start = max(c.log_offset, size - TERMINATION_BYTES)
                out.seek(start)
                tail = out.read(size - start)
        except OSError:
            return ""
        lines = tail.decode("utf-8", "replace").splitlines()[-TERMINATION_LINES:]
        return "\n".join(lines).strip()

    def _schedule_restart(self, c: Container) -> None:
        """The kubelet's crash-loop back-off: restart at once unless the container is in back-off (it
        failed before, less than ten minutes after the back-off last grew); then wait the back-off."""
        finished = c.finished_at
        expired = c.backoff is None or finished - c.backoff_updated > 2 * BACKOFF_MAX
        delay = 0.0 if expired else max(0.0, (c.backoff or 0.0) - (time.monotonic() - finished))
        c.restart_at = finished + (0.0 if expired else c.backoff or 0.0)
        if delay > 0:
            c.waiting = (
                "CrashLoopBackOff",
                f"back-off {int(c.backoff or 0)}s restarting failed container={c.spec.name} "
                f"pod={self.name}_{self.namespace}({self.uid})",
            )
        else:
            c.waiting = ("Restarting", "")

    def _restart_due(self) -> bool:
        changed = False
        for c in self.containers:
            if c.restart_at is not None and time.monotonic() >= c.restart_at:
                if not c.image_missing:
                    c.restarts += 1
                    # the back-off grows with each restart of a failing container (kubelet's Next)
                    if c.backoff is None or c.finished_at - c.backoff_updated > 2 * BACKOFF_MAX:
                        c.backoff = BACKOFF_INITIAL
                    else:
                        c.backoff = min(2 * c.backoff, BACKOFF_MAX)
                    c.backoff_updated = time.monotonic()
                self._start(c)
                changed = True
        return changed

    def _probe_due(self) -> bool:
        changed = False
        for c in self.containers:
            if not c.proc or c.proc.poll() is not None:
                continue
            t = time.monotonic()
            if c.readiness and t >= c.readiness.next_at:
                ok = self._probe(c.readiness.spec, c)
                c.readiness.next_at = t + c.readiness.period
                before = c.ready
                if ok:
                    c.readiness.failures, c.readiness.successes = 0, c.readiness.successes + 1
                    if c.readiness.successes >= (c.readiness.spec.success_threshold or 1):
                        c.ready = True
                else:
                    c.readiness.successes, c.readiness.failures = 0, c.readiness.failures + 1
                    if c.readiness.failures >= (c.readiness.spec.failure_threshold or 3) or not c.ready:
                        c.ready = False
                changed |= before != c.ready
            if c.liveness and t >= c.liveness.next_at:
                ok = self._probe(c.liveness.spec, c)
                c.liveness.next_at = t + c.liveness.period
                c.liveness.failures = 0 if ok else c.liveness.failures + 1
                if c.liveness.failures >= (c.liveness.spec.failure_threshold or 3):
                    log.info("liveness probe of %s/%s %s failed; killing it", self.namespace, self.name, c.spec.name)
                    if c.podman_name:
                        podman.control("kill", "--signal", "KILL", c.podman_name)
                    else:
                        _killpg(c.proc.pid, signal.SIGKILL)
        return changed

    def _probe(self, spec: Any, c: Container) -> bool:
        timeout = float(spec.timeout_seconds or 1)
        try:
            if spec.http_get:
                port = _port(spec.http_get.port, c.spec)
                url = f"{(spec.http_get.scheme or 'HTTP').lower()}://{self.ip}:{port}{spec.http_get.path or '/'}"
                with urllib.request.urlopen(url, timeout=timeout) as reply:
                    return 200 <= reply.status < 400
            if spec.tcp_socket:
                with socket.create_connection((self.ip, _port(spec.tcp_socket.port, c.spec)), timeout=timeout):
                    return True
            if spec._exec and c.podman_name:
                return podman.control("exec", c.podman_name, *spec._exec.command, timeout=timeout).returncode == 0
            if spec._exec:
                done = subprocess.run(
                    [_rewrite(a, {}) for a in spec._exec.command], env=c.env, timeout=timeout, capture_output=True
                )
                return done.returncode == 0
        except (OSError, urllib.error.URLError, subprocess.TimeoutExpired):
            return False
        return False

    def _stop_all(self, grace: float) -> None:
        if self.containerized:
            self._stop_containers(grace)
            return
        procs = [c.proc for c in self.containers if c.proc and c.proc.poll() is None]
        for p in procs:
            _killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(p.pid, signal.SIGKILL)
                p.wait()
        for c in self.containers:
            self.kubelet.forget_pid(self.uid, c.spec.name)

    def _stop_containers(self, grace: float) -> None:
        """SIGTERM to every container at once, SIGKILL after the grace period; then none is left."""
        names = [c.podman_name for c in self.containers if c.podman_name]
        if names:
            seconds = str(max(0, int(grace)))
            podman.control("stop", "--ignore", "--time", seconds, *names, timeout=grace + 60)
            podman.control("rm", "--force", "--ignore", "--time", "0", *names, timeout=120)
        for c in self.containers:
            if c.proc:
                try:
                    c.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _killpg(c.proc.pid, signal.SIGKILL)
                    c.proc.wait()
            self.kubelet.forget_pid(self.uid, c.spec.name)

    # --- volumes ------------------------------------------------------------------------------
    def _prepare_volumes(self) -> dict[str, str]:
        # fsGroup matters where containers run as their own users (container mode); the process mode's
        # pods run as the kubelet's user, and a claim's files are left as they are.
        context = self.spec.security_context
        fs_group = context.fs_group if context and self.containerized else None
        for v in self.spec.volumes or []:
            path = self.dir / "volumes" / v.name
            if v.persistent_volume_claim:
                claim = self.kubelet.claim_path(self.namespace, v.persistent_volume_claim.claim_name)
                self.volumes[v.name] = (claim, bool(v.persistent_volume_claim.read_only))
                self._own(Path(claim), fs_group)
                continue
            if v.host_path:
                self.volumes[v.name] = (v.host_path.path, False)
                continue
            path.mkdir(parents=True, exist_ok=True)
            read_only = True
            if v.secret:
                secret = present(v.secret.secret_name, "secretName")
                data = self.kubelet.secret(self.namespace, secret)
                self._write_items(path, data, v.secret.items, v.secret.default_mode, fs_group)
            elif v.config_map:
                config_map = present(v.config_map.name, "configMap name")
                data = self.kubelet.config_map(self.namespace, config_map)
                self._write_items(path, data, v.config_map.items, v.config_map.default_mode, fs_group)
            elif v.projected:
                mode = v.projected.default_mode
                for src in v.projected.sources or []:
                    if src.secret:
                        secret = present(src.secret.name, "secret name")
                        data = self.kubelet.secret(self.namespace, secret)
                        self._write_items(path, data, src.secret.items, mode, fs_group)
                    if src.config_map:
                        config_map = present(src.config_map.name, "configMap name")
                        data = self.kubelet.config_map(self.namespace, config_map, optional=True)
                        self._write_items(path, data, src.config_map.items, mode, fs_group)
                    if src.service_account_token and self.containerized:
                        token = src.service_account_token
                        data = {"token": self._token(token.audience, token.expiration_seconds)}
                        self._write_items(path, data, [_Item("token", token.path)], mode, fs_group)
                    if src.downward_api:
                        data, items = self._downward(src.downward_api.items or [])
                        self._write_items(path, data, items, mode, fs_group)
            else:  # emptyDir: world-writable, as a kubelet makes it
                read_only = False
                path.chmod(0o777)
                self._own(path, fs_group)
            self.volumes[v.name] = (str(path), read_only)
        mounts: dict[str, str] = {}
        for c in self.spec.containers:
            for m in c.volume_mounts or []:
                if m.name not in self.volumes:
                    raise RuntimeError(f"volumeMount {m.name!r} names no volume of the pod")
                host = self.volumes[m.name][0]
                if m.sub_path:
                    host = os.path.join(host, m.sub_path)
                    os.makedirs(host, exist_ok=True)
                mounts[m.mount_path.rstrip("/") or "/"] = host
        return mounts

    def _token(self, audience: str | None, seconds: int | None) -> str:
        """A ServiceAccount token bound to this pod (TokenRequest), as a projected volume holds it."""
        return self.kubelet.token(
            self.namespace, self.spec.service_account_name or "default", audience, seconds, self.name, self.uid
        )

    def _downward(self, items: list[Any]) -> tuple[dict[str, str], list[_Item]]:
        fields = {"metadata.name": self.name, "metadata.namespace": self.namespace, "metadata.uid": self.uid}
        data, paths = {}, []
        for item in items:
            if item.field_ref and item.field_ref.field_path in fields:
                data[item.path] = fields[item.field_ref.field_path]
                paths.append(_Item(item.path, item.path, item.mode))
        return data, paths

    @staticmethod
    def _own(path: Path, fs_group: int | None) -> None:
        """fsGroup: the volume's files belong to the group, directories setgid and group-writable."""
        if fs_group is None:
            return
        for top, _dirs, files in os.walk(path):
            os.chown(top, -1, fs_group)
            os.chmod(top, os.stat(top).st_mode | 0o2070)
            for name in files:
                os.chown(os.path.join(top, name), -1, fs_group, follow_symlinks=False)

    @staticmethod
    def _write_items(
        path: Path, data: dict[str, str], items: list | None, default_mode: int | None, fs_group: int | None
    ) -> None:
        """Each key as a file with the volume's mode (the API's default 0644), owned by fsGroup if set."""
        pairs = [(i.key, i.path, i.mode) for i in items] if items else [(k, k, None) for k in data]
        for key, rel, mode in pairs:
            if key in data:
                target = path / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(data[key])
                if fs_group is not None:
                    os.chown(target, -1, fs_group)
                target.chmod(mode if mode is not None else default_mode if default_mode is not None else 0o644)

    # --- status -------------------------------------------------------------------------------
    def _condition(self, kind: str, status: bool) -> dict:
        value = "True" if status else "False"
        prev = self.transitions.get(kind)
        if prev is None or prev[0] != value:
            self.transitions[kind] = (value, now())
        return {"type": kind, "status": value, "lastTransitionTime": self.transitions[kind][1], "lastProbeTime": None}

    def _report(self) -> None:
        statuses = []
        done = [c for c in self.containers if c.proc is None and c.restart_at is None and c.last_terminated]
        for c in self.containers:
            state: dict[str, Any]
            if c.proc is not None:
                state = {"running": {"startedAt": c.started_at}}
            elif c in done:  # exited, and its restartPolicy starts it no more
                state = {"terminated": c.last_terminated}
            else:
                reason, message = c.waiting or ("ContainerCreating", "")
                state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
            statuses.append(
                {
                    "name": c.spec.name,
                    "image": c.spec.image,
                    "imageID": "",
                    "containerID": _container_id(c),
                    "ready": c.ready,
                    "started": c.proc is not None,
                    "restartCount": c.restarts,
                    "state": state,
                    "lastState": {"terminated": c.last_terminated} if c.last_terminated and c not in done else {},
                }
            )
        all_ready = all(c.ready for c in self.containers)
        running = all(c.started_at for c in self.containers)
        phase = "Running" if running else "Pending"
        if len(done) == len(self.containers):
            phase = "Succeeded" if all((c.last_terminated or {}).get("exitCode") == 0 for c in done) else "Failed"
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}] if self.ip else None,
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodReadyToStartContainers", True),
                self._condition("Initialized", True),
                self._condition("ContainersReady", all_ready),
                self._condition("Ready", all_ready),
                self._condition("PodScheduled", True),
            ],
            "containerStatuses": statuses,
        }
        try:
            self.kubelet.core.patch_namespaced_pod_status(
                self.name, self.namespace, {"status": status}, _content_type=MERGE
            )
            self.unreported = False
        except ApiException as exc:
            if exc.status != 404:
                log.warning("status of %s/%s not written: %s", self.namespace, self.name, exc.reason)
                self.unreported = True
        except Exception as exc:  # noqa: BLE001 - the apiserver is away: report again on the next tick
            log.warning("status of %s/%s not written (%s); retrying", self.namespace, self.name, type(exc).__name__)
            self.unreported = True


@dataclass
class _Item:
    """A file of a projected volume source that is not a Secret or ConfigMap (the token, downward API)."""

    key: str
    path: str
    mode: int | None = None


class _Terminate(Exception):
    def __init__(self, grace: float) -> None:
        self.grace = grace


class ProcessKubelet:
    def __init__(self, kubeconfig: str, root: Path, ip_octet: int) -> None:
        self.api = config.new_client_from_config(kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.ips = IpAllocator(root / "next-ip", ip_octet)
        self.runners: dict[str, PodRunner] = {}
        self.lock = threading.Lock()
        self.pidfile = root / "pids"
        self.pids: dict[tuple[str, str], int] = {}
        self.default_runtime = os.environ.get("DEVCLUSTER_RUNTIME", "process")
        if self.default_runtime not in RUNTIMES:
            raise ValueError(f"DEVCLUSTER_RUNTIME must be one of {', '.join(RUNTIMES)}, not {self.default_runtime!r}")
        #: Labels this cluster's containers (container mode), so a restarted kubelet removes leftovers.
        self.cluster_id = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        self.runtimes: dict[str, str] = {}

    # --- API helpers ------------------------------------------------------------------------------
    def runtime_of(self, namespace: str) -> str:
        """How the namespace's pods run: its RUNTIME_LABEL, else the kubelet's default."""
        if namespace not in self.runtimes:
            labels = meta(self.core.read_namespace(namespace)).labels or {}
            runtime = labels.get(RUNTIME_LABEL, self.default_runtime)
            if runtime not in RUNTIMES:
                raise RuntimeError(f"namespace label {RUNTIME_LABEL}={runtime!r}: use one of {', '.join(RUNTIMES)}")
            self.runtimes[namespace] = runtime
        return self.runtimes[namespace]

    def service_env(self) -> dict[str, str]:
        """What a kubelet tells every container about the apiserver (the `kubernetes` Service); here
        the apiserver's own address, reachable from the host's network namespace."""
        url = urllib.parse.urlsplit(self.api.configuration.host)
        host, port = url.hostname or "127.0.0.1", str(url.port or 443)
        return {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
        }

    def token(self, namespace: str, account: str, audience: str | None, seconds: int | None, pod: str, uid: str) -> str:
        body = {
            "spec": {
                "audiences": [audience] if audience else None,
                "expirationSeconds": seconds or 3607,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid},
            }
        }
        reply = self.core.create_namespaced_service_account_token(account, namespace, body)  # type: ignore[arg-type]
        return present(present(reply.status, "token status").token, "token")

    def secret(self, namespace: str, name: str) -> dict[str, str]:
        s = self.core.read_namespaced_secret(name, namespace)
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def config_map(self, namespace: str, name: str, optional: bool = False) -> dict[str, str]:
        try:
            return dict(self.core.read_namespaced_config_map(name, namespace).data or {})
        except ApiException as exc:
            if optional and exc.status == 404:
                return {}
            raise

    def claim_path(self, namespace: str, claim: str) -> str:
        """The host directory of a bound claim; waits for the binder to bind it."""
        w = watch.Watch()
        pvc = self.core.read_namespaced_persistent_volume_claim(claim, namespace)
        if not _bound(pvc):
            for event in w.stream(
                self.core.list_namespaced_persistent_volume_claim,
                namespace,
                field_selector=f"metadata.name={claim}",
                timeout_seconds=120,
            ):
                pvc = event["object"]
                if _bound(pvc):
                    w.stop()
                    break
            else:
                raise RuntimeError(f"claim {namespace}/{claim} was not bound within 120 s")
        volume = present(present(pvc.spec, "claim spec").volume_name, "volumeName")
        pv_spec = present(self.core.read_persistent_volume(volume).spec, "volume spec")
        source = pv_spec.host_path or pv_spec.local
        if source is None:
            raise RuntimeError(f"volume {volume} is neither hostPath nor local")
        return source.path

    def record_pid(self, uid: str, container: str, pid: int) -> None:
        with self.lock:
            self.pids[(uid, container)] = pid
            self._write_pids()

    def forget_pid(self, uid: str, container: str) -> None:
        with self.lock:
            self.pids.pop((uid, container), None)
            self._write_pids()

    def _write_pids(self) -> None:
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text("".join(f"{uid} {c} {pid}\n" for (uid, c), pid in self.pids.items()))
        tmp.replace(self.pidfile)

    # --- node and storage -------------------------------------------------------------------------
    def register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"}},
        }
        try:
            self.core.create_node(node)  # type: ignore[arg-type]  # the client sends a dict body as it is
        except ApiException as exc:
            if exc.status != 409:
                raise
        t = now()
        status = {
            "status": {
                "capacity": {"cpu": str(os.cpu_count()), "memory": "24Gi", "pods": "250"},
                "allocatable": {"cpu": str(os.cpu_count()), "memory": "24Gi", "pods": "250"},
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "process kubelet is posting ready status",
                        "lastHeartbeatTime": t,
                        "lastTransitionTime": t,
                    }
                ],
                "nodeInfo": {
                    "machineID": "devcluster",
                    "systemUUID": "devcluster",
                    "bootID": "devcluster",
                    "kernelVersion": os.uname().release,
                    "osImage": "devcluster process kubelet",
                    "containerRuntimeVersion": "process://1",
                    "kubeletVersion": "v0.0.0-devcluster",
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            }
        }
        self.core.patch_node_status(NODE, status, _content_type=MERGE)
        storage = client.StorageV1Api(self.api)
        sc = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Retain",  # wallet files may hold funds: never deleted with a claim
            "volumeBindingMode": "Immediate",
        }
        try:
            storage.create_storage_class(sc)  # type: ignore[arg-type]  # a dict body, as above
        except ApiException as exc:
            if exc.status != 409:
                raise
        (self.root / "registered").write_text(t)

    def provision_loop(self) -> None:
        """Provision a hostPath PersistentVolume for every pending claim of the devcluster class."""
        while True:
            try:
                w = watch.Watch()
                for event in w.stream(self.core.list_persistent_volume_claim_for_all_namespaces, timeout_seconds=300):
                    pvc = event["object"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._provision(pvc)
            except Exception:
                log.exception("claim watch failed; resuming")
                time.sleep(1)

    def _provision(self, pvc: client.V1PersistentVolumeClaim) -> None:
        spec = present(pvc.spec, "claim spec")
        if spec.volume_name or spec.storage_class_name != STORAGE_CLASS or meta(pvc).deletion_timestamp:
            return
        namespace, claim, uid = identity(pvc)
        name = f"pvc-{uid}"
        path = self.root / "volumes" / f"{namespace}-{claim}-{uid[:8]}"
        path.mkdir(parents=True, exist_ok=True)
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": ((spec.resources and spec.resources.requests) or {}).get("storage", "1Gi")},
                "accessModes": spec.access_modes or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": STORAGE_CLASS,
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": namespace,
                    "name": claim,
                    "uid": uid,
                },
            },
        }
        try:
            self.core.create_persistent_volume(pv)  # type: ignore[arg-type]  # a dict body, as above
            log.info("provisioned %s for claim %s/%s at %s", name, namespace, claim, path)
        except ApiException as exc:
            if exc.status != 409:
                raise

    # --- pods -------------------------------------------------------------------------------------
    #: Seconds a pod watch lasts before the kubelet lists every pod again (a real kubelet's periodic
    #: sync): an event the watch did not deliver (a pod's deletion, say) is acted on within this time.
    RESYNC_SECONDS = 30

    def pod_loop(self) -> None:
        """List, then watch; on any failure (the apiserver restarting, say), and every
        :data:`RESYNC_SECONDS`, list again. The pods' processes keep running meanwhile: the kubelet
        never stops a pod because it lost the apiserver."""
        while True:
            try:
                pods = self.core.list_pod_for_all_namespaces()
            except Exception as exc:  # noqa: BLE001 - the apiserver is away; try again shortly
                log.warning("listing pods failed (%s); retrying", type(exc).__name__)
                time.sleep(0.5)
                continue
            seen = {uid_of(p) for p in pods.items}
            for pod in pods.items:
                self.sync(pod)
            for uid in [u for u in self.runners if u not in seen]:
                self._gone(uid)
            try:
                w = watch.Watch()
                for event in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    resource_version=present(pods.metadata, "list metadata").resource_version,
                    timeout_seconds=self.RESYNC_SECONDS,
                    _request_timeout=(10, self.RESYNC_SECONDS + 30),  # a stalled stream ends too
                ):
                    pod = event["object"]
                    if event["type"] == "DELETED":
                        self._gone(uid_of(pod))
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self.sync(pod)
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("pod watch ended: %s; relisting", exc.reason)
            except Exception:
                log.exception("pod watch failed; relisting")

    def sync(self, pod: client.V1Pod) -> None:
        uid, deleting, spec = uid_of(pod), meta(pod).deletion_timestamp, present(pod.spec, "pod spec")
        if not spec.node_name:
            if (spec.scheduler_name or "default-scheduler") == "default-scheduler" and not deleting:
                self._bind(pod)
            return
        if spec.node_name != NODE:
            return
        runner = self.runners.get(uid)
        if deleting:
            if runner is None or not getattr(runner, "terminating", False):
                threading.Thread(target=self._terminate, args=(pod, runner), daemon=True).start()
                if runner is not None:
                    runner.terminating = True  # type: ignore[attr-defined]
            return
        if runner is None and (pod.status.phase if pod.status else None) not in ("Succeeded", "Failed"):
            runner = PodRunner(self, pod)
            self.runners[uid] = runner
            runner.start()

    def _bind(self, pod: client.V1Pod) -> None:
        namespace, name, uid = identity(pod)
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=name, uid=uid),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=NODE),
        )
        try:
            self.core.create_namespaced_binding(namespace, body, _preload_content=False)
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("binding %s/%s failed: %s", namespace, name, exc.reason)

    def _terminate(self, pod: client.V1Pod, runner: PodRunner | None) -> None:
        namespace, name, uid = identity(pod)
        grace = float(meta(pod).deletion_grace_period_seconds or 0)
        if runner is not None:
            runner.terminate(grace)
            if not runner.stopped.wait(grace + 30):
                log.warning(
                    "pod %s/%s did not stop within %.0f s of its grace period; deleting it", namespace, name, 30
                )
        try:
            self.core.delete_namespaced_pod(
                name,
                namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("final delete of %s/%s failed: %s", namespace, name, exc.reason)

    def _gone(self, uid: str) -> None:
        runner = self.runners.pop(uid, None)
        if runner is not None and not runner.stopped.is_set():
            runner.terminate(0)
            runner.stopped.wait()
        if runner is not None:
            shutil.rmtree(runner.dir / "volumes", ignore_errors=True)

    def shutdown(self) -> None:
        for runner in list(self.runners.values()):
            runner.terminate(5)
        for runner in list(self.runners.values()):
            runner.stopped.wait(10)
        self._remove_containers()

    def _remove_containers(self) -> None:
        """Container mode: no container of this cluster outlives its kubelet (nor a crashed one)."""
        if shutil.which("podman"):
            podman.remove_labelled(f"{podman.CLUSTER_LABEL}={self.cluster_id}")

    def run(self) -> None:
        self._remove_containers()
        self.register()
        threading.Thread(target=self.provision_loop, name="provisioner", daemon=True).start()
        self.pod_loop()


# --- helpers ----------------------------------------------------------------------------------
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, unknown ones kept, $$ escapes."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, value)


def _rewrite(value: str, mounts: dict[str, str]) -> str:
    """Replace a volume's mountPath, where it stands as a path, by its host directory."""
    for mount in sorted(mounts, key=len, reverse=True):
        value = re.sub(rf"(?<![\w./-]){re.escape(mount)}(?=/|$|[^\w.-])", _literally(mounts[mount]), value)
    return value


def _literally(text: str) -> Callable[[re.Match[str]], str]:
    """A re.sub replacement that inserts ``text`` as it is (no backslash escapes)."""
    return lambda _m: text


def _bound(pvc: client.V1PersistentVolumeClaim) -> bool:
    return bool(pvc.spec and pvc.spec.volume_name and pvc.status and pvc.status.phase == "Bound")


def _port(port: Any, container: Any) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.ports or []:
        if p.name == port:
            return int(p.container_port)
    raise RuntimeError(f"probe names port {port!r}, which the container does not declare")


def _container_id(c: Container) -> str | None:
    if c.proc is None:
        return None
    return f"podman://{c.podman_name}" if c.podman_name else f"process://{c.proc.pid}"


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def main(kubeconfig: str, root: Path, tie_to_parent: bool, ip_octet: int) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if tie_to_parent:
        pdeathsig_preexec()
    kubelet = ProcessKubelet(kubeconfig, root, ip_octet)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    try:
        kubelet.run()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        kubelet.shutdown()
    return 0

"""Start, check and stop etcd, kube-apiserver, kube-controller-manager and the process kubelet."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from .errors import DevClusterError
from .pki import Pki
from .procs import pdeathsig_preexec, pid_alive, stop_pids

ROOT = Path(__file__).resolve().parents[2]
HACK = ROOT / "hack"
CONTROLLERS = ",".join(
    [
        "statefulset-controller",
        "replicaset-controller",
        "deployment-controller",
        "garbage-collector-controller",
        "persistentvolume-binder-controller",
        "serviceaccount-controller",
        "serviceaccount-token-controller",
        "namespace-controller",
        "endpointslice-controller",
        "disruption-controller",
        "root-ca-certificate-publisher-controller",
        "horizontal-pod-autoscaler-controller",
        # Claims and volumes in use are kept until their pods are gone, then deleted (a namespace with
        # claims finishes terminating, as in a cluster).
        "persistentvolumeclaim-protection-controller",
        "persistentvolume-protection-controller",
    ]
)


def kube_version() -> str:
    for line in (HACK / "controlplane.env").read_text().splitlines():
        if line.startswith("KUBE_VERSION="):
            return os.environ.get("KUBE_VERSION_OVERRIDE") or line.split("=", 1)[1].strip()
    raise DevClusterError("hack/controlplane.env names no KUBE_VERSION")


def cache_root() -> Path:
    if env := os.environ.get("XMR_ESCROW_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xmr-escrow-operator"


def bin_dir() -> Path:
    return cache_root() / "controlplane" / kube_version() / "bin"


def binary(name: str) -> Path:
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise DevClusterError(
            f"{name} is not built ({path} is missing). Build the control plane with: make controlplane"
            " (runs hack/build-controlplane.sh; the first build takes a while)"
        )
    return path


def require_wallet_rpc() -> str:
    found = shutil.which("monero-wallet-rpc")
    if not found:
        raise DevClusterError(
            "monero-wallet-rpc is not installed. Install Debian's monero package with: make deps"
            " (or: apt-get install -y monero)"
        )
    return found


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls(base, base + 1, base + 2, base + 3)

    @classmethod
    def find_free(cls, start: int = 20000, stop: int = 60000, step: int = 10) -> Ports:
        for base in range(start + (os.getpid() % 1000) * step, stop, step):
            ports = cls.from_base(base)
            if all(port_free(p) for p in asdict(ports).values()):
                return ports
        raise DevClusterError("no four free ports found on 127.0.0.1")


class DevCluster:
    """A real control plane plus the process kubelet, all as local processes under one state directory.

    ``tie_to_parent`` makes every process die with the one that started it (pytest); the command
    line leaves them running until ``down``.
    """

    def __init__(self, state_dir: Path, ports: Ports | None = None, *, tie_to_parent: bool = False) -> None:
        self.state_dir = state_dir.resolve()
        self.ports = ports or Ports.from_base(16380)
        self.tie_to_parent = tie_to_parent
        self.pki = Pki(self.state_dir / "pki")
        self.pids: dict[str, int] = {}

    # --- paths -----------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def pod_ip_octet(self) -> int:
        """Pods get 127.N.0.0/16, N from the apiserver port: side-by-side clusters never share addresses."""
        return 1 + self.ports.apiserver % 254

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def kubelet_root(self) -> Path:
        return self.state_dir / "kubelet"

    # --- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def load(cls, state_dir: Path) -> DevCluster | None:
        """The cluster recorded in a state directory, if any."""
        state_file = state_dir / "state.json"
        if not state_file.exists():
            return None
        state = json.loads(state_file.read_text())
        cluster = cls(state_dir, Ports(**state["ports"]))
        cluster.pids = {k: int(v) for k, v in state["pids"].items()}
        return cluster

    def running_pids(self) -> dict[str, int]:
        return {name: pid for name, pid in self.pids.items() if pid_alive(pid)}

    def _save(self) -> None:
        self.state_file.write_text(json.dumps({"ports": asdict(self.ports), "pids": self.pids}, indent=2))

    def start(self, timeout: float = 120.0) -> DevCluster:
        previous = DevCluster.load(self.state_dir)
        if previous and (alive := previous.running_pids()):
            raise DevClusterError(
                f"a dev cluster is already running from {self.state_dir} (pids {sorted(alive.values())}). "
                "Stop it with: python -m hack.devcluster down"
            )
        require_wallet_rpc()
        for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
            binary(name)
        taken = [f"{name}={port}" for name, port in asdict(self.ports).items() if not port_free(port)]
        if taken:
            raise DevClusterError(
                f"ports taken on 127.0.0.1: {', '.join(taken)} (another program, or a dev cluster started "
                "elsewhere). Stop it, or choose another range with: python -m hack.devcluster up --port-base N"
            )
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pki.ensure()
        self._write_admin_kubeconfig()
        deadline = time.monotonic() + timeout
        try:
            self._start_etcd()
            self._wait_http(f"http://127.0.0.1:{self.ports.etcd}/health", deadline, "etcd")
            self._start_apiserver()
            self._wait_https(f"{self.server}/readyz", deadline, "kube-apiserver")
            self._start_controller_manager()
            self._wait_https(
                f"https://127.0.0.1:{self.ports.controller_manager}/healthz",
                deadline,
                "kube-controller-manager",
                client_cert=False,
            )
            self._start_kubelet()
            self._wait_node(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def restart_apiserver(self, timeout: float = 60.0) -> None:
        """Stop kube-apiserver and start it again on the same port and store (watches must resume)."""
        stop_pids([self.pids.pop("kube-apiserver")], grace=15.0)
        self._start_apiserver()
        self._wait_https(f"{self.server}/readyz", time.monotonic() + timeout, "kube-apiserver")

    def stop(self) -> None:
        """Stop every process this cluster started: extras (the operator), kubelet (it stops the pods'
        processes), then the control plane."""
        order = ["kubelet", "kube-controller-manager", "kube-apiserver", "etcd"]
        extras = [n for n in self.pids if n not in order]
        stop_pids([self.pids[n] for n in extras + order if n in self.pids], grace=15.0)
        self.pids = {}
        if self.state_file.exists():
            self._save()

    # --- processes -------------------------------------------------------------------------------
    def run_process(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Run another process (the operator) with the cluster: logged under logs/, stopped by ``stop``."""
        if name in self.pids and pid_alive(self.pids[name]):
            return self.pids[name]
        self._spawn(name, argv, env)
        return self.pids[name]

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.pids[name] = _popen(argv, self.logs / f"{name}.log", env, tie_to_parent=self.tie_to_parent).pid
        self._save()

    def _start_etcd(self) -> None:
        p = self.ports
        self._spawn(
            "etcd",
            [
                str(binary("etcd")),
                "--name=devcluster",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{p.etcd}",
                f"--advertise-client-urls=http://127.0.0.1:{p.etcd}",
                f"--listen-peer-urls=http://127.0.0.1:{p.etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p.etcd_peer}",
                f"--initial-cluster=devcluster=http://127.0.0.1:{p.etcd_peer}",
                # A throwaway test store: durability is not what it is for, speed on 2 cores is.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

    def apiserver_argv(self, port: int | None = None, flags: Mapping[str, str | int | Path] | None = None) -> list[str]:
        """kube-apiserver's command line on this cluster's etcd, CA, serving cert, service-account keys
        and issuer (the one definition: the cluster's own apiserver is ``apiserver_argv()``).

        ``port`` serves on another port than the cluster's (the serving cert is for 127.0.0.1, any
        port); ``flags`` (names without the leading ``--``) are added, or replace the flag of that name."""
        k = self.pki
        args: dict[str, str | int | Path] = {
            "etcd-servers": f"http://127.0.0.1:{self.ports.etcd}",
            "bind-address": "127.0.0.1",
            "advertise-address": "127.0.0.1",
            "secure-port": self.ports.apiserver if port is None else port,
            "tls-cert-file": k.serving_crt,
            "tls-private-key-file": k.serving_key,
            "client-ca-file": k.ca_crt,
            "authorization-mode": "RBAC",
            # The cluster's address even on another port: tokens are the same wherever they are checked.
            "service-account-issuer": self.server,
            "service-account-key-file": k.sa_pub,
            "service-account-signing-key-file": k.sa_key,
            "service-cluster-ip-range": "10.0.0.0/24",
            "allow-privileged": "true",
            "profiling": "false",
            "v": 1,
        }
        args.update({name.removeprefix("--"): value for name, value in (flags or {}).items()})
        return [str(binary("kube-apiserver"))] + [f"--{name}={value}" for name, value in args.items()]

    def start_extra_apiserver(
        self, port: int, state_dir: Path, flags: Mapping[str, str | int | Path] | None = None, timeout: float = 180.0
    ) -> subprocess.Popen[bytes]:
        """Another kube-apiserver of this cluster's store (a test's, e.g. with an audit log or more
        admission plugins): ``apiserver_argv(port, flags)``, so tokens minted by the cluster's apiserver
        are valid here too. The cluster's apiserver keeps the "kubernetes" Service endpoints (unless
        ``flags`` say otherwise).

        Ready when this returns; logs to ``state_dir/kube-apiserver.log``, dies with the thread that
        started it. The caller stops it (SIGTERM); ``stop`` does not know it."""
        log_path = state_dir / "kube-apiserver.log"
        argv = self.apiserver_argv(port, {"endpoint-reconciler-type": "none", **(flags or {})})
        proc = _popen(argv, log_path, tie_to_parent=True)
        name = f"kube-apiserver on port {port}"

        def check_alive() -> None:
            if proc.poll() is not None:
                raise DevClusterError(f"{name} exited with {proc.returncode} during start")

        try:
            self._wait_https(
                f"https://127.0.0.1:{port}/readyz", time.monotonic() + timeout, name, check_alive=check_alive
            )
        except BaseException as exc:
            proc.kill()
            proc.wait()
            if isinstance(exc, DevClusterError):
                tail = log_path.read_text(errors="replace")[-3000:]
                raise DevClusterError(f"{exc}; the end of its log {log_path}:\n{tail}") from None
            raise
        return proc

    def _start_apiserver(self) -> None:
        self._spawn("kube-apiserver", self.apiserver_argv())

    def _start_controller_manager(self) -> None:
        k = self.pki
        self._spawn(
            "kube-controller-manager",
            [
                str(binary("kube-controller-manager")),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports.controller_manager}",
                f"--controllers={CONTROLLERS}",
                f"--service-account-private-key-file={k.sa_key}",
                f"--root-ca-file={k.ca_crt}",
                "--leader-elect=false",
                "--concurrent-statefulset-syncs=10",
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _start_kubelet(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        # Console scripts of this interpreter (escrow-operator) are found like an image's entrypoint.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        self._spawn(
            "kubelet",
            [
                sys.executable,
                "-m",
                "hack.devcluster",
                "kubelet",
                "--kubeconfig",
                str(self.kubeconfig),
                "--root",
                str(self.kubelet_root),
                "--ip-octet",
                str(self.pod_ip_octet),
            ]
            + (["--tie-to-parent"] if self.tie_to_parent else []),
            env=env,
        )

    # --- readiness -------------------------------------------------------------------------------
    def _check_alive(self, name: str) -> None:
        pid = self.pids.get(name)
        if pid is None or not pid_alive(pid):
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise DevClusterError(
                f"{name} exited during start; the end of its log {self.logs / (name + '.log')}:\n{tail}"
            )

    def _wait_http(
        self,
        url: str,
        deadline: float,
        name: str,
        context: ssl.SSLContext | None = None,
        check_alive: Callable[[], None] | None = None,
    ) -> None:
        """Poll ``url`` until it answers 200; ``check_alive`` (by default: ``name`` of ``pids`` runs)
        raises if the process has exited."""
        last: Exception | str = "no answer"
        while time.monotonic() < deadline:
            if check_alive is None:
                self._check_alive(name)
            else:
                check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = exc
            time.sleep(0.2)  # polling a process that has no event to wait on
        raise DevClusterError(f"{name} did not become healthy at {url}: {last}")

    def _wait_https(
        self,
        url: str,
        deadline: float,
        name: str,
        client_cert: bool = True,
        check_alive: Callable[[], None] | None = None,
    ) -> None:
        context = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        if client_cert:
            context.load_cert_chain(str(self.pki.admin_crt), str(self.pki.admin_key))
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # kube-controller-manager serves a self-signed cert
        self._wait_http(url, deadline, name, context, check_alive)

    def _wait_node(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive("kubelet")
            if (self.kubelet_root / "registered").exists():
                return
            time.sleep(0.2)  # the kubelet marks its registration with a file
        raise DevClusterError(f"the process kubelet did not register its node; see {self.logs / 'kubelet.log'}")

    # --- kubeconfigs -----------------------------------------------------------------------------
    def _kubeconfig(self, user: dict) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devcluster",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(self.pki.ca_crt.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": "user"}}],
            "current-context": "devcluster",
        }

    def _write_admin_kubeconfig(self) -> None:
        config = self._kubeconfig(
            {
                "client-certificate-data": base64.b64encode(self.pki.admin_crt.read_bytes()).decode(),
                "client-key-data": base64.b64encode(self.pki.admin_key.read_bytes()).decode(),
            }
        )
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def mint_kubeconfig(
        self, namespace: str, service_account: str, path: Path | None = None, expiration_seconds: int = 86400
    ) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount (a bound token from the TokenRequest API)."""
        from kubernetes import client, config

        api = client.CoreV1Api(config.new_client_from_config(str(self.kubeconfig)))
        request = api.create_namespaced_service_account_token(
            service_account,
            namespace,
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(expiration_seconds=expiration_seconds)),
        )
        if request.status is None:
            raise DevClusterError(f"the TokenRequest for {namespace}/{service_account} returned no token")
        token = request.status.token
        path = path or self.state_dir / f"sa-{namespace}-{service_account}.kubeconfig"
        path.write_text(yaml.safe_dump(self._kubeconfig({"token": token})))
        path.chmod(0o600)
        return path


def _popen(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None, *, tie_to_parent: bool
) -> subprocess.Popen[bytes]:
    """A process of the cluster in its own session, its output appended to ``log_path``; with
    ``tie_to_parent`` it dies with the thread that started it."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec if tie_to_parent else None,
        )

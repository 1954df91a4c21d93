"""Command line of the dev cluster.

python -m hack.devcluster up [--state-dir D] [--port-base N]   start etcd, apiserver, controllers, kubelet
python -m hack.devcluster down [--state-dir D]                 stop everything it started
python -m hack.devcluster status [--state-dir D]               what runs, and the kubeconfig
python -m hack.devcluster kubeconfig NAMESPACE SERVICEACCOUNT  mint a kubeconfig for a ServiceAccount
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .controlplane import ROOT, DevCluster, Ports
from .errors import DevClusterError

DEFAULT_STATE = ROOT / ".devcluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.devcluster", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="where state, logs and pods live")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start the dev cluster")
    up.add_argument("--port-base", type=int, default=16380, help="etcd, peer, apiserver, controllers on N..N+3")
    sub.add_parser("down", parents=[common], help="stop the dev cluster")
    sub.add_parser("status", parents=[common], help="show what runs")
    kc = sub.add_parser("kubeconfig", parents=[common], help="mint a kubeconfig for a ServiceAccount")
    kc.add_argument("namespace")
    kc.add_argument("service_account")
    kc.add_argument("--output", type=Path)
    kl = sub.add_parser("kubelet", help=argparse.SUPPRESS)
    kl.add_argument("--kubeconfig", required=True)
    kl.add_argument("--root", type=Path, required=True)
    kl.add_argument("--tie-to-parent", action="store_true")
    kl.add_argument("--ip-octet", type=int, required=True, help="pods get addresses in 127.N.0.0/16")
    args = parser.parse_args(argv)

    try:
        if args.command == "kubelet":
            from .kubelet import main as kubelet_main

            return kubelet_main(args.kubeconfig, args.root, args.tie_to_parent, args.ip_octet)
        if args.command == "up":
            started = DevCluster(args.state_dir, Ports.from_base(args.port_base)).start()
            print(f"dev cluster up: {started.server}")
            print(f"export KUBECONFIG={started.kubeconfig}")
            return 0
        cluster = DevCluster.load(args.state_dir)
        if args.command == "down":
            if cluster is None:
                print(f"no dev cluster recorded in {args.state_dir}")
                return 0
            cluster.stop()
            print("dev cluster stopped")
            return 0
        if cluster is None or not cluster.running_pids():
            raise DevClusterError(
                f"no dev cluster runs from {args.state_dir}; start one with: python -m hack.devcluster up"
            )
        if args.command == "status":
            print(
                json.dumps(
                    {"server": cluster.server, "kubeconfig": str(cluster.kubeconfig), "pids": cluster.running_pids()},
                    indent=2,
                )
            )
            return 0
        if args.command == "kubeconfig":
            print(cluster.mint_kubeconfig(args.namespace, args.service_account, args.output))
            return 0
    except DevClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())

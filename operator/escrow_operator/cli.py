"""``escrow-operator``: run the operator, the walletfs sidecar, or print the CRDs."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "walletfs":
        from .walletfs.server import main as walletfs_main

        return walletfs_main(argv[1:])
    parser = argparse.ArgumentParser(prog="escrow-operator", description="Monero multisig escrow operator")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    run.add_argument(
        "--namespace", default=os.environ.get("ESCROW_NAMESPACE") or None, help="watch one namespace (default: all)"
    )
    run.add_argument(
        "--liveness", default=os.environ.get("ESCROW_LIVENESS") or None, help="e.g. http://0.0.0.0:8081/healthz"
    )
    run.add_argument("--verbose", action="store_true")
    sub.add_parser("walletfs", help="run the walletfs sidecar (see escrow-operator walletfs --help)")
    sub.add_parser("crds", help="print the CRDs")
    args = parser.parse_args(argv)
    if args.command == "crds":
        from .api.crdgen import render_crds

        for text in render_crds().values():
            sys.stdout.write("---\n" + text)
        return 0
    import kopf

    from . import handlers  # noqa: F401 - registers the handlers
    from .logsetup import configure_logging

    configure_logging(args.verbose)
    namespaces = [args.namespace] if args.namespace else []
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m controller run [--dry-run] [--kubeconfig PATH] [--namespace NS] [--once]`.

The only place logging is configured. Bad configuration exits 2 with one line
naming the variable or flag, before anything touches the cluster.
"""

from __future__ import annotations

import argparse
import logging
import sys

from controller.app import RunOptions, run
from controller.pool import pool_from_settings
from controller.settings import load_settings
from worker.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m controller",
                                     description="qscale autoscaling controller")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="watch pools and scale their Deployments")
    run.add_argument("--dry-run", action="store_true",
                     help="log decisions only; never patch anything")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or KUBECONFIG)")
    run.add_argument("--namespace", help="only this namespace (overrides "
                                         "QSCALE_CONTROLLER_NAMESPACE)")
    run.add_argument("--once", action="store_true",
                     help="one decision per pool in the foreground, then exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, object] = {}
    if args.dry_run:
        overrides["dry_run"] = True
    if args.namespace is not None:
        overrides["namespace"] = args.namespace
    try:
        settings = load_settings(**overrides)
        if settings.pool_source == "env":
            pool_from_settings(settings)  # validate the policy before connecting
    except ConfigError as exc:
        print(f"controller: bad configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    try:
        return run(settings, RunOptions(kubeconfig=args.kubeconfig, once=args.once))
    except ConfigError as exc:
        print(f"controller: bad configuration: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`python -m worker run`: start the supervisor with settings from the environment."""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli import fail
from worker.errors import ConfigError
from worker.settings import load_settings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run", help="consume queues with a pool of worker processes",
        description="Run the worker: settings come from QSCALE_* environment variables.")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="child processes (overrides QSCALE_CONCURRENCY)")
    parser.add_argument("--queues", default=None,
                        help="comma-separated queues (overrides QSCALE_QUEUES)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.concurrency is not None:
        overrides["concurrency"] = args.concurrency
    if args.queues is not None:
        overrides["queues"] = args.queues
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        return fail(str(exc))
    # Imported late: the runtime sets PROMETHEUS_MULTIPROC_DIR before metrics load.
    from worker.runtime.lifecycle import run_worker
    from worker.runtime.supervisor import EXIT_LOOP_FAILED, LoopFailed

    try:
        return run_worker(settings)
    except ConfigError as exc:
        return fail(str(exc))
    except LoopFailed as exc:
        return fail(f"supervisor loop failed: {exc}", EXIT_LOOP_FAILED)

"""The `python -m worker` command tree, assembled from one module per command group.

Each module in COMMAND_MODULES defines `register(subparsers)`, which adds its
subcommands and sets `func=<handler>` on each; a handler takes the parsed
namespace and returns the process exit code. Modules that are not installed
yet are skipped, so command groups can be developed independently.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

PROG = "qscale-worker"

# Order is the order in `--help`. `worker.cli.run`: run; `worker.cli.tasks`: enqueue, dlq,
# status; `worker.cli.result`: result.
COMMAND_MODULES: tuple[str, ...] = ("worker.cli.run", "worker.cli.tasks", "worker.cli.result")

Handler = Callable[[argparse.Namespace], int]


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="qscale worker and task tools")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in modules:
        try:
            module: Any = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency inside the module: surface it
                raise
            continue
        module.register(subparsers)
    return parser


def fail(message: str, code: int = 2) -> int:
    """Print the one-line reason the CLI convention asks for and return the exit code."""
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.func
    return handler(args)

"""`python -m worker result ID`: a task's status and result, read from the result store.

An operator holding only a task id (from `enqueue`, a log line or `dlq list`) can see
how it ended without writing Python. The store is the one producers read
(QSCALE_RESULT_URL, else the broker when it is Redis).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from typing import Any

from worker.api.client import Client
from worker.api.handles import ResultTimeout
from worker.cli import fail
from worker.errors import ConfigError, QscaleError
from worker.results import PENDING, READY_STATES, ResultsDisabled
from worker.settings import load_settings

EXIT_NOT_FINISHED = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "result", help="a task's status and result by id",
        description="Print STATUS and the result (or the error) of task ID. Exits 0 when "
                    "it is read, 1 when --wait ran out before the task finished.")
    parser.add_argument("id", metavar="ID", help="the task id (printed by enqueue)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for SUCCESS or FAILURE (default: answer now)")
    parser.add_argument("--json", action="store_true", help="the whole record as JSON")
    parser.set_defaults(func=cmd_result)


def cmd_result(args: argparse.Namespace) -> int:
    try:
        if not (math.isfinite(args.wait) and 0 <= args.wait <= 86_400):
            raise ConfigError("--wait must be between 0 and 86400 seconds")
        settings = load_settings()
        with Client(settings=settings) as client:
            store = client.results
            if store is None:
                raise ResultsDisabled("results")
            if args.wait > 0:
                with contextlib.suppress(ResultTimeout):
                    client.async_result(args.id).get(timeout=args.wait, propagate=False)
            record = store.fetch(args.id)
    except QscaleError as exc:
        return fail(str(exc))
    print(json.dumps(record or {"status": PENDING}) if args.json else _line(record))
    finished = record is not None and record.get("status") in READY_STATES
    return 0 if finished or args.wait == 0 else EXIT_NOT_FINISHED


def _line(record: dict[str, Any] | None) -> str:
    """`SUCCESS <result as JSON>`, `FAILURE <Type>: <message>`, or the status alone."""
    if record is None:
        return f"{PENDING} (no record: not run yet, unknown id, or expired)"
    status = str(record.get("status", "?"))
    if "result" in record:
        return f"{status} {json.dumps(record['result'])}"
    error = record.get("error")
    if isinstance(error, dict):
        return f"{status} {error.get('type', '?')}: {error.get('message', '')}"
    return status

"""`python -m worker enqueue | dlq | status`: send tasks and inspect queues from a shell.

Connection settings come from QSCALE_* variables (QSCALE_BROKER_URL, QSCALE_QUEUES).
Every error is one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from worker.api import registry
from worker.api.client import Client, open_settings_broker
from worker.brokers import Broker, DeadLetter, QueueStats, redact_url
from worker.cli import fail
from worker.envelope import SIZE_HEADROOM, Envelope, decode
from worker.errors import BadMessage, ConfigError, QscaleError
from worker.results import ResultStore
from worker.settings import WorkerSettings, load_settings

MAX_COUNTDOWN = 366 * 86_400  # a year and a day


def register(subparsers: Any) -> None:
    enqueue = subparsers.add_parser(
        "enqueue", help="send task messages (bulk with --count)",
        description="Send COUNT messages calling task NAME; prints the id, or a summary.")
    enqueue.add_argument("name", metavar="NAME", help="registered task name")
    enqueue.add_argument("--args", default="[]", help="JSON list of positional arguments")
    enqueue.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    enqueue.add_argument("--count", type=int, default=1, help="how many messages (default 1)")
    enqueue.add_argument("--queue", default=None, help="queue (default: the task's, or "
                         "the first of QSCALE_QUEUES)")
    enqueue.add_argument("--priority", type=int, default=None, help="0-9 (9 first)")
    enqueue.add_argument("--countdown", type=float, default=0.0,
                         help="seconds before the messages become ready")
    enqueue.add_argument("--ids", action="store_true", help="print every id (bulk)")
    enqueue.set_defaults(func=cmd_enqueue)

    dlq = subparsers.add_parser("dlq", help="list, requeue or purge dead-lettered messages")
    dlq.add_argument("action", choices=("list", "requeue", "purge"))
    dlq.add_argument("--queue", default=None, help="queue (default: first of QSCALE_QUEUES)")
    dlq.add_argument("--limit", type=int, default=None, help="at most N messages")
    dlq.add_argument("--json", action="store_true", help="list as JSON lines")
    dlq.add_argument("--yes", action="store_true", help="confirm `purge`")
    dlq.set_defaults(func=cmd_dlq)

    status = subparsers.add_parser("status", help="queue depths, in-flight, delayed, DLQ")
    status.add_argument("--queue", action="append", default=None,
                        help="queue to show (repeatable; default: QSCALE_QUEUES)")
    status.add_argument("--workers", default="",
                        help="comma-separated worker base URLs whose /state to read "
                             "(e.g. http://10.0.0.5:8080) for busy/concurrency")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)


# -- enqueue --


class ProgressBar:
    """A plain text progress bar on stderr (redrawn at most ~10 times a second)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.total, self.stream, self.width = total, stream, width
        self.done = 0
        self.started = time.monotonic()
        self._last_draw = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.done >= self.total or now - self._last_draw >= 0.1:
            self._last_draw = now
            self.draw(now)

    def draw(self, now: float) -> None:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(fraction * self.width)
        rate = self.done / max(now - self.started, 1e-9)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{self.done}/{self.total} {fraction:4.0%} {rate:,.0f} msg/s")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _json_arg(text: str, kind: type, flag: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{flag} must be a JSON {'list' if kind is list else 'object'}")
    return value


def cmd_enqueue(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        call_args = _json_arg(args.args, list, "--args")
        call_kwargs = _json_arg(args.kwargs, dict, "--kwargs")
        if args.count < 1:
            raise ConfigError("--count must be >= 1")
        if not (math.isfinite(args.countdown) and 0 <= args.countdown <= MAX_COUNTDOWN):
            raise ConfigError(f"--countdown must be between 0 and {MAX_COUNTDOWN:g} seconds")
        registry.import_task_modules(settings.imports)
        spec = registry.lookup(args.name)
        queue = args.queue or (spec.queue if spec else settings.queues[0])
        envelopes = [Envelope.create(args.name, call_args, call_kwargs, queue=queue,
                                     priority=args.priority) for _ in range(args.count)]
        envelopes[0].encode()  # a bad argument or option fails here, before anything is sent
        with Client(settings=settings) as client:
            started = time.monotonic()
            if args.count == 1:
                client.send(envelopes[0], countdown=args.countdown)
                print(envelopes[0].id)
                return 0
            bar = ProgressBar(args.count)
            client.send_many(envelopes, progress=bar.advance, countdown=args.countdown)
            elapsed = time.monotonic() - started
    except QscaleError as exc:
        return fail(str(exc))
    if args.ids:
        print("\n".join(env.id for env in envelopes))
    else:
        print(f"enqueued {args.count} messages to {queue} in {elapsed:.2f}s "
              f"({args.count / max(elapsed, 1e-9):,.0f} msg/s)")
    return 0


# -- dlq --


def _describe(dead: DeadLetter) -> dict[str, Any]:
    """Task name and id from a dead body, tolerating bodies that are not envelopes."""
    task, task_id = "?", "?"
    try:
        raw = json.loads(dead.body)
        if isinstance(raw, dict):
            task, task_id = str(raw.get("task", "?")), str(raw.get("id", "?"))
    except ValueError:
        pass
    return {"failed_at": _iso(dead.failed_at), "task": task, "id": task_id,
            "reason": dead.reason, "detail": dead.detail}


def _iso(stamp: float) -> str:
    try:
        return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):  # a record's own (impossible) timestamp
        return "?"


def cmd_dlq(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        queue = args.queue or settings.queues[0]
        if args.action == "purge" and not args.yes:
            raise ConfigError(f"purge deletes the dead letters of {queue!r}; add --yes")
        with open_settings_broker(settings) as broker:
            if args.action == "list":
                rows = [_describe(d) for d in broker.dead_letters(queue, args.limit or 100)]
                _print_dead(rows, as_json=args.json)
            elif args.action == "requeue":
                moved = broker.requeue_dead(queue, args.limit, before=_reopener(settings))
                print(f"requeued {moved} messages to {queue}")
            else:
                print(f"purged {broker.purge_dead(queue)} dead letters of {queue}")
    except QscaleError as exc:
        return fail(str(exc))
    return 0


def _reopener(settings: WorkerSettings) -> Callable[[bytes], None] | None:
    """Requeueing a dead letter reopens its result (and its chain's and chord's), so it
    may end SUCCESS this time; bodies that do not decode have no result to reopen."""
    url = settings.effective_result_url
    if url is None:
        return None
    store = ResultStore(url, settings.result_ttl)

    def reopen(body: bytes) -> None:
        try:
            env = decode(body, settings.max_message_bytes + SIZE_HEADROOM)
        except BadMessage:
            return
        store.reopen(env)

    return reopen


def _print_dead(rows: Sequence[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = [("FAILED_AT", "TASK", "ID", "REASON")]
    table += [(r["failed_at"], r["task"], r["id"], _one_line(r["reason"], 80)) for r in rows]
    _print_table(table)
    print(f"{len(rows)} dead letter(s)")


def _one_line(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"


def _print_table(rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# -- status --


def read_worker_states(urls: Sequence[str], timeout: float = 2.0) -> list[dict[str, Any]]:
    """GET /state from each worker; unreachable ones come back as {"url", "error"}."""
    states = []
    for url in urls:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/state", timeout=timeout) as reply:
                state = json.loads(reply.read())
            states.append({"url": url, **state})
        except (OSError, ValueError) as exc:
            states.append({"url": url, "error": str(exc)})
    return states


def queue_rows(broker: Broker, queues: Sequence[str]) -> list[QueueStats]:
    return [broker.stats(queue) for queue in queues]


def cmd_status(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        queues = args.queue or list(settings.queues)
        with open_settings_broker(settings) as broker:
            stats = queue_rows(broker, queues)
    except QscaleError as exc:
        return fail(str(exc))
    workers = read_worker_states([u for u in args.workers.split(",") if u.strip()])
    report = _status_report(settings, stats, workers)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table: list[Sequence[Any]] = [("QUEUE", "READY", "IN_FLIGHT", "DELAYED", "DEAD")]
    table += [(s["queue"], s["ready"], "?" if s["in_flight"] is None else s["in_flight"],
               s["delayed"], s["dead"]) for s in report["queues"]]
    _print_table(table)
    if workers:
        print()
        wtable: list[Sequence[Any]] = [("WORKER", "BUSY", "CONCURRENCY", "IN_FLIGHT", "STATE")]
        for w in workers:
            if "error" in w:
                wtable.append((w["url"], "?", "?", "?", f"unreachable: {w['error']}"))
            else:
                state = "draining" if w.get("draining") else "ready" if w.get("ready") else \
                    "not ready"
                wtable.append((w.get("pod", w["url"]), w.get("busy", "?"),
                               w.get("concurrency", "?"), w.get("in_flight", "?"), state))
        _print_table(wtable)
    return 0


def _status_report(settings: WorkerSettings, stats: Sequence[QueueStats],
                   workers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    reachable = [w for w in workers if "error" not in w]
    return {
        "broker": redact_url(settings.broker_url),
        "queues": [{"queue": s.queue, "ready": s.ready, "in_flight": s.in_flight,
                    "delayed": s.delayed, "dead": s.dead} for s in stats],
        "workers": list(workers),
        "busy": sum(int(w.get("busy", 0)) for w in reachable) if reachable else None,
    }

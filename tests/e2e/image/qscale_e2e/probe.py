"""The in-cluster probe the e2e tests run with `kubectl exec` (JSON on stdout).

    python -m qscale_e2e enqueue RUN COUNT SECONDS [--queue Q]
    python -m qscale_e2e verify RUN [--events]
    python -m qscale_e2e raw QUEUE BODY

`enqueue` records the ids it sends in `e2e:<run>:expected` before publishing, so
`verify` can compare what was sent with what the workers' event log shows.
`raw` publishes bytes that are not an envelope (for the dead-letter test).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from qscale_e2e.tasks import events_key, expected_key, results_redis
from worker.api.client import Client
from worker.brokers import open_broker
from worker.envelope import Envelope
from worker.settings import load_settings

SAMPLE_SIZE = 20


def cmd_enqueue(args: argparse.Namespace) -> dict[str, Any]:
    envelopes = [Envelope.create("e2e.record", [args.run, args.seconds], queue=args.queue)
                 for _ in range(args.count)]
    store = results_redis()
    ids = [env.id for env in envelopes]
    for start in range(0, len(ids), 1000):
        store.sadd(expected_key(args.run), *ids[start:start + 1000])
    started = time.monotonic()
    with Client(settings=load_settings()) as client:
        client.send_many(envelopes)
    return {"run": args.run, "count": len(ids), "queue": args.queue,
            "seconds": round(time.monotonic() - started, 3)}


def summarize(expected: set[str], events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-id execution counts: missing, duplicated, interrupted, unexpected."""
    starts = Counter(e["id"] for e in events if e["ev"] == "start")
    finishes = Counter(e["id"] for e in events if e["ev"] == "finish")
    missing = sorted(expected - set(finishes))
    duplicated = sorted(i for i, n in finishes.items() if n > 1)
    interrupted = sorted(i for i in starts if starts[i] > finishes[i])
    unexpected = sorted(set(starts) - expected)
    return {
        "expected": len(expected), "finished": len(set(finishes) & expected),
        "missing": len(missing), "missing_sample": missing[:SAMPLE_SIZE],
        "duplicated": len(duplicated), "duplicated_sample": duplicated[:SAMPLE_SIZE],
        "interrupted": len(interrupted), "interrupted_sample": interrupted[:SAMPLE_SIZE],
        "unexpected": len(unexpected), "executions": sum(starts.values()),
        "pods": sorted({e["pod"] for e in events}),
    }


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    store = results_redis()
    expected = {m.decode() for m in store.smembers(expected_key(args.run))}
    events = [json.loads(raw) for raw in store.lrange(events_key(args.run), 0, -1)]
    report = summarize(expected, events)
    if args.events:
        report["events"] = events
    return report


def cmd_raw(args: argparse.Namespace) -> dict[str, Any]:
    with open_broker(load_settings().broker_url) as broker:
        broker.publish(args.queue, args.body.encode())
    return {"queue": args.queue, "bytes": len(args.body.encode())}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qscale_e2e")
    sub = parser.add_subparsers(dest="command", required=True)
    enqueue = sub.add_parser("enqueue")
    enqueue.add_argument("run")
    enqueue.add_argument("count", type=int)
    enqueue.add_argument("seconds", type=float)
    enqueue.add_argument("--queue", default="default")
    enqueue.set_defaults(func=cmd_enqueue)
    verify = sub.add_parser("verify")
    verify.add_argument("run")
    verify.add_argument("--events", action="store_true")
    verify.set_defaults(func=cmd_verify)
    raw = sub.add_parser("raw")
    raw.add_argument("queue")
    raw.add_argument("body")
    raw.set_defaults(func=cmd_raw)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(json.dumps(args.func(args)))
    return 0

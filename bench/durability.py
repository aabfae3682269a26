"""What each broker setting costs and loses: Redis appendfsync everysec vs always, and
RabbitMQ with publisher confirms, measured side by side in one run.

    python -m bench.durability [--messages 3000] [--kills 5]     # bench/results/durability-*.json

For each setting, on a broker of its own (private Redis / RabbitMQ processes with their
data on this machine's disk, as in tests/checker):
* acknowledged publishes per second from one sequential producer (each call returns
  once the broker acknowledged it: a Redis reply, a RabbitMQ confirm);
* the same with 16 publishes pipelined per round trip (`publish_many`);
* the claim + ack rate of one consumer connection (every claim and ack is a write);
* loss: a producer publishes as fast as it can while the broker process is SIGKILLed
  at a random moment; after the restart, how many acknowledged messages are missing.

A process kill does not lose what Redis has already written to the file (the kernel
has it); `everysec` loses the last second or so on an OS or node crash, or after a
stalled fsync made Redis postpone its writes, which a process kill cannot show.
`always` fsyncs before it replies. The ratios (always / everysec) are the point;
absolute rates are this 2-core machine's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tests.checker.brokers import PrivateBroker, PrivateRabbit, PrivateRedis
from worker.brokers import Broker, open_broker

RESULTS = Path(__file__).resolve().parent / "results"


def _broker(url: str) -> Broker:
    return open_broker(url, max_priority=0, amqp_queue_type="classic")


def _rates(server: PrivateBroker, messages: int) -> dict[str, float]:
    queue = f"dur-{uuid.uuid4().hex[:8]}"
    bodies = [b'{"id":"%d","task":"noop"}' % i for i in range(messages)]
    with _broker(server.url) as broker:
        started = time.perf_counter()
        for body in bodies:
            broker.publish(queue, body)
        sequential = messages / (time.perf_counter() - started)
        started = time.perf_counter()
        for start in range(0, messages, 16):
            broker.publish_many(queue, bodies[start:start + 16])
        pipelined = messages / (time.perf_counter() - started)
        started, done = time.perf_counter(), 0
        while done < 2 * messages:
            got = broker.claim([queue], 32, 5.0)
            if not got:
                raise RuntimeError(f"queue ran dry after {done}")
            broker.ack(got)
            done += len(got)
        consumed = done / (time.perf_counter() - started)
    return {"publish_per_s": round(sequential), "publish16_per_s": round(pipelined),
            "claim_ack_per_s": round(consumed)}


def _loss(server: PrivateBroker, kills: int, rng: random.Random) -> list[dict[str, int]]:
    runs = []
    for _ in range(kills):
        queue = f"dur-loss-{uuid.uuid4().hex[:8]}"
        acknowledged: list[bytes] = []
        stop = threading.Event()

        def produce(queue: str = queue, acknowledged: list[bytes] = acknowledged,
                    stop: threading.Event = stop) -> None:
            try:
                with _broker(server.url) as broker:
                    i = 0
                    while not stop.is_set():
                        body = b"m-%d" % i
                        broker.publish(queue, body)
                        acknowledged.append(body)  # only once the broker acknowledged it
                        i += 1
            except Exception:
                return  # the broker died under it: what was acknowledged is recorded

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        time.sleep(rng.uniform(0.5, 2.0))
        server.kill()
        stop.set()
        thread.join(30)
        server.start()
        with _broker(server.url) as broker:
            present = set()
            while got := broker.claim([queue], 500, 1.0):
                present.update(d.body for d in got)
                broker.ack(got)
        runs.append({"acknowledged": len(acknowledged),
                     "lost": len(set(acknowledged) - present)})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    settings: dict[str, Any] = {}
    for name, server in (("redis everysec", PrivateRedis("everysec")),
                         ("redis always", PrivateRedis("always")),
                         ("rabbitmq confirms", PrivateRabbit())):
        try:
            server.start()
            rates = _rates(server, args.messages)
            runs = _loss(server, args.kills, rng)
        finally:
            server.stop()
        settings[name] = {**rates, "kill_runs": runs,
                          "lost_total": sum(r["lost"] for r in runs),
                          "acknowledged_total": sum(r["acknowledged"] for r in runs)}
        print(f"{name:18} publish {rates['publish_per_s']:>6}/s  publish x16 "
              f"{rates['publish16_per_s']:>6}/s  claim+ack {rates['claim_ack_per_s']:>6}/s  "
              f"SIGKILL x{args.kills}: lost {settings[name]['lost_total']} of "
              f"{settings[name]['acknowledged_total']} acknowledged", flush=True)
    every, always = settings["redis everysec"], settings["redis always"]
    ratios = {k: round(always[k] / every[k], 2) for k in
              ("publish_per_s", "publish16_per_s", "claim_ack_per_s")}
    print(f"redis always / everysec: {ratios}")
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M")
    out = RESULTS / f"durability-{stamp}.json"
    out.write_text(json.dumps({"settings": settings, "always_over_everysec": ratios,
                               "messages": args.messages, "kills": args.kills}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

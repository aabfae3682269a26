"""Raw broker throughput: publish_many, then claim + ack in batches, on one connection.

    python -m bench.broker_throughput [--messages 50000] [--batch 100] [redis|amqp ...]

Measures the broker layer alone (no worker, no child processes), so it is the
ceiling the supervisor can reach per connection. Prints one line per broker.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from worker.brokers import open_broker

URLS = {"redis": "redis://127.0.0.1:6379/0", "amqp": "amqp://qscale:qscale@127.0.0.1:5672//"}


def measure(url: str, messages: int, batch: int) -> dict[str, float]:
    queue = f"bench-broker-{uuid.uuid4().hex[:8]}"
    bodies = [json.dumps({"id": i, "task": "noop", "args": []}).encode()
              for i in range(messages)]
    with open_broker(url) as broker:
        started, cpu = time.perf_counter(), time.process_time()
        broker.publish_many(queue, bodies)
        published = time.perf_counter() - started
        publish_cpu = time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        done = 0
        while done < messages:
            deliveries = broker.claim([queue], batch, 5.0)
            if not deliveries:
                raise RuntimeError(f"queue ran dry after {done} of {messages}")
            broker.ack(deliveries)
            done += len(deliveries)
        consumed = time.perf_counter() - started
        consume_cpu = time.process_time() - cpu
        stats = broker.stats(queue)
        assert stats.ready == 0, stats
        started = time.perf_counter()
        for body in bodies[:2000]:
            broker.publish(queue, body)
        single = time.perf_counter() - started
        while done < messages + 2000:
            deliveries = broker.claim([queue], batch, 5.0)
            broker.ack(deliveries)
            done += len(deliveries)
    # *_cpu_us: client CPU per message, which does not depend on how busy the host is
    return {"publish_many_per_s": messages / published, "claim_ack_per_s": messages / consumed,
            "publish_one_per_s": 2000 / single,
            "publish_many_cpu_us": publish_cpu / messages * 1e6,
            "claim_ack_cpu_us": consume_cpu / messages * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("brokers", nargs="*", help="redis and/or amqp (default: both)")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    unknown = set(args.brokers) - set(URLS)
    if unknown:
        parser.error(f"unknown broker(s) {sorted(unknown)}; choose from {sorted(URLS)}")
    for name in args.brokers or list(URLS):
        result = measure(URLS[name], args.messages, args.batch)
        print(f"{name}: " + ", ".join(f"{k}={v:,.1f}" for k, v in result.items())
              + f" (messages={args.messages}, batch={args.batch})", flush=True)


if __name__ == "__main__":
    main()

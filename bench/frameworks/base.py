"""The adapter interface and the broker plumbing the adapters share.

Every adapter is driven the same way by `bench.harness`: pre-load the queue with
its own client, start its worker as a subprocess, and afterwards ask how many
messages are still unfinished. On Redis "unfinished" includes claimed-but-unacked
messages, read live from the framework's own keys. On RabbitMQ only the ready
count is live (the management API's unacked figure lags by seconds), so the
harness reads it after the worker stopped, when unacked messages have returned to
the queue: any message that ran but was never acked shows up there.
"""

from __future__ import annotations

import abc
import contextlib
import json
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import amqp
import redis

CHUNK = 1000


@dataclass(frozen=True)
class BrokerTarget:
    """One broker all frameworks share: `kind` is "redis" or "rabbitmq"."""

    kind: str
    url: str
    management_api: str = ""  # RabbitMQ only: http://user:pass@host:port


class Framework(abc.ABC):
    """How one framework is pre-loaded, started and inspected on one broker."""

    name: str
    brokers: tuple[str, ...] = ("redis", "rabbitmq")
    # Thread counts worth trying per process; the harness keeps the best.
    thread_options: tuple[int, ...] = (1,)
    note: str = ""

    def __init__(self, target: BrokerTarget) -> None:
        self.target = target

    @abc.abstractmethod
    def preload(self, queue: str, workload: str, count: int) -> None:
        """Enqueue tasks 0..count-1 of `workload` with this framework's own client."""

    @abc.abstractmethod
    def worker_command(self, queue: str, processes: int, threads: int) -> list[str]:
        """The command line that starts this framework's worker on `queue`."""

    def worker_env(self, queue: str, processes: int) -> dict[str, str]:
        """Extra environment for the worker process."""
        return {}

    @abc.abstractmethod
    def unfinished_redis(self, queue: str) -> int:
        """Ready plus claimed-but-unacked messages, read live from Redis."""

    def rabbit_queues(self, queue: str) -> tuple[str, ...]:
        """The RabbitMQ queues whose ready messages count as unfinished work."""
        return (queue,)

    def unfinished(self, queue: str) -> int:
        if self.target.kind == "redis":
            return self.unfinished_redis(queue)
        return sum(rabbit_ready(self.target.url, q) for q in self.rabbit_queues(queue))

    def cleanup(self, queue: str) -> None:
        """Remove everything the run left on the broker."""
        if self.target.kind == "rabbitmq":
            rabbit_delete_prefix(self.target.management_api, queue)
        else:
            redis_client(self.target.url).flushdb()

    def redis(self) -> redis.Redis[bytes]:
        return redis_client(self.target.url)


def python_bin() -> str:
    return sys.executable


def chunks(count: int, size: int = CHUNK) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


def redis_client(url: str) -> redis.Redis[bytes]:
    return redis.Redis.from_url(url, socket_timeout=10)


def _amqp_connection(url: str) -> amqp.Connection:
    parts = urllib.parse.urlsplit(url)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    conn = amqp.Connection(host=f"{parts.hostname}:{parts.port or 5672}",
                           userid=parts.username or "guest", password=parts.password or "guest",
                           virtual_host=vhost or "/", connect_timeout=10)
    conn.connect()
    return conn


def rabbit_ready(url: str, queue: str) -> int:
    """Ready messages in `queue` (0 if it does not exist), via a passive declare."""
    conn = _amqp_connection(url)
    try:
        channel = conn.channel()
        try:
            _, ready, _ = channel.queue_declare(queue, passive=True)
        except amqp.exceptions.NotFound:
            return 0
        return int(ready)
    finally:
        with contextlib.suppress(OSError, amqp.exceptions.AMQPError):
            conn.close()


def _api(base: str, path: str, method: str = "GET") -> object:
    parts = urllib.parse.urlsplit(base)
    manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    root = f"{parts.scheme}://{parts.hostname}:{parts.port}"
    manager.add_password(None, root, parts.username or "guest", parts.password or "guest")
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(manager))
    request = urllib.request.Request(root + path, method=method)
    with opener.open(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def rabbit_delete_prefix(api: str, prefix: str) -> None:
    """Delete the queues and exchanges on vhost / whose names start with `prefix`."""
    for kind in ("queues", "exchanges"):
        listing = _api(api, f"/api/{kind}/%2F?columns=name")
        assert isinstance(listing, list)
        for item in listing:
            name = str(item["name"])
            if name.startswith(prefix):
                _api(api, f"/api/{kind}/%2F/{urllib.parse.quote(name, safe='')}", "DELETE")

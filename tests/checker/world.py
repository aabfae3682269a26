"""The world a checker run happens in: a private broker behind Toxiproxy, real workers,
a producer, and the faults that can be done to them.

Workers (`python -m worker run`, two children each) reach the broker through a
Toxiproxy proxy, so network faults hit them and not the producer; the producer and
the checker talk to the broker directly. Every fault is logged with its time, and
every worker process that ends is accounted for: killed by us, drained by us, or a
violation.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from tests.checker.brokers import PrivateBroker, PrivateRabbit, PrivateRedis
from tests.runtime_harness import WorkerProcess
from tests.toxiproxy import Proxy, Toxiproxy
from worker.api.client import Client
from worker.brokers import Broker, open_broker
from worker.brokers.amqp import AmqpBroker
from worker.settings import load_settings

WORKERS = 2
DRAIN_SECONDS = 3.0


@dataclass
class Exit:
    """A worker process that ended, and whether the checker ended it."""

    pid: int
    code: int | None
    cause: str          # killed, drained, or unexpected
    log_tail: str = ""


@dataclass
class World:
    kind: str                       # redis or amqp
    queue: str
    broker: PrivateBroker
    results: PrivateRedis | None    # AMQP: a Redis of its own for results
    toxi: Toxiproxy
    proxy: Proxy
    history: str
    workers: list[WorkerProcess] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    faults: list[tuple[float, str, str]] = field(default_factory=list)
    rss: dict[int, list[int]] = field(default_factory=dict)
    broker_restarts: list[float] = field(default_factory=list)
    started: float = 0.0
    _heal_at: float | None = None

    # -- set-up --

    @classmethod
    def create(cls, kind: str, queue: str) -> World:
        broker: PrivateBroker = PrivateRedis("always") if kind == "redis" else PrivateRabbit()
        broker.start()
        results = None
        if kind == "amqp":
            results = PrivateRedis("always")
            results.start()
        toxi = Toxiproxy.start()
        proxy = toxi.proxy("broker", f"127.0.0.1:{broker.port}")
        history = tempfile.NamedTemporaryFile(prefix="qscale-chk-", suffix=".jsonl",  # noqa: SIM115
                                              delete=False).name
        world = cls(kind, queue, broker, results, toxi, proxy, history)
        for _ in range(WORKERS):
            world.start_worker()
        for worker in world.workers:
            worker.wait_ready(60)
        world.started = time.monotonic()
        return world

    @property
    def direct_url(self) -> str:
        return self.broker.url

    @property
    def worker_url(self) -> str:
        return self.broker.url.replace(f":{self.broker.port}", f":{self.proxy.port}")

    @property
    def result_url(self) -> str:
        return self.results.url if self.results is not None else self.broker.url

    def _settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "imports": "tests.checker.tasks", "check_history": self.history,
            "concurrency": 2, "lease_seconds": 2, "drain_seconds": DRAIN_SECONDS,
            "default_max_retries": 6, "retry_backoff_base": 0.05, "retry_backoff_max": 0.5,
            "max_redeliveries": 20, "result_url": self.result_url}
        if isinstance(self.broker, PrivateRabbit):
            settings["rabbitmq_api"] = self.broker.api
        return settings

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self.worker_url, self.queue, **self._settings()).start()
        self.workers.append(worker)
        self._born[worker.pid] = time.monotonic()
        return worker

    def client(self) -> Client:
        return Client(settings=load_settings(broker_url=self.direct_url,
                                             result_url=self.result_url))

    def inspect(self) -> Broker:
        """A connection of the checker's own for stats and the dead-letter queue."""
        if isinstance(self.broker, PrivateRabbit):
            return AmqpBroker(self.direct_url, management_url=self.broker.api)
        return open_broker(self.direct_url)

    # -- faults --

    def now(self) -> float:
        return time.monotonic() - self.started

    def _note(self, kind: str, detail: str) -> None:
        self.faults.append((round(self.now(), 2), kind, detail))

    def inject(self, kind: str, seconds: float, rng: random.Random) -> None:
        live = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        if kind == "kill_child" and live:
            worker = rng.choice(live)
            children = worker.children()
            if children:
                pid = rng.choice(children)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._note(kind, f"child {pid} of worker {worker.pid}")
        elif kind in ("kill_worker", "drain_worker") and live:
            worker = rng.choice(live)
            self._end_worker(worker, drain=kind == "drain_worker")
            self.start_worker()
        elif kind == "kill_broker":
            self.heal()
            self.broker.kill()
            self._note(kind, "SIGKILL")
            took = self.broker.start()
            self.broker_restarts.append(took)
            self._note("broker_back", f"after {took:.1f}s")
        elif kind in ("latency", "reset", "timeout", "half_open"):
            self.heal()
            if kind == "latency":
                self.proxy.latency(rng.choice([50, 200, 500]), jitter=50)
            elif kind == "reset":
                self.proxy.reset_peer()
            elif kind == "timeout":
                self.proxy.timeout(int(seconds * 500))
            else:
                self.proxy.half_open()
            self._heal_at = time.monotonic() + seconds
            self._note(kind, f"{seconds:g}s")

    def _end_worker(self, worker: WorkerProcess, *, drain: bool) -> None:
        assert worker.proc is not None
        if drain:
            worker.signal(signal.SIGTERM)
            try:
                code = worker.proc.wait(DRAIN_SECONDS + 25)
            except Exception:
                code = None
            cause = "drained" if code == 0 else "unexpected"
            if code is None:
                worker.proc.kill()
                worker.proc.wait(10)
        else:
            worker.proc.kill()
            code = worker.proc.wait(10)
            cause = "killed"
        self.exits.append(Exit(worker.pid, code, cause,
                               "" if cause != "unexpected" else worker.log()[-3000:]))
        self._note("drain_worker" if drain else "kill_worker", f"worker {worker.pid} exit {code}")
        self.workers.remove(worker)
        self._retired.append(worker)

    def tick(self) -> None:
        """Heal a network fault whose time is up; notice workers that died on their own."""
        if self._heal_at is not None and time.monotonic() >= self._heal_at:
            self.heal()
        for worker in list(self.workers):
            if worker.proc is not None and worker.proc.poll() is not None:
                self.exits.append(Exit(worker.pid, worker.proc.returncode, "unexpected",
                                       worker.log()[-3000:]))
                self.workers.remove(worker)
                self._retired.append(worker)
                self.start_worker()

    def heal(self) -> None:
        if self._heal_at is not None:
            self.proxy.heal()
            self._heal_at = None

    def diagnose(self) -> str:
        """Who holds what when a run did not settle: each live worker's /state and log
        tail and, on RabbitMQ, the unacknowledged deliveries per consumer connection."""
        lines = []
        for worker in self.workers:
            state = {k: v for k, v in worker.state().items()
                     if k in ("broker_connected", "in_flight", "busy", "prefetched",
                              "draining", "cordoned", "completed", "child_restarts")}
            alive = worker.proc is not None and worker.proc.poll() is None
            lines.append(f"worker {worker.pid} alive={alive} state={state}")
            lines.append("  log tail: " + worker.log()[-1500:].replace("\n", "\n  "))
        if isinstance(self.broker, PrivateRabbit):
            lines.append("rabbitmq channels: " + self.broker.channels_summary())
        return "\n".join(lines)

    def sample_rss(self) -> None:
        """RSS of each supervisor, from 10 s after its start (a warm, serving worker)."""
        for worker in self.workers:
            if time.monotonic() - self._born.get(worker.pid, 0.0) < 10:
                continue
            with contextlib.suppress(OSError, StopIteration, ValueError):
                with open(f"/proc/{worker.pid}/status") as status:
                    kib = int(next(line for line in status
                                   if line.startswith("VmRSS")).split()[1])
                self.rss.setdefault(worker.pid, []).append(kib)

    def close(self) -> None:
        self.heal()
        for worker in self.workers + self._retired:
            worker.stop()
        self.toxi.stop()
        self.broker.stop()
        if self.results is not None:
            self.results.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.history)

    def __post_init__(self) -> None:
        self._retired: list[WorkerProcess] = []
        self._born: dict[int, float] = {}

"""The controller's rate and service-time estimates against a real worker at a known load.

A producer enqueues `qscale.demo.sleep(0.2)` at a steady 5/s; one real worker
(`python -m worker run`, concurrency 2) runs them. The controller's own loop
(`PoolLoop`, dry run) reads depth through the real `BrokerDepthSource` and the
worker's live `/state` through the real `PodStateReader` over HTTP; only the pod
list (the Kubernetes part) is a stand-in: one V1Pod at 127.0.0.1. The loop is
started while the load is already steady, as after a controller restart or a
failover. Its arrival rate, completion rate and service time must match the load
within +-30%, and its in-flight count the worker's busy slots. Accuracy, not speed:
the tolerances are wide because the machine is shared.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.loop import LoopDeps, PoolLoop
from controller.metrics import ControllerMetrics
from controller.podreader import PodStateReader
from controller.policy import PolicyConfig
from controller.pool import PoolSpec
from controller.sources import BrokerDepthSource
from tests.runtime_harness import WorkerProcess
from tests.unit.test_controller_loop import FakeActuator
from worker.brokers import open_broker
from worker.envelope import Envelope

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.rabbitmq]

SERVICE_SECONDS = 0.2
RATE = 5.0              # tasks per second: 1 of the worker's 2 slots busy on average
WARMUP_SECONDS = 5.0    # load running before the controller starts watching
WATCH_SECONDS = 20.0    # the controller's ticks, 1 s apart
TOLERANCE = 0.30


class Producer:
    """Publishes one sleep task every 1/RATE s on an absolute schedule (no drift)."""

    def __init__(self, broker_url: str, queue: str) -> None:
        self.broker_url, self.queue = broker_url, queue
        self.sent = 0
        self.started = 0.0
        self.stopped: float | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="producer")

    def start(self) -> Producer:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with open_broker(self.broker_url) as broker:
                while not self._stop.is_set():
                    due = self.started + self.sent / RATE
                    self._stop.wait(max(0.0, due - time.monotonic()))
                    if self._stop.is_set():
                        break
                    body = Envelope.create("qscale.demo.sleep", [SERVICE_SECONDS],
                                           queue=self.queue).encode()
                    broker.publish(self.queue, body)
                    self.sent += 1
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        self.stopped = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def rate(self) -> float:
        """The rate actually achieved (a loaded host may fall behind the schedule)."""
        end = self.stopped if self.stopped is not None else time.monotonic()
        return self.sent / (end - self.started)


class OnePodList:
    """KubeApi stand-in for the pod list only: one Ready pod at 127.0.0.1."""

    def __init__(self, name: str) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.pod = {
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": now,
                         "labels": {"app": "w"}},
            "status": {"phase": "Running", "podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": now}]}}

    def list_pods(self, namespace: str, label_selector: str) -> dict[str, Any]:
        return {"items": [self.pod]}


def _pool(queue: str, broker_url: str, port: int) -> PoolSpec:
    return PoolSpec(namespace="ns", name="rates", queues=(queue,), deployment="w",
                    concurrency=2, policy=PolicyConfig(mode="latency", max_replicas=5),
                    broker_url=broker_url, pod_state_port=port)


def _within(measured: float | None, expected: float) -> bool:
    return measured is not None and abs(measured - expected) <= TOLERANCE * expected


def test_rates_and_service_time_match_a_known_load(broker_url: str, queue_name: str) -> None:
    worker = WorkerProcess(broker_url, queue_name, imports="worker.demo_tasks",
                           concurrency=2).start()
    reader = PodStateReader(OnePodList(f"test-{queue_name}"),  # type: ignore[arg-type]
                            access="direct", timeout=3.0)
    deps = LoopDeps(make_source=lambda s: BrokerDepthSource(broker_url, s.queues),
                    make_actuator=lambda _s: FakeActuator(1),  # type: ignore[arg-type,return-value]
                    pod_reader=reader, events=None, make_status=None,
                    metrics=ControllerMetrics(), dry_run=True)
    loop = PoolLoop(_pool(queue_name, broker_url, worker.port), deps)
    producer: Producer | None = None
    ticks: list[dict[str, Any]] = []
    held: list[int] = []
    try:
        worker.wait_ready()
        producer = Producer(broker_url, queue_name).start()
        time.sleep(WARMUP_SECONDS)
        completed_before = int(worker.state()["completed"])
        watch_start = time.monotonic()
        for i in range(round(WATCH_SECONDS)):
            state = worker.state()             # just before the loop reads the broker
            ticks.append(loop.tick().fields)
            held.append(int(state.get("in_flight", 0)))
            worker.check_alive()
            # About 1 s apart, at a random phase of the producer's 0.2 s period: ticks
            # locked to it would sample the same moment of every task (aliasing).
            due = watch_start + i + 1 + random.uniform(0.0, 1.0 / RATE)
            time.sleep(max(0.0, due - time.monotonic()))
        watched = time.monotonic() - watch_start
        done = int(worker.state()["completed"]) - completed_before
        producer.stop()
        assert producer.error is None, producer.error
        sent_rate, done_rate = producer.rate(), done / watched
    finally:
        if producer is not None:
            producer.stop()
        loop.close()
        reader.close()
        worker.stop()

    for n, f in enumerate(ticks):
        print(f"t={n:2d}s depth={f['depth']} in_flight={f['in_flight']} "
              f"worker_in_flight={held[n]} arrival={f['arrival']} completion={f['completion']} "
              f"service_time={f['service_time']}")
    print(f"enqueued {sent_rate:.2f}/s, the worker completed {done_rate:.2f}/s while watched")
    # The load itself was what the test says (else the comparison below means nothing).
    assert _within(sent_rate, RATE) and _within(done_rate, RATE), (sent_rate, done_rate)

    last = ticks[-1]
    assert _within(last["arrival"], RATE), f"arrival {last['arrival']} vs {RATE}/s"
    assert _within(last["completion"], RATE), f"completion {last['completion']} vs {RATE}/s"
    assert _within(last["service_time"], SERVICE_SECONDS), \
        f"service time {last['service_time']} vs {SERVICE_SECONDS}s"
    # Once steady (the second half), every smoothed estimate stays within the band.
    steady = ticks[len(ticks) // 2:]
    for key, expected in (("arrival", RATE), ("completion", RATE),
                          ("service_time", SERVICE_SECONDS)):
        off = [f[key] for f in steady if not _within(f[key], expected)]
        assert off == [], f"{key} left the +-30% band once steady: {off}"
    # In flight as the controller counts it (from the broker) vs what the worker says it
    # holds (running + claimed): both ~ rate x service time = 1 on average.
    in_flight = statistics.mean(f["in_flight"] for f in ticks)
    worker_held = statistics.mean(held)
    print(f"mean in flight: controller {in_flight:.2f}, worker {worker_held:.2f}, "
          f"Little's law {RATE * SERVICE_SECONDS:.2f}")
    assert abs(worker_held - RATE * SERVICE_SECONDS) <= 0.5, worker_held
    if broker_url.startswith("redis"):
        # Redis claims are exact and immediate.
        assert abs(in_flight - worker_held) <= max(0.5, TOLERANCE * worker_held), \
            (in_flight, worker_held)
    else:
        # RabbitMQ's unacked count is the management API's snapshot, refreshed every ~5 s
        # (a handful of samples here), and it includes deliveries waiting in the
        # consumer's prefetch window that the worker has not claimed yet (basic.qos is
        # 2 x concurrency until a service time is known, and shrinks only after 10 s).
        # So only bounds: never more than that window, never negative.
        window = 2 * 2
        assert all(0 <= f["in_flight"] <= window for f in ticks), ticks

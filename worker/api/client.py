"""The producer's connections: publish envelopes, read results.

Most code uses the process-wide default client, created lazily from the
environment (QSCALE_BROKER_URL / QSCALE_RESULT_URL) or set by `configure()`.
Tests and libraries can build their own `Client` and pass it explicitly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from worker.api.handles import AsyncResult
from worker.brokers import Broker, open_broker
from worker.envelope import Envelope
from worker.errors import BadMessage, BrokerUnavailable
from worker.results import ResultStore
from worker.settings import WorkerSettings, load_settings

PUBLISH_CHUNK = 500
RETRY_FIRST_PAUSE, RETRY_MAX_PAUSE = 0.1, 1.0

log = logging.getLogger(__name__)


def open_settings_broker(settings: WorkerSettings) -> Broker:
    """A producer/inspection connection declaring queues exactly as workers do."""
    return open_broker(settings.broker_url, max_priority=settings.max_priority,
                       max_redeliveries=settings.max_redeliveries,
                       amqp_queue_type=settings.amqp_queue_type)


class Client:
    """A broker connection for publishing plus the result store, both opened lazily.

    Safe to share between threads (publishing is serialized) and across fork (a
    child process reconnects instead of reusing the parent's socket).
    """

    def __init__(self, broker_url: str | None = None, result_url: str | None = None, *,
                 settings: WorkerSettings | None = None) -> None:
        overrides: dict[str, Any] = {}
        if broker_url is not None:
            overrides["broker_url"] = broker_url
        if result_url is not None:
            overrides["result_url"] = result_url
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = settings.model_copy(update=overrides)
        self.settings = settings
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._broker: Broker | None = None
        self._results: ResultStore | None = None
        self._results_opened = False

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:  # never reuse the parent's sockets
            self._pid = os.getpid()
            self._broker, self._results, self._results_opened = None, None, False

    @property
    def broker(self) -> Broker:
        self._check_fork()
        if self._broker is None:
            self._broker = open_settings_broker(self.settings)
        return self._broker

    @property
    def results(self) -> ResultStore | None:
        """The result store, or None when results are disabled (AMQP, no result URL)."""
        self._check_fork()
        if not self._results_opened:
            url = self.settings.effective_result_url
            self._results = ResultStore(url, self.settings.result_ttl) if url else None
            self._results_opened = True
        return self._results

    def send(self, env: Envelope, *, countdown: float = 0.0) -> AsyncResult:
        """Publish one envelope (after `countdown` s) and return a handle on its result.

        A countdown moves `enqueued_at` to when the message becomes ready, so the
        deliberate delay is not reported as queue wait.
        """
        delay = max(0.0, countdown)
        if countdown > 0:
            env, delay = dataclasses.replace(
                env, enqueued_at=env.enqueued_at + countdown).delayed(countdown)
        body = self._encode(env)
        self._publishing(lambda broker: broker.publish(env.queue, body, delay=delay,
                                                       priority=env.priority))
        return self.async_result(env.id)

    def send_many(self, envelopes: Sequence[Envelope],
                  progress: Callable[[int], None] | None = None, *,
                  countdown: float = 0.0) -> list[AsyncResult]:
        """Publish many envelopes in pipelined chunks (per queue and priority), each ready
        after `countdown` s; `progress(n)` after each chunk. Every envelope is checked
        before the first is sent."""
        delay = max(0.0, countdown)
        if countdown > 0:
            shifted = [dataclasses.replace(env, enqueued_at=env.enqueued_at + countdown)
                       .delayed(countdown) for env in envelopes]
            envelopes = [env for env, _ in shifted]
            delay = shifted[0][1] if shifted else delay
        groups: dict[tuple[str, int | None], list[bytes]] = {}
        for env in envelopes:
            groups.setdefault((env.queue, env.priority), []).append(self._encode(env))
        for (queue, priority), bodies in groups.items():
            for start in range(0, len(bodies), PUBLISH_CHUNK):
                chunk = bodies[start:start + PUBLISH_CHUNK]
                self._publishing(_publish_many(queue, chunk, delay, priority))
                if progress is not None:
                    progress(len(chunk))
        return [self.async_result(env.id) for env in envelopes]

    def _publishing(self, publish: Callable[[Broker], None]) -> None:
        """Run `publish` on the broker connection, retrying for `publish_retry_seconds`
        while the broker cannot be reached (a fresh connection each time). Anything else
        (a refused message, bad input) raises at once."""
        deadline = time.monotonic() + self.settings.publish_retry_seconds
        pause = RETRY_FIRST_PAUSE
        while True:
            used: Broker | None = None
            try:
                with self._lock:
                    used = self.broker
                    publish(used)
                return
            except BrokerUnavailable as exc:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("publish failed, retrying in %.1fs: %s", pause, exc)
                with self._lock:  # another thread may have reconnected already
                    broken = used if self._broker is used else None
                    if broken is not None:
                        self._broker = None
                if broken is not None:
                    with contextlib.suppress(Exception):
                        broken.close()
                time.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_PAUSE)

    def _encode(self, env: Envelope) -> bytes:
        """The body a worker accepts: checked like decode does, and within the size limit
        (QSCALE_MAX_MESSAGE_BYTES), else BadMessage before anything is sent."""
        body = env.encode()
        limit = self.settings.max_message_bytes
        if len(body) > limit:
            raise BadMessage(f"task {env.task}: message of {len(body)} bytes exceeds the "
                             f"{limit}-byte limit (QSCALE_MAX_MESSAGE_BYTES)")
        return body

    def async_result(self, task_id: str) -> AsyncResult:
        """A handle on any task's result by its id (e.g. one `enqueue` printed)."""
        return AsyncResult(task_id, self.results)

    def close(self) -> None:
        with self._lock:
            if self._broker is not None and os.getpid() == self._pid:
                self._broker.close()
            if self._results is not None:
                self._results.close()
            self._broker, self._results, self._results_opened = None, None, False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: Client | None = None
_default_lock = threading.Lock()


def _publish_many(queue: str, bodies: list[bytes], delay: float,
                  priority: int | None) -> Callable[[Broker], None]:
    def publish(broker: Broker) -> None:
        broker.publish_many(queue, bodies, delay=delay, priority=priority)
    return publish


def get_client() -> Client:
    """The process-wide default client (created from the environment on first use)."""
    global _default  # noqa: PLW0603 - the one deliberate process-wide default
    with _default_lock:
        if _default is None:
            _default = Client()
        return _default


def configure(broker_url: str | None = None, result_url: str | None = None, *,
              client: Client | None = None) -> Client:
    """Replace the default client, by URLs or with a ready `Client`; returns it."""
    global _default
    new = client if client is not None else Client(broker_url, result_url)
    with _default_lock:
        old, _default = _default, new
    if old is not None and old is not new:
        old.close()
    return new

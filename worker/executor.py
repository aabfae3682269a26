"""Run one message inside a child process and say how to settle it.

The executor never touches the broker: it turns a body into an Outcome (ack,
retry with a new body and delay, or dead-letter with a reason) and the
supervisor applies it. It never raises, so one bad message cannot kill a child.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

from worker import registry
from worker.context import Retry, SoftTimeLimitExceeded, TaskContext
from worker.envelope import Envelope, Signature, decode
from worker.errors import BadMessage
from worker.outcome import FollowUp, Outcome, Settle
from worker.registry import NonRetryable, TaskSpec, backoff_delay
from worker.results import (
    FAILURE,
    RETRY,
    ResultStore,
    dumps,
    error_record,
    exception_type_name,
)
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1024)
def _signature_of(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


def retry_delay(spec: TaskSpec | None, attempt: int, settings: WorkerSettings) -> float:
    """Seconds to wait before attempt `attempt + 1` (jittered exponential backoff)."""
    if spec is not None and not spec.backoff:
        return settings.retry_backoff_base
    return backoff_delay(attempt, settings.retry_backoff_base, settings.retry_backoff_max)


class Executor:
    """Executes task messages; one per child process, created after fork."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._store: ResultStore | None = None
        self._store_opened = False
        self._alarm_armed = False
        self._alarm_limit = 0.0

    def results(self) -> ResultStore | None:
        """The result store, opened on first use; None when results are disabled."""
        if not self._store_opened:
            url = self.settings.effective_result_url
            self._store = ResultStore(url, self.settings.result_ttl) if url else None
            self._store_opened = True
        return self._store

    def execute(self, body: bytes) -> Outcome:
        try:
            return self._execute(body)
        except Exception as exc:  # the store or a follow-up failed: treat like a lost run
            log.exception("executor failed on a message")
            return outcome_for_lost(body, f"executor error: {type(exc).__name__}: {exc}",
                                    self.settings, store=self._store)

    def _execute(self, body: bytes) -> Outcome:
        try:
            env = decode(body, self.settings.max_message_bytes)
        except BadMessage as exc:
            return Outcome(settle=Settle.DEAD, status="bad_message", reason=exc.reason)
        now = time.time()
        wait = max(0.0, now - env.enqueued_at) if env.enqueued_at > 0 else None
        ident: dict[str, Any] = {"task": env.task, "task_id": env.id, "queue_wait_s": wait}
        spec = registry.lookup(env.task)
        if spec is None:
            reason = f"unknown task {env.task!r}"
            self._record_final(env, error_record("UnknownTask", reason, ""))
            return Outcome(settle=Settle.DEAD, status="bad_message", reason=reason, **ident)
        if env.deadline is not None and now > env.deadline:
            reason = f"expired: deadline passed {now - env.deadline:.1f}s before it could run"
            self._record_final(env, error_record("TaskExpired", reason, ""))
            return Outcome(settle=Settle.DEAD, status="expired", reason=reason, **ident)
        ctx = TaskContext(env, self.results) if spec.bind else None
        call_args = [ctx, *env.args] if ctx is not None else list(env.args)
        try:
            _signature_of(spec.fn).bind(*call_args, **env.kwargs)
        except TypeError as exc:
            reason = f"bad arguments: {exc}"
            self._record_final(env, error_record("TypeError", reason, ""))
            return Outcome(settle=Settle.DEAD, status="bad_message", reason=reason, **ident)

        if spec.track_started and not (spec.ignore_result or env.ignore_result):
            store = self.results()
            if store is not None:
                store.mark_started(env.id, task=env.task, attempt=env.attempt)
        started = time.monotonic()
        try:
            result = self._call(spec, call_args, env.kwargs)
            _check_json(result)
        except (Exception, SystemExit) as exc:
            runtime = time.monotonic() - started
            return self._failed(env, spec, exc, runtime, ident)
        runtime = time.monotonic() - started
        return self._succeeded(env, spec, ctx, result, runtime=runtime, ident=ident)

    # -- running under the soft time limit --

    def _call(self, spec: TaskSpec, args: list[Any], kwargs: dict[str, Any]) -> Any:
        limit = registry.soft_time_limit(spec.name, self.settings.soft_time_limit)
        if limit is None or threading.current_thread() is not threading.main_thread():
            return spec.fn(*args, **kwargs)
        previous = signal.signal(signal.SIGALRM, self._on_alarm)
        self._alarm_limit = limit
        self._alarm_armed = True
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            return spec.fn(*args, **kwargs)
        finally:
            self._alarm_armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self._alarm_armed:  # only ever raise inside the task, and only once
            self._alarm_armed = False
            raise SoftTimeLimitExceeded(f"soft time limit of {self._alarm_limit:g}s exceeded")

    # -- settling --

    def _succeeded(self, env: Envelope, spec: TaskSpec, ctx: TaskContext | None,
                   result: Any, *, runtime: float, ident: dict[str, Any]) -> Outcome:
        store = self.results()
        follow_ups: list[FollowUp] = []
        if env.link:
            follow_ups.append(_chain_step(env, result))
        elif env.chord is not None:
            if store is None:
                reason = "chord members need a result store (set QSCALE_RESULT_URL)"
                return Outcome(settle=Settle.DEAD, status="failure", reason=reason,
                               runtime_s=runtime, **ident)
            gathered = store.chord_member_done(env.chord.id, env.chord.index,
                                               env.chord.size, result)
            if gathered is not None:
                follow_ups.append(_chord_callback(env, gathered))
        if store is not None:
            if not (spec.ignore_result or env.ignore_result):
                store.mark_success(env.id, result, task=env.task, attempt=env.attempt)
            if ctx is not None and ctx.checkpoint_used:
                store.clear_checkpoint(ctx.checkpoint_key)
        return Outcome(settle=Settle.ACK, status="success", follow_ups=tuple(follow_ups),
                       runtime_s=runtime, **ident)

    def _failed(self, env: Envelope, spec: TaskSpec, exc: BaseException, runtime: float,
                ident: dict[str, Any]) -> Outcome:
        countdown: float | None = None
        cause: BaseException = exc
        if isinstance(exc, Retry):
            countdown, cause = exc.countdown, exc.exc or exc
            retryable = True
        else:
            retryable = spec.is_retryable(exc)
        detail = _task_traceback(cause)
        type_name = exception_type_name(cause)
        reason = f"{type_name}: {cause}"
        error = error_record(type_name, str(cause), detail)
        allowed = spec.retries_allowed(self.settings.default_max_retries)
        if retryable and env.attempt <= allowed:
            delay = countdown if countdown is not None else retry_delay(
                spec, env.attempt, self.settings)
            store = self.results()
            if store is not None and not (spec.ignore_result or env.ignore_result):
                store.mark_error(env.id, RETRY, error, task=env.task, attempt=env.attempt)
            log.info("task %s[%s] attempt %d failed (%s); retry in %.2fs",
                     env.task, env.id, env.attempt, reason, delay)
            return Outcome(settle=Settle.RETRY, status="retry",
                           retry_body=_retry_body(env, delay), retry_delay=delay,
                           reason=reason, detail=detail, runtime_s=runtime, **ident)
        self._record_final(env, error)
        return Outcome(settle=Settle.DEAD, status="failure", reason=reason, detail=detail,
                       runtime_s=runtime, **ident)

    def _record_final(self, env: Envelope, error: dict[str, str]) -> None:
        store = self.results()
        if store is not None:
            record_failure(store, env, error)


def record_failure(store: ResultStore, env: Envelope, error: dict[str, str]) -> None:
    """Store FAILURE for the task, its chain's later steps and its chord, so waiters
    on any of them get a clear error instead of waiting forever."""
    store.mark_error(env.id, FAILURE, error, task=env.task, attempt=env.attempt)
    for step in env.link:
        if step.task_id is not None:
            message = (f"chain step {env.task}[{env.id}] failed, so {step.task} did not run: "
                       f"{error['type']}: {error['message']}")
            store.mark_error(step.task_id, FAILURE, error_record(
                "ChainError", message, error.get("traceback", "")), task=step.task, attempt=0)
    if env.chord is not None:
        target = env.chord.callback.task_id or env.chord.id
        message = (f"chord member {env.chord.index} of {env.chord.size} ({env.task}[{env.id}]) "
                   f"failed, the callback will not run: {error['type']}: {error['message']}")
        store.mark_error(target, FAILURE, error_record("ChordError", message,
                                                       error.get("traceback", "")),
                         task=env.chord.callback.task, attempt=1)


def _retry_body(env: Envelope, delay: float) -> bytes:
    """The next attempt, stamped as enqueued when its delay ends: queue-wait metrics (and
    latency-based scaling) must not count a deliberate backoff as backlog."""
    return env.next_attempt(now=time.time() + delay).encode()


def _task_traceback(exc: BaseException) -> str:
    """The traceback text starting at the task's own frames (executor frames dropped)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _check_json(result: Any) -> None:
    """A result that cannot travel as JSON is a task bug, not a reason to retry."""
    try:
        dumps(result)
    except (TypeError, ValueError) as exc:
        raise NonRetryable(f"result is not JSON-serializable: {exc}") from None


def _follow_up(sig: Signature, args: list[Any], parent: Envelope, **extra: Any) -> FollowUp:
    spec = registry.lookup(sig.task)
    queue = sig.queue or (spec.queue if spec else None) or "default"
    env = Envelope.create(sig.task, args, sig.kwargs, queue=queue, task_id=sig.task_id,
                          priority=sig.priority, parent_id=parent.id, **extra)
    return FollowUp(queue=queue, body=env.encode(), priority=sig.priority)


def _chain_step(env: Envelope, result: Any) -> FollowUp:
    """The next chain step gets this result first in its args (unless immutable)."""
    step = env.link[0]
    args = list(step.args) if step.immutable else [result, *step.args]
    return _follow_up(step, args, env, link=env.link[1:], chord=env.chord)


def _chord_callback(env: Envelope, results: list[Any]) -> FollowUp:
    assert env.chord is not None
    callback = env.chord.callback
    args = list(callback.args) if callback.immutable else [results, *callback.args]
    if callback.task_id is None:
        callback = dataclasses.replace(callback, task_id=env.chord.id)
    return _follow_up(callback, args, env)


_lost_stores: dict[str, ResultStore] = {}


def outcome_for_lost(body: bytes, reason: str, settings: WorkerSettings, *,
                     store: ResultStore | None = None) -> Outcome:
    """Settle a message whose run died (child crashed, hard-killed, executor error).

    Retries with backoff while retries remain, else dead-letters with `reason` and
    records FAILURE (best effort) so `.get()` does not wait forever.
    """
    try:
        env = decode(body, settings.max_message_bytes)
    except BadMessage as exc:
        return Outcome(settle=Settle.DEAD, status="bad_message", reason=exc.reason)
    spec = registry.lookup(env.task)
    allowed = spec.retries_allowed(settings.default_max_retries) if spec else \
        settings.default_max_retries
    ident: dict[str, Any] = {"task": env.task, "task_id": env.id}
    if env.attempt <= allowed:
        delay = retry_delay(spec, env.attempt, settings)
        return Outcome(settle=Settle.RETRY, status="retry", retry_body=_retry_body(env, delay),
                       retry_delay=delay, reason=reason, **ident)
    try:
        target = store or _store_for(settings)
        if target is not None:
            record_failure(target, env, error_record("WorkerLost", reason, ""))
    except Exception:
        log.warning("could not record the failure of lost task %s[%s]", env.task, env.id,
                    exc_info=True)
    return Outcome(settle=Settle.DEAD, status="dead", reason=reason, **ident)


def _store_for(settings: WorkerSettings) -> ResultStore | None:
    url = settings.effective_result_url
    if url is None:
        return None
    if url not in _lost_stores:
        _lost_stores[url] = ResultStore(url, settings.result_ttl, socket_timeout=2.0)
    return _lost_stores[url]


def hard_time_limit_for(body: bytes, settings: WorkerSettings) -> float | None:
    """The hard limit for this message's task (per-task override, else the setting)."""
    try:
        raw = json.loads(body)
        name = raw.get("task") if isinstance(raw, dict) else None
    except ValueError:
        name = None
    if not isinstance(name, str):
        limit = settings.hard_time_limit
        return limit if limit > 0 else None
    return registry.hard_time_limit(name, settings.hard_time_limit)

"""Run one message inside a child process and say how to settle it.

The child is the boundary where bodies are decoded, once: the supervisor hands
over opaque bytes and gets Outcomes back. The executor never touches the broker:
it turns a body into an Outcome (ack, retry with a new body and delay, or
dead-letter with a reason) and the supervisor applies it. It never raises, so
one bad message cannot kill a child.

Two entry points:
* `execute(body)` runs the task;
* `settle_unrun(body, reason, may_retry)` decides for a message whose run was lost
  (its child died or was hard-killed: retry while retries remain) or that must not
  run at all (delivered too often: dead). The task does not run; FAILURE is
  recorded when the message goes dead.

Every dead outcome records FAILURE first (for the task, its chain's later steps
and its chord), so `.get()` ends. If the result store cannot be written, the
message is not dead-lettered: it comes back later (STORE_TROUBLE_DELAY) unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import math
import signal
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any

import redis

from worker.api import registry
from worker.api.context import Retry, SoftTimeLimitExceeded, TaskContext
from worker.api.registry import NonRetryable, TaskSpec, backoff_delay
from worker.envelope import (
    MAX_DELAY,
    SIZE_HEADROOM,
    Envelope,
    Signature,
    check_json_value,
    decode,
)
from worker.errors import BadMessage
from worker.results import RETRY, ResultStore, dumps, error_record, exception_type_name
from worker.runtime.outcome import FailurePlan, FollowUp, Outcome, Settle
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

STORE_TROUBLE_DELAY = 5.0   # seconds before a message whose outcome could not be recorded
EARLY = 1.0                 # s: a message due later than this waits the rest of its delay
# (what, value) told to the supervisor about the run in progress: ("limit", seconds) before
# the task starts, when its hard limit differs from QSCALE_HARD_TIME_LIMIT; ("ran", None)
# once a hard-limited task returned, so recording its outcome is not cut short by it.
RunReport = Callable[[str, float | None], None]


@functools.lru_cache(maxsize=1024)
def _signature_of(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


def retry_delay(spec: TaskSpec | None, attempt: int, settings: WorkerSettings) -> float:
    """Seconds to wait before attempt `attempt + 1` (jittered exponential backoff)."""
    if spec is not None and not spec.backoff:
        return settings.retry_backoff_base
    return backoff_delay(attempt, settings.retry_backoff_base, settings.retry_backoff_max)


def plan_for(env: Envelope) -> FailurePlan:
    return FailurePlan(task_id=env.id, task=env.task, attempt=env.attempt,
                       chain=env.chain_dependents, chord=env.chord)


class Executor:
    """Executes task messages; one per child process, created after fork."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._store: ResultStore | None = None
        self._store_opened = False
        self._alarm_armed = False
        self._alarm_limit = 0.0
        self._default_limit = settings.hard_time_limit or None

    def results(self) -> ResultStore | None:
        """The result store, opened on first use; None when results are disabled."""
        if not self._store_opened:
            url = self.settings.effective_result_url
            self._store = ResultStore(url, self.settings.result_ttl) if url else None
            self._store_opened = True
        return self._store

    # -- the two entry points: total, they return an Outcome whatever happens --

    @property
    def _accepted_bytes(self) -> int:
        return self.settings.max_message_bytes + SIZE_HEADROOM

    def execute(self, body: bytes, report: RunReport | None = None) -> Outcome:
        """Run the message's task, telling `report` about its hard time limit (RunReport)."""
        try:
            return self._execute(body, report)
        except (redis.RedisError, OSError) as exc:  # the store: it comes back later
            return self._store_trouble(body, exc)
        except Exception as exc:
            return self._internal_error(body, exc)

    def settle_unrun(self, body: bytes, reason: str, *, may_retry: bool) -> Outcome:
        """A message whose run was lost (`may_retry`: retry while retries remain) or that
        must not run at all: the task does not run; a dead one records FAILURE."""
        try:
            return self._settle_unrun(body, reason, may_retry)
        except (redis.RedisError, OSError) as exc:
            return self._store_trouble(body, exc)
        except Exception as exc:
            return self._internal_error(body, exc)

    def _store_trouble(self, body: bytes, exc: Exception) -> Outcome:
        log.warning("could not record an outcome (%s: %s); the message comes back in %.0fs",
                    type(exc).__name__, exc, STORE_TROUBLE_DELAY)
        return Outcome(settle=Settle.RETRY, status="store_error", retry_body=body,
                       retry_delay=STORE_TROUBLE_DELAY, reason=f"result store: {exc}")

    def _internal_error(self, body: bytes, exc: Exception) -> Outcome:
        """A bug of ours, not the store: dead-letter the message with the reason (it would
        fail the same way again), recording FAILURE when the body says for whom."""
        log.exception("internal error on a message; dead-lettering it")
        reason = f"internal error: {type(exc).__name__}: {exc}"
        bad = BadMessage(reason)
        try:
            env = decode(body, self._accepted_bytes)
        except BadMessage as undecodable:
            bad = undecodable
            bad.reason = reason
        else:
            bad.task_id, bad.task, bad.dependents, bad.chord = (
                env.id, env.task, env.chain_dependents, env.chord)
        return self._bad_message(bad, status="dead")

    # -- running --

    def _execute(self, body: bytes, report: RunReport | None) -> Outcome:
        try:
            env = decode(body, self._accepted_bytes)
        except BadMessage as bad:
            return self._bad_message(bad)
        now = time.time()
        if env.not_before is not None and env.not_before > now + EARLY:
            # A delay longer than a broker holds in one go: wait the rest of it.
            _, delay = env.delayed(env.not_before - now, now)
            return Outcome(settle=Settle.RETRY, status="waiting", retry_body=body,
                           retry_delay=delay, task=env.task, task_id=env.id)
        wait = max(0.0, now - env.enqueued_at) if env.enqueued_at > 0 else None
        ident: dict[str, Any] = {"task": env.task, "task_id": env.id, "queue_wait_s": wait}
        spec = registry.lookup(env.task)
        if spec is None:
            return self._dead(env, "UnknownTask", f"unknown task {env.task!r}", "bad_message",
                              ident)
        if env.deadline is not None and now > env.deadline:
            return self._dead(env, "TaskExpired", f"expired: deadline passed "
                              f"{now - env.deadline:.1f}s before it could run", "expired", ident)
        ctx = TaskContext(env, self.results) if spec.bind else None
        call_args = [ctx, *env.args] if ctx is not None else list(env.args)
        try:
            _signature_of(spec.fn).bind(*call_args, **env.kwargs)
        except TypeError as exc:
            return self._dead(env, "TypeError", f"bad arguments: {exc}", "bad_message", ident)
        limit = registry.hard_time_limit(spec.name, self.settings.hard_time_limit)
        if report is not None and limit != self._default_limit:
            report("limit", limit)
        if spec.track_started and not (spec.ignore_result or env.ignore_result):
            store = self.results()
            if store is not None:
                store.mark_started(env.id, task=env.task, attempt=env.attempt)
        started = time.monotonic()
        try:
            result = self._call(spec, call_args, env.kwargs)
            _check_json(result)
        except (Exception, SystemExit) as exc:
            self._ran(report, limit)
            return self._failed(env, spec, exc, time.monotonic() - started, ident)
        self._ran(report, limit)
        runtime = time.monotonic() - started
        return self._succeeded(env, spec, ctx, result, runtime=runtime, ident=ident)

    @staticmethod
    def _ran(report: RunReport | None, limit: float | None) -> None:
        """The hard limit is for the task: a result store that hangs afterwards makes the
        outcome come back later (store trouble), not a lost run."""
        if report is not None and limit is not None:
            report("ran", None)

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
            follow_ups += self._sendable(env, _chain_step(env, result))
        elif env.chord is not None:
            if store is None:
                reason = "chord members need a result store (set QSCALE_RESULT_URL)"
                return Outcome(settle=Settle.DEAD, status="failure", reason=reason,
                               runtime_s=runtime, **ident)
            gathered = store.chord_member_done(env.chord, result)
            if gathered is not None:
                follow_ups += self._sendable(env, _chord_callback(env, gathered))
        if store is not None:
            # A chain or chord member records its end even when its result is ignored:
            # the final record is what tells a later duplicate run it came too late.
            if not (spec.ignore_result or env.ignore_result):
                store.mark_success(env.id, result, task=env.task, attempt=env.attempt)
            elif env.link or env.chord is not None:
                store.mark_success(env.id, None, task=env.task, attempt=env.attempt)
            if ctx is not None and ctx.checkpoint_used:
                store.clear_checkpoint(ctx.checkpoint_key)
        return Outcome(settle=Settle.ACK, status="success", follow_ups=tuple(follow_ups),
                       runtime_s=runtime, **ident)

    def _sendable(self, parent: Envelope, step: tuple[Envelope, FollowUp | BadMessage]
                  ) -> list[FollowUp]:
        """The follow-up, or FAILURE for it (and what depends on it) when it cannot be
        sent at all: its envelope is refused or larger than QSCALE_MAX_MESSAGE_BYTES."""
        env, made = step
        if isinstance(made, FollowUp):
            if len(made.body) <= self.settings.max_message_bytes:
                return [made]
            made = BadMessage(f"{env.task}[{env.id}] would be {len(made.body)} bytes, "
                              f"over QSCALE_MAX_MESSAGE_BYTES={self.settings.max_message_bytes}"
                              " (the previous step's result is too large)")
        log.warning("task %s[%s]: the next step cannot be sent: %s", parent.task, parent.id,
                    made.reason)
        store = self.results()
        if store is not None:
            store.record_envelope_failure(env, error_record(
                "ChainError", f"could not be sent after {parent.task}[{parent.id}]: "
                f"{made.reason}", ""))
        return []

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
            return self._retry(env, delay, reason, detail, runtime, ident)
        self._record_final(env, error)
        return Outcome(settle=Settle.DEAD, status="failure", reason=reason, detail=detail,
                       runtime_s=runtime, plan=plan_for(env), **ident)

    def _retry(self, env: Envelope, delay: float, reason: str, detail: str, runtime: float,
               ident: dict[str, Any]) -> Outcome:
        """The next attempt, stamped as enqueued when its delay ends (queue-wait metrics,
        and latency-based scaling, must not count a deliberate backoff as backlog). A
        retry that cannot be sent (a delay that is no number of seconds, or beyond
        MAX_DELAY; an attempt past the envelope's bound) ends the task instead."""
        try:
            if not (isinstance(delay, int | float) and math.isfinite(delay)
                    and 0 <= delay <= MAX_DELAY):
                raise BadMessage(f"retry delay {delay!r} is not 0-{MAX_DELAY:g} seconds")
            now = time.time()
            retry, delay = env.next_attempt(now=now + delay).delayed(delay, now)
            body = retry.encode()
        except BadMessage as bad:
            why = f"{reason}; cannot retry: {bad.reason}"
            self._record_final(env, error_record("RetryImpossible", why, detail))
            return Outcome(settle=Settle.DEAD, status="failure", reason=why, detail=detail,
                           runtime_s=runtime, plan=plan_for(env), **ident)
        return Outcome(settle=Settle.RETRY, status="retry", retry_body=body,
                       retry_delay=delay, reason=reason, detail=detail, runtime_s=runtime,
                       plan=plan_for(env), **ident)

    def _dead(self, env: Envelope, type_name: str, reason: str, status: str,
              ident: dict[str, Any]) -> Outcome:
        self._record_final(env, error_record(type_name, reason, ""))
        return Outcome(settle=Settle.DEAD, status=status, reason=reason, plan=plan_for(env),
                       **ident)

    def _bad_message(self, bad: BadMessage, status: str = "bad_message") -> Outcome:
        """Dead-letter an undecodable body, recording FAILURE for what it salvaged."""
        store = self.results()
        if store is not None and bad.task_id is not None:
            store.record_failure(bad.task_id, bad.task or "?", 1,
                                 error_record("BadMessage", bad.reason, ""),
                                 chain=bad.dependents, chord=bad.chord)
        return Outcome(settle=Settle.DEAD, status=status, reason=bad.reason,
                       task=bad.task or "unknown", task_id=bad.task_id)

    def _record_final(self, env: Envelope, error: dict[str, str]) -> None:
        store = self.results()
        if store is not None:
            store.record_envelope_failure(env, error)

    def _settle_unrun(self, body: bytes, reason: str, may_retry: bool) -> Outcome:
        try:
            env = decode(body, self._accepted_bytes)
        except BadMessage as bad:
            if not may_retry:  # the verdict (too large, delivered too often) is the reason
                bad.reason = reason
            return self._bad_message(bad, status="bad_message" if may_retry else "dead")
        spec = registry.lookup(env.task)
        allowed = spec.retries_allowed(self.settings.default_max_retries) if spec else \
            self.settings.default_max_retries
        ident: dict[str, Any] = {"task": env.task, "task_id": env.id}
        if may_retry and env.attempt <= allowed:
            return self._retry(env, retry_delay(spec, env.attempt, self.settings), reason, "",
                               0.0, ident)
        self._record_final(env, error_record("WorkerLost" if may_retry else "DeliveryLimit",
                                             reason, ""))
        return Outcome(settle=Settle.DEAD, status="dead", reason=reason, plan=plan_for(env),
                       **ident)


def _task_traceback(exc: BaseException) -> str:
    """The traceback text starting at the task's own frames (executor frames dropped)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _check_json(result: Any) -> None:
    """A result that cannot travel as JSON is a task bug, not a reason to retry."""
    try:
        check_json_value(result, "result")
        dumps(result)
    except (BadMessage, TypeError, ValueError, RecursionError) as exc:
        raise NonRetryable(f"result is not JSON-serializable: {exc}") from None


def _follow_up(sig: Signature, args: list[Any], parent: Envelope,
               **extra: Any) -> tuple[Envelope, FollowUp | BadMessage]:
    spec = registry.lookup(sig.task)
    queue = sig.queue or (spec.queue if spec else None) or "default"
    env = Envelope.create(sig.task, args, sig.kwargs, queue=queue, task_id=sig.task_id,
                          priority=sig.priority, parent_id=parent.id, **extra)
    try:
        body = env.encode()
    except BadMessage as bad:
        return env, bad
    return env, FollowUp(queue=queue, body=body, priority=sig.priority, plan=plan_for(env))


def _chain_step(env: Envelope, result: Any) -> tuple[Envelope, FollowUp | BadMessage]:
    """The next chain step gets this result first in its args (unless immutable)."""
    step = env.link[0]
    args = list(step.args) if step.immutable else [result, *step.args]
    return _follow_up(step, args, env, link=env.link[1:], chord=env.chord)


def _chord_callback(env: Envelope, results: list[Any]
                    ) -> tuple[Envelope, FollowUp | BadMessage]:
    assert env.chord is not None
    callback = env.chord.callback
    args = list(callback.args) if callback.immutable else [results, *callback.args]
    if callback.task_id is None:
        callback = dataclasses.replace(callback, task_id=env.chord.id)
    return _follow_up(callback, args, env)

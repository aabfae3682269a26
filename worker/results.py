"""The result store (Redis): task results, checkpoints and chord state.

One JSON record per task id, with a TTL so forgotten results do not pile up:
{status, result | error{type, message, traceback}, finished_at, attempt, task}.
A missing record reads as PENDING.

Terminal states are final. Delivery is at-least-once, so a task may run twice; every
write is a compare-and-set (one Lua script) that leaves a SUCCESS or FAILURE record
alone. A duplicate run can therefore neither flip a finished SUCCESS to FAILURE nor
mark chain steps that ran as "did not run" (`record_failure` stops at a task whose
own result was already final).

An operator's `dlq requeue` is the one way back: it removes the FAILURE of the task it
requeues (and the FAILURE that failure gave its chain and its chord), see `reopen`.

Chords fire once. Members are stored by index (a redelivered member overwrites its
own slot); the member that completes the set marks the chord fired (by its index)
and gets every result back. A later run of another member finds the marker and
sends nothing; a rerun of the firing member itself (its ack was lost) gets the
results again while the callback has left no record, because the callback it sent
may not have been published (at-least-once: the callback may then run twice, its
first final result stays). State of a chord that can still complete never
expires; a fired or failed chord keeps its marker for at least DONE_MARKER_TTL.

Keys (one Redis database, never overlapping the broker's `qscale:q:` queue keys):
    qscale:result:<task id>       the record (string, TTL = result_ttl)
    qscale:ckpt:<key>             a checkpoint (string, TTL = result_ttl)
    qscale:chord:<chord id>       member results (hash index -> JSON; no TTL while open)
    qscale:chord-done:<chord id>  "fired:<index>" or "failed"
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from worker.envelope import ChordRef, Envelope
from worker.errors import ConfigError

PENDING, STARTED, RETRY, SUCCESS, FAILURE = "PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE"
READY_STATES = frozenset({SUCCESS, FAILURE})
DONE_MARKER_TTL = 7 * 86_400   # a fired chord remembers it for a week at least

RESULT_KEY = "qscale:result:"
CHECKPOINT_KEY = "qscale:ckpt:"
CHORD_KEY = "qscale:chord:"
CHORD_DONE_KEY = "qscale:chord-done:"

# Every record starts with {"status":"...": the status is read with GETRANGE, so a
# large result is never copied into the script.
_FINAL_CHECK = """
local function is_final(key)
  local head = redis.call('GETRANGE', key, 0, 24)
  return string.find(head, '^{"status":"SUCCESS"') or string.find(head, '^{"status":"FAILURE"')
end
"""

# KEYS: result. ARGV: record, ttl. Writes unless a final record is there; 1 if written.
_WRITE = _FINAL_CHECK + """
if is_final(KEYS[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

# KEYS: state, done, callback result. ARGV: index, result JSON, size, done ttl, state
# ttl after firing. Returns false, or {index, result, ...} once every member is in (for
# the firing member; again for its rerun while the callback has left no record).
_CHORD_MEMBER_DONE = """
local done = redis.call('GET', KEYS[2])
if done then
  if done == 'fired:' .. ARGV[1] and redis.call('EXISTS', KEYS[3]) == 0 then
    return redis.call('HGETALL', KEYS[1])
  end
  return false
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then return false end
redis.call('SET', KEYS[2], 'fired:' .. ARGV[1], 'EX', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: state, done, callback result. ARGV: callback record, result ttl, done ttl.
# A chord that has not fired is failed: its callback records FAILURE. The members'
# results stay (for the done ttl) in case an operator requeues the failed member.
_CHORD_FAILED = _FINAL_CHECK + """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[2], 'failed', 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if not is_final(KEYS[3]) then redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[2]) end
return 1
"""

# KEYS: results to reopen (their FAILURE is removed), then optionally state, done of a
# chord to reopen. ARGV: 1 when the last two keys are a chord's. Only FAILURE goes.
_REOPEN = """
local chord = ARGV[1] == '1'
local results = chord and #KEYS - 2 or #KEYS
for i = 1, results do
  if string.find(redis.call('GETRANGE', KEYS[i], 0, 24), '^{"status":"FAILURE"') then
    redis.call('DEL', KEYS[i])
  end
end
if chord and redis.call('GET', KEYS[#KEYS]) == 'failed' then
  redis.call('DEL', KEYS[#KEYS])
  redis.call('PERSIST', KEYS[#KEYS - 1])
end
return 1
"""


class ResultsDisabled(ConfigError):
    """Results, checkpoints and chords need a Redis result store, and there is none."""

    def __init__(self, what: str = "results") -> None:
        super().__init__(
            f"{what} need a result store: set QSCALE_RESULT_URL=redis://... "
            "(results are disabled with an AMQP broker and no QSCALE_RESULT_URL)")


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def error_record(type_name: str, message: str, traceback: str) -> dict[str, str]:
    return {"type": type_name, "message": message, "traceback": traceback}


def exception_type_name(exc: BaseException) -> str:
    """`ValueError` for builtins, `module.Qualname` otherwise."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class ResultStore:
    """JSON-only access to the result keys of one Redis database."""

    def __init__(self, url: str, ttl: int = 86_400, *, socket_timeout: float = 10.0) -> None:
        self.url = url
        self.ttl = ttl
        self._redis = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                           socket_connect_timeout=5.0)
        self._write = self._redis.register_script(_WRITE)
        self._chord_member = self._redis.register_script(_CHORD_MEMBER_DONE)
        self._chord_failed = self._redis.register_script(_CHORD_FAILED)
        self._reopen = self._redis.register_script(_REOPEN)

    # -- task results (status first in every record: see _FINAL_CHECK) --

    def _put(self, task_id: str, record: dict[str, Any]) -> bool:
        """Write unless a final record is there; True when written."""
        return bool(self._write(keys=[RESULT_KEY + task_id], args=[dumps(record), self.ttl]))

    def mark_success(self, task_id: str, result: Any, *, task: str = "",
                     attempt: int = 1) -> bool:
        return self._put(task_id, {"status": SUCCESS, "result": result, "task": task,
                                   "attempt": attempt, "finished_at": time.time()})

    def mark_started(self, task_id: str, *, task: str = "", attempt: int = 1) -> bool:
        return self._put(task_id, {"status": STARTED, "task": task, "attempt": attempt,
                                   "started_at": time.time()})

    def mark_error(self, task_id: str, status: str, error: dict[str, str], *,
                   task: str = "", attempt: int = 1) -> bool:
        """Record FAILURE (final) or RETRY (another attempt is scheduled) with the error."""
        return self._put(task_id, {"status": status, "error": error, "task": task,
                                   "attempt": attempt, "finished_at": time.time()})

    def fetch(self, task_id: str) -> dict[str, Any] | None:
        raw = self._redis.get(RESULT_KEY + task_id)
        if raw is None:
            return None
        record = json.loads(raw)
        return record if isinstance(record, dict) else None

    def forget(self, task_id: str) -> None:
        self._redis.delete(RESULT_KEY + task_id)

    # -- failures, and what cannot run because of them --

    def record_failure(self, task_id: str, task: str, attempt: int, error: dict[str, str],
                       *, chain: Sequence[tuple[str, str]] = (),
                       chord: ChordRef | None = None) -> bool:
        """FAILURE for the task, its chain's later steps and its chord, so waiters on any
        of them get a clear error instead of waiting forever.

        Nothing happens when the task's own result is already final: this run is a
        duplicate, and the first run decided what happened to the steps after it.
        Returns whether FAILURE was recorded."""
        if not self.mark_error(task_id, FAILURE, error, task=task, attempt=attempt):
            return False
        detail = f"{error['type']}: {error['message']}"
        for step_id, step_task in chain:
            self.mark_error(step_id, FAILURE, error_record(
                "ChainError", f"chain step {task}[{task_id}] failed, so {step_task} did not "
                f"run: {detail}", error.get("traceback", "")), task=step_task, attempt=0)
        if chord is not None:
            self.chord_failed(chord, error_record(
                "ChordError", f"chord member {chord.index} of {chord.size} ({task}[{task_id}]) "
                f"failed, the callback will not run: {detail}", error.get("traceback", "")))
        return True

    def record_envelope_failure(self, env: Envelope, error: dict[str, str]) -> bool:
        return self.record_failure(env.id, env.task, env.attempt, error,
                                   chain=env.chain_dependents, chord=env.chord)

    def reopen(self, env: Envelope) -> None:
        """An operator requeued a dead letter (`dlq requeue`): its FAILURE, the FAILURE it
        gave the chain's later steps and its chord's callback go, and a chord it failed
        can complete again. Duplicates never come this way: only a deliberate requeue
        gives a final state a second chance."""
        keys = [RESULT_KEY + env.id, *(RESULT_KEY + sid for sid, _ in env.chain_dependents)]
        if env.chord is not None:
            keys += [RESULT_KEY + env.chord.result_id, CHORD_KEY + env.chord.id,
                     CHORD_DONE_KEY + env.chord.id]
        self._reopen(keys=keys, args=[1 if env.chord is not None else 0])

    # -- checkpoints --

    def save_checkpoint(self, key: str, state: Any) -> None:
        self._redis.set(CHECKPOINT_KEY + key, dumps(state), ex=self.ttl)

    def load_checkpoint(self, key: str) -> Any:
        raw = self._redis.get(CHECKPOINT_KEY + key)
        return None if raw is None else json.loads(raw)

    def clear_checkpoint(self, key: str) -> None:
        self._redis.delete(CHECKPOINT_KEY + key)

    # -- chords --

    def chord_member_done(self, chord: ChordRef, result: Any) -> list[Any] | None:
        """Record member `chord.index`; every result in order when this member completes
        the set, or completed it before and the callback has left no record yet (its
        ack was lost: the callback may not have been sent), None otherwise."""
        chord_id, size = chord.id, chord.size
        reply = self._chord_member(
            keys=[CHORD_KEY + chord_id, CHORD_DONE_KEY + chord_id,
                  RESULT_KEY + chord.result_id],
            args=[chord.index, dumps(result), size, max(self.ttl, DONE_MARKER_TTL),
                  self.ttl])
        if not reply:
            return None
        pairs = dict(zip(reply[0::2], reply[1::2], strict=True))
        by_index = {int(k): json.loads(v) for k, v in pairs.items()}
        if any(i not in by_index for i in range(size)):
            return None  # the state expired after firing: nothing left to send again
        return [by_index[i] for i in range(size)]

    def chord_failed(self, chord: ChordRef, error: dict[str, str]) -> bool:
        """Fail a chord that has not fired: its callback records FAILURE and never runs."""
        record = {"status": FAILURE, "error": error, "task": chord.callback.task,
                  "attempt": 1, "finished_at": time.time()}
        return bool(self._chord_failed(
            keys=[CHORD_KEY + chord.id, CHORD_DONE_KEY + chord.id,
                  RESULT_KEY + chord.result_id],
            args=[dumps(record), self.ttl, max(self.ttl, DONE_MARKER_TTL)]))

    def ping(self) -> bool:
        return bool(self._redis.ping())

    def close(self) -> None:
        self._redis.close()

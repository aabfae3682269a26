"""The checker's tasks: each run writes its own start and finish to the history file.

The history is a JSON-lines file (QSCALE_CHECK_HISTORY) opened with O_APPEND: one
write per event, under PIPE_BUF, so lines from concurrent children never mix and a
SIGKILL cannot leave half a line. A run's `spec` says how it behaves on each
attempt: fail (a retryable error), crash (the process exits), hang (past the hard
time limit), or sleep; the result names the run, so the checker can match every
result a caller reads to an execution that happened.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from worker import TaskContext, task

HARD_LIMIT = 1.5   # seconds: a hanging run is killed after this
_fd: int | None = None
_fd_pid = 0


def _record(event: dict[str, Any]) -> None:
    global _fd, _fd_pid  # noqa: PLW0603 - one append-only descriptor per process
    if _fd is None or _fd_pid != os.getpid():
        _fd = os.open(os.environ["QSCALE_CHECK_HISTORY"],
                      os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fd_pid = os.getpid()
    line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
    os.write(_fd, line)


def _behave(ctx: TaskContext, spec: dict[str, Any], run: str) -> None:
    attempt = ctx.attempt
    if attempt <= spec.get("crash", 0):
        os._exit(9)
    if attempt <= spec.get("hang", 0):
        time.sleep(60)
    if spec.get("sleep"):
        time.sleep(float(spec["sleep"]))
    if attempt <= spec.get("fail", 0):
        raise ConnectionError(f"planned failure on attempt {attempt}")


@task(name="chk.work", bind=True, hard_time_limit=HARD_LIMIT)
def work(ctx: TaskContext, *args: Any) -> dict[str, Any]:
    """`args` is (spec,) or, as a chain step, (previous result, spec)."""
    spec, inputs = args[-1], list(args[:-1])
    run = uuid.uuid4().hex[:12]
    _record({"ev": "start", "id": ctx.id, "attempt": ctx.attempt, "pid": os.getpid(),
             "run": run, "t": time.time()})
    _behave(ctx, spec, run)
    result = {"id": ctx.id, "run": run, "in": [i.get("run") if isinstance(i, dict) else i
                                               for i in inputs]}
    _record({"ev": "finish", "id": ctx.id, "attempt": ctx.attempt, "pid": os.getpid(),
             "run": run, "t": time.time(), "in": result["in"]})
    return result


@task(name="chk.reduce", bind=True, hard_time_limit=HARD_LIMIT)
def reduce(ctx: TaskContext, results: list[Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A chord callback: records which member runs it was given."""
    run = uuid.uuid4().hex[:12]
    _record({"ev": "start", "id": ctx.id, "attempt": ctx.attempt, "pid": os.getpid(),
             "run": run, "t": time.time()})
    _behave(ctx, spec, run)
    members = [r.get("run") if isinstance(r, dict) else None for r in results]
    # `sent` tells sends apart: a member's run that completes the chord builds the
    # callback's envelope (stamping first_enqueued_at); a redelivery or a re-publish of
    # that envelope after a lost ack or confirm carries the same stamp.
    _record({"ev": "finish", "id": ctx.id, "attempt": ctx.attempt, "pid": os.getpid(),
             "run": run, "t": time.time(), "in": members,
             "sent": ctx.envelope.first_enqueued_at})
    return {"id": ctx.id, "run": run, "in": members}

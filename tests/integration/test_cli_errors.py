"""The CLI answers bad input with one line and exit 2, never a traceback, and never
silently ignores an option."""

from __future__ import annotations

import json
import time

import pytest
import redis

from tests.integration.test_cli_tasks import run_cli
from worker.brokers import open_broker
from worker.brokers.redis import key_prefix, ready_key

pytestmark = [pytest.mark.redis]


def _one_line_error(done: object) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)  # type: ignore[attr-defined]
    stderr = done.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return str(lines[0])


@pytest.mark.parametrize("argv", [
    ["--priority", "42"], ["--priority", "-1"], ["--countdown", "nan"],
    ["--countdown", "-5"], ["--args", "[NaN]"], ["--queue", "q" * 300],
])
def test_bad_enqueue_options_are_one_line_errors(redis_url: str, queue_name: str,
                                                 argv: list[str]) -> None:
    args = ["enqueue", "apitasks.add", "--args", "[1, 2]", "--queue", queue_name, *argv]
    if "--queue" in argv:
        args = ["enqueue", "apitasks.add", "--args", "[1, 2]", *argv]
    line = _one_line_error(run_cli(redis_url, *args))
    assert line.startswith("qscale-worker: "), line
    with open_broker(redis_url) as b:
        assert b.stats(queue_name).ready == 0


def test_bulk_enqueue_honours_priority_and_countdown(redis_url: str, queue_name: str) -> None:
    done = run_cli(redis_url, "enqueue", "apitasks.add", "--args", "[1, 2]", "--count", "4",
                   "--priority", "7", "--queue", queue_name)
    assert done.returncode == 0, done.stderr
    assert redis.Redis.from_url(redis_url).llen(ready_key(queue_name, 7)) == 4
    done = run_cli(redis_url, "enqueue", "apitasks.add", "--args", "[1, 2]", "--count", "3",
                   "--countdown", "30", "--queue", queue_name)
    assert done.returncode == 0, done.stderr
    with open_broker(redis_url) as b:
        stats = b.stats(queue_name)
    assert (stats.ready, stats.delayed) == (4, 3)


def test_dlq_list_survives_records_with_impossible_timestamps(redis_url: str,
                                                              queue_name: str) -> None:
    r = redis.Redis.from_url(redis_url)
    for failed_at in (1e308, -1e308, "soon"):
        r.rpush(f"{key_prefix(queue_name)}dead", json.dumps(
            {"body": '{"id":"x","task":"t"}', "reason": "r", "detail": "",
             "failed_at": failed_at}))
    started = time.monotonic()
    done = run_cli(redis_url, "dlq", "list", "--queue", queue_name)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "3 dead letter(s)" in done.stdout
    assert time.monotonic() - started < 60

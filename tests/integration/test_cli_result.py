"""`python -m worker result ID` against the real result store (Redis)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.test_cli_tasks import run_cli
from worker.results import ResultStore, error_record

pytestmark = [pytest.mark.redis]


@pytest.fixture
def store(redis_url: str) -> ResultStore:
    return ResultStore(redis_url, 60)


def test_success_prints_status_and_json_result(redis_url: str, store: ResultStore) -> None:
    task_id = uuid.uuid4().hex
    store.mark_success(task_id, {"size": 5}, task="apitasks.add")
    done = run_cli(redis_url, "result", task_id)
    assert (done.returncode, done.stdout) == (0, 'SUCCESS {"size": 5}\n'), done.stderr
    record = json.loads(run_cli(redis_url, "result", task_id, "--json").stdout)
    assert record["status"] == "SUCCESS" and record["result"] == {"size": 5}


def test_failure_prints_the_remote_error(redis_url: str, store: ResultStore) -> None:
    task_id = uuid.uuid4().hex
    store.mark_error(task_id, "FAILURE", error_record("ValueError", "bad width", "tb"))
    done = run_cli(redis_url, "result", task_id)
    assert (done.returncode, done.stdout) == (0, "FAILURE ValueError: bad width\n"), done.stderr


def test_unknown_id_is_pending_and_wait_runs_out_with_exit_1(redis_url: str) -> None:
    task_id = uuid.uuid4().hex
    now = run_cli(redis_url, "result", task_id)
    assert now.returncode == 0 and now.stdout.startswith("PENDING"), now.stderr
    waited = run_cli(redis_url, "result", task_id, "--wait", "0.3")
    assert waited.returncode == 1 and waited.stdout.startswith("PENDING"), waited.stderr


def test_results_disabled_is_one_line_exit_2(amqp_url: str) -> None:
    done = run_cli(amqp_url, "result", uuid.uuid4().hex)
    assert done.returncode == 2
    assert done.stderr.startswith("qscale-worker: results need a result store"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

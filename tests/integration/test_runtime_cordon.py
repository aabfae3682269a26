"""POST /cordon on a real worker: it starts nothing new, gives its unstarted messages
back to the broker for other workers, finishes what runs, and resumes when lifted
or when the cordon's TTL runs out. Only the control token may cordon."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from controller.cordon import CordonPlan, CordonResult, PodCordoner
from controller.podstate import PodState
from tests import runtime_tasks as rt
from tests.runtime_harness import WorkerProcess, broker, publish, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]

TOKEN = "s3cret-control-token"


def control(worker: WorkerProcess, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None,
            token: str | None = TOKEN) -> tuple[int, dict[str, object]]:
    """POST /cordon or /uncordon; returns (status, JSON body)."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if body is not None:
        sent["Content-Type"] = "application/json"
    request = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}",
                                     data=body or b"", method="POST", headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as err:
        raw = err.read()
        return int(err.code), json.loads(raw) if err.code != 404 else {"text": raw.decode()}


def _ready(broker_url: str, queue: str) -> int:
    with broker(broker_url) as b:
        return b.stats(queue).ready


def test_cordon_hands_unstarted_work_to_other_workers(broker_url: str,
                                                      queue_name: str) -> None:
    """Two 4 s tasks run, two more wait in the children's queues behind them; once
    cordoned the worker starts neither those nor anything from the broker."""
    key = f"rt:{queue_name}"
    slow = publish(broker_url, queue_name, "rt.sleep_record", [[key, 4.0]] * 2)
    rest = publish(broker_url, queue_name, "rt.sleep_record", [[key, 0.05]] * 10)
    first = WorkerProcess(broker_url, queue_name, control_token=TOKEN).start()
    second: WorkerProcess | None = None
    try:
        first.wait_ready()
        wait_until(lambda: len(rt.runs(f"{key}:started")) == 2, 30, "both slow tasks running",
                   first)
        wait_until(lambda: first.state().get("prefetched", 0) >= 1, 10,
                   "the worker holding unstarted messages", first)
        held = first.state()["in_flight"]

        assert control(first, "/cordon", b'{"ttl_seconds": 60}') == \
            (200, {"cordon_expires_in": 60.0})
        wait_until(lambda: first.state().get("cordoned"), 5, "the cordon applied", first)
        assert 0 < first.state()["cordon_expires_in"] <= 60
        assert first.get("/readyz")[0] == 200      # still ready: cordon is not readiness
        wait_until(lambda: first.state().get("in_flight") == 0, 15,
                   "the running tasks finished and the queued ones handed back", first)
        assert set(rt.runs(key)) == set(slow)      # the running tasks finished normally
        wait_until(lambda: _ready(broker_url, queue_name) == 10, 5,
                   "every unstarted message back on the broker", first)
        time.sleep(1.0)                            # idle, with work waiting on the broker:
        assert _ready(broker_url, queue_name) == 10  # a cordoned worker claims none of it
        state = first.state()
        assert (state["completed"], state["cordoned"]) == (2, True), state
        assert first.get("/healthz")[0] == 200 and first.get("/readyz")[0] == 200
        assert "cordoned: claiming nothing new" in first.log()
        assert held > 2

        second = WorkerProcess(broker_url, queue_name).start()
        wait_until(lambda: len(rt.runs(key)) == 12, 40, "another worker runs the rest", second)
        assert rt.runs(key) == dict.fromkeys(slow + rest, 1)  # each exactly once
        first_pids = set(first.children())
        by_pid = rt.tasks_per_pid(key)
        assert sum(n for pid, n in by_pid.items() if pid in first_pids) == 2, by_pid
        assert first.state()["completed"] == 2

        second.stop()
        second = None
        assert control(first, "/uncordon") == (200, {"cordon_expires_in": None})
        assert first.state()["cordon_expires_in"] is None
        more = publish(broker_url, queue_name, "rt.sleep_record", [[key, 0.05]] * 3)
        wait_until(lambda: all(rt.runs(key).get(i) == 1 for i in more), 20,
                   "the uncordoned worker runs new work", first)
        assert first.state()["completed"] == 5
        wait_until(lambda: _ready(broker_url, queue_name) == 0, 5, "an empty queue", first)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_cordon_expires_by_itself(broker_url: str, queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, control_token=TOKEN).start()
    try:
        worker.wait_ready()
        assert control(worker, "/cordon", b'{"ttl_seconds": 3}')[0] == 200
        assert control(worker, "/cordon", b'{"ttl_seconds": 3}')[0] == 200  # idempotent
        wait_until(lambda: worker.state().get("cordoned"), 5, "the cordon applied", worker)
        ids = publish(broker_url, queue_name, "rt.sleep_record", [[key, 0.05]] * 3)
        time.sleep(1.0)
        assert rt.runs(key) == {}                 # cordoned: nothing claimed
        assert _ready(broker_url, queue_name) == 3
        assert worker.state()["cordoned"] is True
        wait_until(lambda: len(rt.runs(key)) == 3, 20, "tasks run once the TTL lapsed", worker)
        assert rt.runs(key) == dict.fromkeys(ids, 1)
        assert worker.state()["cordoned"] is False
        assert "uncordoned: claiming again" in worker.log()
    finally:
        worker.stop()


def test_cordon_needs_the_control_token(redis_url: str, queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(redis_url, queue_name, control_token=TOKEN).start()
    open_worker = WorkerProcess(redis_url, f"{queue_name}-open").start()  # no token set
    try:
        worker.wait_ready()
        open_worker.wait_ready()
        assert control(worker, "/cordon", token=None)[0] == 403
        assert control(worker, "/cordon", token="wrong")[0] == 403
        assert control(worker, "/cordon", headers={"X-Qscale-Control-Token": "wrong"},
                       token=None)[0] == 403
        assert control(worker, "/cordon", headers={"Authorization": f"Basic {TOKEN}"},
                       token=None)[0] == 403
        assert control(worker, "/uncordon", token="wrong")[0] == 403
        code, body = control(open_worker, "/cordon", token="")
        assert code == 403 and "QSCALE_CONTROL_TOKEN" in str(body["error"])
        assert control(open_worker, "/cordon", token=TOKEN)[0] == 403
        for bad in (b"ttl", b"[1]", b'{"ttl_seconds": 0}', b'{"ttl_seconds": "60"}',
                    b'{"ttl_seconds": 99999}', b'{"ttl": 60}', b'{"ttl_seconds": true}'):
            code, body = control(worker, "/cordon", bad)
            assert code == 400 and body["error"], (bad, code, body)
        assert control(worker, "/uncordon", b'{"ttl_seconds": 5}')[0] == 400
        assert control(worker, "/cordons")[0] == 404
        assert worker.state()["cordoned"] is False
        assert open_worker.state()["cordoned"] is False
        ids = publish(redis_url, queue_name, "rt.sleep_record", [[key, 0.05]] * 2)
        wait_until(lambda: len(rt.runs(key)) == 2, 20, "refused cordons had no effect", worker)
        assert rt.runs(key) == dict.fromkeys(ids, 1)
        # The proxy-friendly header works as well as the bearer token.
        assert control(worker, "/cordon", headers={"X-Qscale-Control-Token": TOKEN},
                       token=None)[0] == 200
        wait_until(lambda: worker.state().get("cordoned"), 5, "the cordon applied", worker)
        assert worker.get("/readyz")[0] == 200
    finally:
        worker.stop()
        open_worker.stop()


def test_the_controllers_cordoner_drives_a_real_worker(redis_url: str, queue_name: str) -> None:
    """controller.cordon's HTTP client against the real endpoint (direct pod access)."""
    worker = WorkerProcess(redis_url, queue_name, control_token=TOKEN).start()
    pod = PodState(name="w-0", ip="127.0.0.1", phase="Running", created=0.0,
                   terminating=False, state={"busy": 1, "in_flight": 1})
    cordoner = PodCordoner(None, access="direct", token=TOKEN, ttl_seconds=30)  # type: ignore[arg-type]
    impostor = PodCordoner(None, access="direct", token="guess", ttl_seconds=30)  # type: ignore[arg-type]
    try:
        worker.wait_ready()
        result = impostor.apply("ns", worker.port, CordonPlan(cordon=(pod,)), before=())
        assert result == CordonResult(frozenset(), 1)
        assert worker.state()["cordon_expires_in"] is None

        result = cordoner.apply("ns", worker.port, CordonPlan(cordon=(pod,)), before=())
        assert result == CordonResult(frozenset({"w-0"}), 0)
        wait_until(lambda: worker.state().get("cordoned"), 5, "the cordon applied", worker)
        assert 25 < worker.state()["cordon_expires_in"] <= 30

        result = impostor.apply("ns", worker.port, CordonPlan(uncordon=(pod,)), before={"w-0"})
        assert result == CordonResult(frozenset({"w-0"}), 1)  # kept: retried next time
        result = cordoner.apply("ns", worker.port, CordonPlan(uncordon=(pod,)), before={"w-0"})
        assert result == CordonResult(frozenset(), 0)
        wait_until(lambda: worker.state().get("cordoned") is False, 5, "the cordon lifted",
                   worker)
    finally:
        cordoner.close()
        impostor.close()
        worker.stop()

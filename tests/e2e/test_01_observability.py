"""In-cluster Prometheus scrapes workers and controller; malformed messages end in the DLQ.

Runs first against each broker's fresh release (both are quick).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.e2e.release import CONCURRENCY, QUEUE, Release, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.k8s]


@contextmanager
def port_forward(rel: Release, target: str, port: int) -> Iterator[int]:
    """`kubectl port-forward TARGET :PORT` to a free local port; yields that port."""
    cluster = rel.cluster
    proc = subprocess.Popen(
        [str(cluster.kubectl_path), "--kubeconfig", str(cluster.kubeconfig), "-n",
         rel.namespace, "port-forward", target, f":{port}", "--address", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not match:
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            pytest.fail(f"port-forward {target} failed: {line!r} {err}", pytrace=False)
        yield int(match.group(1))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def prom_query(port: int, query: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_workers_and_controller(release: Release) -> None:
    queries = {
        "worker up": 'up{component="worker"} == 1',
        "controller up": 'up{component="controller"} == 1',
        "worker metric": "qscale_processes",
        "controller metric": "qscale_controller_current_replicas",
    }
    with port_forward(release, f"svc/{release.prometheus_service}", 9090) as port:
        found: dict[str, list[dict[str, Any]]] = {}

        def all_present() -> bool:
            for what, query in queries.items():
                try:
                    found[what] = prom_query(port, query)
                except OSError:
                    found[what] = []
            return all(found.values())

        try:
            wait_until(all_present, timeout=90, interval=3, what="Prometheus series")
        except AssertionError:
            raise AssertionError(f"missing series: {[w for w, r in found.items() if not r]}; "
                                 f"up = {prom_query(port, 'up')}") from None
    for sample in found["worker up"] + found["controller up"]:
        labels = ", ".join(f"{k}={v!r}" for k, v in sorted(sample["metric"].items()))
        print(f"up{{{labels}}} = {sample['value'][1]}")
    concurrency = {float(s["value"][1]) for s in found["worker metric"]}
    assert float(CONCURRENCY) in concurrency, f"qscale_processes of the workers: {concurrency}"


def test_malformed_messages_end_in_dlq(release: Release) -> None:
    """Raw non-JSON, an unknown task and bad arguments: dead-lettered with reasons."""
    restarts_before = _worker_restarts(release)
    release.probe("raw", QUEUE, "this is not json {")
    unknown_id = release.exec_probe("python", "-m", "worker", "enqueue", "e2e.no_such_task",
                                    "--queue", QUEUE).strip()
    bad_args_id = release.exec_probe("python", "-m", "worker", "enqueue", "e2e.record",
                                     "--args", '["only-one-argument"]', "--queue",
                                     QUEUE).strip()

    def dead_letters() -> list[dict[str, Any]] | None:
        out = release.exec_probe("python", "-m", "worker", "dlq", "list", "--json",
                                 "--queue", QUEUE)
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return rows if len(rows) >= 3 else None

    rows = wait_until(dead_letters, timeout=90, interval=3, what="3 dead letters")
    table = release.exec_probe("python", "-m", "worker", "dlq", "list", "--queue", QUEUE)
    print(table)
    by_id = {row["id"]: row for row in rows}
    assert "unknown task" in by_id[unknown_id]["reason"], by_id[unknown_id]
    assert "bad arguments" in by_id[bad_args_id]["reason"], by_id[bad_args_id]
    raw = [row for row in rows if row["id"] == "?"]
    assert raw and "JSON" in raw[0]["reason"], rows
    time.sleep(2)
    assert _worker_restarts(release) == restarts_before, "a worker restarted on bad input"
    assert release.running_worker_pods(), "no worker left running"


def _worker_restarts(release: Release) -> dict[str, int]:
    return {p["metadata"]["name"]: sum(c.get("restartCount", 0)
                                       for c in p["status"].get("containerStatuses", []))
            for p in release.worker_pods()}

"""Issue #11 item 4: uninstall, keep the broker's volume, install again: tasks still run.

For each broker (both at once, each in its own namespace): install, run a task, park a
message on a queue no worker reads, `helm uninstall`. The volume stays (StatefulSet
claims outlive releases) and so does the credentials Secret (resource-policy keep).
Then the worst case: the broker's Secret is deleted as well, so the second install
generates a new password for a volume written with the old one. RabbitMQ stores its
users on the volume: the user is synced to the Secret at start (a definitions import),
else every worker fails to log in (what happened before: 0.1.0 deleted the Secret and
the new password never reached the kept user). Redis takes its password from the
command line at every start. The results Redis next to RabbitMQ keeps its Secret, which
the reinstall adopts and reads back (`lookup`): same password. Afterwards a task runs
and the parked message is still there, read through the new password.

On the RabbitMQ release the node is also asked which configuration files it read: the
chart's conf.d file, the official image's contract that qscale-rabbitmq honours too.

QSCALE_E2E_REINSTALL_CHART=<chart dir> runs the scenario with another chart (how it was
run against 0.1.0, whose broker images are qscale-*:0.1.0, loaded by hand).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.lean import CHART, LeanRelease, lean_values
from tests.plugins.kind import KubeCluster

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.slow]

PARKED = "parked"
CHART_UNDER_TEST = Path(os.environ.get("QSCALE_E2E_REINSTALL_CHART", str(CHART)))


def _ready(rel: LeanRelease, queue: str) -> int:
    report = json.loads(rel.worker_exec(["python", "-m", "worker", "status", "--queue", queue,
                                         "--json"]))
    return int(report["queues"][0]["ready"])


def _node_config_files(rel: LeanRelease) -> list[str]:
    """The RabbitMQ node's config files, from its management API (credentials: the URL)."""
    code = (
        "import base64, json, os, urllib.parse, urllib.request\n"
        "u = urllib.parse.urlparse(os.environ['QSCALE_BROKER_URL'])\n"
        "req = urllib.request.Request(f'http://{u.hostname}:15672/api/nodes')\n"
        "auth = base64.b64encode(f'{u.username}:{u.password}'.encode()).decode()\n"
        "req.add_header('Authorization', 'Basic ' + auth)\n"
        "print(json.dumps(json.load(urllib.request.urlopen(req, timeout=10))[0]"
        ".get('config_files')))\n")
    files: list[str] = json.loads(rel.run_task(code))
    return files


def reinstall_scenario(rel: LeanRelease, broker: str, image: str) -> dict[str, Any]:
    values = lean_values(broker, image)
    secret = f"{rel.fullname}-{broker}"
    kept_names = [secret] + ([f"{rel.fullname}-redis"] if broker == "rabbitmq" else [])
    facts: dict[str, Any] = {"broker": broker}
    began = time.monotonic()
    rel.helm("install", values, chart=CHART_UNDER_TEST)
    facts["install_s"] = round(time.monotonic() - began)
    assert rel.roundtrip() == "5", f"{broker}: first install runs no task"
    rel.worker_exec(["python", "-m", "worker", "enqueue", "qscale.demo.add", "--args", "[1, 2]",
                     "--queue", PARKED])
    assert _ready(rel, PARKED) == 1
    before = {name: rel.secret_data(name) for name in kept_names}

    rel.uninstall()
    pvcs = [p["metadata"]["name"] for p in rel.get("pvc")["items"]]
    facts["pvcs_left"] = sorted(pvcs)
    facts["secrets_left"] = sorted(n for n in kept_names if rel.exists("secret", n))
    # The worst case: the credentials the volume was written with are gone.
    rel.kubectl("delete", "secret", secret, "--ignore-not-found")

    began = time.monotonic()
    again = rel.helm("install", values, chart=CHART_UNDER_TEST, timeout="4m", check=False)
    if again.returncode != 0:
        worker = rel.kubectl("logs", f"deploy/{rel.fullname}-worker-default", "--tail=3",
                             check=False)
        raise AssertionError(f"{broker}: the second install failed: {again.stderr.strip()}\n"
                             f"worker log: {(worker.stdout + worker.stderr).strip()[-800:]}")
    facts["reinstall_s"] = round(time.monotonic() - began)
    after = {name: rel.secret_data(name) for name in kept_names}
    facts["new_password"] = before[secret] != after[secret]
    facts["adopted_same"] = {n: before[n] == after[n] for n in kept_names if n != secret}
    facts["roundtrip"] = rel.roundtrip()
    facts["parked_ready"] = _ready(rel, PARKED)
    if broker == "rabbitmq":
        facts["config_files"] = _node_config_files(rel)
    return facts


def test_reinstall_keeps_data_and_runs_tasks(kube_cluster: KubeCluster, e2e_image: str) -> None:
    releases = {b: LeanRelease(kube_cluster, prefix=f"qscale-reinstall-{b}")
                for b in ("redis", "rabbitmq")}
    for rel in releases.values():
        rel.create_namespace()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {b: pool.submit(reinstall_scenario, rel, b, e2e_image)
                       for b, rel in releases.items()}
            outcomes: dict[str, Any] = {}
            for broker, future in futures.items():
                try:
                    outcomes[broker] = future.result()
                except (AssertionError, OSError, subprocess.SubprocessError) as exc:
                    outcomes[broker] = exc
    finally:
        for rel in releases.values():
            rel.delete_namespace()
    print(json.dumps({b: o if isinstance(o, dict) else repr(o) for b, o in outcomes.items()},
                     indent=1))
    failed = {b: o for b, o in outcomes.items() if not isinstance(o, dict)}
    assert not failed, "\n".join(f"[{b}] {e}" for b, e in failed.items())
    for broker, facts in outcomes.items():
        fullname = releases[broker].fullname
        assert facts["roundtrip"] == "5", facts           # the reinstalled workers work
        assert facts["parked_ready"] == 1, facts          # on the kept volume's data
        assert facts["new_password"], facts               # ... with a new password
        assert f"data-{fullname}-{broker}-0" in facts["pvcs_left"], facts
        expected_secrets = [f"{fullname}-{broker}"] + (
            [f"{fullname}-redis"] if broker == "rabbitmq" else [])
        assert facts["secrets_left"] == sorted(expected_secrets), facts
        assert all(facts["adopted_same"].values()), facts
    assert "/etc/rabbitmq/conf.d/10-qscale.conf" in outcomes["rabbitmq"]["config_files"]

"""A controller that may not scale backs off, keeps serving, and scales once allowed.

The real controller (`python -m controller run`, one env-defined pool) runs as a
ServiceAccount that may read its Deployment but not patch `deployments/scale`:
the API server answers 403 to every scale attempt. The loop must hold 1, 2, 4, 8 s
between attempts (not retry every 1 s tick), log one line per failure, stay
healthy, and scale on its first attempt after the permission is granted.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from tests.k8s.harness import (
    REDIS,
    REPO,
    apply,
    deployment,
    drain,
    events,
    publish,
    spec_replicas,
    wait_for,
)
from tests.plugins.kind import KubeCluster
from tests.runtime_harness import free_port

pytestmark = pytest.mark.k8s

SA = "qscale-ctl-noscale"
READER_ROLE = {  # everything the env-mode loop needs except the scale patch
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
    "metadata": {"name": "bo-reader"},
    "rules": [
        {"apiGroups": ["apps"], "resources": ["deployments"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    ],
}
SCALER_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
    "metadata": {"name": "bo-scaler"},
    "rules": [{"apiGroups": ["apps"], "resources": ["deployments/scale"],
               "verbs": ["get", "patch"]}],
}
FAILED = re.compile(r"^(\S+ \S+) WARNING controller\.loop pool=\S+ scaling failed, "
                    r"holding for (\d+)s: (.*)$")


def _binding(ns: str, role: str) -> dict[str, object]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}]}


def _sa_kubeconfig(cluster: KubeCluster, ns: str, path: Path) -> Path:
    """A kubeconfig for the cluster that authenticates as the ServiceAccount, nothing else."""
    token = cluster.kubectl("-n", ns, "create", "token", SA, "--duration=1h").stdout.strip()
    raw = cluster.kubectl_json("config", "view", "--raw", "--minify")
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kind", "cluster": raw["clusters"][0]["cluster"]}],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": SA, "context": {"cluster": "kind", "user": SA, "namespace": ns}}],
        "current-context": SA,
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def _metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return None


def _failures(log: Path) -> list[tuple[float, int, str]]:
    """(time, hold seconds, reason) of each `scaling failed` line of the controller's log."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if m := FAILED.match(line):
            when = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((when, int(m[2]), m[3]))
    return found


def test_forbidden_scale_backs_off_keeps_serving_and_scales_once_allowed(
        kube_cluster: KubeCluster, namespace: str, tmp_path: Path) -> None:
    ns = namespace
    queue = f"k8s-bo-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("-n", ns, "create", "serviceaccount", SA)
    apply(kube_cluster, ns, READER_ROLE, SCALER_ROLE, _binding(ns, "bo-reader"),
          deployment("bo", 1))
    kubeconfig = _sa_kubeconfig(kube_cluster, ns, tmp_path / "sa-kubeconfig")
    can = kube_cluster.kubectl("-n", ns, "auth", "can-i", "patch", "deployments.apps",
                               "--subresource=scale", f"--as=system:serviceaccount:{ns}:{SA}",
                               check=False).stdout.strip()
    assert can == "no", "the ServiceAccount must not be able to scale yet"

    port = free_port()
    log = tmp_path / "controller.log"
    env = dict(os.environ, QSCALE_CONTROLLER_POOL_SOURCE="env",
               QSCALE_CONTROLLER_NAMESPACE=ns, QSCALE_CONTROLLER_DEPLOYMENT="bo",
               QSCALE_CONTROLLER_BROKER_URL=REDIS, QSCALE_CONTROLLER_QUEUES=queue,
               QSCALE_CONTROLLER_CONCURRENCY="4", QSCALE_CONTROLLER_MODE="queue",
               QSCALE_CONTROLLER_POD_STATE_PORT="0", QSCALE_CONTROLLER_LEADER_ELECTION="false",
               QSCALE_CONTROLLER_HTTP_HOST="127.0.0.1", QSCALE_CONTROLLER_HTTP_PORT=str(port),
               QSCALE_CONTROLLER_POLL_INTERVAL_SECONDS="1")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "controller", "run", "--kubeconfig",
                                 str(kubeconfig)], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for("the controller to serve /healthz", lambda: _healthz(port) == 200, 60)
        publish(queue, 12)                                   # 12 tasks / 4 slots -> 3 pods
        wait_for("the first 403", lambda: _failures(log), 30, 0.2)

        # ~10 s of refusals: the loop ticks every second, yet tries only after each hold.
        health = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            health.append(_healthz(port))
            time.sleep(0.5)
        failures = _failures(log)
        print("failures in the first ~10 s:",
              [(round(t - failures[0][0], 2), hold) for t, hold, _ in failures])
        assert 3 <= len(failures) <= 5, failures          # 0, 1, 3, 7 s: about 4, not 10+
        assert [hold for _, hold, _ in failures] == [1, 2, 4, 8, 16][:len(failures)], failures
        for (before, hold, _), (after, _, _) in itertools.pairwise(failures):
            assert after - before >= hold - 0.1, failures   # never retried during a hold
        assert all("patching scale: 403 Forbidden" in why for _, _, why in failures), failures
        assert set(health) == {200}, health                # kept serving throughout
        assert proc.poll() is None
        assert spec_replicas(kube_cluster, ns, "bo") == 1

        apply(kube_cluster, ns, _binding(ns, "bo-scaler"))  # grant the scale patch
        granted = len(_failures(log))
        wait_for("the scale once permitted", lambda: spec_replicas(kube_cluster, ns, "bo") == 3,
                 90, 0.5)
        text = log.read_text(errors="replace")
        failures = _failures(log)
        print(f"{len(failures)} refused attempts in all ({granted} before the grant); "
              "scaled 1 -> 3 after it")
        assert "acted=true" in text and "Traceback" not in text, text[-3000:]
        time.sleep(2)
        assert len(_failures(log)) == len(failures)          # no more failures after success
        errors = _metric(port, "qscale_controller_api_errors_total")
        assert errors == len(failures), (errors, failures)   # one counted error per line
        assert _healthz(port) == 200
        warnings = [e for e in events(kube_cluster, ns, "bo")
                    if e["reason"] == "ScaleFailed" and e["type"] == "Warning"]
        assert warnings and "403" in warnings[0]["message"], warnings
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print(log.read_text(errors="replace")[-4000:])
        drain(queue)

"""Fault injection on the real kind cluster, with a history recorder and an invariant checker.

A real pool per broker (the REAL worker image, Redis and RabbitMQ side by side) runs
bursts while the controller meets: its pod-list permission revoked and restored
mid-burst; the API server slow, then resetting every connection (a Toxiproxy in front
of it for every controller); RabbitMQ's management API down (in-flight unknown);
every pod's /state answering garbage, then too slowly; the leader SIGKILLed mid
scale-down (two replicas, a Lease); a second release in the same namespace, one of
whose WorkerPools targets the first release's Deployment; a user's HPA on a pool's
Deployment. tests/k8s/chaos/checker.py holds the run to its invariants and prints
"busy pods killed: N".

`make test` runs one round (each fault once, a few minutes). The long run shuffles
the faults over more rounds: `make controller-chaos` (QSCALE_CHAOS_ROUNDS, default 6).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from kubernetes import config

from tests.e2e.conftest import _chart_version, _on_node, _run
from tests.k8s.chaos import scenario
from tests.k8s.chaos.checker import check
from tests.k8s.chaos.history import Recorder, decided_pools, patches_from_log, task_runs
from tests.k8s.chaos.rig import MAX_REPLICAS, MIN_REPLICAS, POOLS, chaos_rig, wait_leader
from tests.plugins.kind import KubeCluster, _paused_alarm

pytestmark = pytest.mark.k8s

ROUNDS = int(os.environ.get("QSCALE_CHAOS_ROUNDS", "1"))
SEED = int(os.environ.get("QSCALE_CHAOS_SEED", "10"))


@pytest.fixture(scope="module")
def images(kube_cluster: KubeCluster) -> str:
    """qscale, qscale-redis and qscale-rabbitmq of this checkout, built (cached), loaded."""
    env, version = kube_cluster.env(), _chart_version()
    with _paused_alarm():
        _run(["bash", "hack/build-image.sh", "qscale", "qscale-redis", "qscale-rabbitmq"], env,
             3600, "hack/build-image.sh qscale qscale-redis qscale-rabbitmq")
        for name in (f"qscale:{version}", f"qscale-redis:{version}",
                     f"qscale-rabbitmq:{version}"):
            if not _on_node(kube_cluster, name, env):
                kube_cluster.load_image(name)
    return version


def _owner(pod: dict[str, object]) -> str | None:
    labels = (pod.get("metadata") or {}).get("labels") or {}  # type: ignore[union-attr]
    app = labels.get("app")  # type: ignore[union-attr]
    return app if app in POOLS.values() else None


@pytest.mark.timeout(600 + 900 * ROUNDS)
def test_faults_never_kill_a_busy_pod_nor_scale_down_on_unknown(
        kube_cluster: KubeCluster, namespace: str, images: str, tmp_path: Path) -> None:
    started = time.monotonic()
    api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    with chaos_rig(kube_cluster, namespace, images, tmp_path) as rig:
        recorder = Recorder(api, namespace, [*POOLS.values(), "sleepers-b"], _owner,
                            ["chaos-a", "chaos-b"])
        try:
            rig.start_controller("chaos-a", "a1")
            wait_leader(rig, "chaos-a")
            rig.start_controller("chaos-a", "a2")       # the standby
            rig.start_controller("chaos-b", "b1")       # a second release, same namespace
            wait_leader(rig, "chaos-b")
            scenario.run(rig, recorder, ROUNDS, SEED)
        finally:
            recorder.stop()
            history = recorder.history
            for ctl in rig.controllers:
                text = ctl.text()
                history.patches += patches_from_log(text, ctl.identity)
                decided = decided_pools(text)
                expected = {"pool-redis", "pool-rabbit"} if ctl.name == "chaos-a" \
                    else {"pool-b"}
                if not decided <= expected:
                    history.notes.append(f"VIOLATION {ctl.identity} decided for "
                                         f"{sorted(decided - expected)}")
            history.tasks = task_runs(rig.history_url)
            logs = {c.identity: c.log for c in rig.controllers}
    report = check(history, bounds={d: (MIN_REPLICAS, MAX_REPLICAS) for d in POOLS.values()},
                   release_of={i: "chaos-a" if i.startswith("a") else "chaos-b"
                               for i in logs})
    took = time.monotonic() - started
    print(f"\ncontroller fault suite: {ROUNDS} round(s), seed {SEED}, {took:.0f} s")
    print("\n".join(history.notes))
    print(report.summary())
    print("controller logs:", ", ".join(str(p) for p in logs.values()))
    separation = [n for n in history.notes if n.startswith("VIOLATION")]
    assert not separation, separation
    assert report.counts["tasks"] > 0 and report.counts["deletions"] > 0, report.counts
    assert report.counts["scale_downs"] > 0 and report.counts["windows"] >= 5, report.counts
    assert report.violations == [], report.summary()

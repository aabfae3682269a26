"""A worker node lost mid-burst loses no task: the multi-node scenarios (`make test-multinode`).

On a kind cluster of one control plane and two worker nodes (QSCALE_KIND_WORKERS=2, the
pod network routed between them by hack/multinode-network.sh, NetworkPolicy enforced on
every node), one Redis release whose broker, controller, Prometheus and probe are pinned
to the first worker node ("infra"); the workers spread over both nodes (the chart's
default topology spread). Then:

- the workers run on both nodes and the controller reads every pod's `/state` across
  nodes (no pod of the pool is unknown to it);
- `kubectl drain` of the second node during a burst: the PDB is respected, the workers
  there drain (nothing interrupted), every task finishes;
- during a burst the second node's container is killed (`docker kill`: a power cut, harder
  than `docker stop`'s shutdown). Every task is accounted for by the same history check
  as the other e2e scenarios (`verify`: expected ids vs the workers' start/finish log):
  none missing, redelivered ones counted. The claims of the dead node's workers go back
  to the queue when their lease ends, and the pods there become NotReady, are not
  counted as capacity, and are replaced on the surviving node;
- the node comes back (`docker start`), its network and enforcer are restored, and the
  cluster is whole for the next run.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.release import Release, wait_until
from tests.e2e.timeline import Timeline
from tests.plugins.kind import ENFORCER_SCRIPT, REPO_ROOT, KubeCluster, _paused_alarm

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.slow, pytest.mark.redis]

INFRA = {"qscale.io/e2e-role": "infra"}
NAMESPACE = "qscale-multinode"
TASK_SECONDS = 1.0
COUNT = 6000  # ~200 s at 8 pods: still far more than the pool can run when NotReady shows
MAX_REPLICAS = 8
REPLACED_WITHIN = 150  # seconds after NotReady; the eviction would take 300


def _workers_by_node(release: Release) -> dict[str, list[str]]:
    by_node: dict[str, list[str]] = {}
    for pod in release.worker_pods():
        if pod["status"].get("phase") == "Running" and not pod["metadata"].get(
                "deletionTimestamp"):
            by_node.setdefault(pod["spec"].get("nodeName", ""), []).append(
                pod["metadata"]["name"])
    return by_node


def _node_ready(cluster: KubeCluster, node: str) -> str:
    conditions = cluster.kubectl_json("get", "node", node)["status"]["conditions"]
    return next((c["status"] for c in conditions if c["type"] == "Ready"), "Unknown")


@pytest.fixture(scope="module")
def nodes(kube_cluster: KubeCluster) -> tuple[str, str]:
    """(infra, victim): the two worker nodes."""
    workers = [n for n in kube_cluster.nodes() if not n.endswith("-control-plane")]
    assert len(workers) >= 2, (f"cluster {kube_cluster.name} has worker nodes {workers}: "
                               "the multi-node scenarios need QSCALE_KIND_WORKERS=2 "
                               "(make test-multinode)")
    infra, victim = workers[0], workers[1]
    kube_cluster.kubectl("label", "node", infra, *(f"{k}={v}" for k, v in INFRA.items()),
                         "--overwrite")
    return infra, victim


@pytest.fixture(scope="module")
def spread(kube_cluster: KubeCluster, e2e_image: str,
           nodes: tuple[str, str]) -> Iterator[Release]:
    rel = Release(kube_cluster, broker="redis", image=e2e_image, namespace=NAMESPACE,
                  probe_node_selector=INFRA, overrides={
                      "redis": {"nodeSelector": INFRA},
                      "controller": {"nodeSelector": INFRA},
                      "monitoring": {"prometheus": {"nodeSelector": INFRA}},
                      "autoscaling": {"minReplicas": 4, "maxReplicas": MAX_REPLICAS},
                  })
    with _paused_alarm():
        rel.install()
    yield rel
    rel.teardown(keep=False)


def test_workers_spread_and_the_controller_reads_every_node(
        spread: Release, nodes: tuple[str, str]) -> None:
    infra, victim = nodes
    by_node = wait_until(lambda: (b := _workers_by_node(spread)).get(infra) and b.get(victim)
                         and b, timeout=180, what="worker pods on both worker nodes")
    print(f"\n[multinode] workers by node: {by_node}")

    def all_known() -> dict[str, Any] | None:
        wp = spread.get_json("workerpool", spread.workerpool)
        known = next((c for c in wp.get("status", {}).get("conditions", [])
                      if c["type"] == "InputsKnown"), None)
        return wp if known and known["status"] == "True" else None
    wp = wait_until(all_known, timeout=120, what="the controller to know every pod's /state")
    print(f"[multinode] WorkerPool status: {json.dumps(wp['status'])[:600]}")


def test_a_drained_node_interrupts_no_task(
        spread: Release, kube_cluster: KubeCluster, nodes: tuple[str, str]) -> None:
    """`kubectl drain` mid-burst: evictions respect the pool's PDB, every worker on the node
    finishes what it runs and gives back what it has not started; none interrupted."""
    infra, victim = nodes
    run = f"drain-{uuid.uuid4().hex[:8]}"
    count = 400
    wait_until(lambda: _workers_by_node(spread).get(victim), timeout=180,
               what=f"workers on {victim}")
    try:
        with Timeline(spread, "node-drain"):
            spread.enqueue(run, count, TASK_SECONDS)
            wait_until(lambda: spread.verify(run)["executions"] > 0, timeout=120,
                       what="the burst to start")
            before = _workers_by_node(spread).get(victim, [])
            began = time.monotonic()
            kube_cluster.kubectl("drain", victim, "--ignore-daemonsets",
                                 "--delete-emptydir-data", "--timeout=300s", timeout=330)
            drained = time.monotonic() - began
            assert not _workers_by_node(spread).get(victim), "workers left on the node"
            report = spread.wait_all_finished(run, timeout=600)
    finally:
        kube_cluster.kubectl("uncordon", victim, check=False)
    evictions = [e for e in kube_cluster.kubectl_json("get", "events", "-n", spread.namespace)
                 ["items"] if e.get("reason") in ("Evicted", "Killing")]
    print(f"\n[multinode] drained {victim} ({len(before)} workers: {before}) in {drained:.0f}s;"
          f" {count} tasks: finished {report['finished']}, executions "
          f"{report['executions']}, duplicated {report['duplicated']}, interrupted "
          f"{report['interrupted']}; {len(evictions)} eviction/kill events")
    assert report["missing"] == 0 and report["finished"] == count, report
    assert report["interrupted"] == 0, report
    assert infra in _workers_by_node(spread)


def _restore(cluster: KubeCluster, victim: str) -> None:
    """The node back, with its routes and its policy enforcer (both lost with its netns)."""
    subprocess.run(["docker", "start", victim], check=False, capture_output=True, timeout=120)
    env = cluster.env()
    for argv in (["bash", str(REPO_ROOT / "hack" / "multinode-network.sh")],
                 ["bash", str(ENFORCER_SCRIPT), "up"]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env,
                              check=False)
        assert proc.returncode == 0, f"{argv[1]}: {proc.stderr[-2000:]}"
    wait_until(lambda: _node_ready(cluster, victim) == "True", timeout=240,
               what=f"node {victim} Ready again")


def _ready_workers(release: Release, node: str) -> list[str]:
    return [p["metadata"]["name"] for p in release.worker_pods()
            if p["spec"].get("nodeName") == node and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions", []))]


def test_a_worker_node_lost_mid_burst_loses_no_task(
        spread: Release, kube_cluster: KubeCluster, nodes: tuple[str, str]) -> None:
    infra, victim = nodes
    run = f"node-{uuid.uuid4().hex[:8]}"
    # A drain earlier moved every worker to infra: spread them again (new pods spread).
    spread.kubectl("rollout", "restart", f"deployment/{spread.worker_deployment}")
    spread.kubectl("rollout", "status", f"deployment/{spread.worker_deployment}",
                   "--timeout=300s", timeout=330)
    try:
        with Timeline(spread, "node-failure") as timeline:
            spread.enqueue(run, COUNT, TASK_SECONDS)
            # The burst at maxReplicas, a fair share of it on the victim.
            wait_until(lambda: len(_ready_workers(spread, infra))
                       + len(_ready_workers(spread, victim)) >= MAX_REPLICAS
                       and len(_ready_workers(spread, victim)) >= 2, timeout=180,
                       what=f"{MAX_REPLICAS} Ready workers, some on {victim}")

            def victim_busy() -> bool:
                report = spread.verify(run, events=True)
                on_victim = set(_workers_by_node(spread).get(victim, []))
                return any(e["pod"] in on_victim and e["ev"] == "start"
                           for e in report["events"])
            wait_until(victim_busy, timeout=120, interval=2,
                       what=f"tasks running on {victim}")
            lost = _workers_by_node(spread).get(victim, [])
            working = len(_ready_workers(spread, infra)) + len(_ready_workers(spread, victim))
            subprocess.run(["docker", "kill", victim], check=True, capture_output=True,
                           timeout=60)
            killed_at = time.monotonic()
            print(f"\n[multinode] killed node {victim} with worker pods {lost}; "
                  f"{working} workers were Ready")
            not_ready = wait_until(
                lambda: _node_ready(kube_cluster, victim) != "True" and time.monotonic(),
                timeout=180, interval=2, what=f"{victim} NotReady")
            print(f"[multinode] {victim} NotReady after {not_ready - killed_at:.0f}s")
            # The lost pods still count in the Deployment until evicted; the controller
            # must not take them for capacity: as many workers as before run on infra.
            replaced = wait_until(
                lambda: len(_ready_workers(spread, infra)) >= working and time.monotonic(),
                timeout=REPLACED_WITHIN, interval=2,
                what=f"{working} Ready workers on {infra} (the lost ones replaced)")
            print(f"[multinode] {working} workers Ready on {infra} "
                  f"{replaced - not_ready:.0f}s after NotReady "
                  f"(Deployment asks {spread.deployment()['spec']['replicas']})")
            report = spread.wait_all_finished(run, timeout=600)
            finished_at = time.monotonic()
    finally:
        _restore(kube_cluster, victim)
    print(f"[multinode] {COUNT} tasks: finished {report['finished']}, executions "
          f"{report['executions']}, duplicated {report['duplicated']}, interrupted "
          f"{report['interrupted']}; all finished {finished_at - killed_at:.0f}s after the "
          f"kill; timeline {timeline.png}")
    assert report["missing"] == 0 and report["finished"] == COUNT, report
    assert report["unexpected"] == 0, report

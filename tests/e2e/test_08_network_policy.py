"""The chart's NetworkPolicies, enforced for real: a default-deny namespace on a cluster
whose policy controller drops what no policy admits.

The kind cluster's bridge CNI ignores NetworkPolicy; kube-router's network policy
controller enforces it on every node for the whole test session (hack/netpol-enforcer.sh,
started by the kube_cluster fixture). In a namespace whose own policy denies all ingress:

- pods the policies do not name cannot open a connection to the broker: one in another
  namespace, one unlabelled in the release's namespace, and one carrying only
  qscale.io/broker-client (as another release's workers in that namespace do) — this also
  proves the controller enforces;
- a pod in a namespace admitted by `networkPolicy.brokerFrom` connects, and a producer
  there enqueues a burst that the workers run to the last task;
- the controller reads the workers' `/state`: the pool scales up for the burst and back
  down right after it (an unreadable pod counts as busy and would hold scale-in for
  `drainDeadlineSeconds`);
- Prometheus scrapes the workers and the controller (`up == 1`);
- the policy controller ran throughout (a dead enforcer would make every check but the
  refusals pass vacuously).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.netpol_agent import PolicyEnforcer
from tests.e2e.release import (
    CHART,
    FULLNAME,
    INSTALL_TIMEOUT,
    MIN_REPLICAS,
    RELEASE_NAME,
    Release,
    pod_manifest,
    wait_until,
)
from tests.e2e.test_01_observability import port_forward, prom_query
from tests.plugins.kind import KubeCluster, _paused_alarm

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.slow]

ALLOWED_LABEL = {"qscale-e2e/producer": "allowed"}
# Longer than the test waits for scale-in: a pod whose /state cannot be read counts as
# busy until then, so an unreadable /state fails the scale-in wait instead of hiding.
DRAIN_DEADLINE_SECONDS = 900
# About 50 s of work for one pod (4 slots): long enough for new pods to start on a loaded
# node before the queue drains, with a scale-down window that outlasts their start-up.
BURST, TASK_SECONDS = 100, 2.0
SCALE_DOWN_WINDOW_SECONDS = 30


@pytest.fixture(scope="module")
def agent(kube_cluster: KubeCluster) -> PolicyEnforcer:
    agent = PolicyEnforcer(kube_cluster)
    assert agent.running(), "the cluster does not enforce NetworkPolicy: the kube_cluster " \
        "fixture runs `hack/netpol-enforcer.sh up`; see its status"
    return agent


@pytest.fixture(scope="module")
def namespaces(kube_cluster: KubeCluster) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:6]
    names = {"app": f"np-app-{suffix}", "shop": f"np-shop-{suffix}",
             "stranger": f"np-stranger-{suffix}"}
    for role, name in names.items():
        kube_cluster.kubectl("create", "namespace", name)
        if role == "shop":
            kube_cluster.kubectl("label", "namespace", name,
                                 *(f"{k}={v}" for k, v in ALLOWED_LABEL.items()))
    yield names
    for name in names.values():
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def guarded(kube_cluster: KubeCluster, agent: PolicyEnforcer, namespaces: dict[str, str],
            e2e_image: str) -> Iterator[Release]:
    """The release, installed into a namespace that already denies all ingress."""
    app = namespaces["app"]
    kube_cluster.apply(json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny-ingress"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}), namespace=app)
    rel = Release(kube_cluster, broker="redis", image=e2e_image, namespace=app, overrides={
        "networkPolicy": {"brokerFrom": [{"namespaceSelector": {"matchLabels": ALLOWED_LABEL}}]},
        "autoscaling": {"maxReplicas": 3, "drainDeadlineSeconds": DRAIN_DEADLINE_SECONDS,
                        "scaleDownWindowSeconds": SCALE_DOWN_WINDOW_SECONDS},
    })
    rel.installed = True  # teardown uninstalls whatever a failed install left
    try:
        with _paused_alarm():
            kube_cluster.helm("install", RELEASE_NAME, str(CHART), "-n", app, "-f",
                              rel.values_file, "--wait", "--timeout", INSTALL_TIMEOUT,
                              timeout=420)
            rel.start_probe()
        yield rel
    finally:
        rel.teardown(keep=False)


def _broker_url(rel: Release) -> str:
    """The Secret's URL: it names the Service with its namespace, usable from anywhere."""
    secret = rel.get_json("secret", f"{FULLNAME}-redis")
    url = base64.b64decode(secret["data"]["url"]).decode()
    assert f".{rel.namespace}.svc:" in url, "the broker URL is namespace-local"
    return url


def _run_pod(rel: Release, namespace: str, name: str, labels: dict[str, str],
             argv: list[str], env: dict[str, str], timeout: float = 180) -> tuple[str, str]:
    """Run one pod to completion; its phase and log."""
    pod = pod_manifest(name, rel.image, argv, [{"name": k, "value": v} for k, v in env.items()],
                       labels, restart_policy="Never")
    rel.cluster.apply(json.dumps(pod), namespace=namespace)

    def finished() -> str | None:
        phase = rel.cluster.kubectl_json("-n", namespace, "get", "pod", name)["status"].get(
            "phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(finished, timeout=timeout, interval=2, what=f"pod {namespace}/{name}")
    log = rel.cluster.kubectl("-n", namespace, "logs", name, check=False).stdout
    return phase, log


# Keeps trying for a while: a policy controller admits a new pod's address a moment after
# the pod starts (kube-router on its pod event), so a first refusal proves nothing.
CONNECT = ("import socket, sys, time\n"
           "deadline, last = time.monotonic() + float(sys.argv[3]), None\n"
           "while time.monotonic() < deadline:\n"
           "    try:\n"
           "        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
           "        s.sendall(b'PING\\r\\n'); print('connected', s.recv(64)); sys.exit(0)\n"
           "    except OSError as exc:\n"
           "        last = exc; time.sleep(1)\n"
           "print('failed', type(last).__name__, getattr(last, 'errno', None)); sys.exit(3)\n")
CONNECT_SECONDS = 25


def _connect(rel: Release, namespace: str, name: str, labels: dict[str, str]) -> tuple[str, str]:
    host = f"{FULLNAME}-redis.{rel.namespace}.svc.cluster.local"
    return _run_pod(rel, namespace, name, labels,
                    ["python", "-c", CONNECT, host, "6379", str(CONNECT_SECONDS)], {})


def test_strangers_are_refused_and_the_admitted_namespace_connects(
        guarded: Release, namespaces: dict[str, str]) -> None:
    results = {
        "stranger namespace": _connect(guarded, namespaces["stranger"], "stranger", {}),
        "own namespace, unlabelled": _connect(guarded, namespaces["app"], "unlabelled", {}),
        "own namespace, another release's label": _connect(
            guarded, namespaces["app"], "other-release",
            {"app.kubernetes.io/instance": "other", "qscale.io/broker-client": "true"}),
        "admitted namespace": _connect(guarded, namespaces["shop"], "shop-connect", {}),
    }
    for what, (phase, log) in results.items():
        print(f"[netpol] {what}: {phase} {log.strip()}")
    for what, (phase, log) in results.items():
        if what == "admitted namespace":
            assert phase == "Succeeded" and "NOAUTH" in log, (what, log)  # Redis answered
        else:
            # Refused for CONNECT_SECONDS: kube-router rejects (ICMP port unreachable ->
            # ECONNREFUSED), other enforcers drop (timeout); not a DNS or any other error.
            assert phase == "Failed" and (
                "ConnectionRefusedError 111" in log or "TimeoutError" in log), (what, log)


def test_a_producer_elsewhere_enqueues_and_the_pool_scales_up_and_back(
        guarded: Release, namespaces: dict[str, str]) -> None:
    url = _broker_url(guarded)
    run = f"np-{uuid.uuid4().hex[:6]}"
    began = time.monotonic()
    host = f"{FULLNAME}-redis.{guarded.namespace}.svc"
    enqueue = (f"python -c \"$CONNECT\" {host} 6379 {CONNECT_SECONDS} && python -m qscale_e2e "
               f"enqueue {run} {BURST} {TASK_SECONDS} --queue default")
    phase, log = _run_pod(guarded, namespaces["shop"], "producer", {}, ["sh", "-c", enqueue],
                          {"QSCALE_BROKER_URL": url, "QSCALE_RESULT_URL": url,
                           "CONNECT": CONNECT})
    assert phase == "Succeeded", log
    print(f"[netpol] producer in {namespaces['shop']}: {log.strip()}")

    def scaled_up() -> int | None:
        ready = guarded.deployment()["status"].get("readyReplicas") or 0
        return ready if ready > MIN_REPLICAS else None

    peak = wait_until(scaled_up, timeout=180, interval=2, what="the pool to scale up")
    report = guarded.wait_all_finished(run, timeout=300)
    assert not report["missing"], report
    finished = time.monotonic() - began
    guarded.wait_replicas(MIN_REPLICAS, timeout=120 + SCALE_DOWN_WINDOW_SECONDS)
    settled = time.monotonic() - began
    print(f"[netpol] burst of {BURST}: up to {peak} ready pods, all finished at "
          f"{finished:.0f}s, back to {MIN_REPLICAS} at {settled:.0f}s")


def test_prometheus_scrapes_workers_and_controller(guarded: Release) -> None:
    """Scraped through the policies; read through a port-forward (inside the pod)."""
    with port_forward(guarded, f"svc/{guarded.prometheus_service}", 9090) as port:
        def all_up() -> dict[str, str] | None:
            try:
                result = prom_query(port, "up")
            except OSError:
                return None
            up = {f"{r['metric'].get('component')}/{r['metric'].get('pod', '?')}": r["value"][1]
                  for r in result}
            components = {key.split("/")[0] for key in up}
            ok = {"worker", "controller"} <= components and all(v == "1" for v in up.values())
            return up if ok else None

        up = wait_until(all_up, timeout=120, interval=5, what="Prometheus to scrape every target")
    print(f"[netpol] Prometheus up: {up}")


def test_the_policy_controller_ran_throughout(agent: PolicyEnforcer) -> None:
    assert agent.running(), "kube-router died during the module: the checks may be vacuous"

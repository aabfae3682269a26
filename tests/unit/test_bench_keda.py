"""The real-KEDA benchmark's pure parts: scaler presets and the objects they make, and the
scoring every scaler is measured by (the same code for all)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.keda.calibrate import calibrate, keda_config, qscale_policy
from bench.keda.metrics import measured_startup, score
from bench.keda.recorder import PodRecord
from bench.keda.report import markdown, verdicts
from bench.keda.scalers import PRESETS, parse_scaler, qscale_autoscaling, scaled_object
from controller.sim.traces import Trace

T0 = 1_000_000.0


# -- scalers ---------------------------------------------------------------------------

def test_keda_defaults_are_left_to_keda() -> None:
    so = scaled_object(PRESETS["keda-default"], broker="redis", deployment="d",
                       broker_host="h", concurrency=4, max_replicas=10)
    spec = so["spec"]
    assert "pollingInterval" not in spec and "cooldownPeriod" not in spec
    assert "advanced" not in spec                      # the HPA's default behaviour
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] == 10
    meta = spec["triggers"][0]["metadata"]
    assert meta["listName"] == "qscale:q:keda-default:ready"   # where our broker pushes
    assert meta["listLength"] == "4"


def test_keda_tuned_is_fast_everywhere_it_can_be() -> None:
    so = scaled_object(PRESETS["keda-tuned"], broker="rabbitmq", deployment="d",
                       broker_host="h", concurrency=4, max_replicas=10)
    spec = so["spec"]
    assert spec["pollingInterval"] == 1 and spec["cooldownPeriod"] == 30
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 30
    assert behavior["scaleUp"]["policies"][0]["value"] >= 1000
    meta = spec["triggers"][0]["metadata"]
    assert meta["protocol"] == "http" and meta["mode"] == "QueueLength"   # counts in flight
    assert spec["triggers"][0]["authenticationRef"]["name"] == "bench-rabbitmq-http"


def test_scaler_specs() -> None:
    s = parse_scaler("k5=keda:poll=5,cooldown=60,down_window=0,up=unlimited,length=2")
    assert s.options == {"poll": 5, "cooldown": 60, "down_window": 0, "up": "unlimited",
                         "length": 2}
    q = parse_scaler("q1=qscale:target_wait=60,batch=20,down_window=5")
    assert qscale_autoscaling(q) == {"targetWaitSeconds": 60.0, "batchSeconds": 20.0,
                                     "scaleDownWindowSeconds": 5.0}
    for bad, message in (("nope", "unknown scaler"), ("x=hpa:", "kind must be"),
                         ("x=keda:poll=fast", "not a int"), ("x=keda:speed=1", "unknown option"),
                         ("X=keda:", "lowercase"), ("x=keda:up=max", "up must be")):
        with pytest.raises(ValueError, match=message):
            parse_scaler(bad)


def test_calibration_maps_every_option() -> None:
    k = keda_config(PRESETS["keda-tuned"], "rabbitmq", 4, 10)
    assert (k.polling_interval, k.cooldown_period, k.scale_down_stabilization) == (1, 30, 30)
    assert k.counts_in_flight and k.scale_up_percent >= 1000 and k.list_length == 4
    assert not keda_config(PRESETS["keda-tuned"], "redis", 4, 10).counts_in_flight
    d = keda_config(PRESETS["keda-default"], "redis", 4, 10)
    assert (d.polling_interval, d.cooldown_period, d.scale_down_stabilization) == (30, 300, 300)
    p = qscale_policy(PRESETS["qscale-best"], 10)
    assert p.min_replicas == 0 and p.max_replicas == 10
    assert p.batch_seconds == PRESETS["qscale-best"].options["batch"]


# -- scoring ---------------------------------------------------------------------------

def trace(arrivals: list[float], service: list[float], bursts: tuple[float, ...] = ()) -> Trace:
    return Trace("t", "test", 100.0, np.array(arrivals), np.array(service), bursts)


def ev(kind: str, task: str, t: float, pod: str, **extra: float) -> dict[str, Any]:
    return {"e": kind, "id": task, "attempt": 1, "t": T0 + t, "pod": pod, **extra}


def test_score_counts_what_each_scaler_did() -> None:
    tr = trace([0.0, 0.0, 0.0, 5.0], [2.0, 2.0, 30.0, 1.0], bursts=(0.0,))
    published = {"a": (0, T0 + 0.1), "b": (1, T0 + 0.1), "c": (2, T0 + 0.1),
                 "d": (3, T0 + 5.0)}
    pods = [PodRecord("old", "p", T0 - 50.0, gone=T0 + 40.0),
            PodRecord("new", "p", T0 + 1.0, scheduled=T0 + 1.1, running=T0 + 2.0,
                      ready=T0 + 4.0, gone=None)]
    events = [
        ev("start", "a", 0.5, "old"), ev("finish", "a", 2.5, "old"),
        ev("start", "c", 0.6, "old"),                          # interrupted: pod went away
        ev("start", "b", 3.0, "new", supervisor=T0 + 2.0, child=T0 + 2.8),
        ev("finish", "b", 5.0, "new"),
        ev("start", "c", 41.0, "new"), ev("finish", "c", 71.0, "new"),   # redelivered
        ev("start", "d", 6.0, "new"), ev("finish", "d", 7.0, "new"),
        ev("start", "zz", 1.0, "new"),                         # another scaler's task
    ]
    replicas = [(T0 - 60, 1), (T0 + 0.8, 2), (T0 + 39, 1), (T0 + 80, 2), (T0 + 90, 0)]
    r = score(tr, "redis", "s", "x", 4, T0, T0 + 100.0, published, events, pods, replicas, [])
    assert r.published == 4 and r.finished == 4 and r.unfinished == 0
    assert r.pod_seconds == pytest.approx(90.0 + 99.0)   # old: -50..40; new: 1..end
    assert r.interrupted == 1 and r.redelivered == 1 and r.duplicates == 0
    waits = sorted([0.4, 2.9, 40.9, 1.0])
    assert r.wait_max == pytest.approx(40.9)
    assert r.wait_p50 == pytest.approx(float(np.percentile(waits, 50)))
    assert r.burst_to_new_pod == [pytest.approx(2.9)]
    b = r.burst_breakdown[0]
    assert b is not None
    assert b == {"decision": pytest.approx(0.7), "created": pytest.approx(0.9),
                 "scheduled": pytest.approx(1.0), "process_started": pytest.approx(1.9),
                 "ready_to_claim": pytest.approx(2.7), "first_task": pytest.approx(2.9)}
    assert (r.scale_events, r.reversals) == (4, 3)
    assert r.max_pods == 2 and r.pods_created == 1
    assert r.work_floor == pytest.approx(35.0 / 4)


def test_no_new_pod_no_burst_time() -> None:
    tr = trace([10.0], [1.0], bursts=(10.0,))
    pods = [PodRecord("old", "p", T0 - 5.0)]
    events = [ev("start", "a", 10.5, "old"), ev("finish", "a", 11.5, "old")]
    r = score(tr, "redis", "s", "x", 4, T0, T0 + 20.0, {"a": (0, T0 + 10.0)}, events, pods,
              [], [])
    assert r.burst_to_new_pod == [None] and r.burst_breakdown == [None]


# -- report and calibration ------------------------------------------------------------

def row(scaler: str, pod_s: float, p95: float, interrupted: int = 0) -> dict[str, Any]:
    return {"trace": "t", "broker": "redis", "scaler": scaler, "describe": "keda(defaults)"
            if scaler.startswith("keda") else "qscale(defaults)", "published": 10,
            "finished": 10, "pod_seconds": pod_s, "work_floor": 100.0, "wait_p50": 1.0,
            "wait_p95": p95, "wait_p99": p95, "wait_max": p95, "interrupted": interrupted,
            "redelivered": 0, "duplicates": 0, "unfinished": 0, "burst_to_new_pod": [3.0],
            "burst_breakdown": [None], "scale_events": 2, "reversals": 1, "max_pods": 3,
            "pods_created": 3, "pod_start_median": 4.0,
            "timeline": {"t": [0.0, 1.0], "ready": [3.0, 0.0], "in_flight": [1.0, 2.0],
                         "replicas_t": [0.0, 1.0], "replicas": [0.0, 2.0],
                         "pods_t": [0.0, 2.0], "pods": [0.0, 2.0]}}


def test_verdicts_say_met_missed_and_unreachable() -> None:
    rows = [row("keda-default", 900.0, 20.0), row("keda-tuned", 200.0, 10.0, interrupted=3),
            row("qscale-best", 110.0, 9.0)]
    lines = verdicts(rows)
    assert lines[0] == "- qscale-best vs keda-default: 8.18x, met"
    assert "1.82x, met" in lines[1]
    worse = verdicts([row("keda-default", 250.0, 20.0), row("qscale-default", 120.0, 25.0)])
    assert "p95 25.0 s > 20.0 s" in worse[0]
    assert "83 pod-s is below the work floor 100: unreachable" in worse[0]


def test_markdown_and_plots(tmp_path: Path) -> None:
    doc = {"date": "d", "command": "c", "git": "g", "keda": "2.21.1", "kubernetes": "v1.34.4",
           "pool": "4 processes per pod, 0-10 replicas", "load": {"min": 1, "median": 2,
                                                                  "max": 3},
           "scalers": {"keda-default": "keda(defaults)", "qscale-default": "qscale(defaults)"},
           "traces": {"t": "test"}, "results": [row("keda-default", 900.0, 20.0),
                                                row("qscale-default", 300.0, 10.0)]}
    text = markdown(doc, tmp_path)
    assert "| qscale-default | 300 | 3.00x |" in text
    assert (tmp_path / "t-redis.png").stat().st_size > 5000
    assert (tmp_path / "RESULTS.md").read_text() == text


def test_calibration_against_a_recorded_run(tmp_path: Path) -> None:
    raw = {"t0": T0, "pods": {"p1": {"created": T0 + 1.0, "running": T0 + 3.0},
                              "p2": {"created": T0 + 1.0, "running": T0 + 5.0}},
           "events": [ev("start", "a", 6.0, "p1", supervisor=T0 + 3.0, child=T0 + 3.5)]}
    assert measured_startup(raw) == pytest.approx(3.0 + 0.5)
    rows = [dict(row("keda-default", 900.0, 20.0), trace="burst", startup_to_claim=3.5),
            dict(row("qscale-default", 300.0, 10.0), trace="burst", startup_to_claim=3.5)]
    doc = {"date": "d", "pool": "4 processes per pod, 0-10 replicas", "results": rows}
    (tmp_path / "results.json").write_text(json.dumps(doc))
    text = calibrate(tmp_path, Path(__file__).resolve().parents[2] / "bench" / "keda" /
                     "traces.yaml")
    assert "| burst | redis | keda-default | 3.5 | 900 |" in text
    assert "- keda: simulated pod-seconds are" in text


# -- the release ------------------------------------------------------------------------

class RecordingKube:
    """What Release.install asks of the cluster, in order (the cluster's answers are
    canned: a namespace that exists or not, the NodePorts it allocated)."""

    def __init__(self, namespace_exists: bool) -> None:
        self.namespace_exists = namespace_exists
        self.calls: list[tuple[str, ...]] = []

    def kubectl(self, *args: str, **_: Any) -> str:
        self.calls.append(("kubectl", *args))
        if args[:2] == ("get", "namespace"):
            return f"namespace/{args[2]}" if self.namespace_exists else ""
        return ""

    def helm(self, *args: str, **_: Any) -> str:
        self.calls.append(("helm", *args))
        return ""

    def apply(self, docs: Any, namespace: str | None = None) -> None:
        self.calls.append(("apply", namespace or ""))

    def node_ip(self) -> str:
        return "172.18.0.9"

    def get(self, *args: str) -> Any:
        return {"metadata": {"name": args[-1]},
                "spec": {"ports": [{"name": "redis", "nodePort": 30001}]}}


@pytest.mark.parametrize("exists", [True, False])
def test_every_run_starts_from_a_fresh_release(exists: bool) -> None:
    """A kept cluster (--keep-cluster) holds the last run's release: upgrading it carried
    its queues' leftovers into the next run, and failed outright once the chart changed an
    immutable field ("updates to statefulset spec ... are forbidden", seen after a merge).
    So install removes an earlier release and its namespace first."""
    from bench.keda.release import PoolShape, Release
    kube = RecordingKube(namespace_exists=exists)
    rel = Release(kube, "redis", (PRESETS["qscale-default"],), PoolShape())  # type: ignore[arg-type]
    rel.install("qscale-bench:abc")
    verbs = [c[:3] for c in kube.calls]
    install = verbs.index(("helm", "upgrade", "--install"))
    if exists:
        uninstall = verbs.index(("helm", "uninstall", "bench"))
        delete = verbs.index(("kubectl", "delete", "namespace"))
        assert uninstall < delete < install
        assert "--wait=true" in kube.calls[delete]
    else:
        assert not [c for c in verbs if c[1] in ("uninstall", "delete")]
    assert ("kubectl", "create", "namespace") in verbs[:install]
    assert rel.broker_url == rel.results_url
    assert rel.broker_url.endswith("@172.18.0.9:30001/0")


def test_a_failed_cluster_listing_is_not_a_missing_cluster() -> None:
    """`kind get clusters` failing meant "no cluster": the run then counted the cluster
    as its own and deleted it afterwards (main's cluster.sh had the same flaw, 8a5e8aa)."""
    from bench.keda import prepare
    from bench.keda.kube import Kube, KubeError

    class FailingKind(Kube):
        scripts: list[tuple[str, ...]] = []

        def run(self, argv: Any, **kw: Any) -> Any:
            if list(argv)[-2:] == ["get", "clusters"]:
                return super().run(["sh", "-c", "echo 'kind: cannot connect' >&2; exit 1"],
                                   **kw)
            raise AssertionError(f"called {argv} after a failed listing")

        def script(self, *argv: str, timeout: float = 0) -> str:
            self.scripts.append(argv)
            return ""

    kube = FailingKind("qscale-bench-test")
    with pytest.raises(KubeError, match="cannot connect"):
        prepare.ensure_cluster(kube)
    assert kube.scripts == []


def test_the_run_refuses_the_shared_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    """KEDA is cluster-wide and the run leaves a cluster it did not create in place: on the
    shared `qscale` cluster it would stay installed under everyone's tests. Exit 2, one
    line, before anything touches a cluster."""
    from bench.keda.__main__ import main
    assert main(["run", "--cluster", "qscale", "--only", "burst"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cluster" in err[0] and "qscale" in err[0]


def test_keda_check_says_why_the_external_metrics_api_is_not_available(tmp_path: Path) -> None:
    """`hack/keda.sh install` died with kubectl's bare "timed out waiting for the condition
    on apiservices/v1beta1.external.metrics.k8s.io" and the run deleted its cluster, so
    nothing said why. The check now ends with the APIService condition's message and
    prints the pods, events and both KEDA logs before it (kubectl faked here)."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    cache = tmp_path / "cache"
    (cache / "bin").mkdir(parents=True)
    kubectl = cache / "bin" / "kubectl"
    kubectl.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        '  *" wait "*) echo "error: timed out waiting for the condition" >&2; exit 1 ;;\n'
        '  *"get apiservice/"*) printf "False FailedDiscoveryCheck: failing or missing'
        ' response from https://10.96.0.9:443/apis/external.metrics.k8s.io/v1beta1:'
        ' bad status 403" ;;\n'
        '  *" logs deploy/keda-metrics-apiserver "*) echo "adapter log line" ;;\n'
        '  *" get pods,"*) echo "keda-metrics-apiserver-x 1/1 Running" ;;\n'
        '  *) : ;;\n'
        "esac\n")
    kubectl.chmod(0o755)
    proc = subprocess.run(["bash", "hack/keda.sh", "check"], check=False, cwd=repo,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "QSCALE_CACHE": str(cache), "KEDA_WAIT_S": "1",
                               "QSCALE_CLUSTER_NAME": "qscale-bench-test"})
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "v1beta1.external.metrics.k8s.io not Available after 1 s" in last
    assert "FailedDiscoveryCheck" in last and "bad status 403" in last
    assert "keda-metrics-apiserver-x 1/1 Running" in proc.stderr
    assert "adapter log line" in proc.stderr

"""A small run of the real-KEDA benchmark's harness (`make bench-keda`), so it cannot rot.

The same code path as the benchmark, on the shared cluster and without KEDA (building
KEDA does not fit a cold CI run; tests/chart/test_bench_keda_manifests.py validates the
objects it would apply): the chart release with one qscale pool, the smoke trace replayed
from the host through the NodePorts, the cluster recorded (pod and Deployment watches,
queue depth), every task's start and finish read back, scored, reported with its PNG,
and replayed in the simulator for calibration. The measurement itself is `make
bench-keda` (README)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.keda import prepare
from bench.keda.calibrate import calibrate
from bench.keda.kube import Kube
from bench.keda.release import PoolShape, Release
from bench.keda.report import markdown
from bench.keda.run import run_trace
from bench.keda.scalers import PRESETS
from controller.sim.tracefile import load_traces
from tests.plugins.kind import REPO_ROOT, KubeCluster, _paused_alarm

pytestmark = [pytest.mark.k8s, pytest.mark.redis, pytest.mark.slow]
SMOKE = REPO_ROOT / "bench" / "keda" / "smoke-traces.yaml"


@pytest.fixture
def release(kube_cluster: KubeCluster, image_version: str) -> Iterator[Release]:
    kube = Kube(kube_cluster.name)
    with _paused_alarm():
        image = prepare.build_images(kube, base=f"qscale:{image_version}")
        prepare.load_images(kube, image, ("redis",))
    rel = Release(kube, "redis", (PRESETS["qscale-default"],), PoolShape(max_replicas=3),
                  name="bsmoke", ns=f"qscale-bench-smoke-{uuid.uuid4().hex[:6]}")
    try:
        rel.install(image)
        yield rel
    finally:
        kube.helm("uninstall", rel.name, "-n", rel.ns, "--wait", timeout=300)
        kube.kubectl("delete", "namespace", rel.ns, "--wait=false", check=False)


def test_the_harness_measures_a_burst(release: Release, tmp_path: Path) -> None:
    trace = load_traces(SMOKE)[0]
    run = run_trace(release, trace, release.kube.api_client(), max_extra=240,
                    out_dir=tmp_path / "raw")
    (result,) = run.results
    print(f"\nsmoke: {result.pod_seconds:.0f} pod-s, wait p95 {result.wait_p95:.1f} s, "
          f"burst -> task on new pod {result.burst_to_new_pod}, "
          f"breakdown {result.burst_breakdown}")
    assert result.published == len(trace.arrivals) == result.finished
    assert result.interrupted == 0 and result.unfinished == 0
    assert result.pods_created >= 1 and result.pod_seconds > 0
    assert result.scale_events >= 2                     # up for the burst, down to zero
    assert result.timeline["t"] and max(result.timeline["ready"]) > 0   # the sampler saw it
    assert run.end - run.t0 < trace.duration + 240      # back at zero before the cap
    doc = {"date": "smoke", "command": "pytest", "git": "-", "keda": "-",
           "kubernetes": "-", "pool": "4 processes per pod, 0-3 replicas",
           "load": {"min": 0.0, "median": 0.0, "max": 0.0},
           "scalers": {"qscale-default": result.describe},
           "traces": {trace.name: trace.description}, "results": [result.to_json()]}
    out = tmp_path
    (out / "results.json").write_text(json.dumps(doc))
    text = markdown(doc, out)
    assert "| qscale-default |" in text and (out / "smoke-redis.png").stat().st_size > 5000
    assert "| smoke | redis | qscale-default |" in calibrate(out, SMOKE)

"""The controller's idle footprint: RSS of `python -m controller run` on the kind cluster.

In a scratch namespace: the WorkerPool CRD, a Lease, a two-pod Deployment and its
WorkerPool (queue depth from the host's Redis). The controller runs as it does in
tests/k8s (a host process with the cluster's kubeconfig, leader election on), leads,
ticks every second, and after WARMUP seconds its VmRSS is sampled once a second for
SAMPLE seconds. Prints one line for README:

    .venv/bin/python -m bench.controller_rss      (needs `make cluster` and Redis)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("QSCALE_CACHE", "/var/cache/qscale"))
KUBECTL = str(CACHE / "bin" / "kubectl")
KUBECONFIG = os.environ.get("QSCALE_KUBECONFIG", str(CACHE / "kubeconfig-qscale"))
REDIS = os.environ.get("QSCALE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run([KUBECTL, "--kubeconfig", KUBECONFIG, *args], input=stdin,
                          capture_output=True, text=True, check=True, timeout=180).stdout


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--sample", type=float, default=20.0)
    args = parser.parse_args()
    ns = f"qscale-rss-{uuid.uuid4().hex[:6]}"
    kubectl("apply", "-f", str(REPO / "helm" / "qscale" / "files" / "crds" / "workerpool.yaml"))
    kubectl("create", "namespace", ns)
    docs = [
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
         "metadata": {"name": "qscale-controller"}, "spec": {}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "idle"},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "idle"}},
                  "template": {"metadata": {"labels": {"app": "idle"}}, "spec": {
                      "terminationGracePeriodSeconds": 0, "containers": [{
                          "name": "idle", "image": "qscale/debian:bookworm",
                          "imagePullPolicy": "Never", "command": ["sleep", "infinity"]}]}}}},
        {"apiVersion": "qscale.io/v1alpha1", "kind": "WorkerPool", "metadata": {"name": "idle"},
         "spec": {"queues": [f"rss-{ns}"], "broker": {"url": REDIS},
                  "targetRef": {"name": "idle"}, "minReplicas": 2, "maxReplicas": 4,
                  "podStatePort": 0}},
    ]
    kubectl("-n", ns, "apply", "-f", "-", stdin="\n---\n".join(json.dumps(d) for d in docs))
    env = dict(os.environ, QSCALE_CONTROLLER_NAMESPACE=ns, QSCALE_CONTROLLER_LEASE_NAMESPACE=ns,
               QSCALE_CONTROLLER_HTTP_PORT="0", QSCALE_CONTROLLER_IDENTITY="rss")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "controller", "run", "--kubeconfig",
                                 KUBECONFIG], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            time.sleep(args.warmup)
            samples = []
            deadline = time.monotonic() + args.sample
            while time.monotonic() < deadline:
                samples.append(rss_mb(proc.pid))
                time.sleep(1)
            log.seek(0)
            text = log.read().decode(errors="replace")
        finally:
            proc.terminate()
            proc.wait(20)
            kubectl("delete", "namespace", ns, "--wait=false")
    leading = "leader=True" in text and "acted=" in text
    print(f"controller idle RSS: {max(samples):.1f} MB max, {samples[-1]:.1f} MB last "
          f"(VmRSS over {args.sample:.0f} s after {args.warmup:.0f} s; 1 WorkerPool, 2 pods, "
          f"leading={leading}; `.venv/bin/python -m bench.controller_rss`)")
    return 0 if leading else 1


if __name__ == "__main__":
    sys.exit(main())

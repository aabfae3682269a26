"""The cluster's NetworkPolicy enforcer, as the tests see it.

`hack/netpol-enforcer.sh` runs kube-router's network policy controller on every kind
node; the kube_cluster fixture starts it with the cluster, so the whole k8s and e2e suite
runs under enforcement. The NetworkPolicy tests only check that it is running (and
stayed so) and read its log.
"""

from __future__ import annotations

import subprocess

from tests.plugins.kind import ENFORCER_SCRIPT, KubeCluster

LOG = "/opt/qscale-netpol/kube-router.log"


class PolicyEnforcer:
    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster

    def running(self) -> bool:
        proc = subprocess.run(["bash", str(ENFORCER_SCRIPT), "status"], capture_output=True,
                              text=True, timeout=120, check=False)
        return proc.returncode == 0

    def logs(self, node: str) -> str:
        return subprocess.run(["docker", "exec", node, "cat", LOG], capture_output=True,
                              text=True, timeout=60, check=False).stdout

"""The cluster's NetworkPolicy enforcer, as the tests see it.

`hack/netpol-enforcer.sh` runs kube-router's network policy controller on every kind
node; the kube_cluster fixture starts it with the cluster, so the whole k8s and e2e suite
runs under enforcement. The NetworkPolicy tests only check that it is running (and
stayed so).
"""

from __future__ import annotations

import subprocess

from tests.plugins.kind import ENFORCER_SCRIPT, KubeCluster


class PolicyEnforcer:
    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster

    def running(self) -> bool:
        proc = subprocess.run(["bash", str(ENFORCER_SCRIPT), "status"], capture_output=True,
                              text=True, timeout=120, check=False, env=self.cluster.env())
        return proc.returncode == 0

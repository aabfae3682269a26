"""A NetworkPolicy enforcer on the kind cluster, for the tests that need policies enforced.

The cluster's bridge CNI ignores NetworkPolicy. kube-router's network policy controller
enforces it beside any CNI, with iptables and ipset: it runs on each node with only its
firewall on (`--run-firewall --run-router=false --run-service-proxy=false
--enable-cni=false`). kube-network-policies (what kindnet embeds) would be the lighter
choice, but it queues packets through nftables' `queue` expression, which this VM's kernel
lacks (CONFIG_NFT_QUEUE is not set).

Its static binary comes from its Go module and the `ipset` tool from Debian's packages
(hack/test-tools.sh, cached by version); both are copied into each kind node and the
controller runs there as a process, next to kube-proxy. Stopping removes every chain,
rule and set it made (kube-router's own `--cleanup-config` panics on a node without IPVS
and leaves the filter rules), so the cluster is its non-enforcing self again for the
other tests. kube-router v2.1.0 is the one version the module proxy serves here; it runs
only in this throwaway test cluster.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.plugins.kind import KubeCluster

VERSION = "v2.1.0"  # keep in step with hack/test-tools.sh
IPSET_DEBS = ("libipset13_7.17-1_amd64.deb", "ipset_7.17-1_amd64.deb")
DIR = "/opt/qscale-netpol"
BINARY = f"{DIR}/kube-router"
LOG = f"{DIR}/kube-router.log"
SYNCED = "sync iptables took"  # the end of its first full sync (logged at -v=1)

# Undo everything the policy controller adds to the filter table, then its ipsets (the
# node had no ipset before we installed it, so every set is kube-router's).
CLEANUP = r"""
pkill -f '^/opt/qscale-netpol/kube-router' || true
for _ in $(seq 100); do
  pgrep -f '^/opt/qscale-netpol/kube-router' >/dev/null || break; sleep 0.1
done
iptables-save -t filter | grep -E '^-A (INPUT|FORWARD|OUTPUT) .*-j KUBE-(ROUTER|NWPLCY|POD-FW)' \
  | sed 's/^-A /-D /' | while read -r rule; do eval "iptables $rule"; done
chains=$(iptables-save -t filter | sed -n 's/^:\(KUBE-\(ROUTER\|NWPLCY\|POD-FW\)[^ ]*\) .*/\1/p')
for c in $chains; do iptables -F "$c"; done
for c in $chains; do iptables -X "$c"; done
if command -v ipset >/dev/null; then ipset flush; ipset destroy; fi
left=$(iptables-save -t filter | grep -cE 'KUBE-(ROUTER|NWPLCY|POD-FW)' || true)
echo "left=$left"
"""


class PolicyAgent:
    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.binary = cluster.cache_dir / "bin" / f"kube-router-{VERSION}"
        self.debs = [cluster.cache_dir / "debs" / name for name in IPSET_DEBS]

    def nodes(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "--format", "{{.Names}}", "--filter",
                              f"label=io.x-k8s.kind.cluster={self.cluster.name}"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        nodes = sorted(out.split())
        assert nodes, f"no kind nodes of cluster {self.cluster.name}"
        return nodes

    def _exec(self, node: str, script: str, timeout: float = 120) -> str:
        proc = subprocess.run(["docker", "exec", node, "sh", "-c", script], capture_output=True,
                              text=True, timeout=timeout, check=False)
        assert proc.returncode == 0, f"{node}: {script[:80]!r} exited {proc.returncode}: " \
            f"{proc.stdout[-1000:]}{proc.stderr[-1000:]}"
        return proc.stdout

    def install(self) -> None:
        for path in (self.binary, *self.debs):
            if not path.is_file():
                pytest.fail(f"{path} is missing: `make test-tools` (hack/test-tools.sh) builds "
                            "kube-router and downloads ipset", pytrace=False)
        for node in self.nodes():
            self._exec(node, CLEANUP)  # a run that died before its teardown
            self._exec(node, f"mkdir -p {DIR}")
            for path in (self.binary, *self.debs):
                target = BINARY if path == self.binary else f"{DIR}/{path.name}"
                subprocess.run(["docker", "cp", str(path), f"{node}:{target}"], check=True,
                               capture_output=True, timeout=120)
            self._exec(node, f"dpkg -i {' '.join(f'{DIR}/{d}' for d in IPSET_DEBS)} >/dev/null")
            self._exec(node, (
                f"nohup {BINARY} --run-firewall=true --run-router=false "
                "--run-service-proxy=false --enable-cni=false --metrics-port=0 "
                f"--kubeconfig=/etc/kubernetes/admin.conf --hostname-override={node} "
                f"--iptables-sync-period=30s -v=1 >{LOG} 2>&1 &"))
        deadline = time.monotonic() + 120
        for node in self.nodes():
            while SYNCED not in self.logs(node):
                if time.monotonic() > deadline:
                    pytest.fail(f"kube-router on {node} never synced its rules:\n"
                                f"{self.logs(node)[-3000:]}", pytrace=False)
                time.sleep(1)

    def running(self) -> bool:
        return all(subprocess.run(["docker", "exec", node, "pgrep", "-f", f"^{BINARY}"],
                                  capture_output=True, timeout=60, check=False).returncode == 0
                   for node in self.nodes())

    def logs(self, node: str) -> str:
        return subprocess.run(["docker", "exec", node, "cat", LOG], capture_output=True,
                              text=True, timeout=60, check=False).stdout

    def uninstall(self) -> None:
        for node in self.nodes():
            out = self._exec(node, CLEANUP)
            assert "left=0" in out, f"{node}: kube-router's rules are still there: {out}"


"""kubectl, helm and kind as the repository builds them, pointed at one kind cluster.

The benchmark runs on its own cluster (QSCALE_CLUSTER_NAME, default `qscale-bench`): it
installs KEDA, which is cluster-wide, and must not share a node's CPU with other
people's tests while it measures. The smoke run in `make test` uses the shared cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class KubeError(RuntimeError):
    """A kubectl/helm/script call failed; the message carries its output."""


def cache_dir() -> Path:
    return Path(os.environ.get("QSCALE_CACHE", "/var/cache/qscale"))


@dataclass(frozen=True)
class Kube:
    cluster: str

    @property
    def kubeconfig(self) -> Path:
        return Path(os.environ.get("QSCALE_KUBECONFIG",
                                   str(cache_dir() / f"kubeconfig-{self.cluster}")))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{cache_dir() / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["QSCALE_CACHE"] = str(cache_dir())
        env["QSCALE_CLUSTER_NAME"] = self.cluster
        return env

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                                  timeout=timeout, env=self.env(), cwd=REPO, check=False)
        except subprocess.TimeoutExpired as exc:
            raise KubeError(f"{' '.join(argv)}: no answer in {timeout:.0f} s") from exc
        if check and proc.returncode != 0:
            raise KubeError(f"{' '.join(argv)} exited {proc.returncode}:\n"
                            f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        return proc

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120,
                check: bool = True) -> str:
        argv = [str(cache_dir() / "bin" / "kubectl"), "--kubeconfig", str(self.kubeconfig),
                *args]
        return self.run(argv, input=input, timeout=timeout, check=check).stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, docs: Sequence[dict[str, Any]], namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl(*ns, "apply", "-f", "-",
                     input="\n---\n".join(json.dumps(d) for d in docs))

    def helm(self, *args: str, timeout: float = 600) -> str:
        argv = [str(cache_dir() / "bin" / "helm"), "--kubeconfig", str(self.kubeconfig), *args]
        return self.run(argv, timeout=timeout).stdout

    def script(self, *argv: str, timeout: float = 7200) -> str:
        """A hack/ script with this cluster's environment (builds are cached there)."""
        return self.run(["bash", *argv], timeout=timeout).stdout

    def node_ip(self) -> str:
        """The kind node's address on the docker network (NodePorts answer there)."""
        out = self.run(["docker", "inspect", "-f",
                        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                        f"{self.cluster}-control-plane"]).stdout.split()
        if not out:
            raise KubeError(f"no address for node {self.cluster}-control-plane")
        return out[0]

    def api_client(self) -> Any:
        from kubernetes import config
        return config.new_client_from_config(config_file=str(self.kubeconfig))

"""pytest plugin: the real kind cluster the k8s/e2e tests run against.

The session fixture ``kube_cluster`` runs the same idempotent entry point as
``make cluster`` (``hack/cluster.sh up``): on a warm machine it only checks that
the cluster answers; on a cold one it builds everything first. Then it makes the
cluster enforce NetworkPolicy (``hack/netpol-enforcer.sh up``, a no-op when it does
already), so every k8s and e2e test runs under enforcement. If either fails the
requesting test FAILS with the reason -- it never skips.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO_ROOT / "hack" / "cluster.sh"
ENFORCER_SCRIPT = REPO_ROOT / "hack" / "netpol-enforcer.sh"
# Building everything from source on a cold 2-core machine takes a while.
UP_TIMEOUT = float(os.environ.get("QSCALE_CLUSTER_UP_TIMEOUT", "7200"))


def _cache_dir() -> Path:
    return Path(os.environ.get("QSCALE_CACHE", "/var/cache/qscale"))


@dataclass(frozen=True)
class KubeCluster:
    """Handle on the qscale kind cluster: paths of its tools plus small helpers."""

    name: str
    kubeconfig: Path
    kubectl_path: Path
    helm_path: Path
    kind_path: Path
    cache_dir: Path
    repo_root: Path = field(default=REPO_ROOT)

    def env(self) -> dict[str, str]:
        """Environment with our tools first on PATH and KUBECONFIG set."""
        env = dict(os.environ)
        env["PATH"] = f"{self.cache_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["QSCALE_CACHE"] = str(self.cache_dir)
        env["QSCALE_CLUSTER_NAME"] = self.name
        return env

    def _run(
        self, argv: Sequence[str], *, input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
            )
        return proc

    def nodes(self) -> list[str]:
        """The cluster's node containers (their names are the Kubernetes node names)."""
        argv = ["docker", "ps", "--format", "{{.Names}}", "--filter",
                f"label=io.x-k8s.kind.cluster={self.name}"]
        for attempt in range(3):  # dockerd under load answers `ps` with an error now and then
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            if proc.returncode == 0:
                break
            time.sleep(2 * (attempt + 1))
        assert proc.returncode == 0, f"docker ps failed: {proc.stderr[-500:]}"
        nodes = sorted(proc.stdout.split())
        assert nodes, f"no running nodes of kind cluster {self.name}"
        return nodes

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run our kubectl against the cluster (raises AssertionError on failure)."""
        argv = [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args]
        return self._run(argv, input=input, check=check, timeout=timeout)

    def kubectl_json(self, *args: str, timeout: float = 120) -> Any:
        """Run kubectl with ``-o json`` and return the parsed document."""
        return json.loads(self.kubectl(*args, "-o", "json", timeout=timeout).stdout)

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.kubectl(*ns, "apply", "-f", "-", input=manifest)

    def helm(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.helm_path), "--kubeconfig", str(self.kubeconfig), *args]
        return self._run(argv, input=None, check=check, timeout=timeout)

    def load_image(self, *images: str, timeout: float = 600) -> None:
        """Load local docker images into the cluster (``kind load docker-image``)."""
        self._run(
            ["bash", str(CLUSTER_SCRIPT), "load", *images],
            input=None,
            check=True,
            timeout=timeout,
        )


@contextmanager
def _paused_alarm() -> Iterator[None]:
    """Pause pytest-timeout's SIGALRM timer (signal method) while the cluster is built.

    A cold build can take far longer than a per-test timeout; the time spent
    here is not the test's own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    remaining, interval = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        yield
    finally:
        if remaining > 0:
            signal.setitimer(signal.ITIMER_REAL, remaining, interval)


def _bring_up() -> KubeCluster:
    cache = _cache_dir()
    name = os.environ.get("QSCALE_CLUSTER_NAME", "qscale")
    kubeconfig = Path(os.environ.get("QSCALE_KUBECONFIG", str(cache / f"kubeconfig-{name}")))
    log = cache / "logs" / "pytest-cluster-up.log"
    env = dict(os.environ, QSCALE_CACHE=str(cache))
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with _paused_alarm(), log.open("w") as out:
            # The cluster enforces NetworkPolicy for every test (no-op when it already does).
            proc = subprocess.run(
                ["bash", "-c", 'bash "$1" up && bash "$2" up', "up",
                 str(CLUSTER_SCRIPT), str(ENFORCER_SCRIPT)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=UP_TIMEOUT,
                check=False,
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"kind cluster bring-up did not finish: {exc} (log: {log})", pytrace=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        reason = next((ln for ln in reversed(tail) if "FAILED" in ln), tail[-1] if tail else "")
        pytest.fail(
            f"kind cluster bring-up failed (hack/cluster.sh up && hack/netpol-enforcer.sh up "
            f"exited {proc.returncode}): "
            f"{reason}\n--- last lines of {log} ---\n" + "\n".join(tail),
            pytrace=False,
        )
    bin_dir = cache / "bin"
    cluster = KubeCluster(
        name=name,
        kubeconfig=kubeconfig,
        kubectl_path=bin_dir / "kubectl",
        helm_path=bin_dir / "helm",
        kind_path=bin_dir / "kind",
        cache_dir=cache,
    )
    for tool in (cluster.kubectl_path, cluster.helm_path, cluster.kind_path):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} missing after cluster bring-up", pytrace=False)
    if not kubeconfig.is_file():
        pytest.fail(f"kubeconfig {kubeconfig} missing after cluster bring-up", pytrace=False)
    return cluster


@pytest.fixture(scope="session")
def kube_cluster() -> KubeCluster:
    """The qscale kind cluster, created through `hack/cluster.sh up` if absent."""
    return _bring_up()

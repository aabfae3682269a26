"""A bare Kubernetes API server (etcd + kube-apiserver, no nodes) for `helm` itself.

What Helm does against a cluster — `lookup`, resource policies, hooks, adoption, three-way
merges, CRD upgrades — needs a real API server but no pod ever has to run. This starts
one from the binaries the kind tooling already has (`$QSCALE_CACHE/bin/etcd-*`,
`$QSCALE_CACHE/k8s/$K8S_VERSION/bin/kube-apiserver`, built by `make cluster`) in a
few seconds, on free ports, and stops it afterwards. A missing binary fails loudly.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("QSCALE_CACHE", "/var/cache/qscale"))
K8S_VERSION = os.environ.get("K8S_VERSION", "v1.34.4")
TOKEN = "qscale-test-admin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _binary(path: Path | None, what: str) -> Path:
    if path is None or not os.access(path, os.X_OK):
        pytest.fail(f"{what} not found ({path}); build the cluster tooling with `make cluster`",
                    pytrace=False)
    return path


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Starts etcd and kube-apiserver; yields a kubeconfig for an admin token."""
    etcd = _binary(next(iter(sorted((CACHE / "bin").glob("etcd-v*"))), None), "etcd")
    kube_apiserver = _binary(CACHE / "k8s" / K8S_VERSION / "bin" / "kube-apiserver",
                             "kube-apiserver")
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is required (service-account key)", pytrace=False)
    root = tmp_path_factory.mktemp("apiserver")
    subprocess.run([openssl, "genrsa", "-out", str(root / "sa.key"), "2048"],
                   capture_output=True, check=True, timeout=60)
    (root / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n")
    client, peer, secure = _free_port(), _free_port(), _free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (root / "etcd.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [str(etcd), "--data-dir", str(root / "etcd"),
                 "--listen-client-urls", f"http://127.0.0.1:{client}",
                 "--advertise-client-urls", f"http://127.0.0.1:{client}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
                stdout=log, stderr=subprocess.STDOUT))
        with (root / "apiserver.log").open("wb") as log:
            procs.append(subprocess.Popen(
                [str(kube_apiserver), "--etcd-servers", f"http://127.0.0.1:{client}",
                 "--secure-port", str(secure), "--bind-address", "127.0.0.1",
                 "--cert-dir", str(root / "certs"),
                 "--token-auth-file", str(root / "tokens.csv"),
                 "--authorization-mode", "RBAC",  # the admin token is in system:masters
                 "--service-account-issuer", "https://kubernetes.default.svc",
                 "--service-account-key-file", str(root / "sa.key"),
                 "--service-account-signing-key-file", str(root / "sa.key"),
                 "--service-cluster-ip-range", "10.96.0.0/16"],
                stdout=log, stderr=subprocess.STDOUT))
        import ssl
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(f"https://127.0.0.1:{secure}/readyz",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5, context=context) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                tail = (root / "apiserver.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"kube-apiserver not ready in 90 s:\n{tail}", pytrace=False)
            time.sleep(1)
        kubeconfig = root / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: t, cluster: {{server: 'https://127.0.0.1:{secure}',"
            " insecure-skip-tls-verify: true}}]\n"
            f"users: [{{name: t, user: {{token: {TOKEN}}}}}]\n"
            "contexts: [{name: t, context: {cluster: t, user: t}}]\ncurrent-context: t\n")
        kubeconfig.chmod(0o600)
        yield kubeconfig
    finally:
        for proc in reversed(procs):
            _stop(proc)

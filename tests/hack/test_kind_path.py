"""Which kind node `make demo` uses, and that the stock path builds no Kubernetes (#11 item 3).

`hack/cluster.sh path` (what demo.sh asks) runs against the fake docker of
tests/hack/fakebin: with a Docker that can pull, the stock kindest/node; offline (a
registry that cannot be reached, as here), the offline build, each with its reason;
demo.sh prints the path and the reason. On the stock path hack/tools.sh gets kubectl
as the official binary (from a local server standing in for dl.k8s.io) or, when that
fails, from the k8s.io/kubectl Go module: never through hack/k8s-build.sh.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.hack.docker_machine import REPO_ROOT, FakeMachine

STOCK = ("kindest/node:v1.34.3@sha256:"
         "08497ee19eace7b4b5348db5c6a1591d7752b164530a36f855cb0f2bdcbadd48")
DNS_ERROR = ('Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: '
             "lookup registry-1.docker.io on 10.255.255.53:53: no such host")


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[FakeMachine]:
    m = FakeMachine(tmp_path)
    m.docker_answers("qscale-runc")
    yield m
    m.cleanup()


def _pull(m: FakeMachine, ok: bool) -> None:
    (m.state / ("pull_ok" if ok else "pull_error")).write_text("" if ok else DNS_ERROR + "\n")


def _run(m: FakeMachine, argv: list[str], cwd: Path = REPO_ROOT,
         **extra: str) -> subprocess.CompletedProcess[str]:
    env = m._env({"QSCALE_KIND_AUTO": "1", **extra})
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False, stdin=subprocess.DEVNULL)


def _path(m: FakeMachine, **extra: str) -> list[str]:
    proc = _run(m, ["bash", str(REPO_ROOT / "hack" / "cluster.sh"), "path"], **extra)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.rstrip("\n").split("\t")


def test_docker_that_can_pull_takes_stock_kind(machine: FakeMachine) -> None:
    _pull(machine, ok=True)
    assert _path(machine) == ["stock", STOCK, f"Docker pulled {STOCK}"]


def test_offline_docker_takes_the_offline_build_and_says_why(machine: FakeMachine) -> None:
    _pull(machine, ok=False)
    path, image, why = _path(machine)
    assert (path, image) == ("offline", "-")
    assert f"Docker cannot pull {STOCK}" in why and "no such host" in why, why


def test_node_image_already_in_docker_is_not_pulled(machine: FakeMachine) -> None:
    machine.add_image(STOCK)
    assert _path(machine) == ["stock", STOCK, f"Docker already has {STOCK}"]
    assert not any(c.startswith("docker pull") for c in machine.calls())


def test_explicit_node_image_wins(machine: FakeMachine) -> None:
    _pull(machine, ok=False)
    image = "kindest/node:v1.33.7"
    assert _path(machine, QSCALE_KIND_NODE_IMAGE=image) == [
        "stock", image, "QSCALE_KIND_NODE_IMAGE is set"]


def test_make_cluster_stays_offline_unless_asked(machine: FakeMachine) -> None:
    _pull(machine, ok=True)
    path, _, why = _path(machine, QSCALE_KIND_AUTO="0")
    assert path == "offline" and "default of make cluster" in why
    assert not any(c.startswith("docker pull") for c in machine.calls())


@pytest.mark.parametrize(("running", "expected"), [
    (STOCK, "stock"), ("qscale/kind-node:v1.34.4-v0.31.0-c0075aec", "offline")])
def test_existing_cluster_keeps_its_path(machine: FakeMachine, running: str,
                                         expected: str) -> None:
    """No flip-flop: a cluster already up keeps the node it runs (no recreate, no pull)."""
    _pull(machine, ok=True)
    kind = machine.cache / "bin" / "kind"
    kind.parent.mkdir(parents=True, exist_ok=True)
    kind.write_text("#!/bin/sh\n[ \"$1 $2\" = 'get clusters' ] && echo qscale\n")
    kind.chmod(0o755)
    (machine.state / "containers").write_text(f"qscale-control-plane {running}\n")
    path, image, why = _path(machine)
    offline = "the offline node image " if expected == "offline" else ""
    assert path == expected and f"already runs {offline}{running}" in why, why
    assert image == (running if expected == "stock" else "-")
    assert not any(c.startswith("docker pull") for c in machine.calls())


def test_demo_prints_the_path_and_why(machine: FakeMachine, tmp_path: Path) -> None:
    """demo.sh in a copy of hack/ whose `cluster.sh up` stops right after the choice."""
    repo = tmp_path / "repo"
    (repo / "hack").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "hack" / "demo.sh", repo / "hack" / "demo.sh")
    for name in ("lib.sh", "cluster.sh"):
        shutil.copy2(REPO_ROOT / "hack" / name, repo / "hack" / name)
    (repo / "hack" / "docker.sh").write_text("exit 0\n")
    stub_up = '  up) echo "up: QSCALE_KIND_NODE_IMAGE=${QSCALE_KIND_NODE_IMAGE:-}"; exit 3 ;;'
    cluster = (repo / "hack" / "cluster.sh").read_text()
    (repo / "hack" / "cluster.sh").write_text(cluster.replace("  up) cmd_up ;;", stub_up))
    for ok, expected in ((True, f"stock path, node image {STOCK}, because Docker pulled"),
                         (False, "offline path (Kubernetes and the node image built here, "
                                 f"cached), because Docker cannot pull {STOCK}")):
        _pull(machine, ok=ok)
        proc = _run(machine, ["bash", str(repo / "hack" / "demo.sh")], cwd=repo)
        assert proc.returncode != 0  # the stub stops it at `up`
        assert f"demo: 1/5 kind cluster: {expected}" in proc.stdout, proc.stdout + proc.stderr
        assert ("up: QSCALE_KIND_NODE_IMAGE=" + (STOCK if ok else "")) in proc.stdout
        for name in ("pull_ok", "pull_error", "images"):  # forget the pulled node image
            (machine.state / name).unlink(missing_ok=True)


# --- kubectl on the stock path ---------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def release_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local stand-in for dl.k8s.io/release: <version>/bin/linux/amd64/kubectl(.sha256)."""
    root = tmp_path / "release"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def _tools(m: FakeMachine, base_url: str) -> subprocess.CompletedProcess[str]:
    env = m._env({"QSCALE_KIND_NODE_IMAGE": STOCK, "QSCALE_KUBECTL_BASE_URL": base_url})
    return subprocess.run(["bash", str(REPO_ROOT / "hack" / "tools.sh")], env=env,
                          capture_output=True, text=True, timeout=300, check=False,
                          stdin=subprocess.DEVNULL)


def _no_kubernetes_build(m: FakeMachine) -> None:
    go = [c for c in m.calls() if c.startswith("go ")]
    assert not [c for c in go if "k8s.io/kubernetes" in c], go
    assert not (m.cache / "k8s").exists() or not any((m.cache / "k8s").rglob("kubectl"))


def test_stock_path_downloads_kubectl(machine: FakeMachine,
                                      release_server: tuple[str, Path]) -> None:
    url, root = release_server
    if os.uname().machine not in ("x86_64", "amd64"):
        pytest.fail("this test serves linux/amd64 only", pytrace=False)
    binary = b"#!/bin/sh\necho kubectl v1.34.3\n"
    d = root / "v1.34.3" / "bin" / "linux" / "amd64"
    d.mkdir(parents=True)
    (d / "kubectl").write_bytes(binary)
    (d / "kubectl.sha256").write_text(hashlib.sha256(binary).hexdigest())
    proc = _tools(machine, url)
    assert proc.returncode == 0, proc.stderr
    kubectl = machine.cache / "bin" / "kubectl"
    assert kubectl.resolve().name == "kubectl-v1.34.3"
    assert kubectl.read_bytes() == binary
    assert "sha256 checked" in proc.stderr
    _no_kubernetes_build(machine)


def test_stock_path_refuses_a_bad_checksum_and_builds_the_go_module(
        machine: FakeMachine, release_server: tuple[str, Path]) -> None:
    url, root = release_server
    d = root / "v1.34.3" / "bin" / "linux" / "amd64"
    d.mkdir(parents=True)
    (d / "kubectl").write_bytes(b"tampered")
    (d / "kubectl.sha256").write_text("0" * 64)
    proc = _tools(machine, url)
    assert proc.returncode == 0, proc.stderr
    assert (machine.cache / "bin" / "kubectl").resolve().name == "kubectl-v1.34.3"
    assert (machine.cache / "bin" / "kubectl").read_bytes() != b"tampered"
    go = [c for c in machine.calls() if c.startswith("go ")]
    assert any("get k8s.io/kubectl@v0.34.3" in c for c in go), go
    _no_kubernetes_build(machine)

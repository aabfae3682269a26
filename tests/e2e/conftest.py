"""Fixtures of the end-to-end suite: images built and loaded, one release per broker.

`e2e_image` runs the repo's own build (`hack/build-image.sh all`: qscale,
qscale-redis, qscale-rabbitmq, qscale-prometheus, cached by Docker), builds
`qscale-e2e:<hash>` FROM qscale with the tests' task module, and loads into kind
(`hack/cluster.sh load`) each image the releases use that the node lacks.
`release` is parametrized over both brokers at session scope, so pytest installs
each broker's release once, runs every test against it, and tears it down before
the next broker's install. Anything missing fails the run; nothing skips.

QSCALE_E2E_SKIP_BUILD=1 reuses the images already built (still checked, loaded if missing);
QSCALE_E2E_KEEP=1 leaves the releases installed after the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.release import Release
from tests.plugins.kind import REPO_ROOT, KubeCluster, _paused_alarm

IMAGE_DIR = Path(__file__).parent / "image"
# The multi-node scenarios need their own cluster (`make test-multinode`); `make test`'s
# single-node cluster does not collect them.
collect_ignore = [] if os.environ.get("QSCALE_MULTINODE") == "1" else ["multinode"]
# What the e2e releases run: workers, controller and test pod use the e2e image.
RELEASE_IMAGES = ("qscale-redis", "qscale-rabbitmq", "qscale-prometheus")
BROKERS = [pytest.param("redis", marks=pytest.mark.redis, id="redis"),
           pytest.param("rabbitmq", marks=pytest.mark.rabbitmq, id="rabbitmq")]


def _run(argv: list[str], env: dict[str, str], timeout: float, what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                              check=False, cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"{what} did not finish: {exc}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                    f"{proc.stderr[-3000:]}", pytrace=False)
    return proc.stdout


def _image_id(tag: str, env: dict[str, str]) -> str:
    return _run(["docker", "image", "inspect", "-f", "{{.Id}}", tag], env, 60,
                f"docker image inspect {tag} (is it built?)").strip()


def _on_node(cluster: KubeCluster, image: str, env: dict[str, str]) -> bool:
    """Whether every node's containerd holds exactly this image (config digest = Docker id).

    `kind load` cannot tell on these nodes (no crictl) and would reload every time.
    """
    return all(_on_one_node(node, image, env) for node in cluster.nodes())


def _on_one_node(node: str, image: str, env: dict[str, str]) -> bool:
    listing = subprocess.run(["docker", "exec", node, "ctr", "-n", "k8s.io", "images", "ls",
                              f"name==docker.io/library/{image}"], capture_output=True,
                             text=True, check=False, timeout=60).stdout.splitlines()
    if len(listing) < 2:
        return False
    manifest = subprocess.run(["docker", "exec", node, "ctr", "-n", "k8s.io", "content", "get",
                               listing[1].split()[2]], capture_output=True, text=True,
                              check=False, timeout=60).stdout
    try:
        config = json.loads(manifest)["config"]["digest"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(config == _image_id(image, env))


def _chart_version() -> str:
    for line in (REPO_ROOT / "helm" / "qscale" / "Chart.yaml").read_text().splitlines():
        if line.startswith("appVersion:"):
            return line.split(":", 1)[1].strip().strip('"')
    pytest.fail("no appVersion in helm/qscale/Chart.yaml", pytrace=False)


@pytest.fixture(scope="session")
def e2e_image(kube_cluster: KubeCluster) -> str:
    """Build and load every image the e2e releases use; returns the e2e worker image."""
    env = kube_cluster.env()
    version = _chart_version()
    with _paused_alarm():
        if os.environ.get("QSCALE_E2E_SKIP_BUILD") != "1":
            _run(["bash", "hack/build-image.sh", "all"], env, 3600, "hack/build-image.sh all")
        digest = hashlib.sha256(_image_id(f"qscale:{version}", env).encode())
        for path in sorted(IMAGE_DIR.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(IMAGE_DIR).as_posix().encode())
                digest.update(path.read_bytes())
        image = f"qscale-e2e:{digest.hexdigest()[:12]}"
        have = subprocess.run(["docker", "image", "inspect", image], capture_output=True,
                              check=False).returncode == 0
        if not have:
            _run(["docker", "build", "--build-arg", f"BASE_IMAGE=qscale:{version}",
                  "-t", image, str(IMAGE_DIR)], {**env, "DOCKER_BUILDKIT": "0"}, 600,
                 f"docker build {image}")
        for name in (*(f"{n}:{version}" for n in RELEASE_IMAGES), image):
            if not _on_node(kube_cluster, name, env):
                kube_cluster.load_image(name)
    return image


@pytest.fixture(scope="session", params=BROKERS)
def release(request: pytest.FixtureRequest, kube_cluster: KubeCluster,
            e2e_image: str) -> Iterator[Release]:
    """The broker's release, installed once and shared by every test of that broker."""
    rel = Release(kube_cluster, broker=request.param, image=e2e_image,
                  namespace=f"qscale-e2e-{request.param}")
    with _paused_alarm():
        rel.install()
    yield rel
    rel.teardown(keep=os.environ.get("QSCALE_E2E_KEEP") == "1")

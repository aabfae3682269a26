"""Everything a run needs on its cluster: the cluster, the images, KEDA.

The worker image is the repository's own (`hack/build-image.sh`, tagged `qscale:bench` so
a rebuild of the shared `:dev` tag by someone else cannot change it mid-run) plus the
benchmark's task module (`bench/keda/image`, the way a user adds tasks). KEDA is built
from its Go module by `hack/keda.sh` (cached by version) and installed from its own
release manifests.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench.keda.kube import REPO, Kube

log = logging.getLogger("bench.keda")
IMAGE_DIR = Path(__file__).parent / "image"
BASE_TAG = "qscale:bench"


def chart_version() -> str:
    for line in (REPO / "helm" / "qscale" / "Chart.yaml").read_text().splitlines():
        if line.startswith("appVersion:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise RuntimeError("no appVersion in helm/qscale/Chart.yaml")


def _image_id(kube: Kube, tag: str) -> str:
    return kube.run(["docker", "image", "inspect", "-f", "{{.Id}}", tag]).stdout.strip()


def _have(kube: Kube, tag: str) -> bool:
    return kube.run(["docker", "image", "inspect", tag], check=False).returncode == 0


def build_images(kube: Kube, *, rebuild: bool = True, base: str = BASE_TAG) -> str:
    """The bench worker image (qscale + task module); its tag names its content.

    `base` is the qscale image to add the task module to: `qscale:bench`, built here from
    this checkout, or one a caller already built (the smoke test's `qscale:<version>`).
    """
    if base == BASE_TAG and (rebuild or not _have(kube, BASE_TAG)):
        log.info("building the qscale image (hack/build-image.sh --tag %s qscale)", BASE_TAG)
        kube.script("hack/build-image.sh", "--tag", BASE_TAG, "qscale", timeout=3600)
    version = chart_version()
    missing = [n for n in ("qscale-redis", "qscale-rabbitmq") if not _have(kube, f"{n}:{version}")]
    if missing:
        kube.script("hack/build-image.sh", *missing, timeout=3600)
    digest = hashlib.sha256(_image_id(kube, base).encode())
    for path in sorted(IMAGE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(IMAGE_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    image = f"qscale-bench:{digest.hexdigest()[:12]}"
    if not _have(kube, image):
        kube.run(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={base}", "-t", image,
                  str(IMAGE_DIR)], timeout=600)
    return image


def ensure_cluster(kube: Kube) -> bool:
    """Bring the cluster up (cached node image); True if this call created it (and the
    run deletes it afterwards). A listing that fails is an error, not "no cluster"."""
    existed = kube.cluster in kube.run(
        [str(kube.env()["QSCALE_CACHE"] + "/bin/kind"), "get", "clusters"]).stdout.split()
    kube.script("hack/cluster.sh", "up")
    return not existed


def load_images(kube: Kube, image: str, brokers: Sequence[str] = ("redis", "rabbitmq")) -> None:
    """`kind load` what the releases run (kind skips an image the node already has).
    Redis always: with RabbitMQ it is the results store."""
    version = chart_version()
    for name in dict.fromkeys((image, *(f"qscale-{b}:{version}" for b in ("redis", *brokers)))):
        kube.script("hack/cluster.sh", "load", name, timeout=900)


def install_keda(kube: Kube) -> str:
    """Build (cached) and install KEDA; returns its version."""
    kube.script("hack/keda.sh", "install", timeout=7200)
    out = kube.kubectl("-n", "keda", "get", "deploy", "keda-operator", "-o",
                       "jsonpath={.spec.template.spec.containers[0].image}")
    return out.rsplit(":", 1)[-1]


def delete_cluster(kube: Kube) -> None:
    kube.script("hack/cluster.sh", "down")


def image_facts(kube: Kube, image: str) -> dict[str, object]:
    """Size of the worker image and the time `python -m worker --help` takes to import."""
    size = int(kube.run(["docker", "image", "inspect", "-f", "{{.Size}}", image]).stdout)
    proc = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", image, "-X",
                           "importtime", "-m", "worker", "--help"], capture_output=True,
                          text=True, check=False, timeout=120)
    total = 0
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = line.split("|")
            if parts[2].strip() in ("worker", "worker.cli", "worker.__main__"):
                total = max(total, int(parts[1].strip()))
    return {"image_bytes": size, "import_worker_ms": total / 1000.0}

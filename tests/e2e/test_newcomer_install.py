"""A newcomer's install, run as written: the chart README's Install section, then the
README's "Deploying on your own cluster", block by block against the kind cluster.

The blocks are read from the markdown (tests/docs/markdown.py), never retyped. They run
in a fresh shell environment on a copy of the checkout, with the local quickstart's
`myapp/` and `producer.py` saved from the README, our kubectl, helm and kind on PATH and
the repository's virtualenv active (the reader's, after Install). Two things differ
from the text, and only these: the namespace `qscale` becomes a namespace of this test's
own (`-n qscale` -> `-n qscale-docs-<id>`), and the kind cluster's name is the test
cluster's. The images the chart names are built from this checkout and loaded the way
the rest of the e2e suite does it (`make images` and `kind load` in the text).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.markdown import section
from tests.docs.session import Terminal
from tests.docs.test_quickstart_local import (
    CHART_README,
    README,
    copy_checkout,
    fresh_env,
    run_blocks,
)
from tests.e2e.conftest import _chart_version, _on_node
from tests.plugins.kind import REPO_ROOT, KubeCluster, _paused_alarm

pytestmark = [pytest.mark.e2e, pytest.mark.k8s, pytest.mark.slow]

CHART_IMAGES = ("qscale", "qscale-redis", "qscale-prometheus")  # the defaults: Redis broker


@pytest.fixture(scope="module")
def chart_images(kube_cluster: KubeCluster, e2e_image: str) -> None:
    """The default values' images on the node, built from this checkout.

    `e2e_image` runs the repository's image build (hack/build-image.sh all, cached by
    Docker) as the rest of the e2e suite does, so the chart runs this code, not an image
    left over from another checkout; the qscale image itself is loaded here when the node
    lacks this exact build.
    """
    env = kube_cluster.env()
    version = _chart_version()
    with _paused_alarm():
        for name in CHART_IMAGES:
            image = f"{name}:{version}"
            if not _on_node(kube_cluster, image, env):
                kube_cluster.load_image(image, timeout=900)


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"qscale-docs-{uuid.uuid4().hex[:6]}"
    yield name
    kube_cluster.helm("uninstall", "qscale", "-n", name, "--wait", "--timeout", "2m",
                      check=False)
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.timeout(1500)
def test_chart_readme_and_deploy_section_as_written(
        tmp_path: Path, kube_cluster: KubeCluster, chart_images: None, namespace: str) -> None:
    chart_install = section(CHART_README, "Install")
    deploy = section(README, "Deploying on your own cluster")
    own_tasks = [b for b in section(README, "Quickstart: your own tasks")
                 if b.file or b.text.startswith("mkdir")]
    assert [b.file for b in own_tasks if b.file] == ["myapp/tasks.py", "producer.py"]
    assert any("helm install" in b.text for b in chart_install), "no install block"
    assert any("producer-job.yaml" in b.text for b in deploy if b.lang == "sh")

    checkout = copy_checkout(tmp_path / "qscale")
    env = fresh_env(tmp_path / "home")
    env["PATH"] = (f"{kube_cluster.cache_dir / 'bin'}:{REPO_ROOT / '.venv' / 'bin'}:"
                   f"{env['PATH']}")
    env["KUBECONFIG"] = str(kube_cluster.kubeconfig)
    rewrite = {"-n qscale ": f"-n {namespace} ", "-n qscale\n": f"-n {namespace}\n",
               "--name qscale": f"--name {kube_cluster.name}"}
    logs = tmp_path / "logs"
    logs.mkdir()
    terminal = Terminal(checkout, env, logs, rewrite=rewrite)
    try:
        with _paused_alarm():
            run_blocks(terminal, own_tasks)
            installed = run_blocks(terminal, chart_install)
            deployed = run_blocks(terminal, deploy)
    except AssertionError:
        print("\n".join(terminal.transcript))
        events = kube_cluster.kubectl("-n", namespace, "get", "events", "--sort-by",
                                      ".lastTimestamp", check=False).stdout
        print(f"--- events in {namespace} ---\n{events[-4000:]}")
        raise
    finally:
        terminal.close()
    assert "Succeeded" in "".join(installed), installed
    text = "".join(deployed)
    # The producer ran twice, in the cluster (the Job's log) and outside it (port-forward).
    assert text.count("[0, 2, 4, 6, 8]") == 2, text[-3000:]
    assert text.count("flaky failed after 4 runs") == 2, text[-3000:]
    pools = kube_cluster.kubectl_json("-n", namespace, "get", "workerpools")["items"]
    assert [p["metadata"]["name"] for p in pools] == ["qscale-default"]

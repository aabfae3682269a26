"""Fixtures for the chart tests: a real `helm` binary rendering helm/qscale.

These tests render with `helm template` (no cluster) and assert on the YAML. A
missing helm fails loudly; nothing here skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "qscale"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))

Render = Callable[..., list[dict[str, Any]]]


def _candidates() -> list[str]:
    cache_helm = Path(os.environ.get("QSCALE_CACHE", "/var/cache/qscale")) / "bin" / "helm"
    return [os.environ.get("HELM", ""), str(cache_helm), shutil.which("helm") or ""]


def find_helm() -> str:
    """helm from $HELM, the cluster tooling's cache or PATH; built (`make tools`) if absent."""
    for candidate in _candidates():
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    # A fresh machine: build the pinned tools the same way `make tools` does. That is
    # setup, not test time, so pytest-timeout's alarm is paused meanwhile.
    remaining, interval = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        built = subprocess.run(["bash", str(REPO_ROOT / "hack" / "cluster.sh"), "tools"],
                               capture_output=True, text=True, timeout=3600, check=False)
    finally:
        if remaining > 0:
            signal.setitimer(signal.ITIMER_REAL, remaining, interval)
    for candidate in _candidates():
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("helm not found and `hack/cluster.sh tools` did not build it:\n"
                + (built.stdout + built.stderr)[-2000:], pytrace=False)


@pytest.fixture(scope="session")
def helm() -> str:
    return find_helm()


def helm_template(helm: str, *args: str, values: Iterable[Path] = (),
                  check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [helm, "template", "qscale", str(CHART), "--namespace", "qscale"]
    for path in values:
        cmd += ["-f", str(path)]
    cmd += list(args)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"helm template {' '.join(args)} failed:\n{result.stderr}", pytrace=False)
    return result


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """render(*helm_args, values=[files]) -> list of manifests (cached per arguments)."""
    cache: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def _render(*args: str, values: Iterable[Path] = ()) -> list[dict[str, Any]]:
        key = (args, tuple(values))
        if key not in cache:
            out = helm_template(helm, *args, values=values).stdout
            cache[key] = [doc for doc in yaml.safe_load_all(out) if doc]
        return cache[key]

    return _render


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one manifest of `kind` called `name` (fails when absent)."""
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} rendered")


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every workload and bare Pod in a render."""
    specs = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            specs.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "Pod":
            specs.append((doc["metadata"]["name"], doc["spec"]))
    return specs
